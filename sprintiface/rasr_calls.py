"""RASR's feature-scorer call sequence, driven from Python: the one driver of the command line.

:func:`rasr_scorer_calls` calls a module exactly as RASR's PythonFeatureScorer
does in speech-recognizer (../shared spec, section 1): module ``init`` with
RASR's arguments, ``init(input_dim, output_dim)``, ``get_feature_buffer_size()``,
``reset(num_frames=0)`` before the first segment, then per segment
``add_feature`` per frame (a fresh C-contiguous float32 array each),
``compute``, ``get_scores`` per position (each row copied, as RASR copies it)
and ``reset`` before the next one — none after the last segment — and
``exit()``. Keyword arguments only. ``sprintiface score``, ``check-model`` and
the demo score through it, so they fail exactly where RASR's job would.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import types

import numpy
import numpy.typing


def rasr_scorer_calls(module: types.ModuleType, config: str, segments: Iterable[numpy.ndarray], input_dim: int,
                      output_dim: int) -> Iterator[tuple[int, numpy.typing.NDArray[numpy.float32]]]:
    """Replay RASR's feature-scorer protocol on ``module``; yields ``(segment index, scores)``,
    scores a fresh float32 (T, output_dim) array in -log space.

    ``segments``: float32 (T, input_dim) arrays. With a positive
    ``get_feature_buffer_size()`` N a segment is sent in buffers of at most N
    frames (what a RASR that flushed chunks would do; today's RASR aborts at
    frame N+1 instead, see docs/recognition.md).
    """
    scorer = module.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                         callback=lambda *args: None, version_number=5, config=config)
    if scorer is None:
        raise RuntimeError("init() returned None, which RASR treats as a fatal error")
    scorer.init(input_dim=input_dim, output_dim=output_dim)
    buffer_size = scorer.get_feature_buffer_size()
    chunk = None if buffer_size == -1 else buffer_size
    held = 0  # frames in the scorer's buffer: RASR resets lazily, before the next frame goes in
    scorer.reset(num_frames=0)
    for index, features in enumerate(segments):
        total = features.shape[0]
        scores = numpy.empty((total, output_dim), dtype=numpy.float32)
        start = 0
        while start < total:
            stop = total if chunk is None else min(total, start + chunk)
            if held:
                scorer.reset(num_frames=held)
            for time_index in range(stop - start):
                scorer.add_feature(feature=numpy.array(features[start + time_index], dtype=numpy.float32),
                                   time=time_index)
            scorer.compute(num_frames=stop - start)
            for time_index in range(stop - start):
                scores[start + time_index] = scorer.get_scores(time=time_index)
            held = stop - start
            start = stop
        yield index, scores
    scorer.exit()
