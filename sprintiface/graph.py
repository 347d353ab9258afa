"""The ONNX graph work: what a model takes and gives, and the cut of its final softmax.

Pure functions on an ``onnx.ModelProto``; nothing here runs ONNX Runtime.

What a frame-synchronous acoustic model may look like:

- a feature input of shape [B, T, F] (B = 1 is fed) or [T, F], float32;
- optionally a sequence-length input of shape [B] or [] (int32/int64), fed T
  (RETURNN exports call it ``data:size1``, RASR's ONNX scorer ``features-size``);
- an output of shape [B, T, C] or [T, C], float32.

Names are detected when unambiguous, else given (``input_name``,
``length_name``, ``output_name``). What the output holds (``output_kind``,
one of :data:`sprintiface.scores.OUTPUT_KINDS`) decides how it becomes a -log
score; ``auto`` reads it from the node that makes the output.

When the output is made by a final Softmax or LogSoftmax over the class axis,
:func:`prepare` cuts that node (and a bias Add right before it) off the graph:
the engine then serves the logits and the score kernel applies -log_softmax
(and the bias) in place, which is cheaper (no T x C temporaries inside ONNX
Runtime) and numerically better (no log of an underflowed probability).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy

from sprintiface.errors import ModelError

#: onnx.TensorProto element types by enum value, named as ONNX names them (lower case).
ELEMENT_TYPES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
                 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 16: "bfloat16"}
FLOAT32, INT32, INT64 = 1, 6, 7
LENGTH_DTYPES = {INT32: numpy.int32, INT64: numpy.int64}
_KIND_OF_OP = {"Softmax": "probs", "LogSoftmax": "log_probs"}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type (onnx.TensorProto enum value) and
    shape (per axis an int, a symbolic name, or None), or None for an unknown rank."""

    name: str
    elem_type: int
    shape: Optional[Tuple[object, ...]]

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        """E.g. ``'data' float [B, T, 40]``."""
        type_name = ELEMENT_TYPES.get(self.elem_type, f"type {self.elem_type}")
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name!r} {type_name} {shape}"


@dataclass(frozen=True)
class ModelInterface:
    """How to feed a model and read it, and what its output holds.

    ``output_kind`` is what the model's own output holds; ``served_output`` and
    ``served_kind`` what the engine reads once a final Softmax/LogSoftmax is cut
    (else the output itself); ``logit_bias`` float32 (C,) is a bias Add cut with it.
    ``input_dim`` / ``output_dim`` are the static feature and class axes (None
    when dynamic).
    """

    path: str
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    feature_input: TensorInfo
    length_input: Optional[TensorInfo]
    output: TensorInfo
    output_op: Optional[str]
    output_kind: str
    served_output: str
    served_kind: str
    logit_bias: Optional[numpy.ndarray]
    input_dim: Optional[int]
    output_dim: Optional[int]

    @property
    def cut(self) -> bool:
        """Whether a final Softmax/LogSoftmax is applied by sprintiface instead of the graph."""
        return self.served_output != self.output.name


def load(path: str):
    """The ModelProto at ``path``; ModelError when it cannot be read."""
    import onnx

    try:
        return onnx.load(path)
    except FileNotFoundError:
        raise ModelError(f"ONNX model {path!r} does not exist") from None
    except Exception as error:  # onnx raises DecodeError, OSError, ValueError, ...
        raise ModelError(f"ONNX model {path!r} cannot be read: {error}") from None


def _tensor_info(value_info) -> TensorInfo:
    tensor_type = value_info.type.tensor_type
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
                      for dim in tensor_type.shape.dim)
    return TensorInfo(value_info.name, tensor_type.elem_type, shape)


def _pick(candidates, given: Optional[str], what: str, key: str, tensors) -> Optional[TensorInfo]:
    if given is not None:
        for tensor in tensors:
            if tensor.name == given:
                return tensor
        names = ", ".join(t.describe() for t in tensors) or "none"
        raise ModelError(f"{key}={given!r}: the model has no such {what}; it has {names}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    raise ModelError(f"the model has several candidates for the {what} "
                     f"({', '.join(t.describe() for t in candidates)}); set {key} to one of them")


def _require_float(tensors, given: Optional[str], what: str, key: str, shape: str, path: str) -> TensorInfo:
    """The float32 rank-2/3 tensor named ``given``, or the only one there is."""
    candidates = [t for t in tensors if t.elem_type == FLOAT32 and t.rank in (2, 3)]
    tensor = _pick(candidates, given, what, key, tensors)
    if tensor is None:
        raise ModelError(f"ONNX model {path!r}: no float32 {what} of shape {shape}; it has "
                         f"{', '.join(t.describe() for t in tensors) or 'none'}")
    if tensor.elem_type != FLOAT32 or tensor.rank not in (2, 3):
        raise ModelError(f"ONNX model {path!r}: {what} {tensor.describe()} must be float32 of shape {shape}")
    return tensor


def _static(dim) -> Optional[int]:
    return dim if isinstance(dim, int) and dim > 0 else None


def describe(model, path: str, input_name: Optional[str] = None, output_name: Optional[str] = None,
             length_name: Optional[str] = None, output_kind: str = "auto") -> ModelInterface:
    """Decide how to feed ``model`` and read it (no cut: served output = output)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in graph.output)

    feature_input = _require_float(inputs, input_name, "feature input", "input_name", "[B, T, F] or [T, F]", path)
    integer_inputs = [t for t in inputs if t.elem_type in LENGTH_DTYPES and t.rank in (0, 1)]
    length_input = _pick(integer_inputs, length_name, "sequence-length input", "length_name", inputs)
    if length_input is not None and (length_input.elem_type not in LENGTH_DTYPES or length_input.rank not in (0, 1)):
        raise ModelError(f"ONNX model {path!r}: length input {length_input.describe()} must be int32/int64 of "
                         f"shape [B] or []")
    fed = {feature_input.name} | ({length_input.name} if length_input else set())
    unfed = [t for t in inputs if t.name not in fed]
    if unfed:
        raise ModelError(f"ONNX model {path!r}: input(s) {', '.join(t.describe() for t in unfed)} are neither the "
                         f"features nor the sequence length, and sprintiface cannot feed them")

    output = _require_float(outputs, output_name, "output", "output_name", "[B, T, C] or [T, C]", path)
    producer = _producer(graph, output.name)
    output_op = producer.op_type if producer is not None else None
    if output_kind == "auto":
        if output_op not in _KIND_OF_OP:
            raise ModelError(
                f"ONNX model {path!r}: cannot tell what output {output.name!r} holds (it is made by "
                f"{output_op or 'no node'}, not Softmax or LogSoftmax); set output_kind to one of "
                f"probs, log_probs, logits, scores")
        output_kind = _KIND_OF_OP[output_op]
    return ModelInterface(
        path=path, inputs=inputs, outputs=outputs, feature_input=feature_input, length_input=length_input,
        output=output, output_op=output_op, output_kind=output_kind, served_output=output.name,
        served_kind=output_kind, logit_bias=None, input_dim=_static(feature_input.shape[-1]),
        output_dim=_static(output.shape[-1]))


def _producer(graph, name: str):
    return next((node for node in graph.node if name in node.output), None)


def _readers(graph, name: str) -> int:
    """Nodes that read tensor ``name``, plus one if it is a graph output."""
    return sum(name in node.input for node in graph.node) + sum(name == o.name for o in graph.output)


def _normalises_last_axis(node, rank: int, model) -> bool:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = -1 if opset >= 13 else 1
    for attribute in node.attribute:
        if attribute.name == "axis":
            axis = attribute.i
    # Before opset 13 Softmax flattens to 2-D at `axis`; at the last axis that is
    # the same per-frame normalisation.
    return axis in (-1, rank - 1)


def _bias_add(graph, name: str, classes):
    """``(add_node, other_input, bias)`` when ``name`` is made by Add(x, b) with b a
    float32 initializer of ``classes`` values (shape [C], [1, C] or [1, 1, C]) and
    only the softmax reads ``name``; else None. Cutting this Add too lets ONNX
    Runtime write the last MatMul straight into the score matrix (no (T, C)
    temporary); the score kernel adds the bias instead."""
    from onnx import numpy_helper

    node = _producer(graph, name)
    if node is None or node.op_type != "Add" or len(node.input) != 2 or _readers(graph, name) != 1:
        return None
    initializers = {init.name: init for init in graph.initializer}
    for bias_index in (1, 0):
        bias_name, other = node.input[bias_index], node.input[1 - bias_index]
        init = initializers.get(bias_name)
        if init is None or other in initializers or init.data_type != FLOAT32:
            continue
        bias = numpy_helper.to_array(init)
        is_class_vector = bias.ndim >= 1 and bias.size == bias.shape[-1]
        if is_class_vector and (not isinstance(classes, int) or bias.shape[-1] == classes):
            return node, other, numpy.ascontiguousarray(bias.reshape(-1), dtype=numpy.float32)
    return None


def cut_normalisation(model, interface: ModelInterface) -> ModelInterface:
    """Cut a final Softmax/LogSoftmax over the class axis (and a bias Add before it)
    off ``model``, in place, when its kind is the one the output is taken to hold.

    Returns the interface with ``served_output``, ``served_kind`` (``logits``)
    and ``logit_bias`` set; the interface unchanged when there is nothing to cut.
    """
    graph = model.graph
    output = interface.output
    producer = _producer(graph, output.name)
    if producer is None or _KIND_OF_OP.get(producer.op_type) != interface.output_kind or \
            not _normalises_last_axis(producer, output.rank, model) or _readers(graph, output.name) != 1:
        return interface
    cut = [producer]
    logits = producer.input[0]
    logit_bias = None
    bias_add = _bias_add(graph, logits, output.shape[-1])
    if bias_add is not None:
        add_node, logits, logit_bias = bias_add
        cut.append(add_node)
    initializers = {init.name for init in graph.initializer}
    if logits in {t.name for t in interface.inputs} | initializers:
        return interface
    for node in cut:
        graph.node.remove(node)
    for value_info in graph.output:
        if value_info.name == output.name:
            value_info.name = logits
    return replace(interface, served_output=logits, served_kind="logits", logit_bias=logit_bias)


def prepare(model, path: str, input_name: Optional[str] = None, output_name: Optional[str] = None,
            length_name: Optional[str] = None, output_kind: str = "auto") -> ModelInterface:
    """:func:`describe` ``model``, then :func:`cut_normalisation` it in place."""
    interface = describe(model, path, input_name, output_name, length_name, output_kind)
    return cut_normalisation(model, interface)
