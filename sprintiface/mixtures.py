"""The mixture-set file RASR's acoustic model reads even for a Python feature scorer.

RASR's classic acoustic model opens ``acoustic-model.mixture-set.file`` before
it builds any feature scorer, and ``python-feature-scorer`` has no variant
without one. With ``python-feature-scorer-output-dimension`` set, the
contents are never used, so a dummy does: one density (mean 0, variance 1)
shared by one mixture per emission class.

The file is RASR's binary mixture-set *estimator* layout (what RASR reads for
any name not ending in ``.pms`` or ``.gz``), little-endian: the magic
``MIXSET`` padded to 8 bytes, version 2, the dimension; the mean accumulators
(count; each: size, sums as float64, weight as float64); the covariance
accumulators in the same layout; the densities (count; each: mean index,
covariance index); the mixtures (count; each: number of densities, then per
density its index and weight as float64).
"""
from __future__ import annotations

import struct

from sprintiface._checks import checked_int
from sprintiface.errors import ConfigError


def dummy_mixture_set(num_classes: int, dim: int) -> bytes:
    """The bytes of a dummy mixture set with ``num_classes`` mixtures of dimension ``dim``."""
    num_classes = checked_int(num_classes, "num_classes", where="dummy mixture set", minimum=1, error=ConfigError)
    dim = checked_int(dim, "dim", where="dummy mixture set", minimum=1, error=ConfigError)

    def accumulator(value: float) -> bytes:
        return struct.pack(f"<I{dim}dd", dim, *([value] * dim), 1.0)

    parts = [
        b"MIXSET\0\0", struct.pack("<II", 2, dim),
        struct.pack("<I", 1), accumulator(0.0),  # one mean: sums 0 over weight 1
        struct.pack("<I", 1), accumulator(1.0),  # one covariance: squares 1 over weight 1
        struct.pack("<III", 1, 0, 0),  # one density: mean 0, covariance 0
        struct.pack("<I", num_classes), struct.pack("<IId", 1, 0, 1.0) * num_classes,
    ]
    return b"".join(parts)


def write_dummy_mixtures(path: str, num_classes: int, dim: int) -> None:
    """Write :func:`dummy_mixture_set` to ``path`` (complete or absent)."""
    from sprintiface._files import atomic_write

    data = dummy_mixture_set(num_classes, dim)
    with atomic_write(path, "wb") as file:
        file.write(data)
