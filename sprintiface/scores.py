"""Output kinds and the one -log transform every path uses.

A model's output holds one of four kinds (``OUTPUT_KINDS``): ``probs``
(softmax posteriors), ``log_probs`` (log-softmax), ``logits`` (before the
softmax) or ``scores`` (already -log space). RASR wants -log scores, lower is
better::

    score[t, c] = -log p(c | x_t) + prior_scale * log p(c)

The compiled score kernel (csrc/score_kernel.h) does this in place. The
feature scorer runs it on its score matrix; :func:`neg_log_scores` runs the
same kernel on any array, and :func:`posteriors` is ``exp(-scores)`` of its
result, so forwarding, ``get_posteriors`` and ``estimate-prior`` see exactly
the numbers the scorer serves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy

from sprintiface._buffer import OUTPUT_KIND_CODES, finish_scores
from sprintiface.errors import ScoreError

if TYPE_CHECKING:
    from sprintiface.engine import OnnxEngine

#: What a model's output can hold: probs, log_probs, logits, scores.
OUTPUT_KINDS = tuple(OUTPUT_KIND_CODES)


def neg_log_scores(output: numpy.ndarray, kind: str, logit_bias: Optional[numpy.ndarray] = None,
                   class_term: Optional[numpy.ndarray] = None, kernel: Optional[str] = None,
                   what: str = "the model") -> numpy.ndarray:
    """Turn ``output`` (float32 (T, C), C-contiguous, writable: a model's raw output of
    ``kind``) into -log scores in place and return it.

    ``logit_bias``: float32 (C,) added to logits first (a bias cut off the graph).
    ``class_term``: float32 (C,) added to every row (``prior_scale * log p(c)``).
    ``kernel``: a score kernel name, None for the best this CPU runs. A score
    that is not finite raises ScoreError naming ``what`` and the frame.
    """
    bad = finish_scores(output, kind, logit_bias, class_term, kernel)
    if bad >= 0:
        raise ScoreError(f"{what} gave non-finite scores at frame {bad} (of {output.shape[0]}; output kind {kind})")
    return output


def posteriors(output: numpy.ndarray, kind: str, logit_bias: Optional[numpy.ndarray] = None,
               kernel: Optional[str] = None, what: str = "the model") -> numpy.ndarray:
    """p(c | x_t) from a model's raw output, in place: float32 (T, C), +prob space,
    no prior; ``exp(-neg_log_scores(...))``."""
    scores = neg_log_scores(output, kind, logit_bias, None, kernel, what=what)
    numpy.negative(scores, out=scores)
    numpy.exp(scores, out=scores)
    return scores


def model_posteriors(engine: OnnxEngine, frames: numpy.ndarray,
                     kernel: Optional[str] = None) -> numpy.ndarray:
    """p(c | x_t) of float32 (T, F) ``frames`` from ``engine`` (an OnnxEngine): a fresh
    float32 (T', C) array, +prob space, no prior. ``kernel``: a score kernel name
    (``score_kernel`` of a config; None or ``auto`` for the best)."""
    return posteriors(engine.forward(frames), engine.kind, engine.logit_bias, None if kernel == "auto" else kernel,
                      what=f"ONNX model {engine.path!r}")
