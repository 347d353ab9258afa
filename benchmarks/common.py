"""Models and scorers shared by the asv suite and benchmarks/ratios.py.

The model builders and the C call driver come from the repository's tools/
(not part of the package)."""
import os
import sys
import tempfile

import numpy

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import sprintiface  # noqa: E402
from onnx_models import build_blstm, build_mlp, save_model  # noqa: E402

INPUT_DIM = 40
CLASSES = 9001
_CACHE = os.path.join(tempfile.gettempdir(), "sprintiface-bench-models")


def model_path(kind):
    """A benchmark model on disk (made once): ``mlp`` 40 -> 128 -> 9001 (small, so the
    transform matters) or ``blstm`` 40 -> 2x128 -> 9001."""
    os.makedirs(_CACHE, exist_ok=True)
    path = os.path.join(_CACHE, f"{kind}-{sprintiface.__version__}.onnx")
    if not os.path.exists(path):
        if kind == "mlp":
            model = build_mlp(INPUT_DIM, CLASSES, (128,), seed=11, length_name="data:size1")
        elif kind == "blstm":
            model = build_blstm(INPUT_DIM, CLASSES, hidden=128, seed=12)
        else:
            raise ValueError(kind)
        save_model(model, path)
    return path


def features(num_frames, seed=0):
    return numpy.random.default_rng(seed).standard_normal((num_frames, INPUT_DIM)).astype(numpy.float32)


def our_scorer(kind, extra=""):
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                              callback=None, version_number=5,
                              config=f"onnx:{model_path(kind)},log_level:warning{extra}")
    scorer.init(input_dim=INPUT_DIM, output_dim=CLASSES)
    return scorer


def reference_scorer(kind):
    try:  # inside the asv suite (a package) or run as a script (benchmarks/ on sys.path)
        from .reference_scorer import ReturnnStyleScorer
    except ImportError:
        from reference_scorer import ReturnnStyleScorer

    scorer = ReturnnStyleScorer(model_path(kind))
    scorer.init(input_dim=INPUT_DIM, output_dim=CLASSES)
    return scorer


def bare_session(kind):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_path(kind), options, providers=["CPUExecutionProvider"])

    def feeds_for(x):
        feeds = {"data": x[None]}
        if any(i.name == "data:size1" for i in session.get_inputs()):
            feeds["data:size1"] = numpy.array([x.shape[0]], dtype=numpy.int32)
        return feeds

    return session, feeds_for
