"""ONNX model files as bytes: what the scorer reads without the onnx package.

An ONNX file is one protobuf message (ModelProto). The weights are the bulk of
it, in the ``raw_data`` of the graph's initializers; everything else (nodes,
names, shapes, metadata) is small. Two things are done here on the wire
format, touching the weights' bytes not at all:

- :func:`read_metadata`: the model's ``metadata_props`` (where ``sprintiface
  prepare`` records what the scorer needs), found by skipping over the graph;
- :func:`graph_without_weights`: the model with each initializer's
  ``raw_data`` replaced by an external-data reference to its place in the file
  itself: the small graph to parse, and where each weight is (the engine copies
  the weights out of the file itself, so that nothing maps the user's file).

The file is read with ``pread`` through a small window, never mapped and not
kept open: the bytes of the weights are skipped over, not read, and a model
file that someone rewrites later cannot reach into a process that read it.

Field numbers are ONNX's (onnx.proto): ModelProto graph 7, metadata_props 14;
GraphProto initializer 5; TensorProto raw_data 9, external_data 13,
data_location 14; StringStringEntryProto key 1, value 2.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, Tuple

from sprintiface.errors import ModelError

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 9, 13, 14
_EXTERNAL = 1
#: Initializers smaller than this stay inline: shape tensors and the like, which ONNX
#: Runtime's shape inference reads from the graph itself.
EXTERNAL_MIN_BYTES = 1024


class _Truncated(Exception):
    pass


def _varint(data, position: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise _Truncated
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise _Truncated


def _fields(data, start: int, end: int) -> Iterator[Tuple[int, int, int, int, int]]:
    """``(field number, wire type, field start, value start, value end)`` of each field in
    ``data[start:end]``; for a varint the value is read to find its end."""
    position = start
    while position < end:
        field_start = position
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, value_end = _varint(data, position)
        elif wire == _FIXED64:
            value_end = position + 8
        elif wire == _FIXED32:
            value_end = position + 4
        elif wire == _BYTES:
            length, position = _varint(data, position)
            value_end = position + length
        else:
            raise _Truncated
        if value_end > end:
            raise _Truncated
        yield number, wire, field_start, position, value_end
        position = value_end


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _BYTES) + _encode_varint(len(payload)) + payload


def _string_entry(number: int, key: str, value: str) -> bytes:
    return _length_delimited(number, _length_delimited(1, key.encode()) + _length_delimited(2, value.encode()))


class _File:
    """The file at ``path``, read with ``pread`` through a window of WINDOW bytes:
    ``data[i]`` and ``data[a:b]`` read what they need and nothing else (a field the
    caller skips is never read). The file is closed at the end of the ``with``."""

    WINDOW = 1 << 16

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except IsADirectoryError:
            raise ModelError(f"ONNX model {path!r} is a directory, expected a file") from None
        except FileNotFoundError:
            raise ModelError(f"ONNX model {path!r} does not exist") from None
        except OSError as error:
            raise ModelError(f"ONNX model {path!r} cannot be read: {error.strerror}") from None
        if os.path.isdir(path):
            os.close(self._fd)
            raise ModelError(f"ONNX model {path!r} is a directory, expected a file")
        self._size = os.fstat(self._fd).st_size
        self._start, self._window = 0, b""

    def __len__(self) -> int:
        return self._size

    def read(self, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` (the file shrank under us: _Truncated)."""
        if self._start <= start and start + length <= self._start + len(self._window):
            return self._window[start - self._start:start - self._start + length]
        parts, done = [], 0
        while done < length:
            chunk = os.pread(self._fd, length - done, start + done)
            if not chunk:
                raise _Truncated
            parts.append(chunk)
            done += len(chunk)
        return b"".join(parts)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.read(key.start, key.stop - key.start)
        if not self._start <= key < self._start + len(self._window):
            if key >= self._size:
                raise IndexError(key)
            self._start, self._window = key, os.pread(self._fd, self.WINDOW, key)
            if not self._window:
                raise _Truncated
        return self._window[key - self._start]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)


def read_metadata(path: str) -> Dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path`` (key -> value); ModelError
    for a file that is not an ONNX model."""
    with _File(path) as data:
        metadata = {}
        try:
            for number, wire, _, start, end in _fields(data, 0, len(data)):
                if number == _MODEL_METADATA and wire == _BYTES:
                    entry = {n: bytes(data[s:e]).decode("utf-8") for n, w, _, s, e in _fields(data, start, end)
                             if w == _BYTES}
                    metadata[entry.get(1, "")] = entry.get(2, "")
        except (_Truncated, UnicodeDecodeError):
            raise ModelError(f"ONNX model {path!r} cannot be read: not an ONNX (protobuf) file, or truncated") \
                from None
        return metadata


def graph_without_weights(path: str) -> bytes:
    """The model at ``path`` with every raw-data initializer of its main graph (of at
    least EXTERNAL_MIN_BYTES) turned into external data that points into ``path``
    itself (location: the file's name, offset and length of its ``raw_data``). Load
    the result with ONNX Runtime's external-data folder set to the file's directory."""
    location = os.path.basename(os.path.realpath(path))  # ONNX Runtime resolves links, and so must we
    with _File(path) as data:
        try:
            parts = []
            for number, wire, field_start, start, end in _fields(data, 0, len(data)):
                if number == _MODEL_GRAPH and wire == _BYTES:
                    parts.append(_length_delimited(_MODEL_GRAPH, _graph(data, start, end, location)))
                else:
                    parts.append(bytes(data[field_start:end]))
        except _Truncated:
            raise ModelError(f"ONNX model {path!r} cannot be read: not an ONNX (protobuf) file, or truncated") \
                from None
        return b"".join(parts)


def _graph(data, start: int, end: int, location: str) -> bytes:
    parts = []
    for number, wire, field_start, value_start, value_end in _fields(data, start, end):
        if number == _GRAPH_INITIALIZER and wire == _BYTES:
            parts.append(_length_delimited(_GRAPH_INITIALIZER, _tensor(data, value_start, value_end, location)))
        else:
            parts.append(bytes(data[field_start:value_end]))
    return b"".join(parts)


def _tensor(data, start: int, end: int, location: str) -> bytes:
    fields = list(_fields(data, start, end))
    raw = [(s, e) for number, wire, _, s, e in fields if number == _TENSOR_RAW_DATA and wire == _BYTES]
    if not raw or any(number == _TENSOR_DATA_LOCATION for number, *_ in fields) or \
            raw[-1][1] - raw[-1][0] < EXTERNAL_MIN_BYTES:
        return bytes(data[start:end])  # small, typed fields, or already external: as it is
    raw_start, raw_end = raw[-1]
    kept = b"".join(bytes(data[f:e]) for number, _, f, _, e in fields if number != _TENSOR_RAW_DATA)
    return (kept + _string_entry(_TENSOR_EXTERNAL_DATA, "location", location)
            + _string_entry(_TENSOR_EXTERNAL_DATA, "offset", str(raw_start))
            + _string_entry(_TENSOR_EXTERNAL_DATA, "length", str(raw_end - raw_start))
            + _encode_varint(_TENSOR_DATA_LOCATION << 3 | _VARINT) + _encode_varint(_EXTERNAL))


def append_metadata(path: str, entries: Dict[str, str]) -> None:
    """Add ``entries`` to the ``metadata_props`` of the model file at ``path``, in place.

    Protobuf messages take repeated fields in any order, so the entries are
    appended to the file's end; nothing else is read or rewritten.
    """
    with open(path, "ab") as file:
        for key, value in entries.items():
            file.write(_string_entry(_MODEL_METADATA, key, value))
