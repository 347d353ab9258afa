"""Which integer input is fed T, and heads that compute in float16, double or bfloat16:
the scorer, ``sprintiface prepare`` (then loading the prepared model) and
``sprintiface check-model`` agree, on real ONNX Runtime sessions of models built
with onnx.helper (tools/onnx_models.py)."""
import json

import numpy
import onnxruntime
import pytest
from conftest import features, rasr_scorer, score_segment
from onnx_models import build_blstm, build_head
from scorer_reference import ReferenceScorer

from sprintiface import ModelError
from sprintiface.cli import main
from sprintiface.onnx_proto import append_metadata, read_metadata
from sprintiface.plan import PLAN_KEY, PLAN_VERSION
from sprintiface.prepare import prepare_model

# Weights of 1 KB and more: the shareable prepared form puts them in its weights file.
F, C = 40, 7


def refused_everywhere(path, tmp_path, capsys, config=""):
    """The ModelError message the scorer gives for ``path``; prepare and check-model give the same."""
    with pytest.raises(ModelError) as scorer_error:
        rasr_scorer(f"onnx:{path},log_level:warning{config}", F, C)
    with pytest.raises(ModelError) as prepare_error:
        prepare_model(path, str(tmp_path / "prepared.onnx"))
    capsys.readouterr()
    assert main(["check-model", path, "--input-dim", str(F), "--output-dim", str(C)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"sprintiface: error: check-model: ModelError: {scorer_error.value}"
    assert str(prepare_error.value) == str(scorer_error.value)
    assert not (tmp_path / "prepared.onnx").exists()
    return str(scorer_error.value)


# -- the length input -----------------------------------------------------------

def test_an_integer_input_that_is_not_a_length_is_refused(write_model, tmp_path, capsys):
    path = write_model(build_head(F, C, extra_inputs=[("speaker_id", "int64", ["B"])]))
    message = refused_everywhere(path, tmp_path, capsys)
    assert "'speaker_id' int64 [B]" in message and path in message
    assert "set length_name:speaker_id" in message and "--length-name speaker_id" in message


def test_length_name_takes_any_integer_input(write_model, tmp_path):
    # what the model computes from speaker_id is its own business; told, sprintiface feeds it T
    path = write_model(build_head(F, C, extra_inputs=[("speaker_id", "int64", ["B"])]))
    x = features(11, F)
    scorer = rasr_scorer(f"onnx:{path},length_name:speaker_id,log_level:warning", F, C)
    numpy.testing.assert_allclose(score_segment(scorer, x), ReferenceScorer(path, "log_probs").scores(x),
                                  rtol=2e-5, atol=2e-5)
    prepared = str(tmp_path / "prepared.onnx")
    interface = prepare_model(path, prepared, length_name="speaker_id").interface
    assert interface.length_input.name == "speaker_id"
    assert main(["check-model", prepared, "--input-dim", str(F), "--output-dim", str(C)]) == 0
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{prepared},log_level:warning", F, C), x),
                                  ReferenceScorer(path, "log_probs").scores(x), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["data:size1", "audio_features:size1", "features-size", "lengths", "seq_len",
                                  "audio_features_len", "x_lens", "seq_lengths", "input_length", "seqLen",
                                  "num_frames", "sizes"])
@pytest.mark.parametrize("dtype, shape", [("int32", ["B"]), ("int64", []), ("int64", [1])])
def test_the_names_exporters_give_lengths_are_fed_t(write_model, name, dtype, shape, capsys):
    path = write_model(build_head(F, C, extra_inputs=[(name, dtype, shape)]))
    scorer = rasr_scorer(f"onnx:{path},log_level:warning", F, C)
    assert scorer.engine.interface.length_input.name == name
    x = features(9, F)
    numpy.testing.assert_allclose(score_segment(scorer, x), ReferenceScorer(path, "log_probs").scores(x),
                                  rtol=2e-5, atol=2e-5)
    # the length reaches the model as T: the model passes it through to an output of its own
    session = scorer.engine.session
    (length,) = session.run([f"{name}:out"], scorer.engine._feeds(x))
    assert numpy.asarray(length).reshape(-1).tolist() == [9]
    assert main(["check-model", path, "--input-dim", str(F), "--output-dim", str(C)]) == 0
    assert f"'{name}' {dtype}" in capsys.readouterr().out


@pytest.mark.parametrize("names", [("data:size1", "features-size"), ("lengths", "seq_len")])
def test_two_length_looking_inputs_ask_for_length_name(write_model, tmp_path, capsys, names):
    path = write_model(build_head(F, C, extra_inputs=[(name, "int32", ["B"]) for name in names]))
    message = refused_everywhere(path, tmp_path, capsys)
    assert "several inputs look like the sequence length" in message and "length_name" in message
    assert all(f"'{name}' int32 [B]" in message for name in names)
    # told which is the length, the other one is still an input sprintiface cannot feed
    with pytest.raises(ModelError, match=rf"integer input\(s\) '{names[1]}' int32 \[B\] are not the sequence "
                                         rf"length, which is '{names[0]}' int32 \[B\] \(as length_name says\)"):
        rasr_scorer(f"onnx:{path},length_name:{names[0]},log_level:warning", F, C)


def test_a_length_next_to_another_integer_input_is_refused(write_model, tmp_path, capsys):
    path = write_model(build_head(F, C, extra_inputs=[("data:size1", "int32", ["B"]), ("speaker_id", "int64", ["B"])]))
    message = refused_everywhere(path, tmp_path, capsys)
    assert "'speaker_id' int64 [B]" in message and "'data:size1' int32 [B]" in message
    assert "set length_name:speaker_id" in message


@pytest.mark.parametrize("name", ["batch_size", "beam_size", "chunk_size", "speaker", "lang_id"])
def test_names_of_other_integers_are_no_length(write_model, tmp_path, capsys, name):
    path = write_model(build_head(F, C, extra_inputs=[(name, "int32", [])]))
    assert f"set length_name:{name}" in refused_everywhere(path, tmp_path, capsys)


def test_length_name_must_be_an_integer_of_rank_0_or_1(write_model, tmp_path):
    path = write_model(build_head(F, C, extra_inputs=[("lengths", "int32", ["B", 2]), ("mask", "float", ["B"])]))
    with pytest.raises(ModelError, match=r"length_name='lengths': length input 'lengths' int32 \[B, 2\] must be "
                                         r"int32/int64 of shape \[B\] or \[\]"):
        rasr_scorer(f"onnx:{path},length_name:lengths", F, C)
    with pytest.raises(ModelError, match=r"length_name='nothing': the model has no such sequence-length input"):
        prepare_model(path, str(tmp_path / "p.onnx"), length_name="nothing")
    # a rank-2 integer input is not taken for the length, and cannot be fed
    with pytest.raises(ModelError, match=r"input\(s\) 'lengths' int32 \[B, 2\], 'mask' float \[B\] are neither"):
        rasr_scorer(f"onnx:{path}", F, C)


def test_blstm_lengths_are_its_sequence_lens(write_model):
    # the length really is used (LSTM sequence_lens) under each name the exporters give
    for name in ("data:size1", "features-size", "audio_features_len"):
        path = write_model(build_blstm(F, C, hidden=3, length_name=name, length_type="int64", output_kind="log_probs"))
        x = features(13, F)
        numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{path},log_level:warning", F, C), x),
                                      ReferenceScorer(path, "log_probs").scores(x), rtol=2e-5, atol=2e-5)


# -- float16, double and bfloat16 heads ------------------------------------------

HEADS = [dict(normaliser=normaliser, bias=bias) for normaliser in ("LogSoftmax", "Softmax")
         for bias in ((-1,), None)]
KIND = {"LogSoftmax": "log_probs", "Softmax": "probs"}
FP16_EPS = 2.0 ** -11  # float16's unit roundoff


def assert_within_float16(got, expected, what=""):
    """Scores within float16's rounding of the model's output: of the score relative to its size, or
    of the probability where float16 has no relative precision left (subnormals and 0 below 2^-14)."""
    close_scores = numpy.abs(got - expected) <= 8 * FP16_EPS * (1 + numpy.abs(expected))
    close_probs = numpy.abs(numpy.exp(-got) - numpy.exp(-expected)) <= 8 * 2.0 ** -24
    bad = ~(close_scores | close_probs)
    assert not bad.any(), f"{what}: {bad.sum()} scores off, e.g. {got[bad][:4]} vs {expected[bad][:4]}"


@pytest.mark.parametrize("head", HEADS, ids=lambda h: f"{h['normaliser']}-{'bias' if h['bias'] else 'nobias'}")
@pytest.mark.parametrize("head_type", ["float16", "double"])
def test_a_float16_or_double_head_scores_as_the_bare_model(write_model, tmp_path, capsys, head, head_type):
    path = write_model(build_head(F, 17, head_type=head_type, scale=8.0, seed=3, **head))
    x = features(23, F, seed=5)
    expected = ReferenceScorer(path, KIND[head["normaliser"]]).scores(x)
    check = assert_within_float16 if head_type == "float16" else \
        (lambda got, want, what: numpy.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=what))
    scorer = rasr_scorer(f"onnx:{path},log_level:warning", F, 17)
    check(score_segment(scorer, x), expected, "scorer")
    # the normalisation is cut; a bias of the head's type stays in the graph (its own rounding)
    assert scorer.engine.kind == "logits" and scorer.engine.logit_bias is None
    for form in ((), ("--plain",)):
        prepared = str(tmp_path / f"prepared{len(form)}.onnx")
        assert main(["prepare", path, "-o", prepared, *form]) == 0
        check(score_segment(rasr_scorer(f"onnx:{prepared},log_level:warning", F, 17), x), expected,
              f"prepared {form}")
    capsys.readouterr()
    assert main(["check-model", path, "--input-dim", str(F), "--output-dim", "17"]) == 0
    assert "applied by sprintiface in place" in capsys.readouterr().out


def test_float16_softmax_that_underflows_gets_the_score_of_its_logits(write_model):
    # float16 probabilities below 2^-24 are 0 (bare: the FLT_MIN cap, 87.3); the cut scores the logits
    path = write_model(build_head(4, 33, head_type="float16", normaliser="Softmax", scale=30.0, seed=1))
    x = features(40, 4, seed=2)
    got = score_segment(rasr_scorer(f"onnx:{path},log_level:warning", 4, 33), x)
    expected = ReferenceScorer(path, "probs").scores(x)
    assert_within_float16(got, expected, "scorer")
    assert (expected >= 87.3).any() and (got > 90).any() and numpy.isfinite(got).all()
    float16_head = write_model(build_head(4, 33, head_type="float16", scale=30.0, seed=1))
    log_softmax = ReferenceScorer(float16_head, "log_probs").scores(x)
    numpy.testing.assert_allclose(got, log_softmax, rtol=8 * FP16_EPS, atol=8 * FP16_EPS)


@pytest.mark.parametrize("normaliser", ["LogSoftmax", "Softmax"])
def test_bfloat16_logits_are_a_model_error(write_model, tmp_path, capsys, normaliser):
    path = write_model(build_head(F, C, head_type="bfloat16", normaliser=normaliser))
    # ONNX Runtime's CPU provider cannot run it either (when it can, this refusal must go)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    message = refused_everywhere(path, tmp_path, capsys)
    assert "its logits 'logits'" in message and "bfloat16, made by Add" in message
    assert "export the model in float32" in message


def test_a_bfloat16_softmax_of_float32_logits_is_cut(write_model):
    # log_softmax(x.bfloat16()).float(): the cut computes it from the float32 logits, which
    # ONNX Runtime's CPU provider could not (no bfloat16 softmax)
    path = write_model(build_head(before=["Cast:bfloat16"]))
    x = features(8, 4)
    scorer = rasr_scorer(f"onnx:{path},log_level:warning", 4, 5)
    assert scorer.engine.kind == "logits" and scorer.engine.logit_bias is not None
    reference = write_model(build_head())  # the same weights, all float32
    numpy.testing.assert_allclose(score_segment(scorer, x), ReferenceScorer(reference, "log_probs").scores(x),
                                  rtol=2e-5, atol=2e-5)


# -- models prepared by plan version 1 -------------------------------------------

def as_plan_version_1(prepared):
    plan = json.loads(read_metadata(prepared)[PLAN_KEY])
    plan["version"] = 1
    append_metadata(prepared, {PLAN_KEY: json.dumps(plan)})  # the later entry wins


def test_a_version_1_plan_that_took_an_integer_input_for_the_length_is_prepared_again(write_model, tmp_path):
    # version 1 would have picked speaker_id on its own: such a plan cannot be told from a told one
    path = write_model(build_head(F, C, extra_inputs=[("speaker_id", "int64", ["B"])]))
    prepared = str(tmp_path / "prepared.onnx")
    prepare_model(path, prepared, length_name="speaker_id", plain=True)
    assert json.loads(read_metadata(prepared)[PLAN_KEY])["version"] == PLAN_VERSION
    rasr_scorer(f"onnx:{prepared},log_level:warning", F, C)
    as_plan_version_1(prepared)
    with pytest.raises(ModelError, match=r"older sprintiface, which took input 'speaker_id' for the sequence length "
                                         r"by its type alone: prepare it again \(with --length-name speaker_id"):
        rasr_scorer(f"onnx:{prepared},log_level:warning", F, C)


def test_a_version_1_plan_with_a_length_by_name_still_loads(write_model, tmp_path):
    path = write_model(build_head(F, C, extra_inputs=[("data:size1", "int32", ["B"])]))
    prepared = str(tmp_path / "prepared.onnx")
    prepare_model(path, prepared, plain=True)
    as_plan_version_1(prepared)
    x = features(6, F)
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{prepared},log_level:warning", F, C), x),
                                  ReferenceScorer(path, "log_probs").scores(x), rtol=2e-5, atol=2e-5)
