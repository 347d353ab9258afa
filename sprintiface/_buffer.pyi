"""Types of the compiled module sprintiface._buffer (built from _buffer.pyx).

The stub is the contract mypy checks callers against; the .pyx is the truth:
a change of a signature there changes it here.
"""
from typing import Optional

import numpy
import numpy.typing

#: Output kind -> the C core's code for it (the one vocabulary; sprintiface.scores re-exports it).
OUTPUT_KIND_CODES: dict[str, int]

def score_kernels() -> tuple[str, ...]:
    """Names of the score kernels this build has, widest first."""

def available_score_kernels() -> tuple[str, ...]:
    """Names of the score kernels this build has and this CPU runs, widest first."""

def best_score_kernel() -> str:
    """The widest score kernel this CPU runs (what ``score_kernel:auto`` picks)."""

def finish_scores(array: numpy.typing.NDArray[numpy.float32], kind: str,
                  logit_bias: Optional[numpy.typing.NDArray[numpy.float32]] = None,
                  class_term: Optional[numpy.typing.NDArray[numpy.float32]] = None,
                  kernel: Optional[str] = None) -> int:
    """A model's raw float32 (T, C) output into -log scores in place; -1 or the first
    frame that is not finite."""

class FrameBuffer:
    """One RASR feature buffer: frames in, score rows out."""

    @property
    def input_dim(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def max_frames(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def scored(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def kernel(self) -> str: ...
    @property
    def frame_capacity(self) -> int: ...
    @property
    def score_capacity(self) -> int: ...
    def __init__(self, input_dim: int, num_classes: int, max_frames: int = -1,
                 kernel: Optional[str] = None) -> None: ...
    def add_feature(self, feature: numpy.typing.ArrayLike, time: int) -> None:
        """Copy ``feature`` (float32 or float64, (input_dim,)) into row ``time``."""
    def get_scores(self, time: int) -> numpy.typing.NDArray[numpy.float32]:
        """The -log scores of frame ``time``: a float32 (num_classes,) view."""
    def frames(self) -> numpy.typing.NDArray[numpy.float32]:
        """The buffered frames, a float32 (count, input_dim) view."""
    def find_non_finite(self) -> Optional[tuple[int, int]]:
        """``(frame, feature index)`` of the first NaN or infinite feature value, or None."""
    def open_window(self, frames: int) -> tuple[int, int]:
        """Start scoring: ``(frames address, scores address)``."""
    def finish_window(self, kind: str, logit_bias: Optional[numpy.typing.NDArray[numpy.float32]] = None,
                      class_term: Optional[numpy.typing.NDArray[numpy.float32]] = None) -> int:
        """Finish the open window into -log scores; -1 or the first non-finite frame."""
    def abandon_window(self) -> None:
        """End the open window without scores."""
    def clear(self) -> None:
        """Drop frames and scores; storage is kept."""
    def shrink(self, frames: int) -> None:
        """Give back storage beyond ``frames`` rows."""
    def __len__(self) -> int: ...
