"""The ONNX engine: one ONNX Runtime session for a frame-synchronous acoustic model.

What it accepts:

- a feature input of shape [B, T, F] (B = 1 is fed) or [T, F], float32;
- optionally a sequence-length input of shape [B] or [] (int32/int64), fed T
  (RETURNN exports call it ``data:size1``, RASR's ONNX scorer ``features-size``);
- an output of shape [B, T, C] or [T, C], float32.

Names are detected when unambiguous, else given by ``input_name``,
``length_name``, ``output_name``.

What the output holds (``output_kind``) decides how it becomes a -log score.
When the output is made by a final Softmax or LogSoftmax over the class axis,
that node is cut off and the engine serves its input, the logits: the scorer
then applies -log_softmax in place (sprintiface._buffers / csrc), which is
both cheaper (no T x C temporary inside ONNX Runtime, no log of an underflowed
probability) and numerically better than -log(softmax(x)).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy

from sprintiface.errors import ModelError

#: Frames of the warm-up run at load time (so the first segment is not slow).
WARMUP_FRAMES = 16

_FLOAT = 1  # onnx.TensorProto.FLOAT
_INT32 = 6
_INT64 = 7
_INTEGER_TYPES = {_INT32: numpy.int32, _INT64: numpy.int64}
_OUTPUT_KIND_OF_OP = {"Softmax": "probs", "LogSoftmax": "log_probs"}


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type (onnx.TensorProto enum) and shape (int, str or None per axis)."""

    name: str
    elem_type: int
    shape: Optional[Tuple[object, ...]]

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        import onnx

        type_name = onnx.TensorProto.DataType.Name(self.elem_type) if self.elem_type else "?"
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name!r} {type_name.lower()} {shape}"


def _tensor_info(value_info) -> TensorInfo:
    tensor_type = value_info.type.tensor_type
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(
            dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
            for dim in tensor_type.shape.dim
        )
    return TensorInfo(value_info.name, tensor_type.elem_type, shape)


@dataclass(frozen=True)
class ModelInterface:
    """What the engine found out about a model (see ``OnnxEngine.describe``)."""

    path: str
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    feature_input: TensorInfo
    length_input: Optional[TensorInfo]
    output: TensorInfo
    output_op: Optional[str]
    output_kind: str      # what the model's output holds (probs, log_probs, logits, scores)
    served_kind: str      # what the session returns after a final Softmax/LogSoftmax is cut
    served_output: str    # name of the tensor the session returns
    logit_bias: Optional[numpy.ndarray]  # float32 (C,): a final bias Add cut with the softmax
    input_dim: Optional[int]
    output_dim: Optional[int]


def _pick(candidates, given: Optional[str], what: str, key: str, all_tensors) -> Optional[TensorInfo]:
    names = ", ".join(t.describe() for t in all_tensors) or "none"
    if given is not None:
        for tensor in all_tensors:
            if tensor.name == given:
                return tensor
        raise ModelError(f"{key}={given!r}: the model has no such {what}; it has {names}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    raise ModelError(
        f"the model has several candidates for the {what} ({', '.join(t.describe() for t in candidates)}); "
        f"set {key} to one of them")


def _require_float(tensors, given: Optional[str], what: str, key: str, shape: str, path: str) -> TensorInfo:
    """The float32 rank-2/3 tensor named ``given``, or the only one there is."""
    candidates = [t for t in tensors if t.elem_type == _FLOAT and t.rank in (2, 3)]
    tensor = _pick(candidates, given, what, key, tensors)
    if tensor is None:
        raise ModelError(f"ONNX model {path!r}: no float32 {what} of shape {shape}; it has "
                         f"{', '.join(t.describe() for t in tensors) or 'none'}")
    if tensor.elem_type != _FLOAT or tensor.rank not in (2, 3):
        raise ModelError(f"ONNX model {path!r}: {what} {tensor.describe()} must be float32 of shape {shape}")
    return tensor


def inspect_model(path: str, input_name=None, output_name=None, length_name=None, output_kind="auto"):
    """Read ``path`` and decide how to feed it and read it.

    Returns ``(interface, model_bytes_or_None)``: bytes of the rewritten model
    when a final Softmax/LogSoftmax was cut, else None (load the file as is).
    """
    import onnx

    try:
        model = onnx.load(path)
    except FileNotFoundError:
        raise ModelError(f"ONNX model {path!r} does not exist") from None
    except Exception as error:  # onnx raises DecodeError, OSError, ValueError, ...
        raise ModelError(f"ONNX model {path!r} cannot be read: {error}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in graph.output)

    feature_input = _require_float(inputs, input_name, "feature input", "input_name", "[B, T, F] or [T, F]", path)
    integer_inputs = [t for t in inputs if t.elem_type in _INTEGER_TYPES and t.rank in (0, 1)]
    length_input = _pick(integer_inputs, length_name, "sequence-length input", "length_name", inputs)
    if length_input is not None and (length_input.elem_type not in _INTEGER_TYPES or length_input.rank not in (0, 1)):
        raise ModelError(
            f"ONNX model {path!r}: length input {length_input.describe()} must be int32/int64 of shape [B] or []")
    fed = {feature_input.name} | ({length_input.name} if length_input else set())
    unfed = [t for t in inputs if t.name not in fed]
    if unfed:
        raise ModelError(
            f"ONNX model {path!r}: input(s) {', '.join(t.describe() for t in unfed)} are neither the features "
            f"nor the sequence length, and sprintiface cannot feed them")

    output = _require_float(outputs, output_name, "output", "output_name", "[B, T, C] or [T, C]", path)

    producer = next((node for node in graph.node if output.name in node.output), None)
    output_op = producer.op_type if producer is not None else None
    if output_kind == "auto":
        if output_op not in _OUTPUT_KIND_OF_OP:
            raise ModelError(
                f"ONNX model {path!r}: cannot tell what output {output.name!r} holds (it is made by "
                f"{output_op or 'no node'}, not Softmax or LogSoftmax); set output_kind to one of "
                f"probs, log_probs, logits, scores")
        output_kind = _OUTPUT_KIND_OF_OP[output_op]

    served_kind, served_output, logit_bias, rewritten = output_kind, output.name, None, None
    if producer is not None and _OUTPUT_KIND_OF_OP.get(output_op) == output_kind and \
            _normalises_last_axis(producer, output.rank, model) and _readers(graph, output.name) == 1:
        cut = [producer]
        logits = producer.input[0]
        bias_add = _bias_add(graph, logits, output.shape[-1])
        if bias_add is not None:
            add_node, logits, logit_bias = bias_add
            cut.append(add_node)
        if logits not in {t.name for t in inputs} | initializers:
            for node in cut:
                graph.node.remove(node)
            for value_info in graph.output:
                if value_info.name == output.name:
                    value_info.name = logits
            try:
                rewritten = model.SerializeToString()
                served_kind, served_output = "logits", logits
            except ValueError:  # over protobuf's 2 GB: serve the model as it is
                rewritten, logit_bias = None, None
        else:
            logit_bias = None

    input_dim = feature_input.shape[-1] if isinstance(feature_input.shape[-1], int) and feature_input.shape[-1] > 0 else None
    output_dim = output.shape[-1] if isinstance(output.shape[-1], int) and output.shape[-1] > 0 else None
    interface = ModelInterface(
        path=path, inputs=inputs, outputs=outputs, feature_input=feature_input, length_input=length_input,
        output=output, output_op=output_op, output_kind=output_kind, served_kind=served_kind,
        served_output=served_output, logit_bias=logit_bias, input_dim=input_dim, output_dim=output_dim)
    return interface, rewritten


def _readers(graph, name: str) -> int:
    """Nodes that read tensor ``name``, plus one if it is a graph output."""
    return sum(name in node.input for node in graph.node) + sum(name == o.name for o in graph.output)


def _bias_add(graph, name: str, classes):
    """``(add_node, other_input, bias)`` when ``name`` is made by Add(x, b) with b a
    float32 initializer of ``classes`` values (shape [C], [1, C] or [1, 1, C]) and
    only the softmax reads ``name``; else None. Cutting this Add too lets ONNX
    Runtime write the last MatMul straight into the score matrix (no (T, C)
    temporary); the bias is added inside the score loop instead."""
    from onnx import numpy_helper

    node = next((n for n in graph.node if name in n.output), None)
    if node is None or node.op_type != "Add" or len(node.input) != 2 or _readers(graph, name) != 1:
        return None
    initializers = {init.name: init for init in graph.initializer}
    for bias_index in (1, 0):
        bias_name, other = node.input[bias_index], node.input[1 - bias_index]
        init = initializers.get(bias_name)
        if init is None or other in initializers or init.data_type != _FLOAT:
            continue
        bias = numpy_helper.to_array(init)
        is_class_vector = bias.ndim >= 1 and bias.size == bias.shape[-1]
        if is_class_vector and (not isinstance(classes, int) or bias.shape[-1] == classes):
            return node, other, numpy.ascontiguousarray(bias.reshape(-1), dtype=numpy.float32)
    return None


def _normalises_last_axis(node, rank: int, model) -> bool:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = -1 if opset >= 13 else 1
    for attribute in node.attribute:
        if attribute.name == "axis":
            axis = attribute.i
    # Before opset 13 Softmax flattens to 2-D at `axis`; at the last axis that is
    # the same per-frame normalisation.
    return axis in (-1, rank - 1)


class OnnxEngine:
    """One ONNX Runtime session plus what is needed to feed it RASR's frames.

    Use :meth:`load` (one session per model and thread setting per process) or
    the constructor. ``kind`` is what :meth:`run_into` writes: ``logits``,
    ``probs``, ``log_probs`` or ``scores`` (see sprintiface._buffers.OUTPUT_KINDS).
    """

    _cache: Dict[tuple, "OnnxEngine"] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str, *, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 input_name: Optional[str] = None, output_name: Optional[str] = None,
                 length_name: Optional[str] = None, output_kind: str = "auto"):
        import onnxruntime

        self.path = path
        self.interface, rewritten = inspect_model(path, input_name, output_name, length_name, output_kind)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # T changes every segment: memory patterns planned for one T do not fit the next.
        options.enable_mem_pattern = False
        # Many RASR processes share a node: idle threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # Failures are raised as ModelError with ONNX Runtime's message; no stderr noise.
        options.log_severity_level = 4
        try:
            self.session = onnxruntime.InferenceSession(
                rewritten if rewritten is not None else path, options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelError(f"ONNX Runtime cannot load {path!r}: {error}") from None
        del rewritten
        info = self.interface
        self.kind = info.served_kind
        #: float32 (C,) bias the scorer adds to the logits (a cut final Add), or None.
        self.logit_bias = info.logit_bias
        self.batched = info.feature_input.rank == 3
        self.output_batched = info.output.rank == 3
        self.input_dim = info.input_dim
        self._length_dtype = _INTEGER_TYPES[info.length_input.elem_type] if info.length_input else None
        self.output_dim = self._warm_up(self.input_dim) if self.input_dim else info.output_dim

    @classmethod
    def load(cls, path: str, **options) -> "OnnxEngine":
        """The process-wide engine for ``path`` with these options (made on first use)."""
        key = (os.path.realpath(path), tuple(sorted(options.items())))
        with cls._cache_lock:
            engine = cls._cache.get(key)
            if engine is None:
                engine = cls._cache[key] = cls(path, **options)
            return engine

    def _warm_up(self, input_dim: int) -> int:
        """Run once so that kernels and buffers exist before the first segment;
        returns the number of classes the output really has."""
        frames = numpy.zeros((WARMUP_FRAMES, input_dim), dtype=numpy.float32)
        return self.forward(frames).shape[1]

    def _feeds(self, frames: numpy.ndarray) -> dict:
        feeds = {self.interface.feature_input.name: frames[None] if self.batched else frames}
        if self._length_dtype is not None:
            length = numpy.array([frames.shape[0]] if self.interface.length_input.rank == 1 else frames.shape[0],
                                 dtype=self._length_dtype)
            feeds[self.interface.length_input.name] = length
        return feeds

    def forward(self, frames: numpy.ndarray) -> numpy.ndarray:
        """Run on float32 (T, F) frames; returns a fresh float32 (T', C) array of ``kind``.

        T' may be below T for a downsampling model.
        """
        try:
            (output,) = self.session.run([self.interface.served_output], self._feeds(frames))
        except Exception as error:
            raise ModelError(
                f"ONNX model {self.path!r} failed on {frames.shape[0]} frames of dim {frames.shape[1]}: {error}") from None
        if self.output_batched:
            output = output[0]
        if self.logit_bias is not None:
            output += self.logit_bias
        return output

    def posteriors(self, frames: numpy.ndarray) -> numpy.ndarray:
        """p(c|x) for float32 (T, F) frames: a fresh float32 (T', C) array, +prob space, no prior.

        For an output of -log scores this is exp(-scores).
        """
        output = self.forward(frames)
        if self.kind == "logits":
            output -= output.max(axis=1, keepdims=True)
            numpy.exp(output, out=output)
            output /= output.sum(axis=1, keepdims=True)
        elif self.kind == "log_probs":
            numpy.exp(output, out=output)
        elif self.kind == "scores":
            numpy.exp(-output, out=output)
        return output

    def bind_input_dim(self, input_dim: int) -> None:
        """For a model with a dynamic feature axis: fix it at ``input_dim`` and learn the
        number of classes from a warm-up run (no-op when the axis is static)."""
        if self.input_dim is None:
            self.input_dim = input_dim
            self.output_dim = self._warm_up(input_dim)

    def check_dims(self, input_dim: int, output_dim: int) -> None:
        """Raise ModelError unless the model takes ``input_dim`` features and gives ``output_dim`` classes."""
        if self.input_dim is not None and self.input_dim != input_dim:
            raise ModelError(
                f"ONNX model {self.path!r} takes features of dim {self.input_dim} "
                f"(input {self.interface.feature_input.name!r}), but RASR's feature-dimension is {input_dim}")
        self.bind_input_dim(input_dim)
        if self.output_dim and self.output_dim != output_dim:
            raise ModelError(
                f"ONNX model {self.path!r} gives {self.output_dim} classes (output {self.interface.output.name!r}), "
                f"but RASR's output dimension (python-feature-scorer-output-dimension / trainer-output-dimension) "
                f"is {output_dim}")

    def new_binding(self) -> "Binding":
        """An IOBinding for :meth:`run_into` (one per caller; bindings are not thread-safe)."""
        return Binding(self)

    def run_into(self, binding: "Binding", frames_address: int, num_frames: int, out_address: int) -> None:
        """Run on ``num_frames`` float32 frames at ``frames_address`` ((T, input_dim) row-major,
        read in place) and write the output, float32 (T, output_dim) row-major, to ``out_address``."""
        io = binding.io
        shape = [1, num_frames, self.input_dim] if self.batched else [num_frames, self.input_dim]
        io.bind_input(self.interface.feature_input.name, "cpu", 0, numpy.float32, shape, frames_address)
        if binding.length is not None:
            binding.length[0] = num_frames
            io.bind_input(self.interface.length_input.name, "cpu", 0, self._length_dtype,
                          binding.length_shape, binding.length_address)
        out_shape = [1, num_frames, self.output_dim] if self.output_batched else [num_frames, self.output_dim]
        io.bind_output(self.interface.served_output, "cpu", 0, numpy.float32, out_shape, out_address)
        try:
            self.session.run_with_iobinding(io)
        except Exception as error:
            message = str(error)
            if "computed output shape" in message:
                raise ModelError(
                    f"ONNX model {self.path!r} does not give one score row per frame: {num_frames} frames "
                    f"in, a different shape out ({message.split('but the computed output shape for this run is')[-1].split('.')[0].strip()}); "
                    f"the feature scorer needs [B, T, C] with T equal to the input's T") from None
            raise ModelError(f"ONNX model {self.path!r} failed on {num_frames} frames: {message}") from None


class Binding:
    """ONNX Runtime IOBinding plus the length input's storage, for one caller of run_into."""

    def __init__(self, engine: OnnxEngine):
        self.io = engine.session.io_binding()
        self.length = None
        if engine._length_dtype is not None:
            self.length = numpy.zeros(1, dtype=engine._length_dtype)
            self.length_address = self.length.ctypes.data
            self.length_shape = [1] if engine.interface.length_input.rank == 1 else []
