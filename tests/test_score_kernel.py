"""The C score loop (csrc/score_kernel.h) in every instruction set this machine runs."""
import numpy
import pytest

from sprintiface._buffer import FrameBuffer, available_score_kernels, finish_scores
from sprintiface.scores import OUTPUT_KINDS


@pytest.fixture(params=available_score_kernels())
def kernel(request):
    return request.param


def finish(raw, kind, prior=None, kernel=None, bias=None):
    scores = raw.copy()
    bad = finish_scores(scores, kind, bias, prior, kernel)
    return bad, scores


def reference(raw, kind, prior=None, bias=None):
    raw = raw.astype(numpy.float64)
    if kind == "logits":
        if bias is not None:
            raw = (raw.astype(numpy.float32) + bias).astype(numpy.float64)
        shifted = raw - raw.max(axis=1, keepdims=True)
        scores = numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True)) - shifted
    elif kind == "probs":
        scores = -numpy.log(numpy.maximum(raw, numpy.finfo(numpy.float32).tiny))
    elif kind == "log_probs":
        scores = -raw
    else:
        scores = raw
    return scores if prior is None else scores + prior


@pytest.mark.parametrize("classes", [1, 3, 8, 15, 16, 17, 63, 100, 9001])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_every_kind_and_row_length(kernel, classes, kind):
    rng = numpy.random.default_rng(classes)
    raw = (rng.standard_normal((7, classes)) * 4).astype(numpy.float32)
    if kind == "probs":
        raw = numpy.exp(raw - raw.max(axis=1, keepdims=True))
        raw /= raw.sum(axis=1, keepdims=True)
        raw[0, 0] = 0.0  # underflowed probability: floored, not inf
    prior = (numpy.log(rng.random(classes) + 0.01) * 0.5).astype(numpy.float32)
    for prior_term in (None, prior):
        bad, got = finish(raw, kind, prior_term, kernel)
        assert bad == -1
        numpy.testing.assert_allclose(got, reference(raw, kind, prior_term), rtol=1e-5, atol=2e-5)


def test_logit_bias_is_added_first(kernel):
    rng = numpy.random.default_rng(1)
    raw = (rng.standard_normal((5, 37)) * 3).astype(numpy.float32)
    bias = rng.standard_normal(37).astype(numpy.float32)
    bad, got = finish(raw, "logits", None, kernel, bias)
    assert bad == -1
    numpy.testing.assert_allclose(got, reference(raw, "logits", None, bias), rtol=1e-5, atol=2e-5)


def test_large_logit_range(kernel):
    raw = numpy.array([[1000.0, 0.0, -1000.0] * 7, [-80.0, -90.0, -200.0] * 7], dtype=numpy.float32)
    bad, got = finish(raw, "logits", None, kernel)
    assert bad == -1
    numpy.testing.assert_allclose(got, reference(raw, "logits"), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad_value", [numpy.nan, numpy.inf, -numpy.inf])
@pytest.mark.parametrize("kind", ["logits", "log_probs", "scores"])
@pytest.mark.parametrize("column", [0, 16, 20])
def test_first_non_finite_frame_is_found(kernel, bad_value, kind, column):
    raw = numpy.zeros((9, 21), dtype=numpy.float32)
    raw[5, column] = bad_value
    raw[7, 3] = bad_value
    bad, _ = finish(raw, kind, None, kernel)
    # A logit of -inf is a score of +inf: not finite either, so it stops too.
    assert bad == 5


def test_buffer_uses_the_kernel_it_was_given(kernel):
    # no process-wide setting: each buffer names its kernel
    buffer = FrameBuffer(4, 9, kernel=kernel)
    assert buffer.kernel == kernel
    with pytest.raises(ValueError, match="this build has"):
        FrameBuffer(4, 9, kernel="sse9")
