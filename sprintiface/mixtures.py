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
from typing import TYPE_CHECKING, Any

from sprintiface._checks import checked_int
from sprintiface.errors import ConfigError

if TYPE_CHECKING:
    import numpy  # for the annotation; prior_from_mixture_set imports it where it runs


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


def prior_from_mixture_set(path: str) -> numpy.ndarray:
    """log p(s) from the mixture weights of the mixture-set file at ``path``, as RASR's
    ``Nn::Prior::setFromMixtureSet`` computes it for a scorer without ``prior-file``:
    each mixture's density weights summed, divided by the sum over all mixtures, log.

    RASR uses the raw weights only with ``normalize-mixture-weights = false`` (what
    i6_core's ReturnnScorer sets when it has no prior file); with RASR's default
    ``true`` every mixture's weights sum to 1 and that prior is uniform.

    Reads RASR's binary estimator layout, version 2 (the layout of
    :func:`dummy_mixture_set`); anything else is a ConfigError naming the file and
    what was found. Returns float64 (mixtures,), +log space.
    """
    import numpy

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"mixture set {path!r} cannot be read: {error.strerror or error}") from None
    offset = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise ConfigError(f"mixture set {path!r}: the file ends at byte {len(data)}, expected {offset + size} "
                              f"bytes or more (RASR's binary estimator layout, version 2)")
        values = struct.unpack_from(fmt, data, offset)
        offset += size
        return values

    if data[:8] != b"MIXSET\0\0":
        raise ConfigError(f"mixture set {path!r}: expected RASR's binary estimator layout (starts with MIXSET), "
                          f"got {data[:8]!r}; make a prior with `sprintiface estimate-prior` instead")
    offset = 8
    version, dim = take("<II")
    if version != 2:
        raise ConfigError(f"mixture set {path!r}: expected version 2 of RASR's estimator layout, got {version}")
    for _ in range(2):  # mean accumulators, then covariance accumulators
        (count,) = take("<I")
        for _ in range(count):
            (size,) = take("<I")
            if size != dim:
                raise ConfigError(f"mixture set {path!r}: an accumulator of size {size} at byte {offset - 4}, "
                                  f"expected the dimension {dim}")
            take(f"<{size}dd")
    (densities,) = take("<I")
    take(f"<{2 * densities}I")
    (mixtures,) = take("<I")
    totals = numpy.zeros(mixtures, dtype=numpy.float64)
    for mixture in range(mixtures):
        (count,) = take("<I")
        for _ in range(count):
            _, weight = take("<Id")
            totals[mixture] += weight
    if offset != len(data):
        raise ConfigError(f"mixture set {path!r}: {len(data) - offset} bytes after the last mixture, expected none")
    if not mixtures:
        raise ConfigError(f"mixture set {path!r} holds no mixtures, expected one per class")
    good = numpy.isfinite(totals) & (totals > 0)
    if not good.all():
        bad = int(numpy.flatnonzero(~good)[0])
        raise ConfigError(f"mixture set {path!r}: mixture {bad} has total weight {totals[bad]}, "
                          f"expected a finite count > 0 for every mixture")
    prior: numpy.ndarray = numpy.log(totals / totals.sum())
    return prior
