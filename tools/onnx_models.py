"""Small acoustic models in ONNX, built from a fixed seed with onnx.helper.

Not part of the package: the tests, the benchmarks and tools/make_demo_model.py
(which writes the shipped sprintiface/models/demo.onnx with :func:`build_demo`)
import it from here. Real graphs of the two kinds a RASR scorer meets,
frame-wise (MLP) and whole-segment (bidirectional LSTM).
"""
from __future__ import annotations

from typing import Optional
from collections.abc import Sequence

import numpy

from sprintiface.models import DEMO_INPUT_DIM, DEMO_OUTPUT_DIM


def _weights(rng: numpy.random.Generator, rows: int, cols: int) -> numpy.ndarray:
    return (rng.standard_normal((rows, cols)) / numpy.sqrt(rows)).astype(numpy.float32)


def _finish(nodes, inputs, outputs, initializers, name: str, opset: int):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="sprintiface.models")  # the shipped demo's bytes depend on it
    model.ir_version = min(model.ir_version, 8)  # loadable by older ONNX Runtime releases too
    onnx.checker.check_model(model)
    return model


def _head(nodes, hidden: str, output_name: str, output_kind: str, name: str):
    from onnx import helper

    if output_kind == "probs":
        nodes.append(helper.make_node("Softmax", [hidden], [output_name], axis=-1, name=f"{name}_softmax"))
    elif output_kind == "log_probs":
        nodes.append(helper.make_node("LogSoftmax", [hidden], [output_name], axis=-1, name=f"{name}_logsoftmax"))
    elif output_kind == "scores":
        nodes.append(helper.make_node("LogSoftmax", [hidden], [f"{name}_logp"], axis=-1))
        nodes.append(helper.make_node("Neg", [f"{name}_logp"], [output_name]))
    elif output_kind == "logits":
        nodes.append(helper.make_node("Identity", [hidden], [output_name]))
    else:
        raise ValueError(f"output_kind: expected probs, log_probs, logits or scores, got {output_kind!r}")


def build_mlp(input_dim: int = 40, output_dim: int = 500, hidden: Sequence[int] = (256, 256), *,
              seed: int = 0, batched: bool = True, output_kind: str = "probs",
              input_name: str = "data", output_name: str = "output",
              length_name: Optional[str] = None, masked_classes: Sequence[int] = (), opset: int = 17):
    """A frame-wise MLP: ``[B, T, F]`` (or ``[T, F]`` unless ``batched``) -> ``[B, T, C]``.

    ReLU hidden layers, then a head giving ``output_kind``: ``probs`` (Softmax),
    ``log_probs`` (LogSoftmax), ``logits`` or ``scores`` (-log_softmax). With
    ``length_name`` the model also takes a sequence-length input [B] int32,
    which a frame-wise model does not need but RETURNN exports carry.
    ``masked_classes``: classes whose output bias is -inf, so the model makes them
    impossible (a Softmax gives p = 0, a LogSoftmax -inf), as a mask in a real model does.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(seed)
    time_axes = ["B", "T"] if batched else ["T"]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [*time_axes, input_dim])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [*time_axes, output_dim])]
    nodes, initializers = [], []
    current, current_dim = input_name, input_dim
    for layer, size in enumerate([*hidden, output_dim]):
        weight, bias = f"W{layer}", f"b{layer}"
        initializers.append(numpy_helper.from_array(_weights(rng, current_dim, size), weight))
        bias_values = (0.1 * rng.standard_normal(size)).astype(numpy.float32)
        if layer == len(hidden):
            bias_values[list(masked_classes)] = -numpy.inf
        initializers.append(numpy_helper.from_array(bias_values, bias))
        nodes.append(helper.make_node("MatMul", [current, weight], [f"mm{layer}"]))
        nodes.append(helper.make_node("Add", [f"mm{layer}", bias], [f"lin{layer}"]))
        current, current_dim = f"lin{layer}", size
        if layer < len(hidden):
            nodes.append(helper.make_node("Relu", [current], [f"act{layer}"]))
            current = f"act{layer}"
    _head(nodes, current, output_name, output_kind, "mlp")
    if length_name is not None:
        inputs.append(helper.make_tensor_value_info(length_name, TensorProto.INT32, ["B"]))
        outputs.append(helper.make_tensor_value_info(f"{output_name}:size1", TensorProto.INT32, ["B"]))
        nodes.append(helper.make_node("Identity", [length_name], [f"{output_name}:size1"]))
    return _finish(nodes, inputs, outputs, initializers, "mlp", opset)


def build_blstm(input_dim: int = 40, output_dim: int = 500, hidden: int = 64, *, seed: int = 0,
                output_kind: str = "probs", input_name: str = "data", output_name: str = "output",
                length_name: Optional[str] = "data:size1", length_type: str = "int32", opset: int = 17):
    """A bidirectional LSTM acoustic model: ``[B, T, F]`` -> ``[B, T, C]`` (RETURNN export layout).

    The whole segment matters (the backward direction reads it from the end).
    With ``length_name`` the sequence length [B] (``length_type`` int32 or
    int64) is the LSTM's ``sequence_lens``.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(seed)
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["B", "T", input_dim])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["B", "T", output_dim])]
    initializers = [
        numpy_helper.from_array(_weights(rng, input_dim, 2 * 4 * hidden).T.reshape(2, 4 * hidden, input_dim),
                                "lstm_W"),
        numpy_helper.from_array((_weights(rng, hidden, 2 * 4 * hidden).T.reshape(2, 4 * hidden, hidden)), "lstm_R"),
        numpy_helper.from_array((0.1 * rng.standard_normal((2, 8 * hidden))).astype(numpy.float32), "lstm_B"),
        numpy_helper.from_array(_weights(rng, 2 * hidden, output_dim), "out_W"),
        numpy_helper.from_array((0.1 * rng.standard_normal(output_dim)).astype(numpy.float32), "out_b"),
        numpy_helper.from_array(numpy.array([0, 0, 2 * hidden], dtype=numpy.int64), "bt_shape"),
    ]
    nodes = [helper.make_node("Transpose", [input_name], ["x_tbf"], perm=[1, 0, 2])]
    lstm_inputs = ["x_tbf", "lstm_W", "lstm_R", "lstm_B"]
    if length_name is not None:
        elem = TensorProto.INT32 if length_type == "int32" else TensorProto.INT64
        inputs.append(helper.make_tensor_value_info(length_name, elem, ["B"]))
        nodes.append(helper.make_node("Cast", [length_name], ["seq_lens"], to=TensorProto.INT32))
        lstm_inputs.append("seq_lens")
    nodes += [
        helper.make_node("LSTM", lstm_inputs, ["y_t2bh"], direction="bidirectional", hidden_size=hidden),
        helper.make_node("Transpose", ["y_t2bh"], ["y_bt2h"], perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["y_bt2h", "bt_shape"], ["y_bth"]),
        helper.make_node("MatMul", ["y_bth", "out_W"], ["out_mm"]),
        helper.make_node("Add", ["out_mm", "out_b"], ["logits"]),
    ]
    _head(nodes, "logits", output_name, output_kind, "blstm")
    return _finish(nodes, inputs, outputs, initializers, "blstm", opset)


def build_attention(input_dim: int = 40, output_dim: int = 500, dim: int = 64, *, seed: int = 0,
                    output_kind: str = "probs", input_name: str = "data", output_name: str = "output",
                    opset: int = 17):
    """One self-attention block, as attention models (conformers) have it: ``[B, T, F]`` -> ``[B, T, C]``.

    Weight MatMuls (input projection, Q, K, V, attention output, feed-forward, output
    layer) and the two activation-by-activation MatMuls of attention: ``QK^T``
    (node ``attention_scores``) and ``softmax(QK^T) V`` (node ``attention_values``).
    The whole segment matters (every frame attends to every other).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(seed)
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["B", "T", input_dim])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["B", "T", output_dim])]
    shapes = {"W_in": (input_dim, dim), "W_q": (dim, dim), "W_k": (dim, dim), "W_v": (dim, dim), "W_o": (dim, dim),
              "W_ff1": (dim, 4 * dim), "W_ff2": (4 * dim, dim), "W_out": (dim, output_dim)}
    initializers = [numpy_helper.from_array(_weights(rng, *shape), name) for name, shape in shapes.items()]
    initializers += [numpy_helper.from_array((0.1 * rng.standard_normal(output_dim)).astype(numpy.float32), "b_out"),
                     numpy_helper.from_array(numpy.array(1 / numpy.sqrt(dim), dtype=numpy.float32), "scale")]
    nodes = [
        helper.make_node("MatMul", [input_name, "W_in"], ["x"], name="input_projection"),
        helper.make_node("MatMul", ["x", "W_q"], ["q"], name="query"),
        helper.make_node("MatMul", ["x", "W_k"], ["k"], name="key"),
        helper.make_node("MatMul", ["x", "W_v"], ["v"], name="value"),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1], name="key_transposed"),
        helper.make_node("MatMul", ["q", "k_t"], ["qk"], name="attention_scores"),
        helper.make_node("Mul", ["qk", "scale"], ["qk_scaled"], name="attention_scale"),
        helper.make_node("Softmax", ["qk_scaled"], ["weights"], axis=-1, name="attention_weights"),
        helper.make_node("MatMul", ["weights", "v"], ["attended"], name="attention_values"),
        helper.make_node("MatMul", ["attended", "W_o"], ["projected"], name="attention_output"),
        helper.make_node("Add", ["x", "projected"], ["residual"], name="attention_residual"),
        helper.make_node("MatMul", ["residual", "W_ff1"], ["ff_hidden"], name="feed_forward_in"),
        helper.make_node("Relu", ["ff_hidden"], ["ff_act"], name="feed_forward_relu"),
        helper.make_node("MatMul", ["ff_act", "W_ff2"], ["ff_out"], name="feed_forward_out"),
        helper.make_node("Add", ["residual", "ff_out"], ["block"], name="feed_forward_residual"),
        helper.make_node("MatMul", ["block", "W_out"], ["out_mm"], name="output_layer"),
        helper.make_node("Add", ["out_mm", "b_out"], ["logits"], name="output_bias"),
    ]
    _head(nodes, "logits", output_name, output_kind, "attention")
    return _finish(nodes, inputs, outputs, initializers, "attention", opset)


#: Element types of heads :func:`build_head` builds, by name.
HEAD_TYPES = {"float": 1, "float16": 10, "double": 11, "bfloat16": 16}


def build_head(input_dim: int = 4, classes: int = 5, *, seed: int = 0, batched: bool = True,
               head_type: str = "float", normaliser: str = "LogSoftmax", before: Sequence[str] = (),
               after: Sequence[str] = (), bias: Optional[Sequence[int]] = (-1,), bias_first: bool = False,
               scale: float = 1.0, extra_inputs: Sequence[tuple] = (), input_name: str = "data",
               output_name: str = "output", opset: int = 17):
    """A linear acoustic model head, for the graph analysis's cases:
    features ``[B, T, F]`` (or ``[T, F]`` unless ``batched``) float32 -> Cast to
    ``head_type`` (unless float) -> MatMul -> Add(bias) -> the ``before`` nodes ->
    ``normaliser`` (Softmax or LogSoftmax, axis -1) -> the ``after`` nodes -> Cast to
    float (unless the chain is float already) -> output ``[B, T, C]`` / ``[T, C]``.

    ``head_type``: float, float16, double or bfloat16 (weights and bias in it).
    ``before``/``after``: node names in order: ``Identity``, ``Log``, ``Neg`` or
    ``Cast:<type>`` (a type of :data:`HEAD_TYPES`). ``bias``: the bias shape with -1
    for C (``(-1,)``, ``(1, -1)``, ``(1, 1, -1)``) or None for none; ``bias_first``:
    the bias is the Add's first operand. ``scale``: the weights' scale (logits of
    about that size). ``extra_inputs``: ``(name, 'int32'|'int64'|'float', shape)``
    further inputs, each passed through to an output of its own (as RETURNN's
    ``data:size1`` -> ``output:size1``).
    """
    from onnx import TensorProto, helper, numpy_helper

    def tensor(array, name, type_name):
        if type_name == "bfloat16":  # numpy has no bfloat16: ONNX rounds the float values
            return helper.make_tensor(name, TensorProto.BFLOAT16, array.shape, array.astype(numpy.float32).ravel())
        dtype = {"float": numpy.float32, "float16": numpy.float16, "double": numpy.float64}[type_name]
        return numpy_helper.from_array(array.astype(dtype), name)

    rng = numpy.random.default_rng(seed)
    time_axes = ["B", "T"] if batched else ["T"]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [*time_axes, input_dim])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [*time_axes, classes])]
    weights = scale * rng.standard_normal((input_dim, classes)) / numpy.sqrt(input_dim)
    initializers = [tensor(weights, "W", head_type)]
    nodes, current, current_type = [], input_name, "float"
    if head_type != "float":
        nodes.append(helper.make_node("Cast", [current], ["x_head"], to=HEAD_TYPES[head_type]))
        current, current_type = "x_head", head_type
    nodes.append(helper.make_node("MatMul", [current, "W"], ["mm"]))
    current = "mm"
    if bias is not None:
        shape = tuple(classes if d == -1 else d for d in bias)
        initializers.append(tensor(0.5 * scale * rng.standard_normal(shape), "b", head_type))
        nodes.append(helper.make_node("Add", ["b", current] if bias_first else [current, "b"], ["logits"]))
        current = "logits"

    def chain(names, stage):
        nonlocal current, current_type
        for index, name in enumerate(names):
            result = f"{stage}{index}_{name.replace(':', '_')}"
            if name.startswith("Cast:"):
                current_type = name.split(":", 1)[1]
                nodes.append(helper.make_node("Cast", [current], [result], to=HEAD_TYPES[current_type]))
            else:
                nodes.append(helper.make_node(name, [current], [result]))
            current = result

    chain(before, "before")
    nodes.append(helper.make_node(normaliser, [current], ["normalised"], axis=-1))
    current = "normalised"
    chain(after, "after")
    if current_type != "float":
        nodes.append(helper.make_node("Cast", [current], ["as_float"], to=TensorProto.FLOAT))
        current = "as_float"
    nodes[-1].output[0] = output_name  # the last node makes the output
    for name, type_name, shape in extra_inputs:
        elem = {"int32": TensorProto.INT32, "int64": TensorProto.INT64, "float": TensorProto.FLOAT}[type_name]
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        outputs.append(helper.make_tensor_value_info(f"{name}:out", elem, list(shape)))
        nodes.append(helper.make_node("Identity", [name], [f"{name}:out"]))
    return _finish(nodes, inputs, outputs, initializers, "head", opset)


def build_demo():
    """The model shipped as ``demo.onnx``: an MLP 40 -> 256 -> 256 -> 500 with Softmax,
    RETURNN's export names (``data`` [B, T, 40], ``data:size1`` [B], ``output`` [B, T, 500])."""
    return build_mlp(DEMO_INPUT_DIM, DEMO_OUTPUT_DIM, (256, 256), seed=2024, length_name="data:size1")


def save_model(model, path: str) -> None:
    """Write an ONNX model to ``path`` (complete or absent)."""
    from sprintiface._files import atomic_write

    with atomic_write(path, "wb") as file:
        file.write(model.SerializeToString())
