"""Small PyTorch acoustic models, exported with both of torch's ONNX exporters (tests only).

``python tools/torch_models.py OUTDIR`` writes ``<name>.<exporter>.onnx`` for
every model and exporter (``ts``: the TorchScript-based ``dynamo=False``
exporter, opset 17, ``dynamic_axes``; ``dynamo``: ``dynamo=True`` with
``dynamic_shapes``), each from an example input of T = 50 frames as a user's
script would, and ``reference.npz`` with the models' own -log scores in eval
mode on random features of several lengths (key ``<name>:<T>:x`` for the
features, ``<name>:<T>:scores`` for the scores). The tests run it in a child
process, so the test process itself never imports torch.

Every model maps ``(features (B, T, F), lengths (B,))`` to (B, T, C) and ends
in some normalisation over the classes, as exporters write them: LogSoftmax,
Softmax, Softmax -> Log, Cast -> LogSoftmax -> Cast, or plain logits.
"""
from __future__ import annotations

import math
import os
import sys

import numpy
import torch
import torch.nn.functional as functional
from torch import nn

FEATURES, CLASSES, EXAMPLE_FRAMES = 12, 30, 50
LENGTHS = (7, 50, 333)


def _normalise(x, head: str):
    if head == "log_softmax":
        return functional.log_softmax(x, dim=-1)
    if head == "softmax":
        return functional.softmax(x, dim=-1)
    if head == "log_of_softmax":
        return torch.log(torch.softmax(x, dim=-1))
    if head == "log_softmax_double":
        return functional.log_softmax(x.double(), -1).float()
    return x  # logits


def _scores(x, head: str):
    """-log p(c|x) from the model's output of ``head``."""
    if head == "softmax":
        return -torch.log(x)
    if head == "logits":
        return -functional.log_softmax(x, dim=-1)
    return -x


class MLP(nn.Module):
    def __init__(self, head: str, explicit_bias: bool = False):
        super().__init__()
        self.head = head
        self.hidden = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.out = nn.Linear(32, CLASSES, bias=not explicit_bias)
        self.bias = nn.Parameter(0.5 * torch.randn(CLASSES)) if explicit_bias else None

    def forward(self, features, lengths):
        x = self.out(self.hidden(features))
        if self.bias is not None:
            x = x + self.bias
        return _normalise(x, self.head)


class ReturnnMLP(MLP):
    """RETURNN's export layout: inputs data, data:size1; outputs output, output:size1."""

    def forward(self, features, lengths):
        return super().forward(features, lengths), lengths


def _padding(lengths, frames: int):
    return torch.arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)


class BLSTM(nn.Module):
    """A bidirectional LSTM on the padded input, padded frames zeroed (what both exporters take)."""

    head = "log_softmax"

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, 16, batch_first=True, bidirectional=True)
        self.out = nn.Linear(32, CLASSES)

    def forward(self, features, lengths):
        x, _ = self.lstm(features)
        x = x.masked_fill(_padding(lengths, features.shape[1]).unsqueeze(-1), 0.0)
        return functional.log_softmax(self.out(x), dim=-1)


class Conformer(nn.Module):
    """One conformer block (half-step feed-forwards, self-attention with a key padding
    mask from ``lengths``, depthwise convolution) with attention written out."""

    head = "log_softmax"

    def __init__(self, dim: int = 24, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.frontend = nn.Linear(FEATURES, dim)
        self.ff1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.projection = nn.Linear(dim, dim)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.ff2 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.final_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, CLASSES)

    def forward(self, features, lengths):
        padding = _padding(lengths, features.shape[1])
        x = self.frontend(features)
        x = x + 0.5 * self.ff1(x)
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(padding[:, None, None, :],
                                                                                 float("-inf"))
        x = x + self.projection((weights.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
        y = self.conv_norm(x).masked_fill(padding.unsqueeze(-1), 0.0).transpose(1, 2)
        y = functional.silu(self.depthwise(functional.glu(self.pointwise_in(y), dim=1)))
        x = x + self.pointwise_out(y).transpose(1, 2)
        x = self.final_norm(x + 0.5 * self.ff2(x))
        return functional.log_softmax(self.out(x), dim=-1)


#: name -> (model factory, the exporters it is exported with)
MODELS = {
    "mlp_log_softmax": (lambda: MLP("log_softmax"), ("ts", "dynamo")),
    "mlp_softmax": (lambda: MLP("softmax"), ("ts",)),
    "mlp_log_of_softmax": (lambda: MLP("log_of_softmax"), ("ts", "dynamo")),
    "mlp_log_softmax_double": (lambda: MLP("log_softmax_double"), ("ts", "dynamo")),
    "mlp_logits": (lambda: MLP("logits"), ("ts",)),
    "mlp_bias_softmax": (lambda: MLP("softmax", explicit_bias=True), ("dynamo",)),
    "blstm": (BLSTM, ("ts", "dynamo")),
    "conformer": (Conformer, ("ts", "dynamo")),
    "returnn_mlp": (lambda: ReturnnMLP("log_softmax"), ("ts",)),
}


def _names(name: str):
    if name == "returnn_mlp":
        return ["data", "data:size1"], ["output", "output:size1"]
    return ["features", "lengths"], ["output"]


def _inputs(frames: int, seed: int, length_dtype=torch.int64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, FEATURES, generator=generator), torch.full((1,), frames, dtype=length_dtype)


def export(model: nn.Module, name: str, exporter: str, path: str) -> None:
    inputs, outputs = _names(name)
    example = _inputs(EXAMPLE_FRAMES, 0, torch.int32 if name == "returnn_mlp" else torch.int64)
    if exporter == "ts":
        axes = {inputs[0]: {0: "B", 1: "T"}, inputs[1]: {0: "B"}, outputs[0]: {0: "B", 1: "T"}}
        axes.update({extra: {0: "B"} for extra in outputs[1:]})
        torch.onnx.export(model, example, path, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes)
    else:
        batch, time = torch.export.Dim("B", max=1024), torch.export.Dim("T", min=2, max=100000)
        program = torch.onnx.export(model, example, dynamo=True, opset_version=17, input_names=inputs,
                                    output_names=outputs, optimize=True,
                                    dynamic_shapes={"features": {0: batch, 1: time}, "lengths": {0: batch}})
        program.save(path)


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    reference = {}
    for name, (factory, exporters) in MODELS.items():
        torch.manual_seed(1234)
        model = factory().eval()
        head = getattr(model, "head", "log_softmax")
        with torch.no_grad():
            for frames in LENGTHS:
                x, lengths = _inputs(frames, frames, torch.int32 if name == "returnn_mlp" else torch.int64)
                output = model(x, lengths)
                output = output[0] if isinstance(output, tuple) else output
                reference[f"{name}:{frames}:x"] = x[0].numpy()
                reference[f"{name}:{frames}:scores"] = _scores(output, head)[0].double().numpy()
        reference[f"{name}:head"] = numpy.array(head)
        for exporter in exporters:
            export(model, name, exporter, os.path.join(outdir, f"{name}.{exporter}.onnx"))
    numpy.savez(os.path.join(outdir, "reference.npz"), **reference)


if __name__ == "__main__":
    main(sys.argv[1])
