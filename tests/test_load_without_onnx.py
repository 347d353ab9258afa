"""A plain (not prepared) model loads and scores in a process where onnx cannot be imported.

Each model is loaded by the scorer's engine in a child process with
``sys.modules["onnx"] = None`` (sprintiface.onnx_proto reads and cuts it), and its
served output and -log scores must be bit-identical to the slow twin: the same
model parsed by the onnx package, cut by the same sprintiface.graph, run by ONNX
Runtime with the same session options. Where nothing is cut (a logits head), the
output must also be bit-identical to a bare InferenceSession on the user's file.
"""
import json
import os
import subprocess
import sys

import numpy
import onnx
import onnxruntime
import pytest
from conftest import AWAY_FROM_SOURCE, features
from onnx_models import build_blstm, build_head, build_mlp, save_model

from sprintiface import graph
from sprintiface.engine import _share_in_place, session_options
from sprintiface.scores import neg_log_scores

INPUT_DIM, CLASSES, FRAMES = 12, 30, 37

#: name -> (builder, config keys); every head kind, float16 and double heads, length inputs.
MODELS = {
    "mlp_probs": (lambda: build_mlp(INPUT_DIM, CLASSES, (16, 16), seed=1), {}),
    "mlp_log_probs_unbatched": (lambda: build_mlp(INPUT_DIM, CLASSES, (16,), seed=2, batched=False,
                                                  output_kind="log_probs"), {}),
    "mlp_scores_length": (lambda: build_mlp(INPUT_DIM, CLASSES, (16,), seed=3, output_kind="scores",
                                            length_name="data:size1"), {}),
    "mlp_logits": (lambda: build_mlp(INPUT_DIM, CLASSES, (64,), seed=4, output_kind="logits"),
                   {"output_kind": "logits"}),
    "mlp_opset11": (lambda: build_mlp(INPUT_DIM, CLASSES, (16,), seed=5, opset=11), {}),
    "blstm_int32": (lambda: build_blstm(INPUT_DIM, CLASSES, hidden=8, seed=6), {}),
    "blstm_int64_log_probs": (lambda: build_blstm(INPUT_DIM, CLASSES, hidden=8, seed=7, length_type="int64",
                                                  output_kind="log_probs"), {}),
    "head_float16_softmax": (lambda: build_head(INPUT_DIM, CLASSES, seed=8, head_type="float16",
                                                normaliser="Softmax"), {}),
    "head_float16_logsoftmax_seq_len": (lambda: build_head(INPUT_DIM, CLASSES, seed=9, head_type="float16",
                                                           extra_inputs=[("seq_len", "int64", ["B"])]), {}),
    "head_double_unbatched": (lambda: build_head(INPUT_DIM, CLASSES, seed=10, head_type="double",
                                                 batched=False, after=["Neg"], bias=(1, -1)), {}),
    "head_bias_first_features_size": (lambda: build_head(INPUT_DIM, CLASSES, seed=11, bias_first=True,
                                                         normaliser="Softmax", after=["Log"],
                                                         extra_inputs=[("features-size", "int32", [])]), {}),
    # Its weights in a data file beside it (onnx's external data, as torch writes past 2 GB).
    "mlp_external_data": (lambda: build_mlp(INPUT_DIM, CLASSES, (320,), seed=12), {}),
}

_CHILD = r"""
import json, os, sys
sys.modules["onnx"] = None  # importing onnx fails from here on
import numpy
request = json.loads(sys.argv[1])
import sprintiface.engine as engine_module
if request["old_onnxruntime"]:
    # The path for onnxruntime before 1.21 (no external-data folder for a model given
    # as bytes), taken with this onnxruntime: the graph is written beside the copies.
    engine_module.weights_stay_in_the_file = lambda: False
from sprintiface.config import load_config
from sprintiface.scores import neg_log_scores

x = numpy.load(request["features"])
for name, path, keys in request["models"]:
    engine = engine_module.OnnxEngine.from_config(load_config(None, onnx=path, **keys))
    assert not engine.prepared
    output = engine.forward(x)
    scores = neg_log_scores(output.copy(), engine.kind, engine.logit_bias)  # the kernel works in place
    numpy.savez(os.path.join(request["out"], name + ".npz"), output=output, scores=scores,
                bias=engine.logit_bias if engine.logit_bias is not None else numpy.zeros(0, numpy.float32))
    print(name, engine.kind, engine.interface.served_output, flush=True)
assert "onnx" not in [m for m in sys.modules if sys.modules[m] is not None]
assert "google.protobuf" not in sys.modules and "ml_dtypes" not in sys.modules
"""


def _write(tmp_path, name):
    build, keys = MODELS[name]
    path = str(tmp_path / f"{name}.onnx")
    if name.endswith("_external_data"):
        onnx.save_model(build(), path, save_as_external_data=True, location=f"{name}.onnx.data",
                        size_threshold=1024)
    else:
        save_model(build(), path)
    return path, keys


def _options(share_weights):
    options = session_options()
    if share_weights:  # weights used in place from the shared copy, as the engine does
        _share_in_place(options)
    return options


def _twin(path, keys, x, share_weights):
    """The slow twin: onnx's parse, sprintiface.graph's cut, ONNX Runtime with the engine's options."""
    model = onnx.load(path)
    interface = graph.prepare(model, path, **keys)
    session = onnxruntime.InferenceSession(model.SerializeToString(), _options(share_weights),
                                           providers=["CPUExecutionProvider"])
    return interface, _run(session, interface, x, interface.served_output)


def _run(session, interface, x, output_name):
    feeds = {interface.feature_input.name: x[None] if interface.feature_input.rank == 3 else x}
    if interface.length_input is not None:
        dtype = numpy.int64 if interface.length_input.elem_type == onnx.TensorProto.INT64 else numpy.int32
        feeds[interface.length_input.name] = numpy.array([len(x)] if interface.length_input.rank else len(x),
                                                         dtype=dtype)
    (output,) = session.run([output_name], feeds)
    return numpy.ascontiguousarray(output[0] if output.ndim == 3 else output)


def _load_without_onnx(tmp_path, models, x, share_weights=False, old_onnxruntime=False):
    out = tmp_path / ("out-shared" if share_weights else "out-old" if old_onnxruntime else "out")
    out.mkdir()
    numpy.save(tmp_path / "x.npy", x)
    request = {"features": str(tmp_path / "x.npy"), "out": str(out), "old_onnxruntime": old_onnxruntime,
               "models": [(name, path, dict(keys, share_weights=share_weights)) for name, (path, keys) in
                          models.items()]}
    env = dict(os.environ, SPRINTIFACE_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(request)], capture_output=True, text=True,
                            cwd=AWAY_FROM_SOURCE,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: numpy.load(out / f"{name}.npz") for name in models}, result.stdout


@pytest.mark.parametrize("how", ["private copy", "shared copy", "older onnxruntime"])
def test_every_kind_of_plain_model_scores_without_onnx_as_with_it(tmp_path, how):
    models = {name: _write(tmp_path, name) for name in MODELS}
    x = features(FRAMES, INPUT_DIM, seed=3)
    share = how == "shared copy"
    loaded, said = _load_without_onnx(tmp_path, models, x, share_weights=share,
                                      old_onnxruntime=how == "older onnxruntime")
    for name, (path, keys) in models.items():
        interface, expected = _twin(path, keys, x, share)
        got = loaded[name]
        assert f"{name} {interface.served_kind} {interface.served_output}" in said, name
        assert got["output"].dtype == numpy.float32 and got["output"].tobytes() == expected.tobytes(), name
        bias = interface.logit_bias
        assert got["bias"].tobytes() == (bias.tobytes() if bias is not None else b""), name
        assert got["scores"].tobytes() == neg_log_scores(expected.copy(), interface.served_kind, bias).tobytes(), name
        if interface.served_output == interface.output.name:  # nothing cut: the user's own model ran
            bare = onnxruntime.InferenceSession(path, _options(share), providers=["CPUExecutionProvider"])
            assert got["output"].tobytes() == _run(bare, interface, x, interface.output.name).tobytes(), name
    if share:  # the node's content-addressed copy is what the sessions mapped
        assert [n for n in os.listdir(tmp_path / "cache") if n.endswith(".data")]
    served = dict(line.split(" ", 1) for line in said.splitlines())
    assert served["mlp_probs"].startswith("logits ") and loaded["mlp_probs"]["bias"].size == CLASSES  # cut
    assert served["head_float16_softmax"].endswith(":float32")  # a float16 head: served through a Cast


def test_a_model_onnx_proto_cannot_read_is_a_model_error_naming_it(tmp_path):
    """Without onnx, what sprintiface's reader cannot take is said as a ModelError naming the
    file and what was expected, never an ImportError of onnx."""
    path = tmp_path / "broken.onnx"
    good = build_mlp(INPUT_DIM, CLASSES, (16,), seed=1).SerializeToString()
    path.write_bytes(good[: len(good) // 2])
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from sprintiface.config import load_config\nfrom sprintiface.engine import OnnxEngine\n"
            f"OnnxEngine.from_config(load_config(None, onnx={str(path)!r}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sprintiface.errors.ModelError") and "broken.onnx" in last and "protobuf" in last, last
    assert "ImportError" not in result.stderr and "onnx package" not in result.stderr
