"""The C score loop (csrc/score_kernel.h) in every instruction set this build has.

Every fast path of the kernel (the last row's log-sum-exp as this row's shift, the
vector and the scalar loops, the floor of a masked class) has a slow twin,
``neg_log_reference`` (tests/scorer_reference.py: float64 from the definitions), and the
hypothesis tests below hunt for rows where the two differ: jumps between rows around
the edges of the guessed shift, saturation, masks, NaN and infinities, odd sizes.
"""
import numpy
import pytest
from conftest import features, rasr_scorer, score_segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_models import build_mlp, save_model
from scorer_reference import SCORE_FLOOR, ReferenceScorer, neg_log_reference

from sprintiface import ScoreError
from sprintiface._buffer import SCORE_FLOOR as KERNEL_SCORE_FLOOR
from sprintiface._buffer import FrameBuffer, available_score_kernels, finish_scores, score_kernels
from sprintiface.scores import OUTPUT_KINDS, neg_log_scores

#: The kernel's tolerance against the float64 reference.
RTOL, ATOL = 1e-5, 2e-5

FLT_MAX = float(numpy.finfo(numpy.float32).max)

#: Every kernel this build has; one this CPU cannot run is skipped (the module's own query).
KERNELS = [pytest.param(name, marks=pytest.mark.skipif(name not in available_score_kernels(),
                                                       reason=f"this CPU does not run the {name} kernel"))
           for name in score_kernels()]


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


def finish(raw, kind, prior=None, kernel=None, bias=None):
    scores = raw.copy()
    bad = finish_scores(scores, kind, bias, prior, kernel)
    return bad, scores


def assert_like_reference(raw, kind, kernel, bias=None, term=None, rtol=RTOL, atol=ATOL):
    """The kernel on ``raw`` against its slow twin: the same first bad frame; before it,
    masked classes exactly the floor (+ term, one float32 addition), the rest within tolerance."""
    bad_frame, got = finish(raw, kind, term, kernel, bias)
    expected, masked, bad = neg_log_reference(raw, kind, bias, term)
    first_bad = int(numpy.argmax(bad)) if bad.any() else -1
    assert bad_frame == first_bad, f"first non-finite frame: kernel says {bad_frame}, reference {first_bad}"
    rows = slice(0, first_bad if first_bad >= 0 else raw.shape[0])
    got, expected, masked = got[rows], expected[rows], masked[rows]
    floor = numpy.broadcast_to(SCORE_FLOOR if term is None else SCORE_FLOOR + term, got.shape)
    numpy.testing.assert_array_equal(got[masked], floor[masked], err_msg="masked classes: the floor (+ term)")
    numpy.testing.assert_allclose(got[~masked], expected[~masked], rtol=rtol, atol=atol)
    return got


# -- every kind and size, the reference's plain cases ----------------------------------


@pytest.mark.parametrize("classes", [1, 3, 8, 15, 16, 17, 63, 100, 9001])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_every_kind_and_row_length(kernel, classes, kind):
    rng = numpy.random.default_rng(classes)
    raw = (rng.standard_normal((7, classes)) * 4).astype(numpy.float32)
    if kind == "probs":
        raw = numpy.exp(raw - raw.max(axis=1, keepdims=True))
        raw /= raw.sum(axis=1, keepdims=True)
        if classes > 1:
            raw[0, 0] = 0.0  # underflowed probability: floored, not inf
    prior = (numpy.log(rng.random(classes) + 0.01) * 0.5).astype(numpy.float32)
    for prior_term in (None, prior):
        assert_like_reference(raw, kind, kernel, None, prior_term)


def test_logit_bias_is_added_first(kernel):
    rng = numpy.random.default_rng(1)
    raw = (rng.standard_normal((5, 37)) * 3).astype(numpy.float32)
    bias = rng.standard_normal(37).astype(numpy.float32)
    assert_like_reference(raw, "logits", kernel, bias)


def test_large_logit_range(kernel):
    raw = numpy.array([[1000.0, 0.0, -1000.0] * 7, [-80.0, -90.0, -200.0] * 7], dtype=numpy.float32)
    assert_like_reference(raw, "logits", kernel, atol=1e-4)


def test_the_floor_is_one_constant():
    # The header's constant, exposed to Python, is -log(FLT_MIN) in float32 and what a
    # probability of 0 scores.
    assert KERNEL_SCORE_FLOOR == SCORE_FLOOR == numpy.float32(126 * numpy.log(2.0))
    assert neg_log_scores(numpy.array([[0.0, 1.0]], dtype=numpy.float32), "probs")[0, 0] == SCORE_FLOOR


# -- bug 1: the guessed shift, far from the row's maximum ------------------------------


def test_a_row_far_above_the_last_ones_log_sum_exp(kernel):
    # Issue 13's reproduction: the second row's max is 100 above the first row's
    # log-sum-exp, the shift the kernel guesses; 2^t then overflowed its exponent bits
    # into garbage that passed as a plausible sum ([-96.57, 3.43] for [0, 100]).
    z = numpy.zeros((2, 32), numpy.float32)
    z[1, 0] = 100.0
    got = neg_log_scores(z.copy(), "logits", kernel=kernel)
    numpy.testing.assert_allclose(got[1, :2], [0.0, 100.0], rtol=RTOL, atol=ATOL)
    assert_like_reference(z, "logits", kernel)


@pytest.mark.parametrize("classes", [2, 3, 15, 16, 17, 31, 32, 33, 64, 65, 9001])
@pytest.mark.parametrize("jump", [80.0, 88.0, 88.5, 89.0, 90.0, 100.0, 127.0, 200.0, 1e4, 1e30])
@pytest.mark.parametrize("column", [0, -1])
def test_a_spike_after_a_flat_row_in_every_loop(kernel, classes, jump, column):
    # The spike sits in the vector loop (column 0) or in the scalar tail (the last column,
    # when the row length is not a multiple of two vectors), above and below the guess.
    for sign in (1.0, -1.0):
        z = numpy.zeros((3, classes), numpy.float32)
        z[1, column] = sign * jump
        z[2] = z[1]
        assert_like_reference(z, "logits", kernel, atol=1e-4)


@pytest.mark.parametrize("classes", [37, 500, 9001])
def test_random_logits_of_std_100(kernel, classes):
    # Wrong in 1 frame of 37 before the fix; zero frames may be wrong.
    raw = (numpy.random.default_rng(classes).standard_normal((2000, classes)) * 100).astype(numpy.float32)
    bad, got = finish(raw, "logits", None, kernel)
    expected, _, _ = neg_log_reference(raw, "logits")
    assert bad == -1
    wrong = ~numpy.isclose(got, expected, rtol=RTOL, atol=ATOL).all(axis=1)
    assert not wrong.any(), f"{wrong.sum()} of {len(raw)} frames wrong, first {numpy.flatnonzero(wrong)[:5]}"


# -- bug 5: a masked class is the floor, in every kind ---------------------------------


def test_a_masked_logit_scores_the_floor(kernel):
    z = numpy.zeros((3, 21), numpy.float32)
    z[0, 3] = -numpy.inf
    z[1, [0, 16, 20]] = -numpy.inf
    z[2, :20] = -numpy.inf  # all but one masked: that one is certain
    term = numpy.linspace(-9.0, 0.0, 21, dtype=numpy.float32)
    for prior in (None, term):
        got = assert_like_reference(z, "logits", kernel, None, prior)
        offset = 0.0 if prior is None else prior
        numpy.testing.assert_array_equal(got[2] - offset, [SCORE_FLOOR] * 20 + [0.0])


def test_a_minus_inf_bias_masks_a_class(kernel):
    rng = numpy.random.default_rng(5)
    raw = (rng.standard_normal((6, 40)) * 3).astype(numpy.float32)
    bias = rng.standard_normal(40).astype(numpy.float32)
    bias[[1, 17, 39]] = -numpy.inf
    got = assert_like_reference(raw, "logits", kernel, bias)
    assert (got[:, [1, 17, 39]] == SCORE_FLOOR).all()


def test_finite_scores_beyond_the_floor_stay_exact(kernel):
    # Only a masked class is floored: a class the model makes unlikely, not impossible,
    # keeps its exact score.
    z = numpy.zeros((2, 17), numpy.float32)
    z[:, 5] = -150.0
    got = assert_like_reference(z, "logits", kernel)
    assert got[0, 5] > 150.0
    log_probs = numpy.full((1, 17), -150.0, numpy.float32)
    assert (assert_like_reference(log_probs, "log_probs", kernel) == 150.0).all()


@pytest.mark.parametrize("kind, masked", [("log_probs", -numpy.inf), ("scores", numpy.inf), ("probs", 0.0)])
def test_a_masked_class_of_the_other_kinds_scores_the_floor(kernel, kind, masked):
    raw = numpy.full((2, 19), 0.05 if kind == "probs" else 3.0 * (-1 if kind == "log_probs" else 1), numpy.float32)
    raw[:, [0, 7, 18]] = masked
    term = numpy.linspace(-4.0, 1.0, 19, dtype=numpy.float32)
    for prior in (None, term):
        got = assert_like_reference(raw, kind, kernel, None, prior)
        assert (got[:, [0, 7, 18]] == SCORE_FLOOR + (0.0 if prior is None else prior[[0, 7, 18]])).all()


@pytest.mark.parametrize("column", [3, 18])
def test_a_masked_class_under_an_absurd_term_is_reported(kernel, column):
    # With the term added, +inf is a masked class's own score only for a term below 2^103
    # (above, a finite score can overflow too): such a row is reported, not guessed at.
    raw = numpy.full((2, 20), -2.0, numpy.float32)
    raw[1, column] = -numpy.inf
    term = numpy.zeros(20, numpy.float32)
    term[column] = 2.0 ** 102
    got = assert_like_reference(raw, "log_probs", kernel, None, term)
    assert got[1, column] == SCORE_FLOOR + term[column]
    term[column] = 2.0 ** 103
    assert finish(raw, "log_probs", term, kernel)[0] == 1
    assert_like_reference(raw, "log_probs", kernel, None, term)


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
@pytest.mark.parametrize("classes", [1, 5, 16, 21, 33])
def test_a_row_with_every_class_masked_is_not_finite(kernel, kind, classes):
    impossible = {"logits": -numpy.inf, "log_probs": -numpy.inf, "scores": numpy.inf, "probs": 0.0}[kind]
    raw = numpy.full((4, classes), 0.5 if kind == "probs" else -1.0, numpy.float32)
    raw[2] = impossible
    bad, _ = finish(raw, kind, None, kernel)
    assert bad == 2


@pytest.mark.parametrize("bad_value", [numpy.nan, numpy.inf, -numpy.inf])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
@pytest.mark.parametrize("column", [0, 16, 20])
def test_first_non_finite_frame_is_found(kernel, bad_value, kind, column):
    raw = numpy.full((9, 21), 0.5 if kind == "probs" else 0.0, dtype=numpy.float32)
    raw[5, column] = bad_value
    raw[7, 3] = bad_value
    bad, _ = finish(raw, kind, None, kernel)
    # NaN and the infinity that is no probability at all (p = e^inf) stop the job; the
    # other infinity is a masked class, p = 0, and scores the floor (a probability of
    # -inf is below FLT_MIN, floored as any).
    masks = {"logits": -numpy.inf, "log_probs": -numpy.inf, "scores": numpy.inf, "probs": -numpy.inf}[kind]
    assert bad == (-1 if bad_value == masks else 5)
    assert_like_reference(raw, kind, kernel)


def test_buffer_uses_the_kernel_it_was_given(kernel):
    # no process-wide setting: each buffer names its kernel
    buffer = FrameBuffer(4, 9, kernel=kernel)
    assert buffer.kernel == kernel
    with pytest.raises(ValueError, match="this build has"):
        FrameBuffer(4, 9, kernel="sse9")


# -- the hunt: sequences of rows built to find the edges -------------------------------

#: Distances of a row's values from the last row's (so from the shift the kernel guesses):
#: around where 2^t leaves float32 (88.7 in natural log), and far beyond.
JUMPS = (0.0, 16.0, 80.0, 88.0, 88.7, 89.0, 127.0, 200.0, 1e4, 1e30)
SIZES = (1, 2, 3, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 127, 9001)


@st.composite
def rows_of_logits(draw):
    """float32 (T, C) logits: each row's bulk at a jump from the last row's, with spikes far
    above or below it, saturated or equal rows, masks (-inf), a NaN or a +inf."""
    classes = draw(st.sampled_from(SIZES) | st.integers(1, 80))
    frames = draw(st.integers(1, 6))
    rng = numpy.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    center = draw(st.sampled_from([0.0, 3.0, -40.0, 1e4, -1e30]))
    rows = []
    for _ in range(frames):
        jump = draw(st.sampled_from(JUMPS)) * draw(st.sampled_from([1.0, -1.0]))
        center = float(numpy.clip(center + jump, -FLT_MAX, FLT_MAX))
        shape = draw(st.sampled_from(["noise", "noise", "spikes", "spikes", "equal", "saturated"]))
        if shape == "saturated":
            row = rng.choice([FLT_MAX, -FLT_MAX, 0.999 * FLT_MAX, 1e38, -1e38, 0.0], classes)
        elif shape == "equal":
            row = numpy.full(classes, center)
        else:
            row = center + draw(st.sampled_from([0.01, 1.0, 5.0, 100.0])) * rng.standard_normal(classes)
        if shape == "spikes":
            spikes = rng.integers(0, classes, draw(st.integers(1, 3)))
            row[spikes] = center + draw(st.sampled_from(JUMPS[1:])) * draw(st.sampled_from([1.0, -1.0]))
        row = numpy.clip(row, -FLT_MAX, FLT_MAX)
        special = draw(st.sampled_from(["none"] * 6 + ["masked", "one left", "all masked", "nan", "+inf"]))
        if special == "masked":
            row[rng.random(classes) < 0.3] = -numpy.inf
        elif special == "one left":
            row[numpy.arange(classes) != rng.integers(classes)] = -numpy.inf
        elif special == "all masked":
            row[:] = -numpy.inf
        elif special != "none":
            row[rng.integers(classes)] = numpy.nan if special == "nan" else numpy.inf
        rows.append(row)
    return numpy.array(rows, dtype=numpy.float32)


@st.composite
def logit_cases(draw):
    """(logits, bias or None, class term or None)."""
    raw = draw(rows_of_logits())
    classes = raw.shape[1]
    rng = numpy.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    bias = term = None
    if draw(st.booleans()):
        bias = (draw(st.sampled_from([0.1, 3.0, 100.0])) * rng.standard_normal(classes)).astype(numpy.float32)
        if draw(st.booleans()):
            bias[rng.random(classes) < 0.2] = -numpy.inf  # classes a cut softmax's bias masks
    if draw(st.booleans()):
        term = (rng.uniform(-20.0, 5.0, classes)).astype(numpy.float32)
    return raw, bias, term


HUNT = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kernel", KERNELS)
@HUNT
@given(case=logit_cases())
def test_logits_against_the_slow_twin(kernel, case):
    raw, bias, term = case
    # Values up to 1e30 and float32's maximum: 1e-5 relative, 2e-5 absolute, as everywhere.
    assert_like_reference(raw, "logits", kernel, bias, term)


def other_kind(logits, kind):
    """The same rows as a model output of ``kind``: log_probs z - max (a mask stays -inf, a
    +inf stays the impossible infinity, NaN stays NaN), scores its negation, probs its exp."""
    finite = numpy.where(numpy.isfinite(logits), logits, -numpy.inf).max(axis=1, keepdims=True)
    with numpy.errstate(all="ignore"):
        log_probs = logits.astype(numpy.float64) - numpy.where(numpy.isfinite(finite), finite, 0.0)
        raw = {"log_probs": log_probs, "scores": -log_probs, "probs": numpy.exp(log_probs)}[kind]
        return numpy.where(numpy.isfinite(raw), numpy.clip(raw, -FLT_MAX, FLT_MAX), raw).astype(numpy.float32)


@pytest.mark.parametrize("kind", ["log_probs", "scores", "probs"])
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=logit_cases())
def test_other_kinds_against_the_slow_twin(kernel, kind, case):
    raw, _, term = case
    assert_like_reference(other_kind(raw, kind), kind, kernel, None, term)


# -- end to end: a masked class through the real scorer --------------------------------


@pytest.mark.parametrize("head", ["probs", "log_probs"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_a_masked_class_through_the_scorer_is_what_the_uncut_model_gives(tmp_path, head, kernel):
    # MatMul + Add (bias -inf at three classes) + Softmax or LogSoftmax: the scorer cuts
    # the head and the bias off the graph; its rows must be the bare run's with the floor
    # rule (p = 0 and log p = -inf both score the floor), with and without a prior.
    masked = [0, 13, 29]
    path = str(tmp_path / f"masked_{head}.onnx")
    save_model(build_mlp(12, 30, (16,), seed=4, output_kind=head, masked_classes=masked), path)
    log_prior = numpy.log(numpy.random.default_rng(2).dirichlet(numpy.ones(30)))
    (tmp_path / "prior.txt").write_text("\n".join(f"{v:.9g}" for v in log_prior) + "\n")
    for extra in ("", f",prior_file:{tmp_path / 'prior.txt'},prior_scale:0.6"):
        scorer = rasr_scorer(f"onnx:{path},score_kernel:{kernel}{extra}", 12, 30)
        reference = ReferenceScorer(path, head, scorer.prior_term)
        for seed, num_frames in enumerate([40, 1, 7]):
            x = features(num_frames, 12, seed)
            got = score_segment(scorer, x)
            expected = reference.scores(x)
            term = numpy.zeros(30, numpy.float32) if scorer.prior_term is None else scorer.prior_term
            numpy.testing.assert_array_equal(got[:, masked], numpy.broadcast_to(SCORE_FLOOR + term[masked],
                                                                                (num_frames, 3)))
            numpy.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_a_model_that_masks_every_class_still_stops_the_scorer(tmp_path):
    # Nothing possible: the uncut Softmax gives NaN (exp(-inf - -inf)), the cut one an error.
    path = str(tmp_path / "all_masked.onnx")
    save_model(build_mlp(12, 30, (16,), seed=4, masked_classes=range(30)), path)
    assert numpy.isnan(ReferenceScorer(path).raw(features(3, 12))).all()
    scorer = rasr_scorer(f"onnx:{path}", 12, 30)
    with pytest.raises(ScoreError, match="at frame 0"):
        score_segment(scorer, features(3, 12))
