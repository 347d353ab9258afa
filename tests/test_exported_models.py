"""Models from torch.onnx.export, both exporters, load with ``onnx:`` alone and score
like the PyTorch model they came from (eval mode), through RASR's calls.

The models are exported by tools/torch_models.py in a child process (torch stays
out of this one). Needs torch: ``pip install torch==2.13.0 onnxscript``.
"""
import importlib.util
import os
import re
import subprocess
import sys

import numpy
import pytest
from conftest import make_engine, rasr_scorer, score_segment

from sprintiface import ModelError
from sprintiface.cli import main

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
pytestmark = pytest.mark.torch

EXPORTS = [("mlp_log_softmax", "ts"), ("mlp_log_softmax", "dynamo"), ("mlp_softmax", "ts"),
           ("mlp_log_of_softmax", "ts"), ("mlp_log_of_softmax", "dynamo"), ("mlp_log_softmax_double", "ts"),
           ("mlp_log_softmax_double", "dynamo"), ("mlp_logits", "ts"), ("mlp_bias_softmax", "dynamo"),
           ("blstm", "ts"), ("blstm", "dynamo"), ("conformer", "ts"), ("conformer", "dynamo"),
           ("returnn_mlp", "ts")]
KIND_OF_HEAD = {"log_softmax": "log_probs", "softmax": "probs", "log_of_softmax": "log_probs",
                "log_softmax_double": "log_probs", "logits": "logits"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnxscript") is None:
        pytest.skip("needs torch and onnxscript: pip install torch==2.13.0 onnxscript")
    outdir = tmp_path_factory.mktemp("torch-models")
    result = subprocess.run([sys.executable, os.path.join(TOOLS, "torch_models.py"), str(outdir)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    with numpy.load(outdir / "reference.npz") as reference:
        return outdir, dict(reference)


@pytest.mark.parametrize("name, exporter", EXPORTS)
def test_scores_like_the_pytorch_model(exported, name, exporter):
    outdir, reference = exported
    path = str(outdir / f"{name}.{exporter}.onnx")
    head = str(reference[f"{name}:head"])
    config = f"onnx:{path},log_level:warning" + (",output_kind:logits" if head == "logits" else "")
    scorer = rasr_scorer(config, 12, 30)
    for frames in (7, 50, 333):  # the example length, and others: no stale declared shapes
        got = score_segment(scorer, reference[f"{name}:{frames}:x"])
        numpy.testing.assert_allclose(got, reference[f"{name}:{frames}:scores"], rtol=1e-4, atol=1e-4,
                                      err_msg=f"{name}.{exporter} at T={frames}")
    engine = make_engine(path, output_kind="logits" if head == "logits" else "auto")
    assert engine.interface.output_kind == KIND_OF_HEAD[head]
    # every normalisation the exporters write is cut and applied in place
    assert engine.kind == "logits"


@pytest.mark.parametrize("name, exporter", [("blstm", "dynamo"), ("mlp_log_softmax_double", "dynamo"),
                                            ("conformer", "ts")])
def test_check_model_takes_the_scorers_path(exported, name, exporter, capsys):
    outdir, _ = exported
    assert main(["check-model", str(outdir / f"{name}.{exporter}.onnx"), "--input-dim", "12",
                 "--output-dim", "30"]) == 0
    assert "python-feature-scorer-output-dimension = 30" in capsys.readouterr().out


def test_logits_need_output_kind(exported):
    outdir, _ = exported
    with pytest.raises(ModelError, match=r"cannot tell what output 'output' holds.*set output_kind"):
        rasr_scorer(f"onnx:{outdir / 'mlp_logits.ts.onnx'}", 12, 30)


EXPORT_WITH_ARGUMENT_NAMES = """
import sys, torch
class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 30)
    def forward(self, features, {name}):
        mask = (torch.arange(features.shape[1])[None, :] < {name}[:, None]).unsqueeze(-1)
        return torch.log_softmax(self.linear(features * mask), dim=-1)
torch.manual_seed(0)
batch, time = torch.export.Dim("B"), torch.export.Dim("T")
shapes = {{"features": {{0: batch, 1: time}}, "{name}": {{0: batch}}}}
program = torch.onnx.export(Head().eval(), (torch.zeros(2, 50, 12), torch.tensor([50, 40])), dynamo=True,
                            opset_version=17, dynamic_shapes=shapes)
program.save(sys.argv[1])
"""


@pytest.mark.parametrize("name, fed", [("audio_features_len", True), ("seq_len", True), ("speaker_id", False)])
def test_the_dynamo_exporter_names_inputs_by_the_forward_arguments(tmp_path, name, fed):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnxscript") is None:
        pytest.skip("needs torch and onnxscript: pip install torch==2.13.0 onnxscript")
    path = str(tmp_path / "head.onnx")
    result = subprocess.run([sys.executable, "-c", EXPORT_WITH_ARGUMENT_NAMES.format(name=name), path],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if fed:
        assert make_engine(path).interface.length_input.name == name
        rasr_scorer(f"onnx:{path},log_level:warning", 12, 30)
    else:
        with pytest.raises(ModelError, match=rf"'{name}' int64 \[B\] are not the sequence length by their name.*"
                                             rf"set length_name:{name}"):
            rasr_scorer(f"onnx:{path}", 12, 30)
        assert make_engine(path, length_name=name).interface.length_input.name == name


#: docs/models.md's export call run on a model of the shape it assumes: (B, T, 40) features and
#: their lengths to log-probabilities (30 classes here); the PyTorch model's scores are kept.
EXPORT_AS_MODELS_MD = """
import sys

import numpy
import torch


class AM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(40, 30)

    def forward(self, features, lengths):
        mask = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        return torch.log_softmax(self.linear(features * mask), dim=-1)


torch.manual_seed(0)
model = AM().eval()
exec(sys.argv[1])  # the page's block: writes am.onnx into the working directory
features = numpy.random.default_rng(0).standard_normal((57, 40)).astype(numpy.float32)
with torch.no_grad():
    scores = -model(torch.from_numpy(features)[None], torch.tensor([57]))[0].numpy()
numpy.savez("reference.npz", features=features, scores=scores)
"""


def test_the_export_call_of_models_md_gives_a_model_that_scores(tmp_path):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnxscript") is None:
        pytest.skip("needs torch and onnxscript: pip install torch==2.13.0 onnxscript")
    page = os.path.join(os.path.dirname(TOOLS), "docs", "models.md")
    with open(page, encoding="utf-8") as file:
        (block,) = re.findall(r"```python\n(torch\.onnx\.export\(.*?)```", file.read(), re.S)
    result = subprocess.run([sys.executable, "-c", EXPORT_AS_MODELS_MD, block], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with numpy.load(tmp_path / "reference.npz") as reference:
        scorer = rasr_scorer(f"onnx:{tmp_path / 'am.onnx'},log_level:warning", 40, 30)
        numpy.testing.assert_allclose(score_segment(scorer, reference["features"]), reference["scores"],
                                      rtol=1e-4, atol=1e-4)
