"""The cut of a final softmax (the fast path) against its slow twin, on random heads.

The slow twin is the uncut model run by a bare ``onnxruntime.InferenceSession``
plus the documented transform of what its output holds (probs:
-log(max(p, FLT_MIN)); log_probs: -x; scores: x); the kind is worked out here
from how the head was built, not asked of sprintiface. Heads are built with
onnx.helper (tools/onnx_models.py build_head): Softmax or LogSoftmax, chains
through Cast, Identity, Log and Neg, biases [C], [1, C], [1, 1, C] as either
operand of the Add or none, float32, float16 and double heads, batched
[B, T, F] and unbatched [T, F], with and without length inputs of the accepted
names, odd class counts, logits up to ~30 in size.

A model sprintiface refuses is refused with the same ModelError by the scorer,
``sprintiface prepare`` and ``sprintiface check-model``.
"""
import contextlib
import io
import itertools

import numpy
import pytest
from conftest import rasr_scorer, score_segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from onnx_models import build_head, save_model
from scorer_reference import ATOL, RTOL, ReferenceScorer

from sprintiface import ModelError
from sprintiface.cli import main
from sprintiface.prepare import prepare_model

FLT_MIN = float(numpy.finfo(numpy.float32).tiny)
FP16_EPS = 2.0 ** -11  # float16's unit roundoff
LENGTH_NAMES = ["data:size1", "features-size", "lengths", "seq_len", "audio_features_len", "x_lens",
                "seq_lengths", "num_frames"]
OTHER_INTEGERS = ["speaker_id", "lang", "batch_size"]
_files = itertools.count()


@st.composite
def heads(draw):
    """Keyword arguments of build_head, plus what the output holds and whether float16 rounds anywhere."""
    normaliser = draw(st.sampled_from(["Softmax", "LogSoftmax"]))
    head_type = draw(st.sampled_from(["float", "float", "float16", "double"]))
    batched = draw(st.booleans())
    sprinkle = st.sampled_from([None, None, "Identity", "Cast:float", "Cast:double", "Cast:float16"])
    kind = "probs" if normaliser == "Softmax" else "log_probs"
    after = [draw(sprinkle)]
    if kind == "probs" and draw(st.booleans()):
        after += ["Log", draw(sprinkle)]
        kind = "log_probs"
    if kind == "log_probs" and draw(st.booleans()):
        after += ["Neg", draw(sprinkle)]
        kind = "scores"
    before = [draw(sprinkle)]
    # [T, C] + [1, 1, C] broadcasts to rank 3: an unbatched head takes [C] or [1, C]
    bias = draw(st.sampled_from([None, (-1,), (1, -1)] + ([(1, 1, -1)] if batched else [])))
    extra = draw(st.sampled_from(["none", "length", "length", "other", "two lengths", "length and other",
                                  "other, told"]))
    integer = st.tuples(st.sampled_from(["int32", "int64"]), st.sampled_from([["B"], [], [1]]))
    names = {"none": [], "length": [draw(st.sampled_from(LENGTH_NAMES))],
             "other": [draw(st.sampled_from(OTHER_INTEGERS))], "other, told": ["speaker_id"],
             "two lengths": draw(st.lists(st.sampled_from(LENGTH_NAMES), min_size=2, max_size=2, unique=True)),
             "length and other": ["data:size1", draw(st.sampled_from(OTHER_INTEGERS))]}[extra]
    extra_inputs = [(name, *draw(integer)) for name in names]
    head = dict(input_dim=draw(st.integers(1, 8)), classes=draw(st.sampled_from([1, 2, 3, 17, 33])),
                seed=draw(st.integers(0, 2 ** 16)), batched=batched, head_type=head_type, normaliser=normaliser,
                before=[n for n in before if n], after=[n for n in after if n], bias=bias,
                bias_first=draw(st.booleans()), scale=draw(st.sampled_from([0.1, 1.0, 5.0, 12.0, 30.0])),
                extra_inputs=extra_inputs)
    float16 = head_type == "float16" or "Cast:float16" in head["before"] + head["after"]
    refused = extra in ("other", "two lengths", "length and other")
    told = "speaker_id" if extra == "other, told" else None
    return head, kind, float16, refused, told


def logit_sizes(model, frames):
    """max |logit| per frame, float64 from the model's own weights (float16 rounds logits by this much)."""
    weights = {init.name: numpy_helper.to_array(init).astype(numpy.float64) for init in model.graph.initializer}
    logits = frames.astype(numpy.float64) @ weights["W"]
    if "b" in weights:
        logits = logits + weights["b"].reshape(-1)
    return numpy.abs(logits).max(axis=1, keepdims=True)


def assert_like_the_twin(got, expected, logit_size, float16):
    """Close in score space (float32: the reference tolerance; float16: its unit roundoff, relative to the
    score and the logits, which float16 rounds), or in probability space below what the type resolves
    (float32 FLT_MIN, where the twin's transform caps; float16 subnormals, 2^-24, and zero)."""
    difference = numpy.abs(got - expected)
    if float16:
        close_scores = difference <= 8 * FP16_EPS * (1 + numpy.abs(expected) + logit_size)
        floor = 8 * 2.0 ** -24
    else:
        close_scores = difference <= ATOL + RTOL * numpy.abs(expected)
        floor = 2 * FLT_MIN
    close_probs = numpy.abs(numpy.exp(-got) - numpy.exp(-expected)) <= floor
    bad = ~(close_scores | close_probs)
    assert not bad.any(), f"{bad.sum()} of {bad.size} scores off: {got[bad][:5]} vs the twin's {expected[bad][:5]}"


def refusals(path, directory, input_dim, classes):
    """The ModelError messages of the scorer, prepare and check-model for ``path``."""
    messages = []
    with pytest.raises(ModelError) as error:
        rasr_scorer(f"onnx:{path},log_level:warning", input_dim, classes)
    messages.append(str(error.value))
    with pytest.raises(ModelError) as error:
        prepare_model(path, str(directory / f"prepared{next(_files)}.onnx"))
    messages.append(str(error.value))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["check-model", path, "--input-dim", str(input_dim), "--output-dim", str(classes)]) == 2
    prefix = "sprintiface: error: check-model: ModelError: "  # cli.main's one error line
    assert err.getvalue().startswith(prefix) and "Traceback" not in err.getvalue(), err.getvalue()
    messages.append(err.getvalue()[len(prefix):].strip())
    return messages


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("heads")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=heads(), num_frames=st.integers(1, 50), frames_seed=st.integers(0, 2 ** 16))
def test_the_cut_scores_as_the_uncut_model(directory, case, num_frames, frames_seed):
    head, kind, float16, refused, told = case
    model = build_head(**head)
    path = str(directory / f"head{next(_files)}.onnx")
    save_model(model, path)
    input_dim, classes = head["input_dim"], head["classes"]
    if refused:
        messages = refusals(path, directory, input_dim, classes)
        assert messages[0] == messages[1] == messages[2]
        assert path in messages[0] and "length" in messages[0]
        return
    frames = numpy.random.default_rng(frames_seed).standard_normal((num_frames, input_dim)).astype(numpy.float32)
    config = f"onnx:{path},log_level:warning" + (f",length_name:{told}" if told else "")
    scorer = rasr_scorer(config, input_dim, classes)
    engine = scorer.engine
    assert engine.interface.output_kind == kind
    # the normalisation is cut in every head built here (its chain has no other reader)
    assert engine.kind == "logits"
    assert (engine.interface.length_input is None) == (not head["extra_inputs"])
    got = score_segment(scorer, frames)
    assert_like_the_twin(got, ReferenceScorer(path, kind).scores(frames), logit_sizes(model, frames), float16)
