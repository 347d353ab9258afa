"""ONNX's protobuf messages read and written without the onnx package.

``import onnx`` costs about a second of CPU and 21 MiB (protobuf, ml_dtypes),
more than a RASR job may spend to load a model. This module reads and writes
the part of ONNX's wire format that :mod:`sprintiface.graph` works on, with
the attribute names of ``onnx.ModelProto`` and its parts, so that the same
code analyses and cuts a model parsed either way.

The contract:

- :func:`load` (a path, read with plain reads: no mmap, since a user may
  rewrite the file while jobs run) and :func:`load_from_string` (bytes) give a
  :class:`ModelProto`. Parsing is lazy: a message is decoded when one of its
  fields is first read, and a tensor's ``raw_data`` is never copied unless it
  is asked for (``tensor.raw_data``, :func:`to_array`, an inline
  serialization): it is kept as its place in the source.
- Fields this module does not know (doc strings it does know; training_info,
  functions, sparse initializers, ... it does not) are kept as their bytes and
  written back unchanged. A message nothing was changed in is written back as
  its original bytes, so an unmodified model re-encodes byte for byte.
- The field access follows protobuf's Python API for the subset used:
  singular fields as attributes (absent ones read as their default; proto2
  presence, so ``HasField`` works for scalars too), repeated fields as lists
  (``remove``, ``del x[:]``, ``append``, ``extend``, ``add(**fields)``),
  oneofs (``dim_value``/``dim_param``; ``TypeProto``'s ``tensor_type``),
  ``ClearField``. Assigning a whole message to a singular field is refused,
  as protobuf does; ``CopyFrom`` is not offered.
- :meth:`ModelProto.SerializeToString` writes the model with its weights
  inline or (``weights="external"``) as external-data references to their
  place in the source file.
- :func:`make_node` and :func:`make_tensor_value_info` build new messages (as
  ``onnx.helper`` does, for the subset sprintiface writes); :func:`append_node`
  adds a node to the node list of either kind of graph.
- :func:`read_metadata` reads a file's ``metadata_props`` alone (skipping over
  the graph) and :func:`append_metadata` adds entries at the file's end: what a
  prepared model's load and ``sprintiface prepare`` need.

This is sprintiface's one reader and writer of ONNX's wire format.
- Anything unreadable (truncated, not protobuf, a field of the wrong type) is
  a :class:`sprintiface.errors.ModelError` naming the file, raised when that
  part is first decoded.

Field numbers are ONNX's (onnx/onnx.proto, proto2 syntax).
"""
from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Callable, ClassVar, Optional, Union

import numpy

from sprintiface.errors import ModelError

__all__ = [
    "EXTERNAL_MIN_BYTES",
    "AttributeProto",
    "GraphProto",
    "ModelProto",
    "NodeProto",
    "OperatorSetIdProto",
    "StringStringEntryProto",
    "TensorProto",
    "TensorShapeProto",
    "TypeProto",
    "ValueInfoProto",
    "append_metadata",
    "append_node",
    "load",
    "load_from_string",
    "make_node",
    "make_tensor_value_info",
    "read_metadata",
    "to_array",
]

_VARINT, _FIXED64, _BYTES, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
#: Initializers smaller than this stay inline in ``weights="external"``: shape tensors and the
#: like, which ONNX Runtime's shape inference reads from the graph itself.
EXTERNAL_MIN_BYTES = 1024
#: Bytes of the file read at once around the small fields: the headers between two
#: initializers' raw data cost one read, the raw data itself none.
_BLOCK = 64 * 1024
#: Length-delimited values (packed numbers, bytes) at least this long are decoded when
#: their field is read, not when their message is: a tensor's float_data may be the weights.
_LAZY_BYTES = 4096


# -- sources: where the bytes are -------------------------------------------------------

class _TruncatedError(Exception):
    """The bytes end inside a field, or are not protobuf."""


class _Source:
    """The bytes a model was parsed from: ``read`` gives ``[start, end)``."""

    name: str
    size: int
    path: Optional[str] = None

    def read(self, start: int, end: int) -> Union[bytes, memoryview]:
        raise NotImplementedError

    def copy_into(self, out: BinaryIO, start: int, end: int) -> None:
        out.write(self.read(start, end))

    def error(self, what: str = "not an ONNX (protobuf) file, or truncated") -> ModelError:
        return ModelError(f"ONNX model {self.name!r} cannot be read: {what}")


class _BytesSource(_Source):
    def __init__(self, data: Union[bytes, bytearray, memoryview], name: str):
        self.data = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self.size = len(self.data)
        self.name = name

    def read(self, start: int, end: int) -> memoryview:
        if end > self.size:
            raise _TruncatedError
        return self.data[start:end]


class _FileSource(_Source):
    """A file read with ``os.pread`` (no mmap: a model rewritten in place under a mapping
    would change, or fault, under the reader). The open descriptor keeps the version of
    the file that was opened when the name is replaced (``os.replace``)."""

    def __init__(self, path: str):
        self.name = path
        try:
            # Not a `with`: the source keeps the file open for the model's lazy reads; close() closes it
            self.file: Optional[BinaryIO] = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise ModelError(f"ONNX model {path!r} does not exist") from None
        except IsADirectoryError:
            raise ModelError(f"ONNX model {path!r} is a directory, expected a file") from None
        except OSError as error:
            raise ModelError(f"ONNX model {path!r} cannot be read: {error.strerror}") from None
        self.path = os.path.realpath(path)
        opened = os.fstat(self.file.fileno())
        self.size, self._mtime_ns = opened.st_size, opened.st_mtime_ns
        self._cache = b""
        self._cache_start = 0

    def _pread(self, start: int, length: int) -> bytes:
        if self.file is None:
            raise ModelError(f"ONNX model {self.name!r}: read after close()")
        parts = []
        while length > 0:
            part = os.pread(self.file.fileno(), min(length, 1 << 30), start)
            if not part:
                raise _TruncatedError  # the file shrank since it was opened
            parts.append(part)
            start += len(part)
            length -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, start: int, end: int) -> Union[bytes, memoryview]:
        if end > self.size:
            raise _TruncatedError
        cache_start = self._cache_start
        if cache_start <= start and end <= cache_start + len(self._cache):
            return memoryview(self._cache)[start - cache_start:end - cache_start]
        if end - start >= _BLOCK:
            return self._pread(start, end - start)  # large: read it alone, leave the cache be
        self._cache = self._pread(start, min(self.size, start + _BLOCK) - start)
        self._cache_start = start
        return memoryview(self._cache)[:end - start]

    def copy_into(self, out: BinaryIO, start: int, end: int) -> None:
        chunk = 16 << 20
        for position in range(start, end, chunk):
            out.write(self._pread(position, min(end, position + chunk) - position))

    def is_current(self) -> bool:
        """Whether the path still names the file that was opened, unchanged (same inode,
        size and modification time)."""
        if self.file is None or self.path is None:
            return False
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        opened = os.fstat(self.file.fileno())
        return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == \
            (opened.st_dev, opened.st_ino, self.size, self._mtime_ns)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class _Span:
    """Bytes ``[start, end)`` of a source, read only when needed."""

    __slots__ = ("end", "source", "start")

    def __init__(self, source: _Source, start: int, end: int):
        self.source, self.start, self.end = source, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def tobytes(self) -> bytes:
        return bytes(self.source.read(self.start, self.end))


# -- the wire format ----------------------------------------------------------------

def _varint(data: Union[bytes, memoryview], position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise _TruncatedError
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise _TruncatedError


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int32/int64 negatives: ten bytes of two's complement, as protobuf writes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _fields(source: _Source, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(number, wire type, field start, value start, value end)`` for each field of
    ``[start, end)``; a varint's value span is its bytes. Reads headers only."""
    position = start
    while position < end:
        field_start = position
        head = source.read(position, min(end, position + 20))
        key, used = _varint(head, 0)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _TruncatedError
        if wire == _VARINT:
            _, value_end = _varint(head, used)
            value_start, value_end = position + used, position + value_end
        elif wire == _FIXED64:
            value_start = position + used
            value_end = value_start + 8
        elif wire == _FIXED32:
            value_start = position + used
            value_end = value_start + 4
        elif wire == _BYTES:
            length, after = _varint(head, used)
            value_start = position + after
            value_end = value_start + length
        else:
            raise _TruncatedError  # groups are not in ONNX
        if value_end > end:
            raise _TruncatedError
        yield number, wire, field_start, value_start, value_end
        position = value_end


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# Kinds of scalar field: how a value is decoded and encoded.
_INT64, _INT32, _UINT64, _FLOAT, _DOUBLE, _STRING, _BYTES_KIND, _MESSAGE = range(8)
_WIRE_OF = {_INT64: _VARINT, _INT32: _VARINT, _UINT64: _VARINT, _FLOAT: _FIXED32, _DOUBLE: _FIXED64,
            _STRING: _BYTES, _BYTES_KIND: _BYTES, _MESSAGE: _BYTES}
_NUMERIC = frozenset((_INT64, _INT32, _UINT64, _FLOAT, _DOUBLE))
_DEFAULT_OF: dict[int, Any] = {_INT64: 0, _INT32: 0, _UINT64: 0, _FLOAT: 0.0, _DOUBLE: 0.0, _STRING: "",
                               _BYTES_KIND: b""}


def _decode_varint_value(kind: int, raw: int) -> int:
    if kind == _INT64:
        return _signed64(raw)
    if kind == _INT32:
        return _signed32(raw)
    return raw


def _decode_packed(kind: int, data: Union[bytes, memoryview]) -> list[Any]:
    if kind == _FLOAT:
        if len(data) % 4:
            raise _TruncatedError
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    if kind == _DOUBLE:
        if len(data) % 8:
            raise _TruncatedError
        return list(struct.unpack(f"<{len(data) // 8}d", data))
    values = []
    position = 0
    while position < len(data):
        raw, position = _varint(data, position)
        values.append(_decode_varint_value(kind, raw))
    return values


def _encode_scalar(kind: int, value: Any) -> bytes:
    if kind in (_INT64, _INT32, _UINT64):
        return _encode_varint(int(value))
    if kind == _FLOAT:
        return struct.pack("<f", value)
    if kind == _DOUBLE:
        return struct.pack("<d", value)
    data = value.encode("utf-8") if kind == _STRING else bytes(value)
    return _encode_varint(len(data)) + data


def _check_value(kind: int, name: str, value: Any) -> Any:
    """``value`` as protobuf's Python API would store it in field ``name``; TypeError otherwise."""
    if kind in (_INT64, _INT32, _UINT64):
        if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        value = int(value)
        low, high = {_INT64: (-(1 << 63), (1 << 63) - 1), _INT32: (-(1 << 31), (1 << 31) - 1),
                     _UINT64: (0, (1 << 64) - 1)}[kind]
        if not low <= value <= high:
            raise ValueError(f"{name}: {value} is out of range")
        return value
    if kind in (_FLOAT, _DOUBLE):
        if not isinstance(value, (int, float, numpy.integer, numpy.floating)) or isinstance(value, bool):
            raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
        # A float field holds what its 32 bits hold, as protobuf's does.
        return struct.unpack("<f", struct.pack("<f", value))[0] if kind == _FLOAT else float(value)
    if kind == _STRING:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
        return value
    if kind == _BYTES_KIND:
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"{name}: expected bytes, got {type(value).__name__}")
        return bytes(value)
    raise TypeError(f"{name}: a message field cannot be assigned; change its fields")


class _Field:
    __slots__ = ("kind", "message", "name", "number", "oneof", "packed", "repeated")

    def __init__(self, number: int, name: str, kind: int, repeated: bool = False, packed: bool = False,
                 message: Optional[Callable[[], type[_Message]]] = None, oneof: Optional[frozenset[int]] = None):
        self.number, self.name, self.kind, self.repeated, self.packed = number, name, kind, repeated, packed
        self.message = message
        self.oneof = oneof


# Chunks of an encoding: bytes, or spans of the source copied when written.
_Chunk = Union[bytes, memoryview, _Span]


class _Encoding:
    """A serialization in progress: chunks and their total length."""

    __slots__ = ("chunks", "length")

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = []
        self.length = 0

    def add(self, chunk: _Chunk) -> None:
        self.chunks.append(chunk)
        self.length += len(chunk)

    def add_message(self, number: int, inner: _Encoding) -> None:
        self.add(_key(number, _BYTES) + _encode_varint(inner.length))
        self.chunks.extend(inner.chunks)
        self.length += inner.length

    def write(self, out: BinaryIO) -> None:
        for chunk in self.chunks:
            if isinstance(chunk, _Span):
                chunk.source.copy_into(out, chunk.start, chunk.end)
            else:
                out.write(chunk)


class _External:
    """How ``weights="external"`` writes the main graph's raw-data initializers."""

    def __init__(self, source: _Source, location: str, min_bytes: int):
        self.source, self.location, self.min_bytes = source, location, min_bytes


# -- messages -------------------------------------------------------------------

class _Repeated(list[Any]):
    """A repeated field: a list that tells its message when it changes."""

    def __init__(self, owner: _Message, field: _Field, values: Iterable[Any] = ()):
        super().__init__(values)
        self._owner = owner
        self._field = field

    def _checked(self, value: Any) -> Any:
        field = self._field
        if field.kind == _MESSAGE:
            cls = field.message() if field.message else None
            if not isinstance(value, _Message) or (cls is not None and not isinstance(value, cls)):
                raise TypeError(f"{field.name}: expected a {cls.__name__ if cls else 'message'}, "
                                f"got {type(value).__name__}")
            value._adopt(self._owner, field.name)
            return value
        return _check_value(field.kind, field.name, value)

    def _changed(self) -> None:
        self._owner._touch()

    def add(self, **fields: Any) -> Any:
        """A new message appended to this repeated message field, with ``fields`` set."""
        if self._field.kind != _MESSAGE or self._field.message is None:
            raise AttributeError(f"{self._field.name}: add() is for repeated message fields")
        message = self._field.message()(**fields)
        self.append(message)
        return message

    def append(self, value: Any) -> None:
        super().append(self._checked(value))
        self._changed()

    def extend(self, values: Iterable[Any]) -> None:
        super().extend([self._checked(v) for v in values])
        self._changed()

    def insert(self, index: Any, value: Any) -> None:
        super().insert(index, self._checked(value))
        self._changed()

    def remove(self, value: Any) -> None:
        # Identity first: removing the node one holds must not remove an equal twin.
        for index, item in enumerate(self):
            if item is value:
                super().__delitem__(index)
                self._changed()
                return
        super().remove(value)
        self._changed()

    def pop(self, index: Any = -1) -> Any:
        value = super().pop(index)
        self._changed()
        return value

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            super().__setitem__(index, [self._checked(v) for v in value])
        else:
            super().__setitem__(index, self._checked(value))
        self._changed()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._changed()

    # The misc ignore: mypy wants __iadd__ to accept what list.__add__ accepts (lists);
    # += takes any iterable, as list's own += and protobuf's repeated fields do.
    def __iadd__(self, values: Iterable[Any]) -> _Repeated:  # type: ignore[misc]
        self.extend(values)
        return self

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        super().reverse()
        self._changed()


class _Lazy:
    """A length-delimited value decoded when its field is first read (packed numbers,
    bytes): a span of the source. raw_data stays one for good (see TensorProto)."""

    __slots__ = ("span", "wire")

    def __init__(self, span: _Span, wire: int):
        self.span, self.wire = span, wire


class _Message:
    """A protobuf message of ONNX: fields as attributes, decoded on first access."""

    FIELDS: ClassVar[tuple[_Field, ...]] = ()
    #: Singular message fields that ``weights="external"`` reaches into (ModelProto.graph).
    _PASS_EXTERNAL: ClassVar[frozenset[int]] = frozenset()
    _BY_NAME: ClassVar[dict[str, _Field]]
    _BY_NUMBER: ClassVar[dict[int, _Field]]
    #: The fields by number, set on each class by its first ``_fields_in_order``.
    _ORDER: ClassVar[Sequence[_Field]]
    __slots__ = (
        "_dirty",
        "_parent",
        "_parent_field",
        "_parsed",
        "_present",
        "_source",
        "_spans",
        "_unknown",
        "_values",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._BY_NAME = {f.name: f for f in cls.FIELDS}
        cls._BY_NUMBER = {f.number: f for f in cls.FIELDS}

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_source", None)
        object.__setattr__(self, "_spans", [])
        object.__setattr__(self, "_parsed", True)
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_present", set())
        object.__setattr__(self, "_unknown", [])
        object.__setattr__(self, "_dirty", True)  # a new message has no original bytes
        object.__setattr__(self, "_parent", None)
        object.__setattr__(self, "_parent_field", None)
        for name, value in fields.items():
            field = self._field(name)
            if field.repeated:
                getattr(self, name).extend(value)
            else:
                setattr(self, name, value)

    @classmethod
    def _from_source(cls, source: _Source, start: int, end: int) -> _Message:
        message = cls.__new__(cls)
        object.__setattr__(message, "_source", source)
        object.__setattr__(message, "_spans", [(start, end)])
        object.__setattr__(message, "_parsed", False)
        object.__setattr__(message, "_values", {})
        object.__setattr__(message, "_present", set())
        object.__setattr__(message, "_unknown", [])
        object.__setattr__(message, "_dirty", False)
        object.__setattr__(message, "_parent", None)
        object.__setattr__(message, "_parent_field", None)
        return message

    # -- decoding ------------------------------------------------------------

    def _parse(self) -> None:
        if self._parsed:
            return
        source = self._source
        assert source is not None
        try:
            for start, end in self._spans:
                self._parse_span(source, start, end)
        except (_TruncatedError, UnicodeDecodeError) as error:
            # Nothing half-read is kept: a second access fails the same way.
            self._values.clear()
            self._present.clear()
            self._unknown.clear()
            if isinstance(error, UnicodeDecodeError):
                raise source.error(f"a string of a {type(self).__name__} is not UTF-8") from None
            raise source.error() from None
        object.__setattr__(self, "_parsed", True)

    def _parse_span(self, source: _Source, start: int, end: int) -> None:
        values = self._values
        for number, wire, field_start, value_start, value_end in _fields(source, start, end):
            field = self._BY_NUMBER.get(number)
            packed = field is not None and field.repeated and wire == _BYTES and field.kind in _NUMERIC
            if field is None or not (wire == _WIRE_OF[field.kind] or packed):
                # Unknown, or of a wire type the schema does not give it: protobuf keeps those as
                # unknown fields too.
                self._unknown.append(_Span(source, field_start, value_end))
                continue
            name = field.name
            if field.kind == _MESSAGE:
                assert field.message is not None
                if field.repeated:
                    child = field.message()._from_source(source, value_start, value_end)
                    child._adopt(self, name)
                    self._container(field).append_parsed(child)
                else:
                    child = values.get(name)
                    if isinstance(child, _Message) and child._source is source and not child._parsed:
                        child._spans.append((value_start, value_end))  # protobuf merges repeats
                    else:
                        child = field.message()._from_source(source, value_start, value_end)
                        child._adopt(self, name)
                        values[name] = child
                    self._set_present(field)
                continue
            if packed:
                if value_end - value_start >= _LAZY_BYTES:
                    self._container(field).append_parsed(_Lazy(_Span(source, value_start, value_end), wire))
                else:
                    self._container(field).extend_parsed(
                        _decode_packed(field.kind, source.read(value_start, value_end)))
                continue
            if field.kind == _BYTES_KIND and self._lazy_bytes(field, value_end - value_start):
                value: Any = _Span(source, value_start, value_end)  # read when the field is
                if field.repeated:
                    self._container(field).append_parsed(value)
                else:
                    values[name] = value
                    self._set_present(field)
                continue
            data = source.read(value_start, value_end)
            if wire == _VARINT:
                value = _decode_varint_value(field.kind, _varint(data, 0)[0])
            elif wire == _FIXED32:
                value = struct.unpack("<f", data)[0]
            elif wire == _FIXED64:
                value = struct.unpack("<d", data)[0]
            elif field.kind == _STRING:
                value = str(data, "utf-8")
            else:
                value = bytes(data)
            if field.repeated:
                self._container(field).append_parsed(value)
            else:
                values[name] = value
                self._set_present(field)

    def _lazy_bytes(self, field: _Field, length: int) -> bool:
        return length >= _LAZY_BYTES

    def _container(self, field: _Field) -> _ParsedList:
        container: Optional[_ParsedList] = self._values.get(field.name)
        if container is None:
            container = self._values[field.name] = _ParsedList()
        return container

    def _set_present(self, field: _Field) -> None:
        if field.oneof:
            for number in field.oneof:
                other = self._BY_NUMBER.get(number)
                if other is not None and other is not field:
                    self._present.discard(other.name)
                    self._values.pop(other.name, None)
            self._unknown[:] = [u for u in self._unknown if self._number_of(u) not in field.oneof]
        self._present.add(field.name)

    @staticmethod
    def _number_of(span: _Span) -> int:
        key, _ = _varint(span.source.read(span.start, min(span.end, span.start + 10)), 0)
        return key >> 3

    # -- the protobuf-like API ---------------------------------------------------

    @classmethod
    def _field(cls, name: str) -> _Field:
        field = cls._BY_NAME.get(name)
        if field is None:
            raise AttributeError(f"{cls.__name__} has no field {name!r} (in sprintiface.onnx_proto)")
        return field

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        field = self._field(name)
        self._parse()
        values = self._values
        value = values.get(name)
        if field.repeated:
            if not isinstance(value, _Repeated):
                value = values[name] = _Repeated(self, field, self._materialize(field, value or ()))
            return value
        if field.kind == _MESSAGE:
            if value is None:
                # A default instance: changing it makes it present here, as in protobuf.
                assert field.message is not None
                value = values[name] = field.message()()
                object.__setattr__(value, "_dirty", False)
                value._adopt(self, name)
            return value
        if value is None:
            return _DEFAULT_OF[field.kind]
        if isinstance(value, _Span):
            return value.tobytes()  # not kept: a tensor's raw data is the model's weights
        return value

    def _materialize(self, field: _Field, parsed: Iterable[Any]) -> list[Any]:
        out: list[Any] = []
        for item in parsed:
            if isinstance(item, _Lazy):
                try:
                    out.extend(_decode_packed(field.kind, item.span.source.read(item.span.start, item.span.end)))
                except _TruncatedError:
                    raise item.span.source.error() from None
            elif isinstance(item, _Span):
                out.append(item.tobytes())
            else:
                out.append(item)
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        field = self._field(name)
        if field.repeated:
            raise AttributeError(f"{type(self).__name__}.{name} is repeated: change it in place "
                                 f"(del x.{name}[:], x.{name}.extend(...))")
        value = _check_value(field.kind, name, value)
        self._parse()
        self._values[name] = value
        self._set_present(field)
        self._touch()

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name
        """Whether singular field ``name`` is present (proto2: set, even to its default)."""
        field = self._field(name)
        if field.repeated:
            raise ValueError(f"{type(self).__name__}.{name} is repeated: HasField does not apply")
        self._parse()
        return name in self._present

    def ClearField(self, name: str) -> None:  # noqa: N802 - protobuf's name
        """Field ``name`` absent (a repeated one empty)."""
        field = self._field(name)
        self._parse()
        if field.repeated:
            getattr(self, name).clear()
            return
        self._values.pop(name, None)
        self._present.discard(name)
        self._touch()

    def WhichOneof(self, group: str) -> Optional[str]:  # noqa: N802 - protobuf's name
        """The member of oneof ``group`` (``value``) that is set, or None (unknown members count)."""
        if group != "value" or not any(f.oneof for f in self.FIELDS):
            raise ValueError(f"{type(self).__name__} has no oneof {group!r}")
        self._parse()
        present = [f.name for f in self.FIELDS if f.oneof and f.name in self._present]
        return present[0] if present else None

    # -- changes ---------------------------------------------------------------

    def _adopt(self, parent: _Message, field_name: str) -> None:
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_parent_field", field_name)

    def _touch(self) -> None:
        """This message changed: it and the ones holding it are encoded anew, and a
        default sub-message becomes present in its parent."""
        message: Optional[_Message] = self
        while message is not None:
            parent = message._parent
            newly = not message._dirty
            object.__setattr__(message, "_dirty", True)
            if parent is not None:
                parent._parse()
                field = parent._BY_NAME[message._parent_field]
                if not field.repeated:
                    if parent._values.get(field.name) is not message:
                        return  # detached (replaced or cleared): its parent no longer holds it
                    if field.name not in parent._present:
                        parent._set_present(field)
                        newly = True
            if not newly and (parent is None or parent._dirty):
                return
            message = parent

    # -- encoding ---------------------------------------------------------------

    def _encode(self, external: Optional[_External] = None) -> _Encoding:
        out = _Encoding()
        if not self._dirty and external is None and self._source is not None:
            for start, end in self._spans:
                out.add(_Span(self._source, start, end))
            return out
        self._parse()
        values = self._values
        for field in self._fields_in_order():
            value = values.get(field.name)
            if field.repeated:
                if not value:
                    continue
                self._encode_repeated(out, field, value, external)  # a _Repeated, or as parsed
            elif field.name in self._present:
                if field.kind == _MESSAGE:
                    out.add_message(field.number,
                                    value._encode(external if field.number in self._PASS_EXTERNAL else None))
                elif isinstance(value, _Span):
                    out.add(_key(field.number, _BYTES) + _encode_varint(len(value)))
                    out.add(value)
                else:
                    out.add(_key(field.number, _WIRE_OF[field.kind]) + _encode_scalar(field.kind, value))
        for span in self._unknown:
            out.add(span)
        return out

    def _encode_repeated(self, out: _Encoding, field: _Field, items: Iterable[Any],
                         external: Optional[_External]) -> None:
        if field.kind == _MESSAGE:
            for item in items:
                out.add_message(field.number, self._encode_item(field, item, external))
            return
        if field.packed:
            payload = _Encoding()
            for item in items:
                if isinstance(item, _Lazy):
                    payload.add(item.span)
                else:
                    payload.add(_encode_packed_one(field.kind, item))
            if payload.length:
                out.add_message(field.number, payload)
            return
        key = _key(field.number, _WIRE_OF[field.kind])
        for item in items:
            if isinstance(item, _Lazy):  # a packed run in the source of a field that is not packed
                for value in _decode_packed(field.kind, item.span.tobytes()):
                    out.add(key + _encode_scalar(field.kind, value))
            elif isinstance(item, _Span):
                out.add(key + _encode_varint(len(item)))
                out.add(item)
            else:
                out.add(key + _encode_scalar(field.kind, item))

    def _encode_item(self, field: _Field, item: _Message, external: Optional[_External]) -> _Encoding:
        return item._encode()

    @classmethod
    def _fields_in_order(cls) -> Sequence[_Field]:
        """The fields by number: the order protobuf writes them in (then unknown fields)."""
        order: Optional[Sequence[_Field]] = cls.__dict__.get("_ORDER")
        if order is None:
            order = tuple(sorted(cls.FIELDS, key=lambda f: f.number))
            cls._ORDER = order
        return order

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        """The message's bytes (an unchanged message: its original bytes)."""
        out = io.BytesIO()
        try:
            self._encode().write(out)
        except _TruncatedError:
            raise (self._source.error() if self._source else ModelError("truncated source")) from None
        return out.getvalue()

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        return self._encode().length

    def __repr__(self) -> str:
        self._parse()
        shown = ", ".join(f"{name}={self._values[name]!r}" for name in sorted(self._present)
                          if not isinstance(self._values.get(name), _Message))
        return f"{type(self).__name__}({shown})"


def _encode_packed_one(kind: int, value: Any) -> bytes:
    if kind == _FLOAT:
        return struct.pack("<f", value)
    if kind == _DOUBLE:
        return struct.pack("<d", value)
    return _encode_varint(int(value))


class _ParsedList(list[Any]):
    """Values of a repeated field as parsed, before the field is first read."""

    def append_parsed(self, value: Any) -> None:
        list.append(self, value)

    def extend_parsed(self, values: Iterable[Any]) -> None:
        list.extend(self, values)


def _f(number: int, name: str, kind: int, *, repeated: bool = False, packed: bool = False,
       message: Optional[Callable[[], type[_Message]]] = None, oneof: Optional[Iterable[int]] = None) -> _Field:
    return _Field(number, name, kind, repeated, packed, message, frozenset(oneof) if oneof else None)


class StringStringEntryProto(_Message):
    FIELDS = (_f(1, "key", _STRING), _f(2, "value", _STRING))
    __slots__ = ()


class OperatorSetIdProto(_Message):
    FIELDS = (_f(1, "domain", _STRING), _f(2, "version", _INT64))
    __slots__ = ()


_TYPE_ONEOF = (1, 4, 5, 7, 8, 9)
_DIM_ONEOF = (1, 2)


class TensorShapeProto(_Message):
    class Dimension(_Message):
        FIELDS = (_f(1, "dim_value", _INT64, oneof=_DIM_ONEOF), _f(2, "dim_param", _STRING, oneof=_DIM_ONEOF),
                  _f(3, "denotation", _STRING))
        __slots__ = ()

    FIELDS = (_f(1, "dim", _MESSAGE, repeated=True, message=lambda: TensorShapeProto.Dimension),)
    __slots__ = ()


class TypeProto(_Message):
    class Tensor(_Message):
        FIELDS = (_f(1, "elem_type", _INT32), _f(2, "shape", _MESSAGE, message=lambda: TensorShapeProto))
        __slots__ = ()

    # sequence_type, map_type, optional_type, sparse_tensor_type, opaque_type: kept as bytes.
    FIELDS = (_f(1, "tensor_type", _MESSAGE, message=lambda: TypeProto.Tensor, oneof=_TYPE_ONEOF),
              _f(6, "denotation", _STRING))
    __slots__ = ()


class ValueInfoProto(_Message):
    FIELDS = (_f(1, "name", _STRING), _f(2, "type", _MESSAGE, message=lambda: TypeProto),
              _f(3, "doc_string", _STRING),
              _f(4, "metadata_props", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto))
    __slots__ = ()


class TensorProto(_Message):
    """A tensor. ``raw_data`` reads its bytes from the source at each access (they are not
    kept); :func:`to_array` reads them once into the array."""

    # TensorProto.DataType
    UNDEFINED, FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE, UINT32, UINT64, \
        COMPLEX64, COMPLEX128, BFLOAT16 = range(17)
    # TensorProto.DataLocation
    DEFAULT, EXTERNAL = 0, 1

    class Segment(_Message):
        FIELDS = (_f(1, "begin", _INT64), _f(2, "end", _INT64))
        __slots__ = ()

    FIELDS = (_f(1, "dims", _INT64, repeated=True), _f(2, "data_type", _INT32),
              _f(3, "segment", _MESSAGE, message=lambda: TensorProto.Segment),
              _f(4, "float_data", _FLOAT, repeated=True, packed=True),
              _f(5, "int32_data", _INT32, repeated=True, packed=True),
              _f(6, "string_data", _BYTES_KIND, repeated=True),
              _f(7, "int64_data", _INT64, repeated=True, packed=True),
              _f(8, "name", _STRING), _f(9, "raw_data", _BYTES_KIND),
              _f(10, "double_data", _DOUBLE, repeated=True, packed=True),
              _f(11, "uint64_data", _UINT64, repeated=True, packed=True),
              _f(12, "doc_string", _STRING),
              _f(13, "external_data", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto),
              _f(14, "data_location", _INT32),
              _f(16, "metadata_props", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto))
    __slots__ = ()

    def _lazy_bytes(self, field: _Field, length: int) -> bool:
        return field.number == 9 or length >= _LAZY_BYTES

    def raw_data_span(self) -> Optional[tuple[int, int]]:
        """``(offset, length)`` of ``raw_data`` in the source it was parsed from, or None
        (absent, or set in memory)."""
        self._parse()
        value = self._values.get("raw_data")
        if "raw_data" in self._present and isinstance(value, _Span):
            return value.start, len(value)
        return None

    def raw_data_size(self) -> int:
        """``len(raw_data)`` without reading it."""
        self._parse()
        value = self._values.get("raw_data")
        return len(value) if value is not None and "raw_data" in self._present else 0

    def _encode_external(self, external: _External) -> Optional[_Encoding]:
        """This tensor with its raw data as a reference to the source file, or None when it
        stays inline (small, typed fields, set in memory, or external already)."""
        self._parse()
        value = self._values.get("raw_data")
        if "raw_data" not in self._present or not isinstance(value, _Span) or value.source is not external.source \
                or len(value) < external.min_bytes or "data_location" in self._present or \
                self._values.get("external_data"):
            return None
        out = _Encoding()
        present = self._present
        present.discard("raw_data")
        try:
            was_dirty = self._dirty
            object.__setattr__(self, "_dirty", True)
            inner = self._encode()
        finally:
            object.__setattr__(self, "_dirty", was_dirty)
            present.add("raw_data")
        out.chunks, out.length = inner.chunks, inner.length
        for key, text in (("location", external.location), ("offset", str(value.start)),
                          ("length", str(len(value)))):
            entry = _key(1, _BYTES) + _encode_scalar(_STRING, key) + _key(2, _BYTES) + _encode_scalar(_STRING, text)
            out.add(_key(13, _BYTES) + _encode_varint(len(entry)) + entry)
        out.add(_key(14, _VARINT) + _encode_varint(self.EXTERNAL))
        return out


class AttributeProto(_Message):
    # AttributeProto.AttributeType
    UNDEFINED, FLOAT, INT, STRING, TENSOR, GRAPH, FLOATS, INTS, STRINGS, TENSORS, GRAPHS, SPARSE_TENSOR, \
        SPARSE_TENSORS, TYPE_PROTO, TYPE_PROTOS = range(15)

    # sparse_tensor (22), tp (14), sparse_tensors (23), type_protos (15): kept as bytes.
    FIELDS = (_f(1, "name", _STRING), _f(21, "ref_attr_name", _STRING), _f(13, "doc_string", _STRING),
              _f(20, "type", _INT32), _f(2, "f", _FLOAT), _f(3, "i", _INT64), _f(4, "s", _BYTES_KIND),
              _f(5, "t", _MESSAGE, message=lambda: TensorProto), _f(6, "g", _MESSAGE, message=lambda: GraphProto),
              _f(7, "floats", _FLOAT, repeated=True), _f(8, "ints", _INT64, repeated=True),
              _f(9, "strings", _BYTES_KIND, repeated=True),
              _f(10, "tensors", _MESSAGE, repeated=True, message=lambda: TensorProto),
              _f(11, "graphs", _MESSAGE, repeated=True, message=lambda: GraphProto))
    __slots__ = ()


class NodeProto(_Message):
    # device_configurations (10): kept as bytes.
    FIELDS = (_f(1, "input", _STRING, repeated=True), _f(2, "output", _STRING, repeated=True),
              _f(3, "name", _STRING), _f(4, "op_type", _STRING), _f(7, "domain", _STRING),
              _f(8, "overload", _STRING),
              _f(5, "attribute", _MESSAGE, repeated=True, message=lambda: AttributeProto),
              _f(6, "doc_string", _STRING),
              _f(9, "metadata_props", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto))
    __slots__ = ()


class GraphProto(_Message):
    # sparse_initializer (15), quantization_annotation (14): kept as bytes.
    FIELDS = (_f(1, "node", _MESSAGE, repeated=True, message=lambda: NodeProto), _f(2, "name", _STRING),
              _f(5, "initializer", _MESSAGE, repeated=True, message=lambda: TensorProto),
              _f(10, "doc_string", _STRING),
              _f(11, "input", _MESSAGE, repeated=True, message=lambda: ValueInfoProto),
              _f(12, "output", _MESSAGE, repeated=True, message=lambda: ValueInfoProto),
              _f(13, "value_info", _MESSAGE, repeated=True, message=lambda: ValueInfoProto),
              _f(16, "metadata_props", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto))
    __slots__ = ()

    def _encode_item(self, field: _Field, item: _Message, external: Optional[_External]) -> _Encoding:
        if external is not None and field.number == 5:
            assert isinstance(item, TensorProto)
            encoded = item._encode_external(external)
            if encoded is not None:
                return encoded
        return item._encode()


class ModelProto(_Message):
    """A model. :func:`load` and :func:`load_from_string` make one; it holds its file open
    (for the weights, read when asked) until :meth:`close`."""

    # training_info (20), functions (25), configuration (26): kept as bytes.
    _PASS_EXTERNAL = frozenset((7,))
    FIELDS = (_f(1, "ir_version", _INT64),
              _f(8, "opset_import", _MESSAGE, repeated=True, message=lambda: OperatorSetIdProto),
              _f(2, "producer_name", _STRING), _f(3, "producer_version", _STRING), _f(4, "domain", _STRING),
              _f(5, "model_version", _INT64), _f(6, "doc_string", _STRING),
              _f(7, "graph", _MESSAGE, message=lambda: GraphProto),
              _f(14, "metadata_props", _MESSAGE, repeated=True, message=lambda: StringStringEntryProto))
    __slots__ = ()

    @classmethod
    def FromString(cls, data: Union[bytes, bytearray, memoryview]) -> ModelProto:  # noqa: N802 - protobuf's name
        """The model in ``data`` (kept, not copied: do not change a bytearray given)."""
        return load_from_string(data)

    @property
    def path(self) -> Optional[str]:
        """The real path of the file the model was loaded from, or None."""
        return self._source.path if self._source is not None else None

    def SerializeToString(self, *, weights: str = "inline", location: Optional[str] = None,  # noqa: N802 - protobuf's name
                          min_external_bytes: int = EXTERNAL_MIN_BYTES) -> bytes:
        """The model's bytes.

        ``weights="inline"``: every tensor with its data (raw data copied from the
        source). ``weights="external"``: each raw-data initializer of the main graph
        that came from the source, of at least ``min_external_bytes``, as an
        external-data reference (``location``, ``offset``, ``length``; data_location
        EXTERNAL) to its bytes in the source file; ``location`` defaults to the name of
        the file the model was loaded from (links resolved, as ONNX Runtime does), and
        must be given for a model parsed from bytes (the file those bytes are). Load the
        result with ONNX Runtime's external-data folder set to that file's directory.
        """
        out = io.BytesIO()
        self.write(out, weights=weights, location=location, min_external_bytes=min_external_bytes)
        return out.getvalue()

    def write(self, out: BinaryIO, *, weights: str = "inline", location: Optional[str] = None,
              min_external_bytes: int = EXTERNAL_MIN_BYTES) -> None:
        """:meth:`SerializeToString` into the file ``out``, raw data copied in pieces."""
        try:
            self._encoding(weights, location, min_external_bytes).write(out)
        except _TruncatedError:
            raise (self._source.error() if self._source else ModelError("truncated source")) from None

    def _encoding(self, weights: str, location: Optional[str], min_external_bytes: int) -> _Encoding:
        if weights == "inline":
            return self._encode()
        if weights != "external":
            raise ValueError(f"weights: expected 'inline' or 'external', got {weights!r}")
        if self._source is None:
            raise ModelError("weights='external': the model was not parsed from a file or bytes")
        if location is None:
            if self._source.path is None:
                raise ModelError(f"ONNX model {self._source.name!r}: weights='external' needs the location "
                                 f"(the file the bytes were read from)")
            location = os.path.basename(self._source.path)
        return self._encode(_External(self._source, location, min_external_bytes))

    def source_is_current(self) -> bool:
        """Whether the file the model was loaded from is still at its path, unchanged.

        ``weights="external"`` refers to the weights by the file's name and offsets;
        ONNX Runtime opens that name. Check this after ONNX Runtime has read the weights:
        False means the file was replaced or rewritten meanwhile, and what ONNX Runtime
        read may not be this model's weights. Always False for a model from bytes.
        """
        return isinstance(self._source, _FileSource) and self._source.is_current()

    def close(self) -> None:
        """Close the model's file (raw data can no longer be read)."""
        if isinstance(self._source, _FileSource):
            self._source.close()

    def __enter__(self) -> ModelProto:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _checked_model(source: _Source) -> ModelProto:
    model = ModelProto._from_source(source, 0, source.size)
    assert isinstance(model, ModelProto)
    model._parse()  # the top level now: a file that is no protobuf fails here, not later
    graph = model._values.get("graph")
    if isinstance(graph, _Message):
        graph._parse()
    return model


def load(path: Union[str, os.PathLike[str]]) -> ModelProto:
    """The model in the ONNX file at ``path``, read with plain reads as its parts are used;
    ModelError when it does not exist or is not an ONNX model."""
    source = _FileSource(os.fspath(path))
    try:
        return _checked_model(source)
    except BaseException:
        source.close()
        raise


def load_from_string(data: Union[bytes, bytearray, memoryview], name: str = "<bytes>") -> ModelProto:
    """The model serialized in ``data`` (kept, not copied); ``name`` names it in errors."""
    return _checked_model(_BytesSource(data, name))


def read_metadata(path: Union[str, os.PathLike[str]]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path`` (key -> value; of a key given
    twice, the later entry); ModelError for a file that is not an ONNX model. Reads the
    top level's field headers and the entries: the graph is skipped, not decoded."""
    source = _FileSource(os.fspath(path))
    try:
        model = ModelProto._from_source(source, 0, source.size)
        return {entry.key: entry.value for entry in model.metadata_props}
    finally:
        source.close()


def append_metadata(path: Union[str, os.PathLike[str]], entries: dict[str, str]) -> None:
    """Add ``entries`` to the ``metadata_props`` of the model file at ``path``, in place.

    Protobuf takes repeated fields in any order, so the entries are appended to the
    file's end (a key given again: the later entry is the one read); nothing else is
    read or rewritten. For sprintiface's own files (``prepare``'s scratch output).
    """
    with open(path, "ab") as file:
        for key, value in entries.items():
            entry = _key(1, _BYTES) + _encode_scalar(_STRING, key) + _key(2, _BYTES) + _encode_scalar(_STRING, value)
            file.write(_key(14, _BYTES) + _encode_varint(len(entry)) + entry)


# -- building messages ----------------------------------------------------------

def _attribute_fields(name: str, value: Any) -> dict[str, Any]:
    """The fields of an AttributeProto named ``name`` holding ``value`` (int, float, str or
    bytes, or a non-empty list of ints or floats); TypeError for anything else."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, numpy.integer)):
        return {"name": name, "type": AttributeProto.INT, "i": int(value)}
    if isinstance(value, (float, numpy.floating)):
        return {"name": name, "type": AttributeProto.FLOAT, "f": float(value)}
    if isinstance(value, (str, bytes)):
        return {"name": name, "type": AttributeProto.STRING, "s": value.encode() if isinstance(value, str) else value}
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, (int, numpy.integer)) and not isinstance(v, bool) for v in value):
            return {"name": name, "type": AttributeProto.INTS, "ints": [int(v) for v in value]}
        if all(isinstance(v, (int, float, numpy.integer, numpy.floating)) for v in value):
            return {"name": name, "type": AttributeProto.FLOATS, "floats": [float(v) for v in value]}
    raise TypeError(f"attribute {name!r}: expected an int, float, str, bytes or a list of ints or floats, "
                    f"got {value!r}")


def _fill_node(node: Any, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: Optional[str],
               domain: Optional[str], attributes: dict[str, Any]) -> Any:
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    if domain is not None:
        node.domain = domain
    for key in sorted(attributes):  # onnx.helper's order: attributes by name
        node.attribute.add(**_attribute_fields(key, attributes[key]))
    return node


def make_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: Optional[str] = None,
              domain: Optional[str] = None, **attributes: Any) -> NodeProto:
    """A new NodeProto, as ``onnx.helper.make_node`` makes it (attributes by name, their
    type from the value: int, float, str/bytes, or a list of ints or floats)."""
    node = NodeProto()
    _fill_node(node, op_type, inputs, outputs, name, domain, attributes)
    return node


def append_node(nodes: Any, op_type: str, inputs: Sequence[str], outputs: Sequence[str],
                name: Optional[str] = None, domain: Optional[str] = None, **attributes: Any) -> Any:
    """Append a node made as :func:`make_node` makes it to ``nodes``, the ``node`` list of a
    graph of either kind (onnx_proto's or onnx's: both give ``add()``), and return it.
    Code that works on both kinds of model adds nodes through this."""
    return _fill_node(nodes.add(), op_type, inputs, outputs, name, domain, attributes)


def make_tensor_value_info(name: str, elem_type: int, shape: Optional[Sequence[Union[int, str, None]]]
                           ) -> ValueInfoProto:
    """A new ValueInfoProto of a tensor, as ``onnx.helper.make_tensor_value_info`` makes it:
    ``shape`` None for an unknown rank, else one entry per axis (an int: its size; a str:
    a symbolic size; None: unknown)."""
    value_info = ValueInfoProto(name=name)
    tensor_type = value_info.type.tensor_type
    tensor_type.elem_type = elem_type
    if shape is not None:
        dims = tensor_type.shape.dim
        tensor_type.shape.ClearField("dim")  # present, and empty for a scalar
        for size in shape:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            elif size is not None:
                dim.dim_value = size
    return value_info


# -- tensors as arrays ------------------------------------------------------------

# data_type -> (numpy dtype of the values, typed field that holds them when there is no raw data)
_DTYPES: dict[int, tuple[str, str]] = {
    TensorProto.FLOAT: ("<f4", "float_data"), TensorProto.DOUBLE: ("<f8", "double_data"),
    TensorProto.FLOAT16: ("<f2", "int32_data"), TensorProto.BFLOAT16: ("<u2", "int32_data"),
    TensorProto.INT8: ("i1", "int32_data"), TensorProto.UINT8: ("u1", "int32_data"),
    TensorProto.INT16: ("<i2", "int32_data"), TensorProto.UINT16: ("<u2", "int32_data"),
    TensorProto.INT32: ("<i4", "int32_data"), TensorProto.INT64: ("<i8", "int64_data"),
    TensorProto.UINT32: ("<u4", "uint64_data"), TensorProto.UINT64: ("<u8", "uint64_data"),
    TensorProto.BOOL: ("?", "int32_data"),
}
_TYPE_NAMES = {0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 17: "FLOAT8E4M3FN",
               18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
               23: "FLOAT4E2M1"}


def _tensor_error(tensor: TensorProto, what: str) -> ModelError:
    holder: Optional[_Message] = tensor  # a tensor made in memory: name the model that holds it
    while holder is not None and holder._source is None:
        holder = holder._parent
    source = holder._source.name if holder is not None and holder._source is not None else "<in memory>"
    return ModelError(f"ONNX model {source!r}: tensor {tensor.name!r} {what}")


def _external_bytes(tensor: TensorProto, base_dir: Optional[str], count: int, itemsize: int) -> bytearray:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location")
    if not location:
        raise _tensor_error(tensor, "has external data without a location")
    if os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
        raise _tensor_error(tensor, f"has external data outside the model's directory ({location!r})")
    try:
        offset = int(entries.get("offset", "0"))
        length: Optional[int] = int(entries["length"]) if "length" in entries else None
    except ValueError:
        offset = -1
    if offset < 0 or (length is not None and length < 0):
        raise _tensor_error(tensor, f"has a bad external-data offset or length ({entries})")
    if base_dir is None:
        if tensor._source is None or tensor._source.path is None:
            raise _tensor_error(tensor, "has external data, and base_dir is not given")
        base_dir = os.path.dirname(tensor._source.path)
    path = os.path.join(base_dir, location)
    expected = count * itemsize
    if length is not None and length != expected:
        raise _tensor_error(tensor, f"has {length} bytes of external data in {path!r} for {count} values")
    try:
        with open(path, "rb") as file:
            available = os.fstat(file.fileno()).st_size - offset
            if available < expected:  # checked before allocating: dims may be corrupt
                raise _tensor_error(tensor, f"needs {expected} bytes of external data at offset {offset} of "
                                            f"{path!r}, which holds {max(available, 0)} there")
            buffer = bytearray(expected)
            got = 0
            while got < expected:  # readinto: the array's bytes are read once, not copied
                read = os.preadv(file.fileno(), [memoryview(buffer)[got:]], offset + got)
                if not read:
                    break
                got += read
    except OSError as error:
        raise _tensor_error(tensor, f"has external data in {path!r}, which cannot be read: "
                                    f"{error.strerror}") from None
    if got != expected:
        raise _tensor_error(tensor, f"has external data in {path!r} that ends early ({got} of {expected} "
                                    f"bytes at offset {offset})")
    return buffer


def _raw_bytes(tensor: TensorProto, expected: int) -> Union[bytes, bytearray, memoryview]:
    value = tensor._values.get("raw_data")
    if isinstance(value, _Span):
        if len(value) != expected:
            raise _tensor_error(tensor, f"has {len(value)} bytes of raw data for {expected} bytes of values")
        source = value.source
        if isinstance(source, _FileSource):
            if source.file is None:
                raise _tensor_error(tensor, "cannot be read: its model was closed")
            buffer = bytearray(expected)
            got = 0
            while got < expected:
                read = os.preadv(source.file.fileno(), [memoryview(buffer)[got:]], value.start + got)
                if not read:
                    raise source.error("the file ends inside a tensor (changed since it was opened?)")
                got += read
            return buffer
        try:
            return source.read(value.start, value.end)
        except _TruncatedError:
            raise source.error() from None
    data = value if value is not None else b""
    if len(data) != expected:
        raise _tensor_error(tensor, f"has {len(data)} bytes of raw data for {expected} bytes of values")
    return data


def to_array(tensor: Any, base_dir: Optional[str] = None) -> numpy.ndarray:
    """The values of ``tensor`` as a numpy array of its shape (a copy: writable).

    Data types: float32, float16, double, bfloat16 (as float32, exactly: numpy has no
    bfloat16), int8/16/32/64, uint8/16/32/64, bool; from ``raw_data``, the typed fields
    (float_data, int32_data, int64_data, double_data, uint64_data) or external data
    (its location relative to ``base_dir``, by default the model file's directory).
    Anything else is a ModelError. An ``onnx.TensorProto`` is handed to onnx's own
    ``numpy_helper.to_array`` (so that code may hold either kind).
    """
    if not isinstance(tensor, TensorProto):
        from onnx import numpy_helper

        array: numpy.ndarray = numpy_helper.to_array(tensor, base_dir or "")  # Any where onnx is not installed
        return array
    tensor._parse()
    data_type = tensor.data_type
    if data_type not in _DTYPES:
        raise _tensor_error(tensor, f"has data type {_TYPE_NAMES.get(data_type, data_type)}, which "
                                    f"sprintiface.onnx_proto does not read")
    if tensor.HasField("segment"):
        raise _tensor_error(tensor, "is stored in segments, which sprintiface.onnx_proto does not read")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise _tensor_error(tensor, f"has negative dims {dims}")
    count = math.prod(dims)  # Python ints: a corrupt dims cannot overflow into a small count
    dtype_name, typed_field = _DTYPES[data_type]
    dtype = numpy.dtype(dtype_name)
    if tensor.data_location == TensorProto.EXTERNAL:
        array = numpy.frombuffer(_external_bytes(tensor, base_dir, count, dtype.itemsize), dtype=dtype)
    elif tensor.HasField("raw_data"):
        raw = _raw_bytes(tensor, count * dtype.itemsize)
        array = numpy.frombuffer(raw, dtype=dtype)
        if not isinstance(raw, bytearray):
            array = array.copy()
    else:
        values = getattr(tensor, typed_field)
        if len(values) != count:
            raise _tensor_error(tensor, f"holds {len(values)} values in {typed_field} for dims {dims}")
        if typed_field == "int32_data" and dtype.itemsize < 4:
            # 16- and 8-bit types are stored one per int32: their bits are the low ones.
            array = numpy.array(values, dtype=numpy.int64).astype(numpy.uint32).astype(
                "<u2" if dtype.itemsize == 2 else "u1").view(dtype)
        else:
            array = numpy.array(values, dtype=dtype)
    if not array.dtype.isnative:  # the wire is little-endian; the array is the machine's
        array = array.astype(array.dtype.newbyteorder("="))
    if data_type == TensorProto.BFLOAT16:
        array = (array.astype(numpy.uint32) << 16).view(numpy.float32)
    return array.reshape(dims)
