"""The fault table: bad models, priors and configs end RASR's scorer calls in a library error.

Each case replays RASR's calls (tests/rasr_scorer_replay.py) in its own process
on a faulty file or config and must end as RASR would see a clean refusal:
return code 1, a SprintifaceError of the expected type whose message names the
key, file or parameter at fault, raised at the module's or the scorer's init
(before RASR sends a frame) — never a crash, never a generic Python error,
never a run that goes through.
"""
import json
import os
import subprocess
import sys
from typing import NamedTuple, Optional

import numpy
import pytest
from conftest import onnx_model
from onnx_models import build_mlp, save_model

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rasr_scorer_replay.py")
INPUT_DIM, OUTPUT_DIM = 12, 30


class Fault(NamedTuple):
    """``config``: the pymod-config ({d} is the folder of the faulty files); ``error``: the
    SprintifaceError subclass expected; ``names``: what its message must contain ({d} too);
    ``wrongly``: what the message must not say; ``bug``: why the case fails today (a strict
    xfail), or None."""
    config: str
    error: str
    names: tuple[str, ...]
    dims: tuple[int, int] = (INPUT_DIM, OUTPUT_DIM)
    bug: Optional[str] = None
    wrongly: tuple[str, ...] = ()


NOT_AT_LOAD = "refused only at the first compute() (ModelError from the run), not when the model is loaded"

FAULTS = {
    # -- models
    "model random bytes": Fault("onnx:{d}/random.onnx", "ModelError", ("{d}/random.onnx",)),
    "model bytes flipped in the header": Fault("onnx:{d}/flipped_head.onnx", "ModelError", ("{d}/flipped_head.onnx",)),
    "model bytes flipped in the tail": Fault("onnx:{d}/flipped_tail.onnx", "ModelError", ("{d}/flipped_tail.onnx",)),
    "model truncated": Fault("onnx:{d}/truncated.onnx", "ModelError", ("{d}/truncated.onnx",)),
    "model empty file": Fault("onnx:{d}/empty.onnx", "ModelError", ("{d}/empty.onnx",)),
    "model is a directory": Fault(
        "onnx:{d}/models.d", "ConfigError", ("'onnx'", "{d}/models.d", "director"), wrongly=("no such file",)),
    "wrong input_dim": Fault("onnx:{d}/good.onnx", "ModelError", ("feature-dimension", "13"),
                             dims=(INPUT_DIM + 1, OUTPUT_DIM)),
    "wrong output_dim": Fault("onnx:{d}/good.onnx", "ModelError", ("output dimension", "31"),
                              dims=(INPUT_DIM, OUTPUT_DIM + 1)),
    "model with two float inputs": Fault("onnx:{d}/two_inputs.onnx", "ModelError", ("input_name",)),
    "output pooled over time [B, 1, C]": Fault("onnx:{d}/pooled.onnx", "ModelError", ("{d}/pooled.onnx",)),
    "output pooled over time [B, C]": Fault("onnx:{d}/pooled_rank2.onnx", "ModelError", ("{d}/pooled_rank2.onnx",)),
    "output subsampled in time": Fault("onnx:{d}/subsampled.onnx", "ModelError", ("{d}/subsampled.onnx",)),
    "opset 11 softmax over T x C": Fault(
        "onnx:{d}/softmax_opset11.onnx", "ModelError", ("{d}/softmax_opset11.onnx", "Softmax")),
    # -- priors
    "prior wrong length": Fault("onnx:{d}/good.onnx,prior_file:{d}/short.txt", "PriorError", ("{d}/short.txt", "30")),
    "prior with NaN": Fault("onnx:{d}/good.onnx,prior_file:{d}/nan.txt", "PriorError", ("{d}/nan.txt", "nan")),
    "prior complex npy": Fault(
        "onnx:{d}/good.onnx,prior_file:{d}/complex.npy", "PriorError", ("{d}/complex.npy", "complex")),
    "prior npy of numeric strings": Fault(
        "onnx:{d}/good.onnx,prior_file:{d}/numeric_strings.npy", "PriorError", ("{d}/numeric_strings.npy",)),
    "prior npy of words": Fault(
        "onnx:{d}/good.onnx,prior_file:{d}/words.npy", "PriorError", ("{d}/words.npy",)),
    "prior object array": Fault("onnx:{d}/good.onnx,prior_file:{d}/objects.npy", "PriorError", ("{d}/objects.npy",)),
    "prior 2-D npy": Fault("onnx:{d}/good.onnx,prior_file:{d}/matrix.npy", "PriorError", ("{d}/matrix.npy", "(5, 6)")),
    "prior empty file": Fault("onnx:{d}/good.onnx,prior_file:{d}/empty_prior.txt", "PriorError",
                              ("{d}/empty_prior.txt",)),
    "prior XML with wrong size": Fault("onnx:{d}/good.onnx,prior_file:{d}/wrong_size.xml", "PriorError",
                                       ("{d}/wrong_size.xml", 'size="29"')),
    "prior probabilities given as log": Fault("onnx:{d}/good.onnx,prior_file:{d}/probabilities.txt", "PriorError",
                                              ("{d}/probabilities.txt", "prior_space:prob")),
    "prior is a directory": Fault(
        "onnx:{d}/good.onnx,prior_file:{d}/priors.d", "ConfigError", ("'prior_file'", "{d}/priors.d", "director"),
        wrongly=("no such file",)),
    # -- configs
    "config unknown key": Fault("onnx:{d}/good.onnx,prior_scael:0.5", "ConfigError", ("'prior_scael'",)),
    "config buffer_size 0": Fault(
        "onnx:{d}/good.onnx,buffer_size:0", "ConfigError", ("'buffer_size'",)),
    "config buffer_size -5": Fault("onnx:{d}/good.onnx,buffer_size:-5", "ConfigError", ("'buffer_size'", "-5")),
    "config intra_op_threads -1": Fault("onnx:{d}/good.onnx,intra_op_threads:-1", "ConfigError",
                                        ("'intra_op_threads'", "-1")),
    "configfile is a directory": Fault(
        "onnx:{d}/good.onnx,configfile:{d}/config.d", "ConfigError", ("'configfile'", "{d}/config.d")),
    "configfile invalid UTF-8": Fault(
        "configfile:{d}/latin1.toml", "ConfigError", ("'configfile'", "{d}/latin1.toml", "UTF-8")),
    "configfile invalid TOML": Fault("configfile:{d}/broken.toml", "ConfigError", ("'configfile'", "{d}/broken.toml",
                                                                                   "TOML")),
    "configfile is a RETURNN config": Fault(
        "configfile:{d}/returnn.config", "ConfigError", ("{d}/returnn.config", "RETURNN", "TOML")),
}


def _model_files(folder: str) -> None:
    from onnx import TensorProto, helper, numpy_helper

    good = os.path.join(folder, "good.onnx")
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (16,), seed=1), good)
    with open(good, "rb") as file:
        data = file.read()
    rng = numpy.random.default_rng(0)
    with open(os.path.join(folder, "random.onnx"), "wb") as file:
        file.write(rng.bytes(len(data)))
    # Bytes flipped where the graph's structure is (a model whose flips fall in weights
    # alone still loads: that is a different model, not a fault).
    for name, start, stop in (("flipped_head", 0, 200), ("flipped_tail", len(data) - 300, len(data))):
        flipped = bytearray(data)
        for index in numpy.random.default_rng(1).integers(start, stop, 8):
            flipped[index] ^= 0x5A
        with open(os.path.join(folder, f"{name}.onnx"), "wb") as file:
            file.write(bytes(flipped))
    with open(os.path.join(folder, "truncated.onnx"), "wb") as file:
        file.write(data[:len(data) // 2])
    open(os.path.join(folder, "empty.onnx"), "wb").close()
    os.mkdir(os.path.join(folder, "models.d"))

    weight = numpy_helper.from_array(rng.standard_normal((INPUT_DIM, OUTPUT_DIM)).astype(numpy.float32), "W")
    features = [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", INPUT_DIM])]

    def save(name, nodes, output_shape, inputs=features, initializers=(), opset=17):
        graph = helper.make_graph(nodes, name, inputs,
                                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
                                  initializer=[weight, *initializers])
        save_model(onnx_model(graph, opset=opset), os.path.join(folder, f"{name}.onnx"))

    matmul = helper.make_node("MatMul", ["data", "W"], ["mm"])
    softmax = helper.make_node("Softmax", ["pooled"], ["output"], axis=-1)
    save("pooled", [matmul, helper.make_node("ReduceMean", ["mm"], ["pooled"], axes=[1], keepdims=1), softmax],
         ["B", 1, OUTPUT_DIM])
    save("pooled_rank2", [matmul, helper.make_node("ReduceMean", ["mm"], ["pooled"], axes=[1], keepdims=0),
                          softmax], ["B", OUTPUT_DIM])
    slice_args = [numpy_helper.from_array(numpy.array([value], numpy.int64), name)
                  for value, name in ((0, "starts"), (2**62, "ends"), (1, "axes"), (2, "steps"))]
    save("subsampled", [helper.make_node("Slice", ["data", "starts", "ends", "axes", "steps"], ["every_2nd"]),
                        helper.make_node("MatMul", ["every_2nd", "W"], ["mm"]),
                        helper.make_node("Softmax", ["mm"], ["output"], axis=-1)],
         ["B", "T2", OUTPUT_DIM], initializers=slice_args)
    # Before opset 13, Softmax(axis=1) of [B, T, C] normalises each batch entry over T x C.
    save("softmax_opset11", [matmul, helper.make_node("Softmax", ["mm"], ["output"], axis=1)],
         ["B", "T", OUTPUT_DIM], opset=11)
    two = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", "T", INPUT_DIM]) for name in ("a", "b")]
    save("two_inputs", [helper.make_node("Add", ["a", "b"], ["data"]), matmul,
                        helper.make_node("Softmax", ["mm"], ["output"], axis=-1)], ["B", "T", OUTPUT_DIM], inputs=two)


def _prior_files(folder: str) -> None:
    log_prior = numpy.log(numpy.full(OUTPUT_DIM, 1.0 / OUTPUT_DIM))

    def text(name, values):
        with open(os.path.join(folder, name), "w") as file:
            file.write("\n".join(str(v) for v in values) + "\n")

    text("short.txt", log_prior[:-1])
    text("nan.txt", [*log_prior[:-1], float("nan")])
    text("probabilities.txt", numpy.exp(log_prior))
    open(os.path.join(folder, "empty_prior.txt"), "w").close()
    numpy.save(os.path.join(folder, "complex.npy"), log_prior.astype(numpy.complex64) + 1j)
    numpy.save(os.path.join(folder, "numeric_strings.npy"), numpy.array([f"{v}" for v in log_prior]))
    numpy.save(os.path.join(folder, "words.npy"), numpy.array(["log-prior"] * OUTPUT_DIM))
    numpy.save(os.path.join(folder, "objects.npy"), log_prior.astype(object), allow_pickle=True)
    numpy.save(os.path.join(folder, "matrix.npy"), log_prior.reshape(5, 6))
    with open(os.path.join(folder, "wrong_size.xml"), "w") as file:
        file.write('<?xml version="1.0" encoding="UTF-8"?>\n<vector-f32 size="29">\n'
                   + " ".join(str(v) for v in log_prior) + "\n</vector-f32>\n")
    os.mkdir(os.path.join(folder, "priors.d"))


def _config_files(folder: str) -> None:
    good = os.path.join(folder, "good.onnx")
    os.mkdir(os.path.join(folder, "config.d"))
    with open(os.path.join(folder, "latin1.toml"), "wb") as file:
        file.write(f'onnx = "{good}"\n# Gr\xfc\xdfe\n'.encode("latin-1"))
    with open(os.path.join(folder, "broken.toml"), "w") as file:
        file.write(f'onnx = "{good}"\nprior_scale = = 0.5\n')
    with open(os.path.join(folder, "returnn.config"), "w") as file:
        file.write("#!rnn.py\nimport os\n\nuse_tensorflow = True\nnum_outputs = {'classes': [30, 1]}\n"
                   "network = {'output': {'class': 'softmax', 'from': ['data']}}\nmodel = 'net-model/network'\n")


@pytest.fixture(scope="module")
def fault_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("faults"))
    _model_files(folder)
    _prior_files(folder)
    _config_files(folder)
    return folder


def _cases():
    return [pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=f"bug: {fault.bug}")] if fault.bug else [],
                         id=name.replace(" ", "-")) for name, fault in FAULTS.items()]


@pytest.mark.parametrize("case", _cases())
def test_fault_ends_in_a_library_error_naming_it(case, fault_folder, tmp_path):
    fault = FAULTS[case]
    config = fault.config.format(d=fault_folder)
    process = subprocess.run([sys.executable, SCRIPT, config, *map(str, fault.dims)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode >= 0, f"{case}: the process crashed (signal {-process.returncode})\n{process.stderr}"
    reports = [line for line in process.stderr.splitlines() if line.startswith("replay-error: ")]
    assert process.returncode == 1 and reports, (
        f"{case}: expected a {fault.error}, but the replay went through (rc {process.returncode})\n"
        f"{process.stdout[-2000:]}\n{process.stderr[-3000:]}")
    report = json.loads(reports[-1][len("replay-error: "):])
    raised = f"{report['module']}.{report['type']} in {report['call']}(): {report['message']}"
    assert report["library_error"], f"{case}: not a library error: {raised}"
    assert report["type"] == fault.error, f"{case}: expected {fault.error}, got {raised}"
    missing = [name for name in (n.format(d=fault_folder) for n in fault.names) if name not in report["message"]]
    assert not missing, f"{case}: the message does not name {missing}: {raised}"
    wrong = [text for text in fault.wrongly if text in report["message"]]
    assert not wrong, f"{case}: the message says {wrong}: {raised}"
    assert report["call"] in ("module init", "init"), f"{case}: refused only at {report['call']}(): {raised}"
