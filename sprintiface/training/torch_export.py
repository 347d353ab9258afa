"""What the torch trainer writes after an epoch: the checkpoint and the ONNX model.

``<model>.<epoch:03d>.pt``: a ``torch.save`` dict (:data:`CHECKPOINT_FORMAT`)
with the model's state_dict, the optimizer's and the scheduler's (None without
one), the number of optimizer steps so far, the epoch and torch's RNG state.

``<model>.<epoch:03d>.onnx``: the model as the feature scorer runs it::

    data        float32 [B, T, F]   features
    data:size1  int32   [B]         frames per sequence (RETURNN's name)
    output      float32 [B, T, C]   log-softmax over the classes

B and T are dynamic (a model that gives fewer frames than it gets declares an
output axis ``T_out`` of its own; the scorer needs one output frame per input
frame). Frames past ``data:size1`` are zeroed before the model sees them, as
they are in the trainer's padded batches. Before the file is
written, the export runs in ONNX Runtime on shapes other than the traced
example (B = 1 through an IOBinding with a preallocated output, as the scorer
runs it, and a padded batch of 3) and must give the PyTorch model's eval-mode
log-probabilities: an exporter that baked the example's T into the graph, or a
model whose Python control flow the trace froze, is caught here.

Two exporters (config key ``onnx_exporter``): ``torchscript``
(``torch.onnx.export(dynamo=False)``; the default: about 0.25 s for a small
BLSTM, and it keeps T dynamic) and ``dynamo`` (``torch.export``; about 5 s, and
in torch 2.13 it declares the traced T in the output shape of an LSTM model,
which this module rewrites to [B, T, C]). Both files are written under a
temporary name and renamed when complete.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, cast

import numpy
import torch

from sprintiface._files import atomic_write
from sprintiface.errors import TrainerError

if TYPE_CHECKING:
    import onnx

FEATURES, LENGTHS, OUTPUT = "data", "data:size1", "output"
#: Opset of torchscript exports (ONNX Runtime >= 1.13 runs it); dynamo exports use its default.
OPSET = 17
#: Traced example: B = 2 and lengths no check below uses (torch.export specialises sizes 0 and 1).
EXAMPLE_LENGTHS = (23, 15)
#: Checks: one sequence as the scorer feeds it, and a padded batch.
CHECK_SINGLE, CHECK_BATCH = 37, (41, 29, 6)
CHECK_TOLERANCE = 1e-3
CHECKPOINT_FORMAT = "sprintiface-torch-checkpoint-1"


class ScorerView(torch.nn.Module):
    """``model`` as the scorer runs it: (B, T, F) features and int32 (B,) lengths to
    (B, T, C) log-probabilities; frames past each length are zeroed first."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, data: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = torch.arange(data.shape[1], device=data.device)
        mask = (frames[None, :] < lengths[:, None]).unsqueeze(-1).to(data.dtype)
        return torch.log_softmax(self.model(data * mask, lengths), dim=-1)


def _example(input_dim: int, lengths: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(len(lengths), max(lengths), input_dim, generator=generator)
    return data, torch.tensor(lengths, dtype=torch.int32)


def _trace(view: ScorerView, input_dim: int, exporter: str) -> tuple[onnx.ModelProto, list[str]]:
    """The ModelProto of ``view`` by ``exporter``, and the warnings the exporter gave."""
    import onnx

    example = _example(input_dim, EXAMPLE_LENGTHS, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if exporter == "torchscript":
            buffer = io.BytesIO()
            # cast: torch annotates a path here, and its torchscript exporter writes to a file object too
            torch.onnx.export(view, example, cast(Any, buffer), dynamo=False, opset_version=OPSET,
                              input_names=[FEATURES, LENGTHS], output_names=[OUTPUT],
                              dynamic_axes={FEATURES: {0: "B", 1: "T"}, LENGTHS: {0: "B"},
                                            OUTPUT: {0: "B", 1: "T"}})
            proto = onnx.load_from_string(buffer.getvalue())
        else:
            batch, frames = torch.export.Dim("B"), torch.export.Dim("T")
            program = torch.onnx.export(view, example, None, dynamo=True, input_names=[FEATURES, LENGTHS],
                                        output_names=[OUTPUT], verbose=False,
                                        dynamic_shapes={"data": {0: batch, 1: frames}, "lengths": {0: batch}})
            assert program is not None  # the dynamo exporter returns its ONNXProgram
            proto = program.model_proto
    noted = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, DeprecationWarning)]
    return proto, noted


def _declare_dynamic_output(proto: onnx.ModelProto, keeps_frames: bool) -> None:
    """Declare the output [B, T, C] with the feature input's B and T (a T of its own,
    ``T_out``, for a model that gives fewer frames than it gets), and drop the
    graph's intermediate shape hints: an exporter may have baked the example's T
    into them, and ONNX Runtime refuses a preallocated output that disagrees."""
    features = next(value for value in proto.graph.input if value.name == FEATURES)
    batch, frames = (dim.dim_param for dim in features.type.tensor_type.shape.dim[:2])
    names = (batch or "B", (frames or "T") if keeps_frames else "T_out")
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for index, name in enumerate(names[:len(dims)]):
            dims[index].Clear()
            dims[index].dim_param = name
    del proto.graph.value_info[:]


def _check_against_torch(serialized: bytes, view: ScorerView, input_dim: int, keeps_frames: bool, what: str,
                         noted: list[str]) -> None:
    """Raise TrainerError unless ONNX Runtime gives ``view``'s log-probabilities on shapes
    other than the traced example's (all real frames; of a downsampling model, the
    sequences without padding)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise TrainerError(f"{what}: ONNX Runtime cannot load the export: {error}") from None
    problems = []
    for lengths in ((CHECK_SINGLE,), CHECK_BATCH):
        data, sizes = _example(input_dim, lengths, seed=2)
        with torch.no_grad():
            expected = view(data, sizes).numpy()
        try:
            if len(lengths) == 1:  # the scorer's way: the output bound to a block of its own
                got = numpy.empty_like(expected)
                binding = session.io_binding()
                binding.bind_cpu_input(FEATURES, data.numpy())
                binding.bind_cpu_input(LENGTHS, sizes.numpy())
                binding.bind_output(OUTPUT, "cpu", 0, numpy.float32, list(got.shape), got.ctypes.data)
                session.run_with_iobinding(binding)
            else:
                (got,) = session.run([OUTPUT], {FEATURES: data.numpy(), LENGTHS: sizes.numpy()})
        except Exception as error:
            problems.append(f"on B={len(lengths)}, T={max(lengths)} ONNX Runtime failed: {error}")
            continue
        if got.shape != expected.shape:
            problems.append(f"on B={len(lengths)}, T={max(lengths)} it gave shape {got.shape}, PyTorch "
                            f"{expected.shape}")
            continue
        if keeps_frames:
            valid = numpy.arange(max(lengths))[None, :] < numpy.array(lengths)[:, None]
        else:
            valid = numpy.zeros(got.shape[:2], dtype=bool)
            valid[numpy.array(lengths) == max(lengths)] = True
        difference = float(numpy.abs(got[valid] - expected[valid]).max())
        if not difference <= CHECK_TOLERANCE:
            problems.append(f"on B={len(lengths)}, T={max(lengths)} its log-probabilities differ from "
                            f"PyTorch's by up to {difference:.3g}")
    if problems:
        hints = "".join(f"\n  exporter said: {text}" for text in noted[:5])
        raise TrainerError(f"{what} does not compute what the PyTorch model computes: {'; '.join(problems)}. "
                           f"Shapes or Python control flow may have been frozen at the traced example "
                           f"(B={len(EXAMPLE_LENGTHS)}, T={max(EXAMPLE_LENGTHS)}); try the other onnx_exporter "
                           f"(torchscript, dynamo), or keep tensor-dependent decisions out of forward().{hints}")


def export_onnx(model: torch.nn.Module, path: str, input_dim: int, exporter: str = "torchscript") -> None:
    """Write ``model`` (the plain module, not DistributedDataParallel) to ``path`` as the
    scorer runs it (see the module docstring), checked first; the model's mode is restored."""
    what = f"the ONNX export {path!r} ({exporter})"
    check_finite_state({"model": dict(model.named_parameters())}, f"(the ONNX export {path!r} is not written)")
    training = model.training
    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        import copy

        model = copy.deepcopy(model).cpu()  # traced and checked on the CPU, where the scorer runs it
    view = ScorerView(model)
    try:
        view.eval()
        data, lengths = _example(input_dim, EXAMPLE_LENGTHS, seed=1)
        with torch.no_grad():
            keeps_frames = view(data, lengths).shape[1] == data.shape[1]
        try:
            proto, noted = _trace(view, input_dim, exporter)
        except Exception as error:
            raise TrainerError(f"{what} failed: {type(error).__name__}: {error}") from error
        view.eval()  # the exporter restores the mode it found; the check compares with eval mode
        _declare_dynamic_output(proto, keeps_frames)
        try:
            serialized = proto.SerializeToString()
        except ValueError as error:  # over protobuf's 2 GB
            raise TrainerError(f"{what}: the model does not fit one ONNX file (2 GB): {error}") from None
        _check_against_torch(serialized, view, input_dim, keeps_frames, what, noted)
    finally:
        model.train(training)
    _make_directory(path)
    with atomic_write(path) as file:
        file.write(serialized)


def _first_non_finite(tensor: torch.Tensor) -> Optional[str]:
    """None when ``tensor`` is finite (or not floating point), else what and where is not."""
    if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    finite = torch.isfinite(tensor.detach())
    if bool(finite.all()):
        return None
    bad = ~finite
    count = int(bad.sum())
    where = tuple(int(i) for i in bad.nonzero()[0].tolist())
    value = float(tensor.detach()[where].real) if tensor.is_complex() else float(tensor.detach()[where])
    shape = "x".join(map(str, tensor.shape)) or "scalar"
    return f"{count} of its {tensor.numel()} values ({shape}) are not finite, the first {value} at index " \
           f"{list(where)}"


def check_finite_state(state: dict[str, Any], what: str, buffers: Iterable[str] = ()) -> None:
    """TrainerError naming the first parameter (or buffer, or optimizer state) of a checkpoint
    ``state`` (:data:`CHECKPOINT_FORMAT`'s dict) that holds a NaN or an infinity."""
    buffers = set(buffers)
    found = []
    for name, tensor in (state.get("model") or {}).items():
        problem = _first_non_finite(tensor)
        if problem:
            found.append(f"{'buffer' if name in buffers else 'parameter'} {name!r}: {problem}")
    optimizer = state.get("optimizer") or {}
    for index, entries in (optimizer.get("state") or {}).items():
        for key, tensor in entries.items():
            problem = _first_non_finite(tensor)
            if problem:
                found.append(f"optimizer state {key!r} of parameter #{index}: {problem}")
    if found:
        more = f" (and {len(found) - 1} more: {', '.join(text.split(':')[0] for text in found[1:4])}" \
               f"{', ...' if len(found) > 4 else ''})" if len(found) > 1 else ""
        raise TrainerError(f"the model is not finite {what}: {found[0]}{more}. Training diverged: lower "
                           f"learning_rate (or what get_learning_rate returns), clip gradients or check the loss "
                           f"of train_step, then restart: the job continues after the last finished epoch")


def write_checkpoint(path: str, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` (plus the format tag) to ``path``, complete or absent;
    TrainerError (and nothing written) when a tensor of it is not finite."""
    check_finite_state(state, f"(checkpoint {path!r} is not written)")
    _make_directory(path)
    with atomic_write(path) as file:
        torch.save(dict(state, format=CHECKPOINT_FORMAT), file)


def read_checkpoint(path: str, device: torch.device, why: str) -> dict[str, Any]:
    """The checkpoint at ``path``, tensors on ``device``; TrainerError naming ``why`` it is read."""
    if not os.path.isfile(path):
        raise TrainerError(f"{why}, but its checkpoint {path!r} does not exist (working directory "
                           f"{os.getcwd()!r})")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise TrainerError(f"{why}, but its checkpoint {path!r} cannot be read: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainerError(f"{why}, but {path!r} is not a sprintiface torch checkpoint "
                           f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    return state


def _make_directory(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
