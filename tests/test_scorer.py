"""The PythonFeatureScorer against bare ONNX Runtime, driven as RASR drives it."""
import numpy
import pytest
from conftest import bare_run, features, make_engine, onnx_model, rasr_scorer, score_segment
from onnx_models import build_blstm, build_mlp

import sprintiface
from sprintiface import ConfigError, FeatureError, ModelError, PriorError, ProtocolError, ScoreError
from sprintiface.config import load_config


def expected_scores(path, x, kind, prior_term=None):
    raw = bare_run(path, x).astype(numpy.float64)
    if kind == "probs":
        scores = -numpy.log(raw)
    elif kind == "log_probs":
        scores = -raw
    elif kind == "logits":
        shifted = raw - raw.max(axis=1, keepdims=True)
        scores = numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True)) - shifted
    else:
        scores = raw
    if prior_term is not None:
        scores = scores + prior_term
    return scores


@pytest.mark.parametrize("kind", ["probs", "log_probs", "logits", "scores"])
@pytest.mark.parametrize("architecture", ["mlp", "blstm"])
def test_scores_match_bare_onnxruntime(write_model, kind, architecture):
    if architecture == "mlp":
        model = build_mlp(12, 30, (16,), seed=3, output_kind=kind)
    else:
        model = build_blstm(12, 30, hidden=8, seed=3, output_kind=kind)
    path = write_model(model)
    config = f"onnx:{path}" + ("" if kind in ("probs", "log_probs") else f",output_kind:{kind}")
    scorer = rasr_scorer(config, 12, 30)
    for seed, num_frames in enumerate([57, 3, 120]):
        x = features(num_frames, 12, seed)
        got = score_segment(scorer, x)
        assert got.dtype == numpy.float32
        numpy.testing.assert_allclose(got, expected_scores(path, x, kind), rtol=2e-5, atol=2e-5)


def test_final_bias_and_softmax_are_cut_and_applied_in_place(mlp_path):
    engine = make_engine(mlp_path)
    assert engine.interface.output_kind == "probs"
    assert engine.kind == "logits"
    assert engine.interface.served_output.startswith("mm")  # the last MatMul writes the scores
    assert engine.logit_bias.shape == (30,) and engine.logit_bias.dtype == numpy.float32


def test_a_blstm_is_cut_too(blstm_path):
    engine = make_engine(blstm_path)
    assert engine.kind == "logits" and engine.logit_bias.shape == (30,)


def test_bias_first_and_broadcast_bias_shapes_are_cut_too(write_model):
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(0)
    weight = rng.standard_normal((6, 5)).astype(numpy.float32)
    bias = rng.standard_normal((1, 1, 5)).astype(numpy.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["data", "W"], ["mm"]), helper.make_node("Add", ["b", "mm"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["output"], axis=2)],
        "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", 5])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    path = write_model(onnx_model(graph))
    assert make_engine(path).interface.served_output == "mm"
    x = features(9, 6)
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{path}", 6, 5), x),
                                  -numpy.log(bare_run(path, x)), rtol=2e-5, atol=2e-5)


def test_unbatched_model_and_int64_length(write_model):
    path = write_model(build_mlp(12, 30, (16,), batched=False))
    x = features(40, 12)
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{path}", 12, 30), x),
                                  -numpy.log(bare_run(path, x)), rtol=2e-5, atol=2e-5)
    path = write_model(build_blstm(12, 30, hidden=8, length_type="int64"))
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{path}", 12, 30), x),
                                  -numpy.log(bare_run(path, x)), rtol=2e-5, atol=2e-5)


def test_returnn_and_torch_style_models_load_with_onnx_only(write_model):
    returnn = write_model(build_blstm(12, 30, hidden=8, input_name="data", length_name="data:size1",
                                     output_name="output"))
    torch_like = write_model(build_mlp(12, 30, (16,), input_name="input", output_name="logits_softmax",
                                      opset=17))
    for path in (returnn, torch_like):
        scorer = rasr_scorer(f"onnx:{path}", 12, 30)
        assert score_segment(scorer, features(10, 12)).shape == (10, 30)


def test_blstm_sees_the_whole_segment(blstm_path):
    # The backward direction makes frame 0 depend on the last frame: a scorer
    # that scored frame by frame would get this wrong.
    scorer = rasr_scorer(f"onnx:{blstm_path}", 12, 30)
    x = features(6, 12)
    y = x.copy()
    y[-1] += 5.0
    assert numpy.abs(score_segment(scorer, x)[0] - score_segment(scorer, y)[0]).max() > 1e-4


def test_float64_frames_are_narrowed(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(20, 12)
    for t in range(20):
        scorer.add_feature(feature=x[t].astype(numpy.float64), time=t)
    scorer.compute(num_frames=20)
    got = numpy.stack([scorer.get_scores(time=t) for t in range(20)])
    numpy.testing.assert_allclose(got, -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)


def test_get_scores_is_a_contiguous_row_without_copy(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(5, 12)
    for t in range(5):
        scorer.add_feature(feature=x[t], time=t)
    scorer.compute(num_frames=5)
    row0, row1 = scorer.get_scores(time=0), scorer.get_scores(time=1)
    assert row0.shape == (30,) and row0.dtype == numpy.float32
    assert row0.flags.c_contiguous and not row0.flags.owndata
    assert row0.base is row1.base  # both are views into one score matrix
    assert row1.__array_interface__["data"][0] - row0.__array_interface__["data"][0] == 30 * 4


def test_priors_in_every_format(tmp_path, mlp_path):
    rng = numpy.random.default_rng(5)
    prior = rng.random(30) + 0.1
    prior /= prior.sum()
    log_prior = numpy.log(prior)
    (tmp_path / "prior.txt").write_text("\n".join(f"{v:.9g}" for v in log_prior) + "\n")
    (tmp_path / "prior_ws.txt").write_text("  ".join(f"{v:.9g}" for v in log_prior[:10]) + "\n\t"
                                           + " \n ".join(f"{v:.9g}" for v in log_prior[10:]))
    (tmp_path / "prior.xml").write_text(
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<vector-f32 size="30">\n'
        + " ".join(f"{v:.9g}" for v in log_prior) + "\n</vector-f32>\n")
    numpy.save(tmp_path / "prior.npy", log_prior.astype(numpy.float32))
    (tmp_path / "prior_prob.txt").write_text("\n".join(f"{v:.9g}" for v in prior))
    x = features(25, 12)
    for name, extra in [("prior.txt", ""), ("prior_ws.txt", ""), ("prior.xml", ""), ("prior.npy", ""),
                        ("prior_prob.txt", ",prior_space:prob")]:
        scorer = rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / name},prior_scale:0.7{extra}", 12, 30)
        numpy.testing.assert_allclose(score_segment(scorer, x),
                                      expected_scores(mlp_path, x, "probs", 0.7 * log_prior),
                                      rtol=2e-5, atol=3e-5, err_msg=name)


def test_prior_errors(tmp_path, mlp_path):
    (tmp_path / "short.txt").write_text("-1.0\n-2.0\n")
    with pytest.raises(PriorError, match=r"has 2 values, but the model has 30 classes"):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / 'short.txt'}", 12, 30)
    (tmp_path / "probs.txt").write_text("\n".join(["0.0333"] * 30))
    with pytest.raises(PriorError, match="prior_space:prob"):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / 'probs.txt'}", 12, 30)
    (tmp_path / "bad.xml").write_text('<vector-f32 size="31">' + " -1" * 30 + "</vector-f32>")
    with pytest.raises(PriorError, match='size="31"> holds 30 values'):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / 'bad.xml'}", 12, 30)
    with pytest.raises(ConfigError, match=r"prior_file.*no such file"):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / 'missing.txt'}", 12, 30)
    with pytest.raises(ConfigError, match="no prior_file"):
        rasr_scorer(f"onnx:{mlp_path},prior_scale:0.5", 12, 30)


def test_chunked_mode_matches_whole_segment_for_a_framewise_model(mlp_path):
    whole = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    chunked = rasr_scorer(f"onnx:{mlp_path},buffer_size:16", 12, 30)
    assert whole.get_feature_buffer_size() == -1
    assert chunked.get_feature_buffer_size() == 16
    x = features(50, 12)
    expected = score_segment(whole, x)
    got = numpy.concatenate([score_segment(chunked, x[start:start + 16]) for start in range(0, 50, 16)])
    numpy.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    for t in range(16):
        chunked.add_feature(feature=x[t], time=t)
    with pytest.raises(ProtocolError, match="at most 16 frames"):
        chunked.add_feature(feature=x[16], time=16)


def test_many_segments_with_resets_and_growth(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    scorer.reset(num_frames=0)
    for seed, num_frames in enumerate([1, 3000, 7, 1500, 2, 0, 40]):
        if num_frames == 0:
            scorer.reset(num_frames=0)
            continue
        x = features(num_frames, 12, seed)
        numpy.testing.assert_allclose(score_segment(scorer, x), -numpy.log(bare_run(mlp_path, x)),
                                      rtol=2e-5, atol=2e-5)
    assert scorer.get_segment_name() == "unknown-seq-name-6"


def test_hot_path_errors_name_what_came_and_the_scorer_recovers(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(4, 12)
    with pytest.raises(FeatureError, match=r"expected shape \(12,\) \(input_dim\), got \(13,\)"):
        scorer.add_feature(feature=numpy.zeros(13, numpy.float32), time=0)
    with pytest.raises(FeatureError, match=r"expected shape \(12,\).*got \(1, 12\)"):
        scorer.add_feature(feature=numpy.zeros((1, 12), numpy.float32), time=0)
    with pytest.raises(FeatureError, match=r"expected float32.*int32"):
        scorer.add_feature(feature=numpy.zeros(12, numpy.int32), time=0)
    with pytest.raises(FeatureError, match="expected a float32 numpy array"):
        scorer.add_feature(feature="not a frame", time=0)
    scorer.add_feature(feature=x[0], time=0)
    with pytest.raises(FeatureError, match=r"expected time 1 .* got time 3"):
        scorer.add_feature(feature=x[1], time=3)
    with pytest.raises(ProtocolError, match="no scores: compute"):
        scorer.get_scores(time=0)
    with pytest.raises(ProtocolError, match=r"compute\(num_frames=2\): the buffer holds 1 frames"):
        scorer.compute(num_frames=2)
    scorer.reset(num_frames=5)  # after a failure, reset clears without complaining
    numpy.testing.assert_allclose(score_segment(scorer, x), -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)
    for t in range(4):
        scorer.add_feature(feature=x[t], time=t)
    scorer.compute(num_frames=4)
    with pytest.raises(ProtocolError, match=r"time 4 is outside the computed window \[0, 4\)"):
        scorer.get_scores(time=4)
    with pytest.raises(ProtocolError, match=r"time -1 is outside"):
        scorer.get_scores(time=-1)
    scorer.reset(num_frames=4)
    for t in range(2):
        scorer.add_feature(feature=x[t], time=t)
    with pytest.raises(ProtocolError, match=r"reset\(num_frames=3\): the buffer held 2 frames"):
        scorer.reset(num_frames=3)
    numpy.testing.assert_allclose(score_segment(scorer, x), -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)


def test_strided_frames_are_accepted_lists_are_not(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(3, 12)
    wide = numpy.zeros((3, 24), numpy.float32)
    wide[:, ::2] = x
    scorer.add_feature(feature=wide[0, ::2], time=0)
    scorer.add_feature(feature=memoryview(x[1].copy()), time=1)
    # RASR sends arrays; a list is a caller's bug, refused rather than converted
    with pytest.raises(FeatureError, match=r"expected a float32 numpy array of shape \(12,\), got list"):
        scorer.add_feature(feature=[float(v) for v in x[2]], time=2)
    scorer.add_feature(feature=memoryview(wide[2, ::2]), time=2)  # a strided buffer
    scorer.compute(num_frames=3)
    got = numpy.stack([scorer.get_scores(time=t) for t in range(3)])
    numpy.testing.assert_allclose(got, -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)


def test_non_finite_scores_name_segment_and_frame(write_model):
    from onnx import TensorProto, helper

    # log(x) of the input: a negative feature gives NaN at a known frame.
    graph = helper.make_graph(
        [helper.make_node("Log", ["data"], ["output"])], "log",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", 4])])
    path = write_model(onnx_model(graph))
    scorer = rasr_scorer(f"onnx:{path},output_kind:log_probs", 4, 4)
    x = numpy.ones((6, 4), numpy.float32)
    x[4, 2] = -1.0
    for t in range(6):
        scorer.add_feature(feature=x[t], time=t)
    with pytest.raises(ScoreError, match=r"segment 'unknown-seq-name-0' at frame 4"):
        scorer.compute(num_frames=6)
    scorer.reset(num_frames=6)
    got = score_segment(scorer, numpy.ones((3, 4), numpy.float32))
    numpy.testing.assert_array_equal(got, numpy.zeros((3, 4), numpy.float32))


def test_model_errors(write_model, mlp_path, tmp_path):
    with pytest.raises(ModelError, match=r"takes features of dim 12.*feature-dimension is 13"):
        rasr_scorer(f"onnx:{mlp_path}", 13, 30)
    with pytest.raises(ModelError, match=r"gives 30 classes.*output dimension.*is 31"):
        rasr_scorer(f"onnx:{mlp_path}", 12, 31)
    logits = write_model(build_mlp(12, 30, (16,), output_kind="logits"))
    with pytest.raises(ModelError, match=r"cannot tell what output 'output' holds.*Identity.*set output_kind"):
        rasr_scorer(f"onnx:{logits}", 12, 30)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is no protobuf")
    with pytest.raises(ModelError, match=r"garbage.onnx.*cannot be read"):
        rasr_scorer(f"onnx:{garbage}", 12, 30)


def test_ambiguous_inputs_ask_for_a_name(write_model):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Softmax", ["sum"], ["output"], axis=-1)],
        "two", [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", "T", 4]) for name in ("a", "b")],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", 4])])
    path = write_model(onnx_model(graph))
    with pytest.raises(ModelError, match=r"several candidates for the feature input.*set input_name"):
        rasr_scorer(f"onnx:{path}", 4, 4)
    with pytest.raises(ModelError, match=r"input\(s\) 'b'.*cannot feed"):
        rasr_scorer(f"onnx:{path},input_name:a", 4, 4)
    with pytest.raises(ModelError, match="input_name='c': the model has no such feature input"):
        rasr_scorer(f"onnx:{path},input_name:c", 4, 4)


def test_config_errors(mlp_path, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key.*'onxx'.*known keys"):
        rasr_scorer(f"onxx:{mlp_path}", 12, 30)
    with pytest.raises(ConfigError, match=r"'intra_op_threads'.*got 'two'"):
        rasr_scorer(f"onnx:{mlp_path},intra_op_threads:two", 12, 30)
    with pytest.raises(ConfigError, match=r"'onnx': no such file.*nowhere.onnx"):
        rasr_scorer(f"onnx:{tmp_path / 'nowhere.onnx'}", 12, 30)
    with pytest.raises(ConfigError, match=r"needs action forward.*'train'"):
        rasr_scorer(f"onnx:{mlp_path},action:train", 12, 30)
    with pytest.raises(ConfigError, match=r"'output_kind'.*expected one of auto, probs"):
        rasr_scorer(f"onnx:{mlp_path},output_kind:softmax", 12, 30)
    with pytest.raises(ConfigError, match=r"'buffer_size'.*expected -1 \(whole segments\) or a number of frames > 0"):
        rasr_scorer(f"onnx:{mlp_path},buffer_size:-5", 12, 30)


def test_buffer_size_zero_is_rejected_where_it_enters(mlp_path):
    # RASR treats 0 as fatal: the config says so, before a model is loaded.
    with pytest.raises(ConfigError, match=r"'buffer_size'.*RASR treats 0 as fatal\); got '0'"):
        load_config("buffer_size:0")


def test_positive_buffer_size_warns_of_rasrs_abort(mlp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="sprintiface")
    scorer = rasr_scorer(f"onnx:{mlp_path},buffer_size:32", 12, 30)
    assert scorer.get_feature_buffer_size() == 32
    assert any("aborts at frame 33" in record.getMessage() and "bufferFilled" in record.getMessage()
               for record in caplog.records)


def test_returnn_model_prefix_and_epoch(tmp_path, write_model):
    (tmp_path / "net-model").mkdir()
    write_model(build_mlp(12, 30, (16,)), "net-model/network.080.onnx")
    scorer = rasr_scorer(f"model:{tmp_path}/net-model/network,epoch:80", 12, 30)
    assert scorer.engine.path.endswith("network.080.onnx")
    with pytest.raises(ConfigError, match=r"resolve to .*network\.081\.onnx.*does not exist"):
        rasr_scorer(f"model:{tmp_path}/net-model/network,epoch:81", 12, 30)
    with pytest.raises(ConfigError, match="needs 'epoch'"):
        rasr_scorer(f"model:{tmp_path}/net-model/network", 12, 30)


def test_one_session_per_model_and_options(mlp_path):
    first = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    second = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    other_threads = rasr_scorer(f"onnx:{mlp_path},intra_op_threads:2", 12, 30)
    assert first.engine is second.engine
    assert other_threads.engine is not first.engine


def test_returnn_api_members(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(7, 12)
    for t in range(7):
        scorer.add_feature(feature=x[t], time=t)
    assert scorer.get_features().shape == (12, 7)
    numpy.testing.assert_array_equal(scorer.get_features(num_frames=7), x.T)
    posteriors = scorer.get_posteriors(num_frames=7)
    assert posteriors.shape == (30, 7)
    numpy.testing.assert_allclose(posteriors, bare_run(mlp_path, x).T, rtol=1e-5, atol=1e-7)
    dataset, seq_idx = scorer.features_to_dataset(num_frames=7)
    numpy.testing.assert_array_equal(dataset.get_data(seq_idx, "data"), x)
    assert dataset.get_tag(seq_idx) == scorer.get_segment_name()
    assert scorer.config.onnx == mlp_path
    assert scorer.engine.interface.output_kind == "probs"
    scorer.compute(num_frames=7)
    scorer.reset(num_frames=7)
    scorer.exit()


def test_module_init_dispatch():
    with pytest.raises(ProtocolError, match="sprint_unit='PythonSegmentOrder'"):
        sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonSegmentOrder", config="")
    assert callable(sprintiface.init_python_feature_scorer)


def test_a_summary_at_exit_a_line_per_segment_at_debug(mlp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="sprintiface")
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    caplog.clear()
    score_segment(scorer, features(50, 12))
    score_segment(scorer, features(20, 12))
    assert not [r for r in caplog.records if r.name == "sprintiface"]  # nothing per segment at info
    scorer.exit()
    lines = [r.getMessage() for r in caplog.records if r.name == "sprintiface"]
    assert len(lines) == 1 and "2 segments, 70 frames, compute" in lines[0] and "RTF" in lines[0]
    caplog.set_level(logging.DEBUG, logger="sprintiface")
    verbose = rasr_scorer(f"onnx:{mlp_path},log_level:debug", 12, 30)
    caplog.clear()
    score_segment(verbose, features(50, 12))
    lines = [r.getMessage() for r in caplog.records if r.name == "sprintiface"]
    assert len(lines) == 1 and "50 frames, compute" in lines[0]
    quiet = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    caplog.clear()
    score_segment(quiet, features(50, 12))
    quiet.exit()
    assert not [r for r in caplog.records if r.name == "sprintiface" and r.levelno < logging.WARNING]


def test_memory_follows_the_work_after_an_outlier(mlp_path):
    from sprintiface.feature_scorer import RECENT_SEGMENTS

    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    score_segment(scorer, features(300, 12))
    buffer = scorer.add_feature.__self__
    ordinary = buffer.score_capacity
    score_segment(scorer, features(20000, 12))  # one outlier
    assert buffer.score_capacity >= 20000
    for seed in range(RECENT_SEGMENTS):
        x = features(300, 12, seed)
        numpy.testing.assert_allclose(score_segment(scorer, x), -numpy.log(bare_run(mlp_path, x)),
                                      rtol=2e-5, atol=2e-5)
    assert buffer.score_capacity <= 2 * max(ordinary, 1024) and buffer.frame_capacity <= 2 * 1024


def test_score_kernel_is_pinned_by_config(mlp_path):
    from sprintiface._buffer import available_score_kernels

    x = features(40, 12)
    scores = {}
    for kernel in available_score_kernels():
        scorer = rasr_scorer(f"onnx:{mlp_path},score_kernel:{kernel},log_level:warning", 12, 30)
        assert scorer.add_feature.__self__.kernel == kernel
        scores[kernel] = score_segment(scorer, x)
        numpy.testing.assert_allclose(scores[kernel], -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)
    with pytest.raises(ConfigError, match=r"'score_kernel'.*expected one of auto, avx512, avx2, baseline"):
        load_config("score_kernel:sse9")


def test_a_length_baked_into_the_graph_is_a_model_error(write_model):
    # A traced export can record the example's T in a Reshape: it then runs at that T only.
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["data", "shape"], ["fixed"]), helper.make_node("MatMul", ["fixed", "W"], ["mm"]),
         helper.make_node("Softmax", ["mm"], ["output"], axis=-1)],
        "baked", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", 3])],
        initializer=[numpy_helper.from_array(numpy.array([1, 50, 4], numpy.int64), "shape"),
                     numpy_helper.from_array(numpy.ones((4, 3), numpy.float32), "W")])
    with pytest.raises(ModelError, match=r"does not run on 16 frames.*baked its example length"):
        rasr_scorer(f"onnx:{write_model(onnx_model(graph))}", 4, 3)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e8])
def test_bias_and_log_softmax_stay_exact_at_extreme_logits(write_model, scale):
    # The cut bias is added before the log-softmax, rounded as the model's Add rounds it:
    # scores match a bare run of the model's own LogSoftmax at any magnitude.
    path = write_model(build_mlp(12, 30, (16,), seed=6, output_kind="log_probs"))
    x = features(40, 12, seed=7) * numpy.float32(scale)
    expected = -bare_run(path, x).astype(numpy.float64)
    got = score_segment(rasr_scorer(f"onnx:{path},log_level:warning", 12, 30), x)
    numpy.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-5)


def test_a_model_written_again_under_the_same_name_is_loaded_again(tmp_path):
    from onnx_models import save_model

    path = str(tmp_path / "am.onnx")
    x = features(5, 12)
    save_model(build_mlp(12, 30, (16,), seed=1), path)
    first = score_segment(rasr_scorer(f"onnx:{path}", 12, 30), x)
    save_model(build_mlp(12, 30, (16,), seed=2), path)
    second = score_segment(rasr_scorer(f"onnx:{path}", 12, 30), x)
    numpy.testing.assert_allclose(second, -numpy.log(bare_run(path, x)), rtol=2e-5, atol=2e-5)
    assert numpy.abs(first - second).max() > 1e-3
