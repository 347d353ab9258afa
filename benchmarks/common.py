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

import sprintiface  # noqa: E402 - after tools/ is put on sys.path
from onnx_models import build_attention, build_blstm, build_mlp, save_model  # noqa: E402 - after tools/ is put on sys.path

INPUT_DIM = 40
CLASSES = 9001
_CACHE = os.path.join(tempfile.gettempdir(), "sprintiface-bench-models")


#: kind -> (input dim, classes)
DIMS = {"mlp": (INPUT_DIM, CLASSES), "blstm": (INPUT_DIM, CLASSES), "big": (INPUT_DIM, CLASSES), "tiny": (16, 7),
        "small": (INPUT_DIM, 500), "attention": (INPUT_DIM, CLASSES), "conformer": (INPUT_DIM, 500)}


def model_path(kind):
    """A benchmark model on disk (made once): ``mlp`` 40 -> 128 -> 9001 (small, so the
    transform matters), ``blstm`` 40 -> 2x128 -> 9001, ``big`` 40 -> 4x2048 -> 9001
    (124 MB, for memory), ``tiny`` 16 -> 32 -> 7 (for the fixed cost per call), ``small``
    40 -> 256 -> 500 (for cold starts), ``attention`` 40 -> one 256-dim self-attention block
    -> 9001 (onnx.helper), ``conformer`` docs/i6-models.md's i6-models conformer at 40 -> 2x256
    -> 500 (exported with PyTorch, which it needs)."""
    os.makedirs(_CACHE, exist_ok=True)
    path = os.path.join(_CACHE, f"{kind}-{sprintiface.__version__}.onnx")
    if not os.path.exists(path):
        if kind == "mlp":
            model = build_mlp(INPUT_DIM, CLASSES, (128,), seed=11, length_name="data:size1")
        elif kind == "blstm":
            model = build_blstm(INPUT_DIM, CLASSES, hidden=128, seed=12)
        elif kind == "big":
            model = build_mlp(INPUT_DIM, CLASSES, (2048,) * 4, seed=13)
        elif kind == "tiny":
            model = build_mlp(16, 7, (32,), seed=14)
        elif kind == "small":
            model = build_mlp(INPUT_DIM, 500, (256,), seed=15, length_name="data:size1")
        elif kind == "attention":
            model = build_attention(INPUT_DIM, CLASSES, 256, seed=16)
        elif kind == "conformer":
            _export_conformer(path)
            return path
        else:
            raise ValueError(kind)
        save_model(model, path)
    return path


def prepared_path(kind, form="shareable"):
    """``model_path(kind)`` prepared by ``sprintiface prepare`` (made once): ``shareable``
    (pre-packed weights file), ``plain`` or ``int8`` (shareable, quantized)."""
    from sprintiface.prepare import prepare_model

    path = os.path.join(_CACHE, f"{kind}-{sprintiface.__version__}.{form}.onnx")
    if not os.path.exists(path):
        # int8 whether or not it pays here: the benchmark compares it with float32
        prepare_model(model_path(kind), path, plain=form == "plain", quantize=form == "int8", keep_slower=True,
                      min_speedup=0)
    return path


def _export_conformer(path):
    """docs/i6-models.md's conformer model file at benchmark sizes, exported as the trainer exports it."""
    import re

    from sprintiface.training.torch_export import export_onnx

    with open(os.path.join(os.path.dirname(TOOLS), "docs", "i6-models.md"), encoding="utf-8") as file:
        (code,) = [code for code in re.findall(r"```python\n(.*?)```", file.read(), re.S)
                   if code.startswith("# conformer_am.py\n")]
    code = code.replace("FEATURES, CLASSES, DIM = 12, 6, 16", f"FEATURES, CLASSES, DIM = {INPUT_DIM}, 500, 256")
    namespace = {}
    exec(compile(code, "conformer_am.py", "exec"), namespace)
    model = namespace["get_model"](1)
    model.eval()
    export_onnx(model, path, INPUT_DIM, "dynamo")


def int8_reports(kind, runs=2, segments=8, frames=250):
    """``prepare --quantize`` of ``model_path(kind)`` ``runs`` times, each a fresh measurement of
    every variant (sprintiface.quantize), on a feature file of ``segments`` random normal
    segments (half compared on, half calibrating the static variants): the QuantizationReports."""
    from sprintiface.prepare import prepare_model

    with tempfile.TemporaryDirectory() as work:
        sample = os.path.join(work, "features.npz")
        numpy.savez(sample, **{f"s{i}": features(frames, seed=100 + i, dim=DIMS[kind][0]) for i in range(segments)})
        return [prepare_model(model_path(kind), os.path.join(work, f"run{run}.onnx"), quantize=True,
                              sample_features=sample).quantization for run in range(runs)]


def status_bytes(field):
    """A size from /proc/self/status (``"VmRSS"``, ``"VmHWM"``) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def features(num_frames, seed=0, dim=INPUT_DIM):
    return numpy.random.default_rng(seed).standard_normal((num_frames, dim)).astype(numpy.float32)


def our_scorer(kind, extra="", path=None, quiet=True):
    """A scorer made as RASR makes it; ``quiet`` adds log_level:warning (else default settings)."""
    config = f"onnx:{path or model_path(kind)}{',log_level:warning' if quiet else ''}{extra}"
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                              callback=None, version_number=5, config=config)
    scorer.init(input_dim=DIMS[kind][0], output_dim=DIMS[kind][1])
    return scorer


def reference_scorer(kind):
    try:  # inside the asv suite (a package) or run as a script (benchmarks/ on sys.path)
        from .reference_scorer import ReturnnStyleScorer
    except ImportError:
        from reference_scorer import ReturnnStyleScorer

    scorer = ReturnnStyleScorer(model_path(kind))
    scorer.init(input_dim=INPUT_DIM, output_dim=CLASSES)
    return scorer


def bare_session(kind, path=None):
    """A bare InferenceSession on the unmodified model, 1 thread, and a function that makes its feeds."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path or model_path(kind), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()

    def feeds_for(x):
        feeds = {inputs[0].name: x[None]}
        for extra in inputs[1:]:
            feeds[extra.name] = numpy.array([x.shape[0]], dtype=numpy.int64 if "64" in extra.type else numpy.int32)
        return feeds

    return session, feeds_for
