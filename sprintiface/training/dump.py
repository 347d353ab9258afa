"""The dump trainer (``trainer:dump``): every segment into one HDF5 file, in the
layout RETURNN's HDFDataset reads, complete or absent.

Why the file goes through :class:`GuardedFile`: libhdf5 does not survive a
failed write. After a write fails (disk full, a file-size limit, a quota) its
datasets can no longer be closed, and when the library shuts down (at the
process's exit) ``H5D_close`` crashes the process. So libhdf5 writes through
h5py's ``fileobj`` driver into a :class:`GuardedFile`, which never reports a
failure to it: the first failed write is kept, that write and all later ones
go to memory (reads see them, so libhdf5 stays consistent and closes cleanly),
and the dump raises TrainerError at the call whose write failed. Nothing is
renamed then; the temporary is removed.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import TYPE_CHECKING, Any, Optional

import numpy

from sprintiface import hdf_layout
from sprintiface.config import Config
from sprintiface.errors import ConfigError, TrainerError
from sprintiface.log import logger
from sprintiface.training.protocol import Segment, Trainer

if TYPE_CHECKING:
    import h5py

    from sprintiface.engine import OnnxEngine

#: Suffix of what an incomplete run leaves (see DumpTrainer).
PARTIAL_SUFFIX = ".partial"


class GuardedFile:
    """A file descriptor as h5py's ``fileobj`` driver uses it, whose writes never fail.

    ``error`` holds the first OSError of a write, truncate or sync; from then on
    nothing more goes to the disk: writes are kept in memory (the failed one
    included) and reads return them, so the writer's view stays consistent.
    The memory this takes is what the writer flushes after the failure (its
    caches), because the dump stops feeding it at once.
    """

    def __init__(self, handle: int):
        self.handle = handle
        self.error: Optional[OSError] = None
        self._position = 0
        self._end = os.fstat(handle).st_size
        self._kept: list[tuple[int, bytes]] = []

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._end}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:  # Any: a writable buffer (typing names none before 3.12)
        view = memoryview(buffer).cast("B")
        size = len(view)
        data = os.pread(self.handle, size, self._position)
        view[:len(data)] = data
        view[len(data):] = bytes(size - len(data))  # beyond the end: zeros, as a sparse file reads
        for offset, blob in self._kept:
            low, high = max(offset, self._position), min(offset + len(blob), self._position + size)
            if low < high:
                view[low - self._position:high - self._position] = blob[low - offset:high - offset]
        self._position += size
        return size

    def read(self, size: int = -1) -> bytes:
        size = max(0, self._end - self._position) if size < 0 else size
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def write(self, buffer: Any) -> int:  # Any: a buffer (typing names none before 3.12)
        view = memoryview(buffer).cast("B")
        size = len(view)
        if self.error is None:
            written = 0
            try:
                while written < size:
                    written += os.pwrite(self.handle, view[written:], self._position + written)
            except OSError as error:
                self.error = error
        if self.error is not None:
            self._kept.append((self._position, bytes(view)))
        self._position += size
        self._end = max(self._end, self._position)
        return size

    def truncate(self, size: Optional[int] = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.handle, size)
            except OSError as error:
                self.error = error
        self._end = size
        return size

    def flush(self) -> None:
        """Nothing is buffered here (every write is a pwrite)."""

    def sync(self) -> None:
        """fsync; a failure is kept in ``error``, like a failed write."""
        if self.error is None:
            try:
                os.fsync(self.handle)
            except OSError as error:
                self.error = error


class DumpTrainer(Trainer):
    """Writes every segment to ``dump_file`` in the layout RETURNN's HDFDataset reads.

    Layout: ``inputs`` float32 (total frames, input_dim); ``seqTags``;
    ``seqLengths`` int32 (segments, 1 + keys) with the input length first and the
    target keys in sorted order; ``targets/data/<key>``, ``targets/size``
    (attrs key -> [dim, ndim]) and ``targets/labels/<key>``; attrs
    ``inputPattSize``, ``numSeqs``, ``numTimesteps``. Target keys: ``classes``
    (alignment, int32) where the target mode has alignments, ``orth`` (UTF-8 bytes)
    where it has orthographies, ``speaker_name`` / ``speaker_gender`` (UTF-8
    bytes) for target-generic, ``loss`` (float32, RASR's ``error`` of
    finishError: one value, none for a discarded segment) for criterion-by-sprint,
    and ``weights`` (float32, length 0 where RASR gave none).

    When segments are written: train_segment (the target modes with targets,
    unsupervised); forward (forward-only: RASR gets the model's posteriors, so
    these modes need ``onnx``/``model``); in criterion-by-sprint at backward or
    discard (RASR's finishError / finishDiscard, or exit() while one waits).

    The file is written under ``<dump_file>.<host>.<pid>.<random>.tmp`` and renamed
    to ``dump_file`` by :meth:`finish` only. :meth:`abort` (the run is not
    complete) renames what was written to ``<dump_file>.partial`` when every
    segment in it was written whole, and removes it otherwise (a failed write).
    """

    def __init__(self, config: Config, input_dim: int, output_dim: int, target_mode: str,
                 engine: Optional[OnnxEngine] = None, **options: Any):
        super().__init__(config, input_dim, output_dim, target_mode, engine, **options)
        try:
            import h5py
        except ImportError:
            raise ConfigError("trainer 'dump' needs h5py: pip install 'sprintiface[hdf5]'") from None
        self.path = _checked_dump_file(config.dump_file)
        if target_mode in ("forward-only", "criterion-by-sprint") and engine is None:
            raise ConfigError(f"trainer 'dump' in target mode {target_mode} returns posteriors to RASR and "
                              f"needs a model for them: give onnx:<path> (or model:<prefix> with epoch:<n>)")
        #: criterion-by-sprint: a segment is written when RASR's error for it came (or it was discarded).
        self._criterion = target_mode == "criterion-by-sprint"
        #: The target keys, sorted, with their [dim, ndim] of ``targets/size``.
        self.keys = _target_keys(target_mode, output_dim)
        self.num_segments = 0
        self.num_frames = 0
        #: True while a segment is half written (an exception there leaves the file inconsistent).
        self._writing = False
        self._file: Optional[h5py.File] = None
        self._io: Optional[GuardedFile] = None
        self._temporary: Optional[str] = None
        self._open_temporary()
        try:
            self._create_layout(h5py)
        except BaseException:
            self._discard()
            raise

    def _open_temporary(self) -> None:
        """Remove what killed writers left, create the temporary the dump goes to, and guard it."""
        from sprintiface._files import create_temporary, remove_stale_temporaries

        for leftover in remove_stale_temporaries(self.path):
            logger.info("dump: removed %s, left by a writer that was killed", leftover)
        try:
            handle, self._temporary = create_temporary(self.path)
        except OSError as error:
            raise ConfigError(f"config key 'dump_file': cannot create a file next to {self.path!r}: "
                              f"{error.strerror or error}") from None
        self._io = GuardedFile(handle)
        # Closed before the interpreter goes: libhdf5 closes what is still open at the
        # C exit, and a file-object file must not be closed after Python is gone.
        atexit.register(self._close_at_exit)

    def _create_layout(self, h5py: Any) -> None:
        """The HDF5 file on the guarded temporary, with the (empty) datasets of :mod:`sprintiface.hdf_layout`."""
        # A cache of 1 MiB per dataset (libhdf5 2 keeps 8 MiB), fully written chunks
        # leaving first: data reaches the disk, and a full disk is noticed, within a
        # few segments of the one that wrote it.
        self._file = file = h5py.File(self._io, "w", rdcc_nbytes=1 << 20, rdcc_w0=1.0)
        string = h5py.string_dtype("utf-8")
        input_dim, columns = self.input_dim, 1 + len(self.keys)
        self._inputs = file.create_dataset(hdf_layout.INPUTS, (0, input_dim), "float32", maxshape=(None, input_dim),
                                           chunks=(max(1, 65536 // input_dim), input_dim))
        self._tags = file.create_dataset(hdf_layout.SEQ_TAGS, (0,), string, maxshape=(None,), chunks=(1024,))
        self._lengths = file.create_dataset(hdf_layout.SEQ_LENGTHS, (0, columns), "int32",
                                            maxshape=(None, columns), chunks=(1024, columns))
        dtypes = {"classes": "int32", "weights": "float32", "loss": "float32"}
        self._targets = {
            key: file.create_dataset(hdf_layout.target_data(key), (0,), dtypes.get(key, "uint8"),
                                     maxshape=(None,), chunks=(65536,))
            for key in self.keys
        }
        size = file.require_group(hdf_layout.TARGETS_SIZE)
        labels = file.require_group(hdf_layout.TARGETS_LABELS)
        for key, (dim, ndim) in self.keys.items():
            size.attrs[key] = numpy.array([dim, ndim], dtype="int32")
            labels.create_dataset(key, (0,), string)
        self._check_writes("while creating the file")

    @property
    def _open_io(self) -> GuardedFile:
        """The guarded descriptor of the temporary: there from init until the dump is released."""
        if self._io is None:
            raise TrainerError(f"dump_file {self.path!r}: the dump is closed")
        return self._io

    @property
    def _open_temporary_path(self) -> str:
        """The temporary the dump is written to, until it is renamed or removed."""
        if self._temporary is None:
            raise TrainerError(f"dump_file {self.path!r}: the dump is closed")
        return self._temporary

    # -- the hooks ---------------------------------------------------------------

    def train_segment(self, segment: Segment) -> None:
        self._write(segment)

    def forward(self, segment: Segment) -> numpy.ndarray:
        posteriors = super().forward(segment)
        if not self._criterion:
            self._write(segment)  # forward-only: RASR's error for it never comes
        return posteriors

    def backward(self, segment: Segment, error: float, error_signal: numpy.ndarray,
                 natural_pairing_type: Optional[str]) -> None:
        if self._criterion:
            self._write(segment, loss=error)

    def discard(self, segment: Segment) -> None:
        if self._criterion:
            self._write(segment)

    def finish(self) -> None:
        """Close the file and give it its final name; TrainerError if anything failed to write."""
        if self._file is None:
            return
        try:
            self._close_file()
            self._check_writes("while closing the file")
            try:
                os.replace(self._open_temporary_path, self.path)
            except OSError as error:
                raise TrainerError(f"dump_file {self.path!r}: cannot give the finished dump its name: "
                                   f"{error}") from error
        except BaseException:
            self._discard()
            raise
        self._release()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path + PARTIAL_SUFFIX)  # an earlier, incomplete run's: superseded
        logger.info("dump: %d segments, %d frames written to %s", self.num_segments, self.num_frames, self.path)

    def abort(self) -> None:
        """The run ends incomplete: keep what was written whole as ``<dump_file>.partial``, else remove it."""
        if self._file is None:
            return
        whole = not self._writing and self._open_io.error is None and self.num_segments > 0
        if whole:
            partial = self.path + PARTIAL_SUFFIX
            try:
                self._close_file()
                if self._open_io.error is None:
                    os.replace(self._open_temporary_path, partial)
                    self._release()
                    logger.warning("dump: the run ended before RASR's exit() or after a failure; the %d segments "
                                   "written are in %s, %s was not written", self.num_segments, partial, self.path)
                    return
            except Exception:
                logger.exception("dump: cannot keep the incomplete dump as %s", partial)
        failed = self._writing or self._open_io.error is not None
        self._discard()
        logger.warning("dump: the run did not complete and %s; nothing was kept of %s",
                       "a write failed" if failed else "no segment was written", self.path)

    # -- writing -------------------------------------------------------------------

    def _write(self, segment: Segment, loss: Optional[float] = None) -> None:
        """Append ``segment`` to every dataset; TrainerError if a write failed."""
        if self._file is None:
            raise TrainerError(f"dump_file {self.path!r}: segment {segment.name!r} came after the dump was closed")
        if self._open_io.error is not None:
            self._check_writes(f"before segment {segment.name!r}")
        values = {
            "classes": segment.alignment,
            "weights": segment.weights,
            "orth": segment.orthography,
            "speaker_name": segment.speaker_name,
            "speaker_gender": segment.speaker_gender,
            "loss": None if loss is None else numpy.array([loss], dtype="float32"),
        }
        data = {}
        for key in self.keys:
            value = values[key]
            if isinstance(value, str):
                value = numpy.frombuffer(value.encode("utf-8", "surrogateescape"), dtype="uint8")
            data[key] = numpy.zeros(0) if value is None else numpy.asarray(value).reshape(-1)
        row = numpy.array([[segment.num_frames] + [data[key].shape[0] for key in self.keys]], dtype="int32")
        tag = numpy.array([segment.name or f"seq-{self.num_segments}"], dtype=object)
        self._writing = True
        for key in self.keys:
            _append(self._targets[key], data[key])
        _append(self._inputs, segment.features)
        _append(self._tags, tag)
        _append(self._lengths, row)
        self._writing = False
        self.num_segments += 1
        self.num_frames += segment.num_frames
        self._check_writes(f"at segment {segment.name!r}")

    def _check_writes(self, what: str) -> None:
        error = self._open_io.error
        if error is not None:
            raise TrainerError(f"dump_file {self.path!r}: a write failed {what}: {error.strerror or error} "
                               f"(errno {error.errno}); the dump is incomplete and will not be kept") from error

    def _close_file(self) -> None:
        """Write the counts, close the HDF5 file and sync it (a failure lands in ``_io.error``)."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.attrs[hdf_layout.INPUT_PATT_SIZE] = self.input_dim
            file.attrs[hdf_layout.NUM_SEQS] = self.num_segments
            file.attrs[hdf_layout.NUM_TIMESTEPS] = self.num_frames
        finally:
            file.close()
        self._open_io.sync()

    def _release(self) -> None:
        """Close the descriptor (which drops the lock) and forget the temporary."""
        if self._io is not None:
            with contextlib.suppress(OSError):
                os.close(self._io.handle)
        self._io = None
        self._temporary = None
        atexit.unregister(self._close_at_exit)

    def _discard(self) -> None:
        """Close whatever is open and remove the temporary."""
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(Exception):
                file.close()
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temporary)
        self._release()

    def _close_at_exit(self) -> None:
        if self._file is not None:
            self.abort()


def _target_keys(target_mode: str, output_dim: int) -> dict[str, tuple[int, int]]:
    """The target keys ``target_mode`` writes, sorted (the order of ``seqLengths``' columns),
    each with its ``[dim, ndim]``."""
    keys = {"weights": (1, 1)}
    if target_mode in ("target-alignment", "target-generic"):
        keys["classes"] = (output_dim, 1)
    if target_mode in ("target-segment-orth", "target-generic"):
        keys["orth"] = (256, 1)
    if target_mode == "target-generic":
        keys["speaker_name"] = (256, 1)
        keys["speaker_gender"] = (256, 1)
    if target_mode == "criterion-by-sprint":
        keys["loss"] = (1, 1)
    return dict(sorted(keys.items()))


def _append(dataset: Any, data: numpy.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + data.shape[0], axis=0)
    if data.shape[0]:
        dataset[start:] = data


def _checked_dump_file(path: Optional[str]) -> str:
    """``dump_file`` as a path a file can be written to (checked at init, before any work)."""
    if not path:
        raise ConfigError("trainer 'dump' needs config key 'dump_file' (the HDF5 file to write)")
    if os.path.isdir(path):
        raise ConfigError(f"config key 'dump_file': {path!r} is a directory; expected the path of the HDF5 "
                          f"file to write")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"config key 'dump_file': the directory {directory!r} of {path!r} does not exist "
                          f"(working directory {os.getcwd()!r})")
    return path
