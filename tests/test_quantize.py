"""prepare --quantize (sprintiface.quantize): every int8 variant is measured and reported with
its agreement, the chosen one loads and scores, attention's activation-by-activation MatMuls
stay float in the constant-weight variant, and when no variant pays no int8 model is written
and the output says so. Behaviour only: timings are the machine's, never asserted."""
import os

import numpy
import onnx
import pytest
from conftest import bare_run, features, rasr_scorer, score_segment
from onnx_models import build_attention, build_blstm, build_mlp

from sprintiface import ModelError
from sprintiface.cli import main
from sprintiface.onnx_proto import read_metadata
from sprintiface.prepare import prepare_model
from sprintiface.quantize import VARIANT_NAMES, describe_instructions, int8_instructions, weight_nodes

#: Op types only an int8 graph has (dynamic and static quantization, before and after ONNX Runtime's fusions).
INT8_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
            "MatMulIntegerToFloat", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear", "ConvInteger",
            "QLinearConv", "QGemm"}
ATTENTION_MATMULS = ("attention_scores", "attention_values")


def _ops(path):
    return [node.op_type for node in onnx.load(path, load_external_data=False).graph.node]


def _feature_file(tmp_path, dim, segments=8, frames=120):
    path = str(tmp_path / "sample.npz")
    numpy.savez(path, **{f"s{i}": features(frames, dim, 10 + i) for i in range(segments)})
    return path


def _quantized_by(path):
    import json

    return json.loads(read_metadata(path)["sprintiface.prepared_by"])["quantized"]


def test_report_lists_every_variant_with_its_agreement_and_the_written_one_scores(tmp_path, write_model, capsys):
    source = write_model(build_blstm(12, 30, 32, seed=3))
    sample = _feature_file(tmp_path, 12)
    out_path = str(tmp_path / "am.int8.onnx")
    # --min-speedup 0 --min-agreement 0: whatever this machine measures, a variant is written
    assert main(["prepare", source, "-o", out_path, "--quantize", "--features", sample, "--min-speedup", "0",
                 "--min-agreement", "0"]) == 0
    out = capsys.readouterr().out
    prepared = prepare_model(source, str(tmp_path / "again.onnx"), quantize=True, sample_features=sample,
                             min_speedup=0, min_agreement=0)
    report = prepared.quantization
    names = [variant.name for variant in report.variants]
    assert names == ["dynamic-all", "dynamic-weights", "dynamic-LSTM", "static-weights", "static-all"]
    for variant in report.variants:
        assert variant.name in out
        assert variant.error is None, variant
        assert 0 <= variant.top1_agreement <= 1 and variant.max_score_difference >= variant.mean_score_difference >= 0
        assert variant.speedup > 0 and len(variant.round_speedups) == report.rounds >= 2
    assert report.variant("dynamic-LSTM").quantized_nodes == ["LSTM_2"]  # the only LSTM, named for the quantizer
    assert report.calibration and "calibrated on other segments" in out
    assert "agrees" in out and "per round" in out and "CPU int8 instructions" in out and "int8 pays" in out
    assert report.chosen in names and f"{report.chosen}" in out and "<- written" in out
    assert _quantized_by(out_path) in names
    assert INT8_OPS & set(_ops(out_path))
    x = features(40, 12, 3)
    got = score_segment(rasr_scorer(f"onnx:{out_path},log_level:warning", 12, 30), x)
    reference = -numpy.log(bare_run(source, x, **{"data:size1": numpy.array([40], dtype=numpy.int32)}))
    assert got.shape == (40, 30) and numpy.abs(got - reference).max() < 0.5  # int8, not float: close, not equal


def test_attention_matmuls_stay_float_in_the_constant_weight_variant(tmp_path, write_model):
    model = build_attention(12, 30, 32, seed=4)
    assert sorted(weight_nodes(model)) == sorted(["input_projection", "query", "key", "value", "attention_output",
                                                  "feed_forward_in", "feed_forward_out", "output_layer"])
    source = write_model(model)
    written = str(tmp_path / "am.int8.onnx")
    prepared = prepare_model(source, written, plain=True, quantize=True, quantize_variants=["dynamic-weights"],
                             min_speedup=0, min_agreement=0)
    variant = prepared.quantization.variant("dynamic-weights")
    assert prepared.quantization.chosen == "dynamic-weights"
    assert not set(ATTENTION_MATMULS) & set(variant.quantized_nodes) and "query" in variant.quantized_nodes
    graph = onnx.load(written).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    nodes = {node.name: node for node in graph.node}
    for name in ATTENTION_MATMULS:  # still float MatMuls of float activations
        assert nodes[name].op_type == "MatMul"
        assert not {produced_by.get(name) for name in nodes[name].input} & INT8_OPS
    assert "query" not in nodes and "MatMulInteger" in _ops(written)
    x = features(25, 12, 5)
    got = score_segment(rasr_scorer(f"onnx:{written},log_level:warning", 12, 30), x)
    assert numpy.abs(got - (-numpy.log(bare_run(source, x)))).max() < 0.5


def test_when_no_variant_pays_the_float_model_is_written_and_the_output_says_so(tmp_path, write_model, capsys):
    source = write_model(build_mlp(12, 30, (64,), seed=6))
    written = str(tmp_path / "am.onnx")
    # the test seam: 100x as fast is more than int8 gives anywhere
    assert main(["prepare", source, "-o", written, "--quantize", "--min-speedup", "100"]) == 0
    out = capsys.readouterr().out
    assert "int8 does not pay: no variant is at least 100.00x as fast" in out
    assert "wrote the float32 model, no int8 model" in out and "--keep-slower" in out
    assert "float32 weights: int8 did not pay" in out and "<- written" not in out
    assert "static variants not measured: they need --features" in out and "random normal features" in out
    assert _quantized_by(written) is False
    assert not INT8_OPS & set(_ops(written))
    data = [name for name in os.listdir(tmp_path) if name.startswith("am.onnx.") and name.endswith(".data")]
    assert len(data) == 1  # the float model's weights file: nothing else, no int8 file, no scratch
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(source), "am.onnx", *data])
    x = features(20, 12, 7)
    got = score_segment(rasr_scorer(f"onnx:{written},log_level:warning", 12, 30), x)
    numpy.testing.assert_allclose(got, -numpy.log(bare_run(source, x)), atol=2e-5)


def test_keep_slower_writes_the_best_variant_anyway_and_says_so(tmp_path, write_model, capsys):
    source = write_model(build_mlp(12, 30, (64,), seed=6))
    written = str(tmp_path / "am.onnx")
    assert main(["prepare", source, "-o", written, "--quantize", "--min-speedup", "100", "--keep-slower",
                 "--min-agreement", "0"]) == 0
    out = capsys.readouterr().out
    assert "int8 does not pay" in out and "--keep-slower: wrote dynamic-all anyway" in out
    assert _quantized_by(written) == "dynamic-all" and INT8_OPS & set(_ops(written))


def test_the_cli_help_names_the_options_and_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--keep-slower" in out and "(default: off, the float32 model is written)" in out
    assert "--min-speedup X" in out and "(default: 1.1)" in out and "(default: 0.95)" in out
    assert all(name in out.replace("- ", "-") for name in VARIANT_NAMES)  # argparse wraps at hyphens


def test_wrong_choices_are_refused_naming_what_was_expected(tmp_path, write_model):
    source = write_model(build_mlp(12, 30, (16,), seed=1))
    with pytest.raises(ModelError, match=r"expected variants among dynamic-all.*got dynamic-fast"):
        prepare_model(source, str(tmp_path / "a.onnx"), quantize=True, quantize_variants=["dynamic-fast"])
    with pytest.raises(ModelError, match=r"--min-agreement in \[0, 1\], got 1.1 and 2"):
        prepare_model(source, str(tmp_path / "a.onnx"), quantize=True, min_agreement=2)
    assert not (tmp_path / "a.onnx").exists()


def test_int8_instructions_are_read_from_the_kernels_flags(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512bw avx512_vnni\n\n"
                   "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512bw avx512_vnni\n")
    assert int8_instructions(str(x86)) == ["AVX512-VNNI (vpdpbusd)", "AVX512BW (vpmaddubsw)", "AVX2 (vpmaddubsw)"]
    assert describe_instructions(int8_instructions(str(x86))).endswith("; no AMX")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: sse2 avx2 avx512_vnni amx_tile amx_int8\n")
    assert int8_instructions(str(amx))[0].startswith("AMX-INT8") and "no AMX" not in describe_instructions(
        int8_instructions(str(amx)))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert int8_instructions(str(arm)) == ["I8MM (smmla)", "dot product (sdot)", "NEON (smull)"]
    assert int8_instructions(str(tmp_path / "absent")) == []
    with open("/proc/cpuinfo") as file:
        if " avx512_vnni" in file.read():  # this machine's
            assert "AVX512-VNNI (vpdpbusd)" in int8_instructions()


@pytest.mark.torch
def test_i6_models_conformer_keeps_its_attention_matmuls_float(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("i6_models")
    pytest.importorskip("typeguard")
    from test_i6_models import EXPORTER, FEATURES, MODEL_FILES, _load

    from sprintiface.training.torch_export import export_onnx

    model = _load(MODEL_FILES["conformer"](), tmp_path / "am.py")["get_model"](1)
    model.eval()
    exported = str(tmp_path / "conformer.onnx")
    export_onnx(model, exported, FEATURES, EXPORTER["conformer"])
    sample = _feature_file(tmp_path, FEATURES, segments=4, frames=80)
    written = str(tmp_path / "conformer.int8.onnx")
    prepared = prepare_model(exported, written, quantize=True, sample_features=sample,
                             quantize_variants=["dynamic-all", "dynamic-weights"], min_speedup=0, min_agreement=0)
    report = prepared.quantization
    float_model = onnx.load(exported)
    activation_matmuls = [node.name for node in float_model.graph.node if node.op_type == "MatMul"
                          and node.name not in weight_nodes(float_model)]
    restricted = report.variant("dynamic-weights")
    assert restricted.error is None and restricted.quantized_nodes
    assert activation_matmuls and not set(activation_matmuls) & set(restricted.quantized_nodes)
    assert report.chosen in ("dynamic-all", "dynamic-weights")
    x = features(30, FEATURES, 8)
    assert score_segment(rasr_scorer(f"onnx:{written},log_level:warning", FEATURES, 6), x).shape == (30, 6)


@pytest.mark.parametrize("variant", ["dynamic-all", "static-weights"])
def test_int8_weights_are_7_bit_so_no_cpu_saturates_them(tmp_path, write_model, variant):
    """x86 CPUs without VNNI multiply with vpmaddubsw, whose 16-bit sums saturate on
    full-range int8 weights (scores wrong by up to 1 in -log space on an AVX2 CPU): every
    int8 file holds weights in [-64, 64], whatever CPU it was prepared on."""
    import numpy.random

    source = write_model(build_mlp(12, 30, (64, 64), seed=6))
    feature_file = str(tmp_path / "features.npz")
    rng = numpy.random.default_rng(1)
    numpy.savez(feature_file, **{f"s{i}": rng.standard_normal((40, 12)).astype(numpy.float32) for i in range(4)})
    written = str(tmp_path / "am.int8.onnx")
    prepare_model(source, written, plain=True, quantize=True, quantize_variants=[variant], min_speedup=0,
                  min_agreement=0, sample_features=feature_file)
    model = onnx.load(written)
    int8_weights = [onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer
                    if tensor.data_type == onnx.TensorProto.INT8 and tensor.dims and numpy.prod(tensor.dims) > 1]
    assert int8_weights
    for weights in int8_weights:
        # two uint8 x int8 products per 16-bit lane: 2 * 255 * 64 = 32640 fits, 2 * 255 * 127 does not
        assert int(numpy.abs(weights.astype(numpy.int32)).max()) <= 64


def _gemm_model():
    """x (T, 12) -> Gemm (transB, bias: an exported nn.Linear) -> Relu -> MatMul -> Softmax; and a
    float Add that reads the Gemm's output (a residual connection)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(numpy.float32), name)
               for name, shape in (("W", (12, 12)), ("b", (12,)), ("W2", (12, 30)))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="out_proj", transB=1),
         helper.make_node("Add", ["h", "x"], ["r"], name="residual"),
         helper.make_node("Relu", ["r"], ["a"], name="act"),
         helper.make_node("MatMul", ["a", "W2"], ["y"], name="output_layer"),
         helper.make_node("Softmax", ["y"], ["p"], name="softmax", axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 12])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["T", 30])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("variant", ["dynamic-weights", "dynamic-all", "dynamic-Gemm"])
def test_a_gemm_weight_is_quantized_and_counted_only_when_it_is(tmp_path, write_model, variant):
    """ONNX Runtime has no integer Gemm and rewrites a Gemm into MatMul + Add under new names
    before it selects nodes: the Gemm (attention's output projection) is asked for under the
    new name, and the report counts the nodes that really are int8."""
    source = write_model(_gemm_model())
    written = str(tmp_path / "am.int8.onnx")
    prepared = prepare_model(source, written, plain=True, quantize=True, quantize_variants=[variant],
                             min_speedup=0, min_agreement=0)
    graph = onnx.load(written).graph
    integer = [node.name for node in graph.node if node.op_type == "MatMulInteger"]
    counted = prepared.quantization.variant(variant).quantized_nodes
    assert "out_proj_MatMul_quant" in integer and "Gemm" not in {node.op_type for node in graph.node}
    assert "out_proj" in counted and "residual" not in counted and "act" not in counted
    assert len(counted) == len(integer)


def test_static_int8_counts_the_quantized_nodes_not_their_float_readers(tmp_path, write_model):
    source = write_model(_gemm_model())
    feature_file = str(tmp_path / "features.npz")
    rng = numpy.random.default_rng(2)
    numpy.savez(feature_file, **{f"s{i}": rng.standard_normal((40, 12)).astype(numpy.float32) for i in range(4)})
    prepared = prepare_model(source, str(tmp_path / "am.int8.onnx"), plain=True, quantize=True,
                             quantize_variants=["static-weights"], min_speedup=0, min_agreement=0,
                             sample_features=feature_file)
    assert sorted(prepared.quantization.variant("static-weights").quantized_nodes) == ["out_proj", "output_layer"]
