"""What the feature scorer must give, computed without it; and RASR's first calls.

Shared by the robustness suite (tests/test_scorer_*.py) and the scripts it runs
in subprocesses (tests/scorer_thread_scenarios.py, tests/rasr_scorer_replay.py),
so that every check compares against one reference: a bare
``onnxruntime.InferenceSession.run`` of the model file, then the -log transform
in numpy float64 (:func:`neg_log_reference`, the slow twin of the score kernel).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import numpy
import onnxruntime

_TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

#: Tolerance of a score against the float64 reference (as in tests/test_scorer.py).
RTOL = ATOL = 2e-5

#: The score of a masked class (p = 0), docs/priors.md: -log of the smallest normal float32
#: (126 ln 2 = 87.3365...), rounded to float32. Derived here, not read from the package, so a
#: test can hold the package's constant against it.
SCORE_FLOOR = numpy.float32(-numpy.log(numpy.float64(numpy.finfo(numpy.float32).tiny)))


def neg_log_reference(raw: numpy.ndarray, kind: str, logit_bias: Optional[numpy.ndarray] = None,
                      class_term: Optional[numpy.ndarray] = None):
    """The slow twin of the score kernel (csrc/score_kernel.h): what it must give for ``raw``
    (float32 (T, C), a model output of ``kind``), computed in float64 from the definitions.

    Returns ``(scores, masked, bad)``: float64 (T, C) -log scores with ``class_term`` (C,)
    added; bool (T, C), the classes the floor rule gives :data:`SCORE_FLOOR` (+ term); bool
    (T,), the rows the kernel must report as not finite (their scores are NaN here).

    A class is masked when its posterior is 0 in float32: probs below the smallest normal
    float (underflow included), log_probs -inf, scores +inf, logits whose float32 ``z - max z``
    is -inf (a -inf logit after the bias, as ONNX Runtime's Softmax gives exp(-inf) = 0).
    A row is bad when it holds a NaN, the other infinity (+inf logit or log_prob, -inf
    score, +inf probability), or nothing possible (every class masked), or when a score
    does not fit float32, or a masked class has a term of 2^103 or more (no prior gives one;
    csrc/score_kernel.h says why). Logits get ``logit_bias`` added in float32 first, as the
    model's Add rounds it, then ``-log_softmax`` in float64 from the row's maximum.
    """
    raw = numpy.asarray(raw, dtype=numpy.float32)
    with numpy.errstate(all="ignore"):
        if kind == "logits":
            z = raw if logit_bias is None else raw + numpy.asarray(logit_bias, dtype=numpy.float32)
            top = z.max(axis=1, keepdims=True)
            masked = (z == -numpy.inf) | ((z - top) == -numpy.inf)  # float32, as the model's Softmax subtracts
            bad = numpy.isnan(z).any(axis=1) | (z == numpy.inf).any(axis=1)
            shifted = z.astype(numpy.float64) - top.astype(numpy.float64)
            scores = numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True)) - shifted
        elif kind == "probs":
            masked = raw < numpy.finfo(numpy.float32).tiny
            bad = numpy.isnan(raw).any(axis=1) | (raw == numpy.inf).any(axis=1)
            scores = -numpy.log(raw.astype(numpy.float64))
        elif kind == "log_probs":
            masked = raw == -numpy.inf
            bad = numpy.isnan(raw).any(axis=1) | (raw == numpy.inf).any(axis=1)
            scores = -raw.astype(numpy.float64)
        elif kind == "scores":
            masked = raw == numpy.inf
            bad = numpy.isnan(raw).any(axis=1) | (raw == -numpy.inf).any(axis=1)
            scores = raw.astype(numpy.float64)
        else:
            raise ValueError(f"kind: expected probs, log_probs, logits or scores, got {kind!r}")
        bad = bad | masked.all(axis=1)
        scores = numpy.where(masked, numpy.float64(SCORE_FLOOR), scores)
        if class_term is not None:
            term = numpy.asarray(class_term, dtype=numpy.float64)
            # From a term of 2^103 a masked class cannot be told from an overflow (the header).
            bad = bad | (masked & ~(term < 2.0 ** 103)).any(axis=1)
            scores = scores + term
        bad = bad | ~numpy.isfinite(scores.astype(numpy.float32)).all(axis=1)
    scores[bad] = numpy.nan
    return scores, masked & ~bad[:, None], bad


class ReferenceScorer:
    """-log scores of a model on (T, F) float32 frames, float64 (T, C).

    ``kind`` is what the model's output holds (probs, log_probs, logits,
    scores); ``prior_term`` is prior_scale * log p(c) (C,) or None. One bare
    CPU session per instance; the length input, if any, is fed T.
    """

    def __init__(self, path: str, kind: str = "probs", prior_term: Optional[numpy.ndarray] = None):
        self.path = path
        self.kind = kind
        self.prior_term = None if prior_term is None else numpy.asarray(prior_term, dtype=numpy.float64)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def raw(self, frames: numpy.ndarray) -> numpy.ndarray:
        """The model's first output on ``frames`` (T, F), as (T, C) float32."""
        frames = numpy.ascontiguousarray(frames, dtype=numpy.float32)
        feeds = {}
        for info in self.session.get_inputs():
            if info.type == "tensor(float)":
                feeds[info.name] = frames[None] if len(info.shape) == 3 else frames
            else:
                dtype = numpy.int64 if info.type == "tensor(int64)" else numpy.int32
                length = frames.shape[0]  # every integer input: the models here take T there, [B] or []
                feeds[info.name] = numpy.array([length] if len(info.shape) == 1 else length, dtype=dtype)
        output = self.session.run([self.session.get_outputs()[0].name], feeds)[0]
        return output[0] if output.ndim == 3 else output

    def scores(self, frames: numpy.ndarray) -> numpy.ndarray:
        """What get_scores must give for each of ``frames`` scored as one buffer: float64 (T, C)."""
        return neg_log_reference(self.raw(frames), self.kind, None, self.prior_term)[0]


def rasr_module_init(module, config: str):
    """``module.init`` exactly as RASR's PythonFeatureScorer calls it (keyword arguments only)."""
    scorer = module.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=object(),
                         callback=lambda *args: None, version_number=5, config=config)
    if scorer is None:
        raise AssertionError("init() returned None, which RASR treats as a fatal error")
    return scorer


def score_buffer(scorer, frames: numpy.ndarray) -> numpy.ndarray:
    """One RASR buffer: add_feature per frame (fresh arrays), compute, every row copied; no reset.
    Returns float64 (T, C)."""
    num_frames = frames.shape[0]
    for t in range(num_frames):
        scorer.add_feature(feature=numpy.array(frames[t], dtype=numpy.float32), time=t)
    scorer.compute(num_frames=num_frames)
    return numpy.stack([numpy.array(scorer.get_scores(time=t), dtype=numpy.float64) for t in range(num_frames)])


def assert_scores(got: numpy.ndarray, expected: numpy.ndarray, what: str = "") -> None:
    numpy.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=what)
