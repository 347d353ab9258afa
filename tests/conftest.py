"""Shared fixtures: real ONNX models written to real files, and RASR-like calls.

The model builders and the C call driver live in tools/ (not in the package).
"""
import contextlib
import fnmatch
import os
import shutil
import sys
import tempfile

import numpy
import onnxruntime
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import sprintiface
from onnx_models import build_blstm, build_mlp, save_model


#: The working directory of the children tests start: outside the source tree, where
#: `import sprintiface` would find the unbuilt source folder before the installed package
#: (CI tests an installed wheel, not an in-place build).
AWAY_FROM_SOURCE = os.path.dirname(os.path.abspath(os.sep))


@pytest.fixture
def write_model(tmp_path):
    """Write an ONNX model to a file in tmp_path; returns its path."""
    counter = iter(range(1000))

    def write(model, name=None):
        path = tmp_path / (name or f"model{next(counter)}.onnx")
        save_model(model, str(path))
        return str(path)

    return write


@pytest.fixture
def mlp_path(write_model):
    return write_model(build_mlp(12, 30, (16,), seed=1), "mlp.onnx")


@pytest.fixture
def blstm_path(write_model):
    return write_model(build_blstm(12, 30, hidden=8, seed=2), "blstm.onnx")


def rasr_scorer(config, input_dim, output_dim):
    """Module init + init exactly as RASR calls them (keyword arguments only)."""
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer",
                              reference=object(), callback=lambda *args: None, version_number=5,
                              config=config)
    assert scorer is not None
    scorer.init(input_dim=input_dim, output_dim=output_dim)
    return scorer


def score_segment(scorer, features):
    """add_feature per frame (fresh arrays), compute, copy every row, reset; returns (T, C)."""
    num_frames = features.shape[0]
    for t in range(num_frames):
        scorer.add_feature(feature=numpy.array(features[t], dtype=numpy.float32), time=t)
    scorer.compute(num_frames=num_frames)
    rows = numpy.stack([numpy.array(scorer.get_scores(time=t)) for t in range(num_frames)])
    scorer.reset(num_frames=num_frames)
    return rows


def bare_run(path, features, **extra_feeds):
    """The model's output on (T, F) features through a bare InferenceSession.run: (T, C)."""
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    feeds = {}
    for info in inputs:
        if info.type == "tensor(float)":
            feeds[info.name] = features[None] if len(info.shape) == 3 else features
        else:
            dtype = numpy.int64 if info.type == "tensor(int64)" else numpy.int32
            feeds[info.name] = numpy.array([features.shape[0]], dtype=dtype)
    feeds.update(extra_feeds)
    output = session.run([session.get_outputs()[0].name], feeds)[0]
    return output[0] if output.ndim == 3 else output


def onnx_model(graph, opset=17):
    """A ModelProto for ``graph`` that older ONNX Runtime releases load too (IR version 8)."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def make_engine(path, **keys):
    """The engine for ``path`` as every caller gets it: from a config."""
    from sprintiface.config import load_config
    from sprintiface.engine import OnnxEngine

    return OnnxEngine.from_config(load_config(None, onnx=path, **keys))


def end_training_session():
    """End this process's training session, whatever state a test left it in, and forget
    the segment order's schedule and a target-mode override (between tests)."""
    process = sprintiface._training()
    if process.session is not None:
        process.session._failure = None
    with contextlib.suppress(sprintiface.TrainerError):
        sprintiface.exit()
    process.target_mode_override = None
    process.schedule = None


def features(num_frames, dim, seed=0):
    return numpy.random.default_rng(seed).standard_normal((num_frames, dim)).astype(numpy.float32)


def pytest_configure(config):
    # The tests are of the installed package; the source folder has no compiled part.
    # (Importing sprintiface above already failed, with a message, if it was shadowed.)
    assert os.path.exists(os.path.join(os.path.dirname(sprintiface.__file__), "models", "demo.onnx"))


def _describe(directory, name):
    path = os.path.join(directory, name)
    if os.path.isdir(path):
        return f"{name}/ (holding {sorted(os.listdir(path))[:5]})"
    with open(path, "rb") as file:
        return f"{name} ({os.path.getsize(path)} bytes, starting {file.read(32)!r})"


#: What others leave in the temp dir (fnmatch patterns), each with the reason it is not ours to remove.
FOREIGN_TEMPORARIES = (
    # ONNX Runtime (1.2x-1.3x) keeps one small session-id file, $TMPDIR/.ses, reused by later runs.
    ".ses",
    # PyTorch's compile cache ($TMPDIR/torchinductor_<user>), made by torch.export / dynamo (pytest -m torch).
    "torchinductor_*",
    # The tmp_path folders of a pytest run in a child (tools/asan/run_asan.py runs the suite on
    # its build): pytest keeps them, as it keeps ours; removed with this folder.
    "pytest-of-*",
)


#: The engine's per-user root for the private copies of a load's weights ($TMPDIR/sprintiface-<uid>,
#: sprintiface/engine.py's _private_roots): made 0700 at a load and kept, empty, for later ones.
#: Accepted only when empty: a copy left in it is a leak the check reports.
ENGINE_ROOT = f"sprintiface-{os.getuid()}"


def _foreign(name, directory=None):
    if name == ENGINE_ROOT and directory is not None:
        return not os.listdir(os.path.join(directory, name))
    return any(fnmatch.fnmatch(name, pattern) for pattern in FOREIGN_TEMPORARIES)


@pytest.fixture(scope="session", autouse=True)
def system_temp_dir(tmp_path_factory):
    """The test run's system temp dir (TMPDIR, for this process and every child), which must be
    empty at the end: tests write into their tmp_path, and what sprintiface puts in the temp dir
    (the demos' folders) it removes. A folder of the run's own, not /tmp itself, so that other
    programs writing there meanwhile cannot fail the check. The C call driver's build cache
    stays in the real temp dir, shared across runs (tools/rasr_driver)."""
    tmp_path_factory.getbasetemp()  # the tests' tmp_path folders stay where pytest keeps them
    original = tempfile.gettempdir()
    os.environ.setdefault("SPRINTIFACE_RASR_DRIVER_CACHE", original)
    directory = tempfile.mkdtemp(prefix="sprintiface-tests-tmpdir-")
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = directory
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == directory
    try:
        yield directory
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
        tempfile.tempdir = None
        left = sorted(_describe(directory, name) for name in os.listdir(directory)
                      if not _foreign(name, directory))
        shutil.rmtree(directory, ignore_errors=True)
    assert not left, f"the test run left {left} in its temp dir"
