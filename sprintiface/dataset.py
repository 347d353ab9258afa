"""A small in-memory dataset of segments, the shape of RETURNN's Dataset accessors.

RETURNN's ``features_to_dataset`` hands a segment to its engine as a
one-segment dataset; sprintiface returns this instead, which needs no RETURNN.
Data is stored time-major: ``data`` is (T, input_dim), targets are (T,) or
(T, dim).
"""
from __future__ import annotations

from typing import Optional

import numpy

from sprintiface.errors import FeatureError


class InMemoryDataset:
    """Segments kept in memory, with RETURNN-like accessors.

    Each segment has a tag (its segment name) and arrays by key; ``data``
    (float32 (T, input_dim)) is always present.
    """

    def __init__(self) -> None:
        self._segments: list[dict[str, numpy.ndarray]] = []
        self._tags: list[str] = []

    def add_segment(self, tag: str, data: numpy.ndarray, **targets: numpy.ndarray) -> int:
        """Append a segment; returns its index. ``data``: (T, input_dim)."""
        data = numpy.asarray(data)
        if data.ndim != 2:
            raise FeatureError(f"segment {tag!r}: expected data of shape (T, input_dim), got {data.shape}")
        arrays = {"data": data}
        for key, value in targets.items():
            if value is not None:
                arrays[key] = numpy.asarray(value)
        self._segments.append(arrays)
        self._tags.append(tag)
        return len(self._segments) - 1

    @property
    def num_seqs(self) -> int:
        """Number of segments."""
        return len(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def get_seq_length(self, seq_idx: int) -> dict[str, int]:
        """Length (first axis) of every array of segment ``seq_idx``, by key."""
        return {key: int(array.shape[0]) for key, array in self._segment(seq_idx).items()}

    def get_data(self, seq_idx: int, key: str = "data") -> numpy.ndarray:
        """Array ``key`` of segment ``seq_idx``."""
        segment = self._segment(seq_idx)
        if key not in segment:
            raise KeyError(f"segment {seq_idx} ({self._tags[seq_idx]!r}) has no {key!r}; it has {sorted(segment)}")
        return segment[key]

    def get_data_keys(self, seq_idx: int = 0) -> list[str]:
        """Keys of segment ``seq_idx``."""
        return sorted(self._segment(seq_idx))

    def get_tag(self, seq_idx: int) -> str:
        """Segment name of ``seq_idx``."""
        self._segment(seq_idx)
        return self._tags[seq_idx]

    def get_data_dim(self, key: str = "data") -> int:
        """Feature dim of ``key`` (1 for sparse targets)."""
        array = self.get_data(0, key)
        return int(array.shape[1]) if array.ndim > 1 else 1

    def _segment(self, seq_idx: int) -> dict[str, numpy.ndarray]:
        if not 0 <= seq_idx < len(self._segments):
            raise IndexError(f"segment index {seq_idx} is outside [0, {len(self._segments)})")
        return self._segments[seq_idx]


def features_to_dataset(features: numpy.ndarray, segment_name: Optional[str]) -> tuple[InMemoryDataset, int]:
    """``features`` as RASR passes them, (input_dim, T), -> ``(dataset, seq_idx)``."""
    features = numpy.asarray(features)
    if features.ndim != 2:
        raise FeatureError(f"features_to_dataset: expected features of shape (input_dim, T), got {features.shape}")
    dataset = InMemoryDataset()
    seq_idx = dataset.add_segment(segment_name or "seq-0", features.T)
    return dataset, seq_idx
