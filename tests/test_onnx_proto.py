"""sprintiface.onnx_proto against its slow twin, the onnx package.

Every model here is parsed both ways (onnx.ModelProto and onnx_proto) and must
read the same in every field onnx_proto knows, re-encode to what onnx parses
as the original, take the same mutations to the same result, and, through
sprintiface.graph, give the same interface and bit-identical ONNX Runtime
outputs. Hypothesis builds random small graphs to hunt for differences.
"""
from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy
import onnx
import onnxruntime
import pytest
from conftest import AWAY_FROM_SOURCE, build_blstm, build_mlp, save_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from sprintiface import graph, onnx_proto
from sprintiface.errors import ModelError
from sprintiface.prepare import _set_metadata

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


# -- comparing the two kinds field by field --------------------------------------------

def _same_scalar(ours, theirs) -> bool:
    if isinstance(theirs, float):
        return struct.pack("<d", ours) == struct.pack("<d", theirs) or (math.isnan(ours) and math.isnan(theirs))
    return type(ours) is type(theirs) and ours == theirs


def assert_same(ours, theirs, where: str = "model") -> None:
    """Every field onnx_proto knows reads the same in ``ours`` as in onnx's ``theirs``
    (values, presence, lengths), recursively."""
    for field in type(ours).FIELDS:
        name, here = field.name, f"{where}.{field.name}"
        if field.repeated:
            mine, other = list(getattr(ours, name)), list(getattr(theirs, name))
            assert len(mine) == len(other), here
            for index, (a, b) in enumerate(zip(mine, other)):
                if field.message is not None:
                    assert_same(a, b, f"{here}[{index}]")
                else:
                    assert _same_scalar(a, b), f"{here}[{index}]: {a!r} != {b!r}"
            continue
        assert ours.HasField(name) == theirs.HasField(name), f"{here}: presence"
        if field.message is not None:
            if theirs.HasField(name):
                assert_same(getattr(ours, name), getattr(theirs, name), here)
        else:
            a, b = getattr(ours, name), getattr(theirs, name)
            assert _same_scalar(a, b), f"{here}: {a!r} != {b!r}"


def assert_encodes_like(ours, theirs) -> None:
    """``ours`` serialized parses, in onnx, equal to ``theirs``."""
    assert onnx.ModelProto.FromString(ours.SerializeToString()) == theirs


def both(model: onnx.ModelProto):
    data = model.SerializeToString()
    return onnx_proto.load_from_string(data), onnx.ModelProto.FromString(data), data


# -- models ----------------------------------------------------------------------------

def build_nested(opset: int = 17) -> onnx.ModelProto:
    """An MLP whose hidden layer passes through an If (Relu or Identity branch) and a
    one-trip Loop that adds an outer tensor, each body with static value_info, input and
    output shapes (what forget_static_shapes rewrites), then a Softmax head."""
    rng = numpy.random.default_rng(5)
    w0 = numpy_helper.from_array(rng.standard_normal((12, 16)).astype(numpy.float32), "W0")
    w1 = numpy_helper.from_array(rng.standard_normal((16, 30)).astype(numpy.float32), "W1")
    b1 = numpy_helper.from_array(rng.standard_normal(30).astype(numpy.float32), "b1")
    shift = numpy_helper.from_array(rng.standard_normal(16).astype(numpy.float32), "shift")
    cond = numpy_helper.from_array(numpy.array(True), "cond")
    trips = numpy_helper.from_array(numpy.array(1, dtype=numpy.int64), "trips")
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 50, 16])])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["else_out"])], "else", [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 50, 16])])
    body = helper.make_graph(
        [helper.make_node("Add", ["carried", "shift"], ["summed"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", TensorProto.FLOAT, [1, 50, 16])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("summed", TensorProto.FLOAT, [1, 50, 16])],
        value_info=[helper.make_tensor_value_info("summed", TensorProto.FLOAT, [1, 50, 16])])
    nodes = [helper.make_node("MatMul", ["data", "W0"], ["h"]),
             helper.make_node("If", ["cond"], ["branched"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Loop", ["trips", "cond", "branched"], ["looped"], body=body),
             helper.make_node("MatMul", ["looped", "W1"], ["mm"]),
             helper.make_node("Add", ["mm", "b1"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["output"], axis=-1, name="head")]
    model = helper.make_model(
        helper.make_graph(nodes, "nested",
                          [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", 12])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 50, 30])],
                          initializer=[w0, w1, b1, shift, cond, trips],
                          value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 50, 16])],
                          doc_string="a graph with bodies"),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="tests", doc_string="nested bodies")
    model.ir_version = 8
    helper.set_model_props(model, {"author": "tests", "purpose": "nesting"})
    onnx.checker.check_model(model)
    return model


def build_cast_log_head() -> onnx.ModelProto:
    """An MLP whose head is Cast(double) -> Softmax -> Log -> Cast(float), as a float64
    softmax export writes it, with doc strings and metadata."""
    model = build_mlp(12, 30, (16,), seed=8, output_kind="logits")
    graph_ = model.graph
    graph_.node.remove(graph_.node[len(graph_.node) - 1])  # the logits' Identity
    graph_.node.extend([
        helper.make_node("Cast", ["lin1"], ["wide"], to=TensorProto.DOUBLE, doc_string="to double"),
        helper.make_node("Softmax", ["wide"], ["p"], axis=-1),
        helper.make_node("Log", ["p"], ["logp"]),
        helper.make_node("Cast", ["logp"], ["output"], to=TensorProto.FLOAT)])
    graph_.doc_string = "cast and log"
    helper.set_model_props(model, {"exported_by": "tests"})
    onnx.checker.check_model(model)
    return model


BUILDERS = {
    "mlp_probs": (lambda: build_mlp(12, 30, (16, 16), seed=1), {}),
    "mlp_log_probs_unbatched": (lambda: build_mlp(12, 30, (16,), seed=2, batched=False,
                                                  output_kind="log_probs"), {}),
    "mlp_scores_length": (lambda: build_mlp(12, 30, (16,), seed=3, output_kind="scores",
                                            length_name="data:size1"), {}),
    "mlp_logits": (lambda: build_mlp(12, 30, (16,), seed=4, output_kind="logits"), {"output_kind": "logits"}),
    "mlp_opset11": (lambda: build_mlp(12, 30, (16,), seed=5, opset=11), {}),
    "blstm_int32": (lambda: build_blstm(12, 30, hidden=8, seed=6), {}),
    "blstm_int64_log_probs": (lambda: build_blstm(12, 30, hidden=8, seed=7, length_type="int64",
                                                  output_kind="log_probs"), {}),
    "nested": (build_nested, {}),
    "cast_log_head": (build_cast_log_head, {}),
    # Saved with its weights in a file beside it (onnx's external data).
    "blstm_external": (lambda: build_blstm(12, 30, hidden=8, seed=9), {}),
}


def _same_interface(a, b) -> bool:
    da, db = a._asdict(), b._asdict()
    bias_a, bias_b = da.pop("logit_bias"), db.pop("logit_bias")
    if (bias_a is None) != (bias_b is None):
        return False
    return da == db and (bias_a is None or (bias_a.dtype == bias_b.dtype and
                                            bias_a.tobytes() == bias_b.tobytes()))


def _run(model_bytes: bytes, interface, frames: int = 23, folder=None):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    if folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    rng = numpy.random.default_rng(frames)
    dim = interface.input_dim
    shape = (1, frames, dim) if interface.feature_input.rank == 3 else (frames, dim)
    feed = {interface.feature_input.name: rng.standard_normal(shape).astype(numpy.float32)}
    if interface.length_input is not None:
        dtype = numpy.int32 if interface.length_input.elem_type == TensorProto.INT32 else numpy.int64
        feed[interface.length_input.name] = numpy.array([frames] if interface.length_input.rank else frames,
                                                        dtype=dtype)
    return session.run([interface.served_output], feed)[0]


# -- the decisive test: sprintiface.graph on both kinds ---------------------------------

@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_graph_prepare_gives_the_same_interface_and_outputs(name, tmp_path):
    build, options = BUILDERS[name]
    path = str(tmp_path / f"{name}.onnx")
    if name.endswith("_external"):
        onnx.save_model(build(), path, save_as_external_data=True, location=f"{name}.data", size_threshold=64)
    else:
        save_model(build(), path)
    with onnx_proto.load(path) as first:
        assert_same(first, onnx.load(path, load_external_data=False))
    theirs = onnx.load(path)  # its weights read in
    with onnx_proto.load(path) as ours:
        assert _same_interface(graph.describe(ours, path, **options), graph.describe(theirs, path, **options))
        their_interface = graph.prepare(theirs, path, **options)
        our_interface = graph.prepare(ours, path, **options)
        assert _same_interface(our_interface, their_interface)
        if not name.endswith("_external"):
            assert_same(ours, theirs)
            assert_encodes_like(ours, theirs)
        inline = ours.SerializeToString()
        external = ours.SerializeToString(weights="external")
    expected = _run(theirs.SerializeToString(), their_interface)
    assert _run(inline, our_interface, folder=str(tmp_path)).tobytes() == expected.tobytes()
    assert len(external) < len(inline) or name in ("nested", "blstm_external")
    assert _run(external, our_interface, folder=str(tmp_path)).tobytes() == expected.tobytes()


def test_prepare_cuts_what_onnx_cuts():
    # The cut removes nodes and renames the output: the interfaces say it happened.
    ours, theirs, _ = both(build_mlp(12, 30, (16,), seed=1))
    interface = graph.prepare(ours, "m.onnx")
    assert interface.served_kind == "logits" and interface.logit_bias is not None
    assert [n.op_type for n in ours.graph.node] == ["MatMul", "Add", "Relu", "MatMul"]
    graph.prepare(theirs, "m.onnx")
    assert_encodes_like(ours, theirs)


# -- re-encoding and mutations ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_unmodified_reencodes_byte_for_byte(name, tmp_path):
    data = BUILDERS[name][0]().SerializeToString()
    assert onnx_proto.load_from_string(data).SerializeToString() == data
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with onnx_proto.load(str(path)) as model:
        assert model.graph.node[0].op_type  # parsed, read, still unchanged
        assert model.SerializeToString() == data


def _walk_bodies(g):
    for node in g.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield attribute.g
                yield from _walk_bodies(attribute.g)
            for body in attribute.graphs:
                yield body
                yield from _walk_bodies(body)


MUTATIONS = {
    "remove_node": lambda m: m.graph.node.remove(m.graph.node[len(m.graph.node) // 2]),
    "rename_output": lambda m: setattr(m.graph.output[0], "name", "renamed"),
    "elem_type": lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type", TensorProto.DOUBLE),
    "clear_value_info_nested": lambda m: [b.value_info.__delitem__(slice(None)) for b in
                                          [m.graph, *_walk_bodies(m.graph)]],
    "symbolic_dims": lambda m: [setattr(d, "dim_param", f"s{i}") for v in (*m.graph.input, *m.graph.output)
                                for i, d in enumerate(v.type.tensor_type.shape.dim) if d.HasField("dim_value")],
    "static_dims": lambda m: [setattr(d, "dim_value", 7) for v in m.graph.output
                              for d in v.type.tensor_type.shape.dim],
    "metadata": lambda m: _set_metadata(m, {"purpose": "replaced", "sprintiface.plan": "{}"}),
    "new_value_info": lambda m: _new_value_info(m),
    "attribute": lambda m: [setattr(a, "i", a.i + 1) for n in m.graph.node for a in n.attribute if a.HasField("i")],
    "clear_doc": lambda m: (m.ClearField("doc_string"), m.graph.ClearField("doc_string")),
    "opset": lambda m: setattr(m.opset_import[0], "version", 13),
    "node_added": lambda m: m.graph.node.add(op_type="Identity", input=["data"], output=["copy"], name="n"),
    "nested_rename": lambda m: [setattr(n, "name", "in_body") for b in _walk_bodies(m.graph) for n in b.node],
}


def _new_value_info(model) -> None:
    value_info = model.graph.value_info.add()
    value_info.name = "fresh"
    value_info.type.tensor_type.elem_type = TensorProto.FLOAT  # a default sub-message becomes present
    value_info.type.tensor_type.shape.dim.add().dim_param = "T"
    value_info.type.tensor_type.shape.dim.add().dim_value = 3


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("name", ["nested", "blstm_int32", "mlp_scores_length"])
def test_mutations_give_what_onnx_gives(name, mutation):
    ours, theirs, _ = both(BUILDERS[name][0]())
    MUTATIONS[mutation](ours)
    MUTATIONS[mutation](theirs)
    assert_same(ours, theirs)
    assert_encodes_like(ours, theirs)


def test_oneof_dim_and_presence_follow_protobuf():
    ours, theirs, _ = both(build_mlp(12, 30, (16,)))
    for model in (ours, theirs):
        dim = model.graph.input[0].type.tensor_type.shape.dim[2]
        dim.dim_param = "F"  # clears dim_value
        assert not dim.HasField("dim_value") and dim.dim_value == 0
        other = model.graph.output[0].type.tensor_type.shape.dim[0]
        other.dim_value = 1  # clears dim_param
        assert other.dim_param == ""
        model.graph.initializer[0].ClearField("raw_data")
        assert not model.graph.initializer[0].HasField("raw_data")
    assert_same(ours, theirs)
    assert_encodes_like(ours, theirs)
    with pytest.raises(ValueError):
        _ = ours.graph.HasField("node")
    with pytest.raises(AttributeError):
        _ = ours.graph.no_such_field
    with pytest.raises(TypeError):
        ours.graph.name = 3


# -- errors ------------------------------------------------------------------------------

def test_unreadable_files_are_model_errors_naming_the_file(tmp_path):
    data = build_mlp(12, 30, (16,)).SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 64)
    text = tmp_path / "text.onnx"
    text.write_bytes(b"this is not a model\n" * 10)
    for path in (truncated, garbage, text, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(ModelError, match=str(path.name)), onnx_proto.load(str(path)) as model:
            graph.describe(model, str(path))
    with pytest.raises(ModelError, match="<bytes>"):
        onnx_proto.load_from_string(data[:-3])


def test_a_broken_node_is_a_model_error_when_read():
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [], []))
    data = bytearray(model.SerializeToString())
    # The node's op_type "Relu": make it invalid UTF-8, which only the node's parse sees.
    at = data.index(b"Relu")
    data[at:at + 4] = b"\xff\xfe\xfd\xfc"
    parsed = onnx_proto.load_from_string(bytes(data), name="broken.onnx")
    for _ in range(2):  # and again: nothing half-read was kept
        with pytest.raises(ModelError, match=r"broken\.onnx"):
            _ = parsed.graph.node[0].op_type


def _read_everything(message) -> None:
    """Read every field onnx_proto knows, and every tensor as an array."""
    for field in type(message).FIELDS:
        if not field.repeated and field.message is not None and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        items = value if field.repeated else [value]
        if field.message is not None:
            for item in items:
                _read_everything(item)
    if isinstance(message, onnx_proto.TensorProto):
        onnx_proto.to_array(message, "/nonexistent")


_CORRUPTIBLE = build_nested().SerializeToString()


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(_CORRUPTIBLE)), flips=st.lists(st.tuples(st.integers(0, len(_CORRUPTIBLE) - 1),
                                                                       st.integers(1, 255)), max_size=4))
def test_corrupt_bytes_are_model_errors_or_a_model(cut, flips):
    """Truncated or altered bytes: decoding every part gives a model or a ModelError, never
    another exception (RASR would print a traceback from deep inside the parser)."""
    data = bytearray(_CORRUPTIBLE[:cut])
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    try:
        model = onnx_proto.load_from_string(bytes(data), name="corrupt.onnx")
        _read_everything(model)
        model.SerializeToString()
    except ModelError as error:
        assert "corrupt.onnx" in str(error) or "/nonexistent" in str(error)


# -- tensors -----------------------------------------------------------------------------

DTYPES = [numpy.float32, numpy.float16, numpy.float64, "bfloat16", numpy.int8, numpy.uint8, numpy.int16,
          numpy.uint16, numpy.int32, numpy.int64, numpy.uint32, numpy.uint64, numpy.bool_]


def _tensor(dtype, values: numpy.ndarray, form: str, name: str = "t") -> onnx.TensorProto:
    if dtype == "bfloat16":
        return helper.make_tensor(name, TensorProto.BFLOAT16, values.shape, values.astype(numpy.float32).ravel(),
                                  raw=False) if form == "typed" else \
            helper.make_tensor(name, TensorProto.BFLOAT16, values.shape,
                               (values.astype(numpy.float32).view(numpy.uint32) >> 16).astype("<u2").tobytes(),
                               raw=True)
    array = values.astype(dtype)
    if form == "raw":
        return numpy_helper.from_array(array, name)
    return helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, array.ravel(),
                              raw=False)


def _as_comparable(array: numpy.ndarray) -> numpy.ndarray:
    if array.dtype.name == "bfloat16":  # onnx gives ml_dtypes' bfloat16; onnx_proto float32, exactly
        return array.astype(numpy.float32)
    return array


@pytest.mark.parametrize("form", ["raw", "typed", "external"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_to_array_equals_numpy_helper(dtype, form, tmp_path):
    values = numpy.random.default_rng(1).standard_normal((3, 5)) * 50
    tensor = _tensor(dtype, values, "typed" if form == "typed" else "raw", "w")
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=[tensor]))
    path = str(tmp_path / "t.onnx")
    if form == "external":
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="t.data",
                        size_threshold=0)
    else:
        onnx.save_model(model, path)
    theirs = onnx.load(path, load_external_data=False)
    with onnx_proto.load(path) as ours:
        ours_array = onnx_proto.to_array(ours.graph.initializer[0], str(tmp_path))
        expected = _as_comparable(numpy_helper.to_array(theirs.graph.initializer[0], str(tmp_path)))
        assert ours_array.dtype == expected.dtype and ours_array.shape == expected.shape
        assert ours_array.tobytes() == expected.tobytes()
        if form == "external":  # base_dir defaults to the model's directory
            assert onnx_proto.to_array(ours.graph.initializer[0]).tobytes() == expected.tobytes()


def test_to_array_refuses_what_it_does_not_read(tmp_path):
    strings = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    complex64 = helper.make_tensor("c", TensorProto.COMPLEX64, [1], [1 + 2j])
    short = numpy_helper.from_array(numpy.zeros(4, dtype=numpy.float32), "short")
    short.raw_data = short.raw_data[:-1]
    escaping = numpy_helper.from_array(numpy.zeros(4, dtype=numpy.float32), "escaping")
    escaping.ClearField("raw_data")
    escaping.data_location = TensorProto.EXTERNAL
    escaping.external_data.add(key="location", value="../outside.data")
    missing = numpy_helper.from_array(numpy.zeros(4, dtype=numpy.float32), "missing")
    missing.ClearField("raw_data")
    missing.data_location = TensorProto.EXTERNAL
    missing.external_data.add(key="location", value="absent.data")
    model = helper.make_model(helper.make_graph([], "g", [], [],
                                                initializer=[strings, complex64, short, escaping, missing]))
    parsed = onnx_proto.load_from_string(model.SerializeToString(), name="refused.onnx")
    messages = {"s": "STRING", "c": "COMPLEX64", "short": "raw data", "escaping": "outside", "missing": "absent"}
    for tensor in parsed.graph.initializer:
        with pytest.raises(ModelError, match=messages[tensor.name]):
            onnx_proto.to_array(tensor, str(tmp_path))


def _bytes_read() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_a_large_model_is_analysed_reading_only_its_small_parts(tmp_path):
    path = str(tmp_path / "large.onnx")
    save_model(build_mlp(64, 500, (1024, 1024, 1024), seed=0), path)  # about 10 MB of weights
    size = os.path.getsize(path)
    before = _bytes_read()
    with onnx_proto.load(path) as model:
        interface = graph.prepare(model, path)  # reads the bias through to_array: 2 KB
        external = model.SerializeToString(weights="external")
        read = _bytes_read() - before
        assert read < 1 << 20 < size // 8, (read, size)
        weight = next(t for t in model.graph.initializer if t.name == "W1")
        before = _bytes_read()
        array = onnx_proto.to_array(weight)
        read = _bytes_read() - before  # exactly its bytes, once (and /proc/self/io's)
        assert array.nbytes <= read < array.nbytes + 1024
        assert model.graph.initializer[2].raw_data_span() is not None
    assert len(external) < 1 << 20
    theirs = onnx.load(path)
    their_interface = graph.prepare(theirs, path)
    assert _same_interface(interface, their_interface)
    assert _run(external, interface, folder=str(tmp_path)).tobytes() == \
        _run(theirs.SerializeToString(), their_interface).tobytes()


def test_the_file_opened_is_the_one_read_when_its_name_is_replaced(tmp_path):
    path = str(tmp_path / "m.onnx")
    first = build_mlp(12, 30, (16,), seed=1)
    save_model(first, path)
    with onnx_proto.load(path) as model:
        save_model(build_mlp(12, 30, (16,), seed=9), path)  # atomic replace, as users and prepare do
        weight = next(t for t in model.graph.initializer if t.name == "W0")
        expected = numpy_helper.to_array(next(t for t in first.graph.initializer if t.name == "W0"))
        assert onnx_proto.to_array(weight).tobytes() == expected.tobytes()
        assert model.SerializeToString() == first.SerializeToString()


def test_source_is_current_until_the_file_is_replaced_or_rewritten(tmp_path):
    path = str(tmp_path / "m.onnx")
    save_model(build_mlp(12, 30, (16,), seed=1), path)
    with onnx_proto.load(path) as model:
        assert model.source_is_current()
        save_model(build_mlp(12, 30, (16,), seed=2), path)  # replaced under its name
        assert not model.source_is_current()
    with onnx_proto.load(path) as model:
        with open(path, "r+b") as file:  # rewritten in place
            file.seek(0, os.SEEK_END)
            file.write(b"\0")
        assert not model.source_is_current()
    assert not onnx_proto.load_from_string(build_mlp(12, 30, (16,)).SerializeToString()).source_is_current()


def test_weights_external_from_bytes_needs_the_location(tmp_path):
    data = build_mlp(12, 30, (16,)).SerializeToString()
    model = onnx_proto.load_from_string(data)
    with pytest.raises(ModelError, match="location"):
        model.SerializeToString(weights="external")
    (tmp_path / "w.onnx").write_bytes(data)
    external = model.SerializeToString(weights="external", location="w.onnx", min_external_bytes=64)
    parsed = onnx.ModelProto.FromString(external)
    moved = [t for t in parsed.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert moved and all(not t.HasField("raw_data") for t in moved)
    onnx.load_external_data_for_model(parsed, str(tmp_path))
    for tensor in moved:
        tensor.ClearField("data_location")  # onnx sets it to DEFAULT, which the original did not have
    assert parsed == onnx.ModelProto.FromString(data)


def test_without_onnx_a_plain_model_is_described_and_served(tmp_path):
    """The point of the module: no onnx import in the process that loads a plain model."""
    path = str(tmp_path / "m.onnx")
    save_model(build_mlp(12, 30, (16,), seed=1, output_kind="logits"), path)
    script = f"""
import sys
sys.modules["onnx"] = None  # importing onnx now fails
import onnxruntime
from sprintiface import graph, onnx_proto
with onnx_proto.load({path!r}) as model:
    interface = graph.prepare(model, {path!r}, output_kind="logits")
    data = model.SerializeToString(weights="external")
options = onnxruntime.SessionOptions()
options.add_session_config_entry("session.model_external_initializers_file_folder_path", {str(tmp_path)!r})
onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
assert "ml_dtypes" not in sys.modules and "google.protobuf" not in sys.modules
print(interface.served_output)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "output"


def test_without_onnx_a_softmax_head_is_cut(tmp_path):
    path = str(tmp_path / "m.onnx")
    save_model(build_mlp(12, 30, (16,), seed=1), path)
    script = f"""
import sys
sys.modules["onnx"] = None
from sprintiface import graph, onnx_proto
with onnx_proto.load({path!r}) as model:
    interface = graph.prepare(model, {path!r})
print(interface.served_kind, interface.logit_bias is not None, [n.op_type for n in model.graph.node])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split(None, 2)[:2] == ["logits", "True"] and "Softmax" not in result.stdout


# -- hypothesis: random small graphs -------------------------------------------------------

_NAMES = st.text(alphabet="abcxyz:_/0é", min_size=0, max_size=6)
_DOCS = st.text(max_size=12)
_INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
_FLOAT32 = st.floats(width=32, allow_nan=False)


@st.composite
def _with_unknown(draw, message):
    """``message``, sometimes with a field no schema knows inside it (onnx keeps it, and
    so must onnx_proto, in nested messages too)."""
    if draw(st.integers(0, 3)):
        return message
    field = _unknown_field(draw(st.integers(30, 5000)), draw(st.sampled_from([0, 1, 2, 5])),
                           draw(st.binary(max_size=10)))
    data = message.SerializeToString()
    at = draw(st.sampled_from([0, len(data)]))
    return type(message).FromString(data[:at] + field + data[at:])


@st.composite
def _tensors(draw, name=None):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    values = numpy.asarray(draw(st.lists(st.floats(-100, 100, width=32), min_size=int(numpy.prod(shape)),
                                         max_size=int(numpy.prod(shape)))), dtype=numpy.float64).reshape(shape)
    tensor = _tensor(dtype, values, draw(st.sampled_from(["raw", "typed"])), name or draw(_NAMES))
    if draw(st.booleans()):
        tensor.doc_string = draw(_DOCS)
    return draw(_with_unknown(tensor))


@st.composite
def _value_infos(draw):
    name = draw(_NAMES)
    if draw(st.integers(0, 5)) == 0:  # a type onnx_proto keeps as bytes
        return helper.make_value_info(name, helper.make_sequence_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    elem = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.BOOL]))
    if draw(st.booleans()):
        return helper.make_tensor_value_info(name, elem, None)
    dims = draw(st.lists(st.one_of(st.integers(0, 1 << 40), st.text("BTF_x", min_size=1, max_size=3),
                                   st.none()), max_size=4))
    value_info = helper.make_tensor_value_info(name, elem, dims)
    if draw(st.booleans()):
        value_info.doc_string = draw(_DOCS)
    return draw(_with_unknown(value_info))


@st.composite
def _graphs(draw, depth=0):
    nodes = []
    for _ in range(draw(st.integers(0, 4))):
        attributes = {}
        for index in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["f", "i", "s", "t", "g", "floats", "ints", "strings", "graphs"]))
            key = f"a{index}"
            if kind == "f":
                attributes[key] = draw(_FLOAT32)
            elif kind == "i":
                attributes[key] = draw(_INT64)
            elif kind == "s":
                attributes[key] = draw(st.binary(max_size=8))
            elif kind == "t":
                attributes[key] = draw(_tensors())
            elif kind == "g" and depth < 2:
                attributes[key] = draw(_graphs(depth + 1))
            elif kind == "floats":
                attributes[key] = draw(st.lists(_FLOAT32, min_size=1, max_size=4))
            elif kind == "ints":
                attributes[key] = draw(st.lists(_INT64, min_size=1, max_size=4))
            elif kind == "strings":
                attributes[key] = draw(st.lists(st.binary(max_size=4), min_size=1, max_size=3))
            elif kind == "graphs" and depth < 2:
                attributes[key] = draw(st.lists(_graphs(depth + 1), min_size=1, max_size=2))
        node = helper.make_node(draw(st.sampled_from(["Relu", "MatMul", "Softmax", "Loop", "If", "Cast", "Neg"])),
                                draw(st.lists(_NAMES, max_size=3)), draw(st.lists(_NAMES, max_size=2)),
                                name=draw(st.one_of(st.none(), _NAMES)), domain=draw(st.one_of(st.none(), _NAMES)),
                                doc_string=draw(st.one_of(st.none(), _DOCS)), **attributes)
        nodes.append(draw(_with_unknown(node)))
    return helper.make_graph(nodes, draw(_NAMES), draw(st.lists(_value_infos(), max_size=3)),
                             draw(st.lists(_value_infos(), max_size=3)),
                             initializer=draw(st.lists(_tensors(), max_size=3)),
                             value_info=draw(st.lists(_value_infos(), max_size=3)),
                             doc_string=draw(st.one_of(st.none(), _DOCS)))


def _unknown_field(number: int, wire: int, payload: bytes) -> bytes:
    def varint(value):
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)
    if wire == 0:
        return varint(number << 3) + varint(int.from_bytes(payload[:8] or b"\0", "little"))
    if wire == 1:
        return varint(number << 3 | 1) + payload[:8].ljust(8, b"\0")
    if wire == 5:
        return varint(number << 3 | 5) + payload[:4].ljust(4, b"\0")
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@st.composite
def _models(draw):
    model = helper.make_model(draw(_graphs()), opset_imports=[helper.make_opsetid(draw(_NAMES), draw(_INT64))],
                              producer_name=draw(_NAMES), doc_string=draw(_DOCS))
    helper.set_model_props(model, dict(draw(st.lists(st.tuples(_NAMES, _NAMES), max_size=3))))
    if draw(st.booleans()):  # fields onnx knows and onnx_proto keeps as bytes
        model.functions.add(name=draw(_NAMES), domain="local")
        model.graph.sparse_initializer.add().dims.extend([2, 2])
    data = model.SerializeToString()
    for _ in range(draw(st.integers(0, 3))):  # fields neither knows, in any place at the top
        field = _unknown_field(draw(st.integers(30, 5000)), draw(st.sampled_from([0, 1, 2, 5])),
                               draw(st.binary(max_size=10)))
        at = draw(st.sampled_from([0, len(data)]))
        data = data[:at] + field + data[at:]
    return data


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.data_too_large])


@_SETTINGS
@given(data=_models())
def test_random_models_read_and_reencode_like_onnx(data):
    theirs = onnx.ModelProto.FromString(data)
    ours = onnx_proto.load_from_string(data)
    assert_same(ours, theirs)
    assert ours.SerializeToString() == data
    for their_tensor, our_tensor in zip(theirs.graph.initializer, ours.graph.initializer):
        expected = _as_comparable(numpy_helper.to_array(their_tensor))
        got = onnx_proto.to_array(our_tensor)
        assert got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()


@_SETTINGS
@given(data=_models(), mutations=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=4))
def test_random_models_take_mutations_like_onnx(data, mutations):
    theirs = onnx.ModelProto.FromString(data)
    canonical = theirs.SerializeToString() == data  # no unknown field out of protobuf's order
    ours = onnx_proto.load_from_string(data)
    for mutation in mutations:
        try:
            MUTATIONS[mutation](theirs)
        except (IndexError, ValueError):  # nothing to mutate there (no node, no output, ...)
            with pytest.raises((IndexError, ValueError)):
                MUTATIONS[mutation](ours)
            continue
        MUTATIONS[mutation](ours)
    assert_same(ours, theirs)
    assert onnx.ModelProto.FromString(ours.SerializeToString()) == theirs
    if canonical:  # then even the bytes are protobuf's
        assert ours.SerializeToString() == theirs.SerializeToString()


@_SETTINGS
@given(data=_models())
def test_random_models_with_external_weights_read_like_onnx(data):
    theirs = onnx.ModelProto.FromString(data)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.onnx")
        onnx.save_model(theirs, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="m.data", size_threshold=0)
        on_disk = onnx.load(path, load_external_data=False)
        with onnx_proto.load(path) as ours:
            assert_same(ours, on_disk)
            with open(path, "rb") as file:
                assert ours.SerializeToString() == file.read()
            for their_tensor, our_tensor in zip(on_disk.graph.initializer, ours.graph.initializer):
                expected = _as_comparable(numpy_helper.to_array(their_tensor, folder))
                assert onnx_proto.to_array(our_tensor).tobytes() == expected.tobytes()
        # The inline model's weights as references into its own file read back as the originals.
        inline_path = os.path.join(folder, "inline.onnx")
        with open(inline_path, "wb") as file:
            file.write(data)
        with onnx_proto.load(inline_path) as ours:
            referencing = onnx.ModelProto.FromString(ours.SerializeToString(weights="external",
                                                                             min_external_bytes=1))
        moved = [t for t in referencing.graph.initializer if t.data_location == TensorProto.EXTERNAL]
        assert all(t.external_data[0].value == "inline.onnx" for t in moved)
        onnx.load_external_data_for_model(referencing, folder)
        originals = onnx.ModelProto.FromString(data).graph.initializer  # save_model changed `theirs`
        for tensor, original in zip(referencing.graph.initializer, originals):
            assert tensor.raw_data == original.raw_data


# -- torch exports ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnxscript") is None:
        pytest.skip("needs torch and onnxscript: pip install torch==2.13.0 onnxscript")
    outdir = tmp_path_factory.mktemp("torch-models")
    result = subprocess.run([sys.executable, os.path.join(TOOLS, "torch_models.py"), str(outdir)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return outdir


@pytest.mark.torch
def test_torch_exports_prepare_like_onnx(torch_exports):
    paths = sorted(str(p) for p in torch_exports.glob("*.onnx"))
    assert len(paths) >= 10
    for path in paths:
        options = {"output_kind": "logits"} if "logits" in path else {}
        theirs = onnx.load(path, load_external_data=False)
        with onnx_proto.load(path) as ours:
            assert_same(ours, theirs)
            with open(path, "rb") as file:
                assert ours.SerializeToString() == file.read()
            their_interface = graph.prepare(theirs, path, **options)
            our_interface = graph.prepare(ours, path, **options)
            assert _same_interface(our_interface, their_interface), path
            assert_same(ours, theirs)
            assert_encodes_like(ours, theirs)
            external = ours.SerializeToString(weights="external")
        onnx.load_external_data_for_model(theirs, os.path.dirname(path))
        expected = _run(theirs.SerializeToString(), their_interface, frames=37)
        got = _run(external, our_interface, frames=37, folder=os.path.dirname(path))
        assert got.tobytes() == expected.tobytes(), path
