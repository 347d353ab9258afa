"""What the feature scorer must give, computed without it; and RASR's first calls.

Shared by the robustness suite (tests/test_scorer_*.py) and the scripts it runs
in subprocesses (tests/scorer_thread_scenarios.py, tests/rasr_scorer_replay.py),
so that every check compares against one reference: a bare
``onnxruntime.InferenceSession.run`` of the model file, then the -log transform
in numpy float64 (the formulas of tests/test_scorer.py).
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
                feeds[info.name] = numpy.array([frames.shape[0]], dtype=dtype)
        output = self.session.run([self.session.get_outputs()[0].name], feeds)[0]
        return output[0] if output.ndim == 3 else output

    def scores(self, frames: numpy.ndarray) -> numpy.ndarray:
        """What get_scores must give for each of ``frames`` scored as one buffer: float64 (T, C)."""
        raw = self.raw(frames).astype(numpy.float64)
        if self.kind == "probs":
            scores = -numpy.log(raw)
        elif self.kind == "log_probs":
            scores = -raw
        elif self.kind == "logits":
            shifted = raw - raw.max(axis=1, keepdims=True)
            scores = numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True)) - shifted
        else:
            scores = raw
        if self.prior_term is not None:
            scores = scores + self.prior_term
        return scores


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
