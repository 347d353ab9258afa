"""Feature files for the command line: segments of float32 (T, F) frames.

- ``.npy``: one segment, (T, F);
- ``.npz``: one array (T, F) per segment, named by its key;
- ``.hdf`` / ``.h5`` / ``.hdf5``: RETURNN's HDFDataset layout (:mod:`sprintiface.hdf_layout`:
  ``inputs``, ``seqLengths``, ``seqTags``), as sprintiface's dump trainer writes it (needs h5py).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy

from sprintiface import hdf_layout
from sprintiface.errors import FeatureError

HDF_SUFFIXES = (".hdf", ".h5", ".hdf5")


def _check(name: str, array: numpy.ndarray, path: str) -> numpy.ndarray:
    if array.ndim != 2:
        raise FeatureError(f"{path}: segment {name!r} has shape {array.shape}, expected (T, F)")
    return numpy.ascontiguousarray(array, dtype=numpy.float32)


def count_segments(path: str) -> int:
    """How many segments ``path`` holds (for a progress bar)."""
    if path.endswith(".npy"):
        return 1
    if path.endswith(".npz"):
        with numpy.load(path) as archive:
            return len(archive.files)
    import h5py

    with h5py.File(path, "r") as file:
        return int(file[hdf_layout.SEQ_LENGTHS].shape[0])


def read_segments(path: str) -> Iterator[tuple[str, numpy.ndarray]]:
    """Yield ``(segment name, float32 (T, F) frames)`` one segment at a time."""
    if not os.path.isfile(path):
        raise FeatureError(f"feature file {path!r} does not exist")
    base = os.path.splitext(os.path.basename(path))[0]
    if path.endswith(".npy"):
        yield base, _check(base, numpy.load(path, allow_pickle=False), path)
    elif path.endswith(".npz"):
        with numpy.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                yield name, _check(name, archive[name], path)
    elif path.endswith(HDF_SUFFIXES):
        try:
            import h5py
        except ImportError:
            raise FeatureError(f"{path}: reading HDF5 needs h5py: pip install 'sprintiface[hdf5]'") from None
        with h5py.File(path, "r") as file:
            if hdf_layout.INPUTS not in file or hdf_layout.SEQ_LENGTHS not in file:
                raise FeatureError(f"{path}: expected RETURNN's HDF layout with {hdf_layout.INPUTS!r} and "
                                   f"{hdf_layout.SEQ_LENGTHS!r}, found {sorted(file)}")
            lengths = file[hdf_layout.SEQ_LENGTHS][...]
            lengths = lengths[:, 0] if lengths.ndim == 2 else lengths  # column 0: frames of the inputs
            tags = file[hdf_layout.SEQ_TAGS][...] if hdf_layout.SEQ_TAGS in file else \
                [f"seq-{i}" for i in range(len(lengths))]
            inputs = file[hdf_layout.INPUTS]
            start = 0
            for tag, length in zip(tags, lengths):
                name = tag.decode("utf-8") if isinstance(tag, bytes) else str(tag)
                yield name, _check(name, inputs[start:start + int(length)], path)
                start += int(length)
    else:
        raise FeatureError(f"feature file {path!r}: expected .npy, .npz or {', '.join(HDF_SUFFIXES)}")
