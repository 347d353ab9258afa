"""Where a plain model's weights are while ONNX Runtime loads it: copies that are sprintiface's own.

The user's model file (and its external-data files) may be rewritten in place while
jobs run (cp, onnx.save, a torch export, rsync --inplace); a process that maps it
would see its weights change or fault (SIGBUS). So ONNX Runtime is never pointed at
them: the weights are copied first, and the model it gets refers to the copies
(docs/cluster.md):

- :func:`copy_privately`: one scratch file per tensor in a folder of this load
  (tmpfs first), removed right after the session is made (share_weights false);
- :func:`cached_weights`: the node's content-addressed, read-only copy, named by
  the SHA-256 of its bytes, shared by every process of the node (share_weights true).

:func:`external_weights` finds what to copy in a ModelProto of either kind
(sprintiface.onnx_proto's or onnx's) whose big initializers are external-data
references; :class:`Weight.point_to` makes a reference point to the copy.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any, Callable, Optional

from sprintiface import _files, onnx_proto
from sprintiface.errors import ConfigError, ModelError

#: Offsets of the weights in a file ONNX Runtime maps: multiples of a page.
_PAGE = 4096
#: Bytes copied per read while copying or hashing weights.
_CHUNK = 1 << 22

#: A model, graph or tensor of either ONNX API: sprintiface.onnx_proto's or the onnx package's
#: (duck-typed alike; onnx is not installed where the core runs, nor in the lint venv).
Proto = Any


def _graphs(graph: Proto) -> list[Proto]:
    """``graph`` and the bodies of its control-flow nodes, at any depth."""
    found: list[Proto] = []
    pending = [graph]
    while pending:
        current = pending.pop()
        found.append(current)
        for node in current.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)
    return found


class Weight:
    """One initializer whose bytes are elsewhere: ``length`` bytes at ``offset`` of ``source``
    (an external-data reference, or ``inline``: the tensor's own raw data in the model file)."""

    __slots__ = ("inline", "length", "offset", "source", "tensor")

    def __init__(self, tensor: Proto, source: str, offset: int, length: int, inline: bool = False) -> None:
        self.tensor, self.source, self.offset, self.length, self.inline = tensor, source, offset, length, inline

    def point_to(self, location: str, offset: int) -> None:
        """Make the tensor an external-data reference to ``length`` bytes at ``offset`` of
        ``location`` (a file name, relative to the folder ONNX Runtime is given)."""
        tensor = self.tensor
        if self.inline:
            tensor.ClearField("raw_data")  # not read: the copy is what ONNX Runtime reads
            tensor.data_location = onnx_proto.TensorProto.EXTERNAL
            self.inline = False
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(self.length))):
            tensor.external_data.add(key=key, value=value)


def external_weights(model: Proto, path: str) -> list[Weight]:
    """The initializers of ``model`` whose bytes are in a file, as :class:`Weight`: the
    external-data references (into the user's data files), at any depth, and, of a
    :mod:`sprintiface.onnx_proto` model loaded from ``path``, the main graph's raw-data
    tensors of at least ``onnx_proto.EXTERNAL_MIN_BYTES`` (their place in the model file;
    smaller ones stay in the graph, where ONNX Runtime's shape inference reads them).
    A reference outside the model's directory or past a file's end is a ModelError naming both."""
    directory = os.path.dirname(os.path.realpath(path))
    weights: list[Weight] = []
    model_file = getattr(model, "path", None)  # onnx_proto's ModelProto: the file it reads
    if model_file is not None:
        for tensor in model.graph.initializer:
            span = tensor.raw_data_span()
            if span is not None and span[1] >= onnx_proto.EXTERNAL_MIN_BYTES and \
                    not tensor.HasField("data_location") and not tensor.external_data:
                weights.append(Weight(tensor, model_file, span[0], span[1], inline=True))
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.data_location != onnx_proto.TensorProto.EXTERNAL:
                continue
            entries = {entry.key: entry.value for entry in tensor.external_data}
            location = entries.get("location", "")
            source = os.path.join(directory, location)
            if not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
                raise ModelError(f"ONNX model {path!r}: initializer {tensor.name!r} has its data in "
                                 f"{location!r}, expected a file in the model's directory {directory!r}")
            try:
                offset = int(entries.get("offset", "0") or 0)
                size = os.stat(source).st_size
                length = int(entries["length"]) if entries.get("length") else size - offset
            except (OSError, ValueError) as error:
                raise ModelError(f"ONNX model {path!r}: the data of initializer {tensor.name!r} "
                                 f"({location!r}) cannot be read: {error}") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise ModelError(f"ONNX model {path!r}: initializer {tensor.name!r} expects {length} bytes at "
                                 f"offset {offset} of {source!r}, which has {size} (truncated?)")
            weights.append(Weight(tensor, source, offset, length))
    return weights


class _Sources:
    """The files weights are copied from, each opened once for ``pread`` and closed at the end."""

    def __init__(self) -> None:
        self._handles: dict[str, int] = {}

    def __enter__(self) -> _Sources:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles.values():
            os.close(handle)

    def chunks(self, weight: Weight) -> Iterator[bytes]:
        """The bytes of ``weight``, in pieces of at most _CHUNK (read privately, never mapped)."""
        handle = self._handles.get(weight.source)
        if handle is None:
            handle = self._handles[weight.source] = os.open(weight.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        done = 0
        while done < weight.length:
            chunk = os.pread(handle, min(_CHUNK, weight.length - done), weight.offset + done)
            if not chunk:
                raise ModelError(f"{weight.source!r} ended while its weights were read (written to meanwhile?)")
            done += len(chunk)
            yield chunk


def private_roots() -> Iterator[str]:
    """Where the weights of one load may be copied for ONNX Runtime to take, best first:
    tmpfs (/dev/shm), so that nothing goes to disk, then the temp folder. Each folder is
    made only when the caller asks for it: a load that fits in /dev/shm leaves nothing
    in the temp folder."""
    for base in ("/dev/shm", _files.temp_folder()):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            try:
                root = _own_directory(os.path.join(base, f"sprintiface-{os.getuid()}"))
            except OSError:
                continue
            yield root


def private_root() -> str:
    """The first of :func:`private_roots` (OSError when there is none)."""
    for root in private_roots():
        return root
    raise OSError("no writable folder for the weights of a load (tried /dev/shm and the temp folder)")


def weights_cache_directory() -> str:
    """The node-local cache of plain models' weights for ``share_weights:true``:
    ``$SPRINTIFACE_CACHE_DIR``, else ``/var/tmp/sprintiface-<uid>``, else the temp folder's."""
    configured = os.environ.get("SPRINTIFACE_CACHE_DIR")
    if configured:
        return _own_directory(configured)
    base = "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK | os.X_OK) \
        else _files.temp_folder()
    return _own_directory(os.path.join(base, f"sprintiface-{os.getuid()}"))


def _own_directory(path: str) -> str:
    """``path``, made (mode 0700) when missing; OSError unless it is a real directory of this user."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{path!r} is not a directory of this user")
    return path


def copy_privately(weights: list[Weight], work: str) -> None:
    """Copy each weight into a file of its own in ``work`` and point the tensor there.

    One file per tensor: ONNX Runtime maps each, packs what it packs into its own
    memory and unmaps that; the folder is removed right after the session is made,
    so a tensor's copy lives exactly as long as a mapping of it (the packed ones'
    go at once) and nothing is held twice.
    """
    with _Sources() as sources:
        for index, weight in enumerate(weights):
            name = f"w{index}"
            handle = os.open(os.path.join(work, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                position = 0
                for chunk in sources.chunks(weight):
                    os.pwrite(handle, chunk, position)
                    position += len(chunk)
            finally:
                os.close(handle)
            weight.point_to(name, 0)


def _layout(weights: list[Weight]) -> list[int]:
    """Offsets of the weights in one file, each at a page (so ONNX Runtime can map it)."""
    offsets: list[int] = []
    position = 0
    for weight in weights:
        position += (-position) % _PAGE
        offsets.append(position)
        position += weight.length
    return offsets


def _hash_weights(weights: list[Weight], offsets: list[int], sources: _Sources,
                  write: Optional[Callable[[int, bytes], object]] = None) -> str:
    """SHA-256 of the file the weights make laid out at ``offsets`` (zeros between);
    with ``write(position, bytes)``, the bytes are written too, in the same pass."""
    import hashlib

    digest, position = hashlib.sha256(), 0
    for weight, offset in zip(weights, offsets):
        digest.update(bytes(offset - position))
        position = offset
        for chunk in sources.chunks(weight):
            digest.update(chunk)
            if write is not None:
                write(position, chunk)
            position += len(chunk)
    return digest.hexdigest()


#: Copies in the weights cache that no job has used for this many days are removed when a
#: job writes a new copy (``$SPRINTIFACE_CACHE_MAX_AGE_DAYS`` overrides it).
CACHE_MAX_AGE_DAYS = 7.0
#: The name of a copy in the weights cache: the SHA-256 of its bytes.
_CACHE_NAME = re.compile(r"[0-9a-f]{64}\.data")


def cache_max_age_days() -> float:
    """Days an unused copy stays in the weights cache: ``$SPRINTIFACE_CACHE_MAX_AGE_DAYS``,
    else :data:`CACHE_MAX_AGE_DAYS`; ConfigError for a value that is not a number > 0."""
    text = os.environ.get("SPRINTIFACE_CACHE_MAX_AGE_DAYS")
    if text is None or not text.strip():
        return CACHE_MAX_AGE_DAYS
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not days > 0 or days == float("inf"):
        raise ConfigError(f"SPRINTIFACE_CACHE_MAX_AGE_DAYS: expected a number of days > 0, got {text!r}")
    return days


def cached_weights(weights: list[Weight], path: str) -> str:
    """The node's content-addressed, read-only copy of the weights (see docs/cluster.md),
    made when missing; points the tensors there and returns its folder.

    The copy is named by the SHA-256 of its bytes, written once under a temporary
    name (locked; a dead writer's is removed by the next), made mode 0444 and
    renamed: nothing ever writes a file of this name again, so every process
    that maps it maps the same bytes, whatever happens to the user's file.

    Every use marks the copy used (its mtime), under the copy's lock; a process that
    writes a new copy then removes the copies no job used for :func:`cache_max_age_days`
    (under their locks, so never one a job has just found): the cache does not grow with
    every model a node ever ran. A removed copy stays valid for the jobs that mapped it.
    """
    cache = weights_cache_directory()
    max_age = cache_max_age_days()
    offsets = _layout(weights)
    total = offsets[-1] + weights[-1].length if weights else 0
    wrote = False
    with _Sources() as sources:
        digest = _hash_weights(weights, offsets, sources)
        final = os.path.join(cache, f"{digest}.data")
        with _files.exclusive_lock(_cache_lock(final)):
            if not _is_complete(final, total):
                _files.remove_stale_temporaries(final)
                handle, temporary = _files.create_temporary(final)
                try:
                    written = _hash_weights(weights, offsets, sources,
                                            lambda position, chunk: os.pwrite(handle, chunk, position))
                    os.ftruncate(handle, total)
                    os.fsync(handle)
                    os.fchmod(handle, 0o444)
                    if written != digest:
                        raise ModelError(f"ONNX model {path!r} changed while it was loaded; load it again")
                    os.replace(temporary, final)
                    wrote = True
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary)
                    raise
                finally:
                    os.close(handle)
            with contextlib.suppress(OSError):  # a cache another user made for us: not ours to touch
                os.utime(final)
    if wrote:
        remove_unused_copies(cache, max_age, keep=final)
    for weight, offset in zip(weights, offsets):
        weight.point_to(os.path.basename(final), offset)
    return cache


def _cache_lock(copy: str) -> str:
    return os.path.join(os.path.dirname(copy), f".{os.path.basename(copy)[:-len('.data')]}.lock")


def remove_unused_copies(cache: str, max_age_days: float, keep: Optional[str] = None) -> list[str]:
    """Remove the copies in ``cache`` (named by their hash) not used for ``max_age_days``,
    except ``keep``; returns them. Each is checked again under its lock, which a job
    holds while it finds and marks a copy."""
    import time

    removed: list[str] = []
    candidates: list[str] = []
    oldest = time.time() - max_age_days * 86400.0
    with contextlib.suppress(OSError), os.scandir(cache) as entries:
        candidates = [entry.path for entry in entries if _CACHE_NAME.fullmatch(entry.name) and entry.path != keep]
    for candidate in candidates:
        with contextlib.suppress(OSError), _files.exclusive_lock(_cache_lock(candidate)):
            if os.stat(candidate).st_mtime < oldest:
                os.unlink(candidate)
                removed.append(candidate)
    return removed


def _is_complete(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
