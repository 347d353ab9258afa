"""sprintiface.graph: pure functions on ONNX models, no ONNX Runtime involved."""
import numpy
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import build_head

from sprintiface import ModelError
from sprintiface.graph import describe, prepare
from sprintiface.plan import looks_like_length

RNG = numpy.random.default_rng(0)


def model(nodes, output_shape=("B", "T", 5), input_shape=("B", "T", 4), initializers=(), opset=17,
          value_info=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape))],
        initializer=[numpy_helper.from_array(RNG.standard_normal((4, 5)).astype(numpy.float32), "W"),
                     numpy_helper.from_array(RNG.standard_normal(5).astype(numpy.float32), "b"), *initializers],
        value_info=list(value_info))
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    result.ir_version = 8
    return result


LINEAR = [helper.make_node("MatMul", ["data", "W"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["logits"])]


@pytest.mark.parametrize("head, kind", [
    ([helper.make_node("LogSoftmax", ["logits"], ["output"], axis=-1)], "log_probs"),
    ([helper.make_node("Softmax", ["logits"], ["output"], axis=-1)], "probs"),
    ([helper.make_node("Softmax", ["logits"], ["p"], axis=-1), helper.make_node("Log", ["p"], ["output"])],
     "log_probs"),
    ([helper.make_node("Cast", ["logits"], ["d"], to=TensorProto.DOUBLE),
      helper.make_node("LogSoftmax", ["d"], ["ld"], axis=-1),
      helper.make_node("Cast", ["ld"], ["output"], to=TensorProto.FLOAT)], "log_probs"),
    ([helper.make_node("LogSoftmax", ["logits"], ["l"], axis=2), helper.make_node("Neg", ["l"], ["output"])],
     "scores"),
    ([helper.make_node("Softmax", ["logits"], ["p"], axis=-1), helper.make_node("Identity", ["p"], ["output"])],
     "probs"),
])
def test_output_kind_through_cast_log_neg_chains_and_the_cut(head, kind):
    onnx_model = model(LINEAR + head)
    interface = prepare(onnx_model, "m.onnx")
    assert interface.output_kind == kind
    # the whole chain and the bias Add are cut: the last MatMul is served
    assert interface.served_output == "mm" and interface.served_kind == "logits"
    assert interface.logit_bias.shape == (5,)
    assert [node.op_type for node in onnx_model.graph.node] == ["MatMul"]


def test_logits_ask_for_output_kind():
    with pytest.raises(ModelError, match=r"cannot tell what output 'output' holds \(it is made by Add"):
        describe(model([*LINEAR[:1], helper.make_node("Add", ["mm", "b"], ["output"])]), "m.onnx")


def test_softmax_that_does_not_normalise_each_frame_is_refused():
    # opset < 13 Softmax flattens from `axis` on: axis 1 of [B, T, C] normalises over T x C
    flattened = model([*LINEAR, helper.make_node("Softmax", ["logits"], ["output"], axis=1)], opset=11)
    with pytest.raises(ModelError, match=r"does not normalise each frame over the classes.*opset 11"):
        describe(flattened, "m.onnx")
    with pytest.raises(ModelError, match="does not normalise each frame"):
        describe(model([*LINEAR, helper.make_node("LogSoftmax", ["logits"], ["output"], axis=1)]), "m.onnx",
                 output_kind="log_probs")
    per_frame = model([*LINEAR, helper.make_node("Softmax", ["logits"], ["output"], axis=2)], opset=11)
    assert prepare(per_frame, "m.onnx").served_kind == "logits"


def test_fixed_time_axis_of_the_input_is_refused():
    with pytest.raises(ModelError, match=r"fixed time axis \(50 frames\).*dynamic time axis"):
        describe(model([*LINEAR, helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
                       input_shape=(1, 50, 4)), "m.onnx")


def test_declared_shapes_from_the_export_are_forgotten():
    # torch's dynamo exporter writes the example T into the output and value_info
    stale = model([*LINEAR, helper.make_node("LogSoftmax", ["logits"], ["output"], axis=-1)],
                  output_shape=(1, 50, 5), input_shape=(1, "T", 4),
                  value_info=[helper.make_tensor_value_info("mm", TensorProto.FLOAT, [1, 50, 5])])
    interface = prepare(stale, "m.onnx")
    assert len(stale.graph.value_info) == 0
    dims = stale.graph.output[0].type.tensor_type.shape.dim
    assert stale.graph.output[0].name == interface.served_output == "mm"
    assert [d.dim_value or d.dim_param for d in dims] == [1, "T", 5]


def test_a_bias_of_one_value_is_not_cut_with_a_dynamic_class_axis():
    scalar = numpy_helper.from_array(numpy.array([0.5], numpy.float32), "one")
    onnx_model = model([helper.make_node("MatMul", ["data", "W"], ["mm"]),
                        helper.make_node("Add", ["mm", "one"], ["logits"]),
                        helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
                       output_shape=("B", "T", "C"), initializers=[scalar])
    interface = prepare(onnx_model, "m.onnx")
    assert interface.served_output == "logits" and interface.logit_bias is None


def test_logits_read_inside_a_loop_body_are_not_cut():
    # an If branch reads the logits by their outer name: cutting would break it
    branch = helper.make_graph([helper.make_node("Identity", ["logits"], ["branch_out"])], "branch", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)])
    condition = numpy_helper.from_array(numpy.array(True), "cond")
    onnx_model = model([*LINEAR, helper.make_node("If", ["cond"], ["side"], then_branch=branch, else_branch=branch),
                        helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
                       initializers=[condition])
    onnx_model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    interface = prepare(onnx_model, "m.onnx")
    assert interface.output_kind == "probs"
    assert interface.served_output == "output" and interface.served_kind == "probs"


def test_chain_with_another_reader_is_served_whole():
    onnx_model = model([*LINEAR, helper.make_node("Softmax", ["logits"], ["output"], axis=-1)])
    onnx_model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    interface = prepare(onnx_model, "m.onnx", output_name="output")
    assert interface.served_output == "output"


def head_model(head_type, bias=True, normaliser="LogSoftmax"):
    return build_head(head_type=head_type, normaliser=normaliser, bias=(-1,) if bias else None)


@pytest.mark.parametrize("head_type, elem", [("float16", TensorProto.FLOAT16), ("double", TensorProto.DOUBLE)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normaliser", ["LogSoftmax", "Softmax"])
def test_a_head_of_another_float_type_is_cut_and_its_logits_cast(head_type, elem, bias, normaliser):
    onnx_model = head_model(head_type, bias, normaliser)
    interface = prepare(onnx_model, "m.onnx")
    logits = "logits" if bias else "mm"
    # the bias Add of the head's type stays (the kernel's float32 Add would round otherwise)
    assert [node.op_type for node in onnx_model.graph.node] == ["Cast", "MatMul"] + (["Add"] if bias else []) + \
        ["Cast"]
    cast = onnx_model.graph.node[-1]
    assert list(cast.input) == [logits] and cast.attribute[0].i == TensorProto.FLOAT
    assert interface.served_output == f"{logits}:float32" == onnx_model.graph.output[0].name
    assert onnx_model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert interface.served_kind == "logits" and interface.logit_bias is None
    assert interface.output_kind == {"LogSoftmax": "log_probs", "Softmax": "probs"}[normaliser]
    assert onnx_model.graph.node[1].input[1] == "W" and elem == onnx_model.graph.initializer[0].data_type


def test_the_cast_of_the_logits_takes_a_name_no_tensor_has():
    onnx_model = head_model("float16")
    onnx_model.graph.output.append(helper.make_tensor_value_info("logits:float32", TensorProto.FLOAT, None))
    onnx_model.graph.node.append(helper.make_node("Cast", ["data"], ["logits:float32"], to=TensorProto.FLOAT))
    interface = prepare(onnx_model, "m.onnx", output_name="output")
    assert interface.served_output == "logits:float32_"


def test_logits_of_unknown_type_behind_a_cast_are_cast_to_float32():
    # Einsum's output type is not followed: the cut casts whatever it is to float32
    onnx_model = model([helper.make_node("Cast", ["data"], ["d"], to=TensorProto.DOUBLE),
                        helper.make_node("Cast", ["W"], ["Wd"], to=TensorProto.DOUBLE),
                        helper.make_node("Einsum", ["d", "Wd"], ["logits"], equation="btf,fc->btc"),
                        helper.make_node("LogSoftmax", ["logits"], ["ld"], axis=-1),
                        helper.make_node("Cast", ["ld"], ["output"], to=TensorProto.FLOAT)])
    interface = prepare(onnx_model, "m.onnx")
    assert interface.served_output == "logits:float32"
    assert [node.op_type for node in onnx_model.graph.node][-1] == "Cast"


def test_bfloat16_logits_are_refused_with_what_to_do():
    with pytest.raises(ModelError, match=r"its logits 'logits' \(before the final LogSoftmax\) are bfloat16, made "
                                         r"by Add; .*export the model in float32"):
        prepare(head_model("bfloat16"), "m.onnx")


@pytest.mark.parametrize("name, is_length", [
    ("data:size1", True), ("data:size0", True), ("features-size", True), ("lengths", True), ("seq_len", True),
    ("audio_features_len", True), ("x_lens", True), ("seqLens", True), ("input_lengths", True),
    ("LENGTH", True), ("num_frames", True), ("len", True),
    ("speaker_id", False), ("spk", False), ("batch_size", False), ("beam_size", False), ("chunk_size", False),
    ("window_size", False), ("vocab_size", False), ("language", False), ("mask", False), ("T", False),
])
def test_which_names_say_length(name, is_length):
    assert looks_like_length(name) is is_length
