"""The ONNX graph work: what a model takes and gives, and the cut of its final softmax.

Pure functions on a ModelProto of either kind: :mod:`sprintiface.onnx_proto`'s (the
scorer's load path, which never imports onnx) or ``onnx.ModelProto`` (``sprintiface
prepare``, which writes with onnx); nothing here imports onnx or runs ONNX Runtime. What
they decide is a :class:`sprintiface.plan.ModelInterface` (the plan).

What a frame-synchronous acoustic model may look like:

- a feature input of shape [B, T, F] (B = 1 is fed) or [T, F], float32;
- optionally a sequence-length input of shape [B] or [] (int32/int64), fed T:
  the one named ``length_name``, else the one whose name says it is a length
  (:func:`sprintiface.plan.looks_like_length`: RETURNN's ``data:size1``, RASR's
  ONNX scorer's ``features-size``, ``lengths``, ``seq_len``, ...); any other
  input is a ModelError (T fed to a speaker id would score silently wrong);
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
Logits the graph computes in float16 or double are served through a Cast to
float32 appended to the graph (their bias Add stays: it rounds in their type).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Callable, NamedTuple, Optional, Protocol, Union

import numpy

from sprintiface import onnx_proto
from sprintiface.errors import ModelError
from sprintiface.plan import (BFLOAT16, FLOAT32, KIND_OF_OP, LENGTH_DTYPES, LENGTH_NAME_PATTERNS, ModelInterface,
                              TensorInfo, looks_like_length)

# -- the model as this module reads it -------------------------------------------
#
# Structural types (Protocols), not onnx_proto's classes: the functions take an
# ``onnx.ModelProto`` too (``sprintiface prepare``), which is no onnx_proto class, and
# naming onnx's classes would import onnx. Both kinds fit these: onnx_proto's messages
# answer every field (``__getattr__``), onnx's declare them. Each Protocol holds just
# the members used here; read-only fields are properties, the fields written here
# (names, element types, dim_param) plain attributes.


class _Dimension(Protocol):
    dim_param: str

    @property
    def dim_value(self) -> int: ...

    def HasField(self, field_name: str, /) -> bool: ...  # noqa: N802 - protobuf's name


class _Shape(Protocol):
    @property
    def dim(self) -> Sequence[_Dimension]: ...


class _TensorType(Protocol):
    elem_type: int

    @property
    def shape(self) -> _Shape: ...

    def HasField(self, field_name: str, /) -> bool: ...  # noqa: N802 - protobuf's name


class _Type(Protocol):
    @property
    def tensor_type(self) -> _TensorType: ...


class _ValueInfo(Protocol):
    name: str

    @property
    def type(self) -> _Type: ...


class _ValueInfos(Protocol):
    def __iter__(self) -> Iterator[_ValueInfo]: ...

    def __delitem__(self, index: slice, /) -> None: ...


class _Tensor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def data_type(self) -> int: ...


class _Attribute(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def i(self) -> int: ...

    @property
    def g(self) -> _Graph: ...

    @property
    def graphs(self) -> Iterable[_Graph]: ...

    def HasField(self, field_name: str, /) -> bool: ...  # noqa: N802 - protobuf's name


class _Node(Protocol):
    @property
    def op_type(self) -> str: ...

    @property
    def input(self) -> Sequence[str]: ...

    @property
    def output(self) -> Sequence[str]: ...

    @property
    def attribute(self) -> Iterable[_Attribute]: ...


class _Nodes(Protocol):
    """A graph's node list; :func:`sprintiface.onnx_proto.append_node` adds to it."""

    def __iter__(self) -> Iterator[_Node]: ...

    def remove(self, node: _Node, /) -> None: ...


class _Graph(Protocol):
    @property
    def node(self) -> _Nodes: ...

    @property
    def input(self) -> Iterable[_ValueInfo]: ...

    @property
    def output(self) -> Iterable[_ValueInfo]: ...

    @property
    def value_info(self) -> _ValueInfos: ...

    @property
    def initializer(self) -> Iterable[_Tensor]: ...


class _OperatorSet(Protocol):
    @property
    def domain(self) -> str: ...

    @property
    def version(self) -> int: ...


class Model(Protocol):
    """What the functions here read of a ModelProto: :class:`sprintiface.onnx_proto.ModelProto`
    and ``onnx.ModelProto`` are both one."""

    @property
    def graph(self) -> _Graph: ...

    @property
    def opset_import(self) -> Iterable[_OperatorSet]: ...


def _tensor_info(value_info: _ValueInfo) -> TensorInfo:
    tensor_type = value_info.type.tensor_type
    shape: Optional[tuple[Union[int, str, None], ...]] = None
    if tensor_type.HasField("shape"):
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
                      for dim in tensor_type.shape.dim)
    return TensorInfo(value_info.name, tensor_type.elem_type, shape)


def _named(given: str, what: str, key: str, tensors: Sequence[TensorInfo], path: str) -> TensorInfo:
    for tensor in tensors:
        if tensor.name == given:
            return tensor
    names = ", ".join(t.describe() for t in tensors) or "none"
    raise ModelError(f"ONNX model {path!r}, {key}={given!r}: the model has no such {what}; it has {names}")


def _pick(candidates: Sequence[TensorInfo], given: Optional[str], what: str, key: str,
          tensors: Sequence[TensorInfo], path: str) -> Optional[TensorInfo]:
    if given is not None:
        return _named(given, what, key, tensors, path)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    raise ModelError(f"ONNX model {path!r} has several candidates for the {what} "
                     f"({', '.join(t.describe() for t in candidates)}); set {key} to one of them")


def _require_float(tensors: Sequence[TensorInfo], given: Optional[str], what: str, key: str, shape: str,
                   path: str) -> TensorInfo:
    """The float32 rank-2/3 tensor named ``given``, or the only one there is."""
    candidates = [t for t in tensors if t.elem_type == FLOAT32 and t.rank in (2, 3)]
    tensor = _pick(candidates, given, what, key, tensors, path)
    if tensor is None:
        raise ModelError(f"ONNX model {path!r}: no float32 {what} of shape {shape}; it has "
                         f"{', '.join(t.describe() for t in tensors) or 'none'}")
    if tensor.elem_type != FLOAT32 or tensor.rank not in (2, 3):
        raise ModelError(f"ONNX model {path!r}: {what} {tensor.describe()} must be float32 of shape {shape}")
    return tensor


def _dims(tensor: TensorInfo) -> tuple[object, ...]:
    """The shape of a tensor of known rank: the feature input and the output (rank 2 or 3,
    :func:`_require_float` sees to it)."""
    assert tensor.shape is not None, f"{tensor.describe()} has no known rank"
    return tensor.shape


def _is_length_shaped(tensor: TensorInfo) -> bool:
    return tensor.elem_type in LENGTH_DTYPES and tensor.rank in (0, 1)


def _length_input(inputs: Sequence[TensorInfo], feature_input: TensorInfo, given: Optional[str],
                  path: str) -> Optional[TensorInfo]:
    """The input fed T: the one named ``given`` (any int32/int64 input of shape [B] or []),
    else the one int32/int64 [B]/[] input whose name says it is a length
    (:func:`sprintiface.plan.looks_like_length`), else None. Feeding T to an integer
    input that is something else (a speaker id) would score silently wrong, so two
    length-looking inputs are a ModelError, not a guess."""
    if given is not None:
        tensor = _named(given, "sequence-length input", "length_name", inputs, path)
        if tensor is feature_input or not _is_length_shaped(tensor):
            raise ModelError(f"ONNX model {path!r}, length_name={given!r}: length input {tensor.describe()} must "
                             f"be int32/int64 of shape [B] or []")
        return tensor
    candidates = [t for t in inputs if t is not feature_input and _is_length_shaped(t) and looks_like_length(t.name)]
    if len(candidates) > 1:
        raise ModelError(
            f"ONNX model {path!r}: several inputs look like the sequence length "
            f"({', '.join(t.describe() for t in candidates)}); set length_name:<name> to the one that is "
            f"(sprintiface prepare --length-name <name>)")
    return candidates[0] if candidates else None


def _static(dim: object) -> Optional[int]:
    return dim if isinstance(dim, int) and dim > 0 else None


def describe(model: Model, path: str, input_name: Optional[str] = None, output_name: Optional[str] = None,
             length_name: Optional[str] = None, output_kind: str = "auto") -> ModelInterface:
    """Decide how to feed ``model`` and read it (no cut: served output = output).

    Refuses (ModelError) a feature input whose time axis is fixed, and an output
    whose final softmax does not normalise each frame over the classes.
    """
    graph = model.graph
    if not graph.node and not graph.input:
        raise ModelError(f"ONNX model {path!r} holds no graph (an empty or truncated file?)")
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in graph.output)

    feature_input = _require_float(inputs, input_name, "feature input", "input_name", "[B, T, F] or [T, F]", path)
    if isinstance(_dims(feature_input)[-2], int):
        raise ModelError(
            f"ONNX model {path!r}: feature input {feature_input.describe()} has a fixed time axis "
            f"({_dims(feature_input)[-2]} frames), but RASR feeds segments of any length; export it with a "
            f"dynamic time axis (torch.onnx.export: dynamic_axes or dynamic_shapes)")
    length_input = _length_input(inputs, feature_input, length_name, path)
    fed = {feature_input.name} | ({length_input.name} if length_input else set())
    unfed = [t for t in inputs if t.name not in fed]
    integers = [t for t in unfed if _is_length_shaped(t)]
    if integers:
        # T fed to an integer input that is something else (a speaker id) scores silently wrong.
        names, first = ", ".join(t.describe() for t in integers), integers[0].name
        if length_input is None:
            raise ModelError(
                f"ONNX model {path!r}: integer input(s) {names} are not the sequence length by their name, and "
                f"sprintiface feeds T only to the sequence length (an int32/int64 input of shape [B] or [] "
                f"named like {', '.join(LENGTH_NAME_PATTERNS)}; see docs/models.md); if {first!r} is the "
                f"length, set length_name:{first} (sprintiface prepare --length-name {first}), else "
                f"sprintiface cannot feed it")
        how = "as length_name says" if length_name is not None else \
            f"by its name; if {first!r} is the length instead, set length_name:{first}"
        raise ModelError(
            f"ONNX model {path!r}: integer input(s) {names} are not the sequence length, which is "
            f"{length_input.describe()} ({how}), and sprintiface feeds only the features and the length")
    if unfed:
        raise ModelError(f"ONNX model {path!r}: input(s) {', '.join(t.describe() for t in unfed)} are neither the "
                         f"features nor the sequence length, and sprintiface cannot feed them")

    output = _require_float(outputs, output_name, "output", "output_name", "[B, T, C] or [T, C]", path)
    final = _final_normalisation(graph, output.name)
    output_op = " -> ".join(node.op_type for node in reversed(final.nodes)) if final else \
        (producer.op_type if (producer := _producer(graph, output.name)) is not None else None)
    if final is not None and not _normalises_last_axis(final.normaliser, len(_dims(output)), model):
        flattened = f", flattened from that axis on: opset {_opset(model)}" if _opset(model) < 13 else ""
        raise ModelError(
            f"ONNX model {path!r}: the {final.normaliser.op_type} that makes output {output.name!r} does not "
            f"normalise each frame over the classes (axis {_axis(final.normaliser, model)} of a rank-"
            f"{output.rank} output{flattened}"
            f"); the feature scorer needs per-frame scores: export the softmax over the last axis "
            f"(dim=-1{', opset >= 13' if _opset(model) < 13 else ''})")
    if output_kind == "auto":
        if final is None:
            raise ModelError(
                f"ONNX model {path!r}: cannot tell what output {output.name!r} holds (it is made by "
                f"{output_op or 'no node'}, not by a Softmax or LogSoftmax, through Cast, Log or Neg); set "
                f"output_kind to one of probs, log_probs, logits, scores")
        output_kind = final.kind
    return ModelInterface(
        path=path, inputs=inputs, outputs=outputs, feature_input=feature_input, length_input=length_input,
        output=output, output_op=output_op, output_kind=output_kind, served_output=output.name,
        served_kind=output_kind, logit_bias=None, input_dim=_static(_dims(feature_input)[-1]),
        output_dim=_static(_dims(output)[-1]))


# -- walking the graph -----------------------------------------------------------

def _producer(graph: _Graph, name: str) -> Optional[_Node]:
    return next((node for node in graph.node if name in node.output), None)


def _subgraphs(node: _Node) -> Iterator[_Graph]:
    """The graphs a node holds (Loop/Scan bodies, If branches)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def _readers(graph: _Graph, name: str) -> int:
    """Nodes that read tensor ``name`` (in nested bodies too, which may read an outer
    tensor by name), plus one for each graph output of that name."""
    count = sum(name == o.name for o in graph.output)
    for node in graph.node:
        count += sum(name == input_name for input_name in node.input)
        for body in _subgraphs(node):
            count += _readers(body, name)
    return count


def _cast_to(node: _Node) -> Optional[int]:
    return next((a.i for a in node.attribute if a.name == "to"), None)


_FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


def _through_casts(graph: _Graph, name: str) -> tuple[Optional[_Node], list[_Node]]:
    """Walk back from tensor ``name`` through float Casts and Identities; returns
    ``(the first other producer or None, the nodes walked, output end first)``."""
    walked: list[_Node] = []
    node = _producer(graph, name)
    while node is not None and (node.op_type == "Identity" or
                                (node.op_type == "Cast" and _cast_to(node) in _FLOAT_TYPES)):
        walked.append(node)
        node = _producer(graph, node.input[0])
    return node, walked


class _Normalisation(NamedTuple):
    """A final softmax: what the output holds, the Softmax/LogSoftmax node, and the nodes
    from it to the output (output end first) that the cut removes."""

    kind: str
    normaliser: _Node
    nodes: tuple[_Node, ...]


def _final_normalisation(graph: _Graph, name: str) -> Optional[_Normalisation]:
    """The Softmax/LogSoftmax that makes tensor ``name``, through Cast/Identity, Log
    (log of a softmax) and Neg (-log_softmax: scores); None when there is none."""
    node, walked = _through_casts(graph, name)
    if node is None:
        return None
    if node.op_type in KIND_OF_OP:
        return _Normalisation(KIND_OF_OP[node.op_type], node, (*walked, node))
    if node.op_type not in ("Log", "Neg"):
        return None
    inner = _final_normalisation(graph, node.input[0])
    if inner is None:
        return None
    if node.op_type == "Log" and inner.kind == "probs":
        return _Normalisation("log_probs", inner.normaliser, (*walked, node, *inner.nodes))
    if node.op_type == "Neg" and inner.kind == "log_probs":
        return _Normalisation("scores", inner.normaliser, (*walked, node, *inner.nodes))
    return None


def _opset(model: Model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _axis(node: _Node, model: Model) -> int:
    axis = -1 if _opset(model) >= 13 else 1
    for attribute in node.attribute:
        if attribute.name == "axis":
            axis = attribute.i
    return axis


def _normalises_last_axis(node: _Node, rank: int, model: Model) -> bool:
    # Before opset 13 Softmax flattens to 2-D at `axis`: only at the last axis is that
    # the per-frame normalisation (axis 1 of [B, T, C] would normalise over T x C).
    return _axis(node, model) in (-1, rank - 1)


# Ops whose output has the element type of their first input (for the type of a
# tensor the cut would serve, when the model declares none).
_SAME_TYPE_OPS = {"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Neg",
                  "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Softmax", "LogSoftmax",
                  "LayerNormalization", "BatchNormalization", "Conv", "Concat", "Slice", "Dropout", "Expand",
                  "LSTM", "GRU", "RNN", "Gather", "Pad", "Where", "Max", "Min", "Sum", "Clip", "Erf", "Gelu",
                  "Softplus", "Elu", "Selu", "HardSigmoid", "Sqrt", "Pow", "Exp", "Log", "Abs", "Tile"}
# Inputs that carry the element type: the data, not the indices, condition or shapes.
_TYPED_INPUTS = {"Gather": (0,), "Where": (1, 2), "Reshape": (0,), "Expand": (0,), "Tile": (0,), "Slice": (0,),
                 "Pad": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Clip": (0,)}


def _elem_type(graph: _Graph, name: str, depth: int = 0) -> Optional[int]:
    declared: dict[str, int] = {v.name: v.type.tensor_type.elem_type
                                for v in (*graph.value_info, *graph.input, *graph.output)}
    if declared.get(name):
        return declared[name]
    initializer = next((init for init in graph.initializer if init.name == name), None)
    if initializer is not None:
        return initializer.data_type
    node = _producer(graph, name)
    if node is None or depth > 64:
        return None
    if node.op_type == "Cast":
        return _cast_to(node)
    if node.op_type in _SAME_TYPE_OPS:
        for index in _TYPED_INPUTS.get(node.op_type, range(len(node.input))):
            if index < len(node.input) and node.input[index]:
                found = _elem_type(graph, node.input[index], depth + 1)
                if found:
                    return found
    return None


def _bias_add(graph: _Graph, name: str, classes: object,
              base_dir: str) -> Optional[tuple[_Node, str, numpy.ndarray]]:
    """``(add_node, other_input, bias)`` when ``name`` is made by Add(x, b) with b a
    float32 initializer holding one value per class (shape [C], [1, C] or [1, 1, C];
    more than one value when the class axis is dynamic) and only the softmax reads
    ``name``; else None. Cutting this Add too lets ONNX Runtime write the last
    MatMul straight into the score matrix (no (T, C) temporary); the score kernel
    adds the bias instead, rounding as the Add would."""
    node = _producer(graph, name)
    if node is None or node.op_type != "Add" or len(node.input) != 2 or _readers(graph, name) != 1:
        return None
    initializers = {init.name: init for init in graph.initializer}
    for bias_index in (1, 0):
        bias_name, other = node.input[bias_index], node.input[1 - bias_index]
        init = initializers.get(bias_name)
        if init is None or other in initializers or init.data_type != FLOAT32:
            continue
        bias = onnx_proto.to_array(init, base_dir)  # base_dir: where external data lives
        is_class_vector = bias.ndim >= 1 and bias.size == bias.shape[-1]
        fits = bias.shape[-1] == classes if isinstance(classes, int) else bias.shape[-1] > 1
        if is_class_vector and fits:
            return node, other, numpy.ascontiguousarray(bias.reshape(-1), dtype=numpy.float32)
    return None


# -- the rewrites ----------------------------------------------------------------

def cut_normalisation(model: Model, interface: ModelInterface) -> ModelInterface:
    """Cut a final Softmax/LogSoftmax over the class axis (with the Cast, Log, Neg and
    Identity nodes between it and the output, the Casts between it and the logits, and
    a float32 bias Add before it) off ``model``, in place, when it holds the kind the
    output is taken to hold.

    The served tensor is float32: logits of another type (a float16 or double head)
    get a Cast to float32 appended, and their bias Add stays in the graph (the score
    kernel adds a float32 bias, which rounds otherwise than the model's own Add).
    Logits in bfloat16 are a ModelError: ONNX Runtime's CPU provider computes
    nothing in bfloat16.

    Returns the interface with ``served_output``, ``served_kind`` (``logits``)
    and ``logit_bias`` set; the interface unchanged when there is nothing to cut.
    """
    graph = model.graph
    output = interface.output
    final = _final_normalisation(graph, output.name)
    if final is None or final.kind != interface.output_kind or \
            not _normalises_last_axis(final.normaliser, len(_dims(output)), model):
        return interface
    _, casts = _through_casts(graph, final.normaliser.input[0])
    cut = list(final.nodes) + casts
    if any(_readers(graph, tensor) != 1 for node in cut for tensor in node.output):
        return interface  # something besides the chain reads one of its tensors: keep it whole
    logits = casts[-1].input[0] if casts else final.normaliser.input[0]
    if _readers(graph, logits) != 1:
        return interface  # the logits are read elsewhere too (a graph output, a loop body): keep it whole
    # Without a Cast in the chain, Softmax/LogSoftmax/Log/Neg keep the type: the logits are
    # float32 like the output. Through Casts they are what their producer makes (a float16
    # head's MatMul makes float16), or unknown: both are cast to float32 below.
    logit_type = FLOAT32 if not any(node.op_type == "Cast" for node in cut) else _elem_type(graph, logits)
    if logit_type == BFLOAT16:
        producer = _producer(graph, logits)
        raise ModelError(
            f"ONNX model {interface.path!r}: its logits {logits!r} (before the final {final.normaliser.op_type}) "
            f"are bfloat16, made by {producer.op_type if producer is not None else 'no node'}; ONNX Runtime's "
            f"CPU provider, which sprintiface runs, has no bfloat16 kernels for arithmetic: export the model in "
            f"float32 (bfloat16 weights convert to float32 exactly) or float16")
    logit_bias = None
    if logit_type == FLOAT32:
        bias_add = _bias_add(graph, logits, _dims(output)[-1], os.path.dirname(os.path.abspath(interface.path)))
        if bias_add is not None:
            add_node, logits, logit_bias = bias_add
            cut.append(add_node)
    if logits in {t.name for t in interface.inputs} | {init.name for init in graph.initializer}:
        return interface  # nothing computes the logits: there is no graph left to serve them
    for node in cut:
        graph.node.remove(node)
    if logit_type != FLOAT32:
        # The cast of what the model computes (float16 values are exact in float32; double
        # ones round once), then the kernel's float32 log_softmax.
        taken = {name for node in graph.node for name in (*node.input, *node.output)} | \
            {v.name for v in (*graph.input, *graph.output)} | {init.name for init in graph.initializer}
        served = f"{logits}:float32"
        while served in taken:
            served += "_"
        onnx_proto.append_node(graph.node, "Cast", [logits], [served], to=FLOAT32,
                               name=f"sprintiface_cast_{logits}_to_float32")
        logits = served
    for value_info in graph.output:
        if value_info.name == output.name:
            value_info.name = logits
            value_info.type.tensor_type.elem_type = FLOAT32
    return interface._replace(served_output=logits, served_kind="logits", logit_bias=logit_bias)


def _make_dims_symbolic(shape: _Shape, names: Callable[[int], str]) -> None:
    for axis, dim in enumerate(shape.dim):
        if dim.HasField("dim_value"):
            dim.dim_param = names(axis)


def _dim_names(name: str) -> Callable[[int], str]:
    return lambda axis: f"{name}_dim{axis}"


def forget_static_shapes(model: Model, interface: ModelInterface) -> None:
    """Drop the shapes a model declares beyond what the scorer relies on, in place.

    Exporters record the example input's length in declared shapes (torch's
    dynamo exporter writes T=50 into the output and graph.value_info of a
    BLSTM) although the graph runs at any length; ONNX Runtime trusts them
    (it builds fused reshapes from value_info and checks a bound output
    against the declared shape). So every value_info goes, in nested bodies
    too, the time axis of every float rank-2/3 output becomes symbolic, and
    static dims of body inputs and outputs become symbolic (ranks are kept:
    ONNX Runtime needs them).
    """
    graph = model.graph
    time_axis = _dims(interface.feature_input)[-2]
    time_name = time_axis if isinstance(time_axis, str) else "T"
    del graph.value_info[:]
    for value_info in graph.output:
        tensor_type = value_info.type.tensor_type
        if tensor_type.elem_type == FLOAT32 and tensor_type.HasField("shape") and \
                len(tensor_type.shape.dim) in (2, 3):
            dim = tensor_type.shape.dim[len(tensor_type.shape.dim) - 2]
            if dim.HasField("dim_value"):
                dim.dim_param = time_name
    pending = [body for node in graph.node for body in _subgraphs(node)]
    while pending:
        body = pending.pop()
        del body.value_info[:]
        for value_info in (*body.input, *body.output):
            if value_info.type.tensor_type.HasField("shape"):
                _make_dims_symbolic(value_info.type.tensor_type.shape, _dim_names(value_info.name))
        pending.extend(b for node in body.node for b in _subgraphs(node))


def prepare(model: Model, path: str, input_name: Optional[str] = None, output_name: Optional[str] = None,
            length_name: Optional[str] = None, output_kind: str = "auto") -> ModelInterface:
    """:func:`describe` ``model``, :func:`cut_normalisation` and :func:`forget_static_shapes`
    it in place; returns how to feed and read the result."""
    interface = describe(model, path, input_name, output_name, length_name, output_kind)
    interface = cut_normalisation(model, interface)
    forget_static_shapes(model, interface)
    return interface
