"""A Parquet file's row count from its footer alone, without pyarrow.

pyarrow does not fit in the AWS function package (see the README), yet the retraining policy must
count new labelled rows in Parquet files there. The count is in the footer: a file ends with its
``FileMetaData`` (Thrift compact protocol), a 4-byte little-endian length and ``PAR1``.
``FileMetaData`` starts with field 1 ``version`` (i32), field 2 ``schema`` (list of structs) and
field 3 ``num_rows`` (i64), so a small reader that can *skip* any Thrift value is enough; it
never reads the row groups themselves. Reading only the tail keeps this to one or two ranged
requests however large the file is.
"""

from __future__ import annotations

import struct

from skyscore.errors import FormatMismatch, NotFound
from skyscore.ports import BlobStore

MAGIC = b"PAR1"
ENCRYPTED_MAGIC = b"PARE"  # Parquet modular encryption: the footer itself is encrypted
TAIL_BYTES = 8  # footer length (4) + magic (4)
SPECULATIVE_TAIL = 64 << 10  # most footers fit: then one ranged read is enough
MAX_DEPTH = 64  # nesting of structs, lists and maps in the footer; deeper means corrupt
_NUM_ROWS_FIELD = 3

# Thrift compact protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT, _UUID = 9, 10, 11, 12, 13


class _Reader:
    """Thrift compact protocol over a bytes buffer: just enough to find one field."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, why: str) -> FormatMismatch:
        return FormatMismatch(f"{self.name}: not a readable Parquet footer ({why})")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("it ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def skip_bytes(self, count: int) -> None:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail("it ends early")
        self.pos += count

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.fail("a varint is longer than 10 bytes")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def field_header(self, last_id: int) -> tuple[int, int]:
        """``(type, field id)`` of the next struct field; type ``_STOP`` ends the struct."""
        header = self.byte()
        kind = header & 0x0F
        if kind == _STOP:
            return _STOP, 0
        delta = header >> 4
        return kind, last_id + delta if delta else self.zigzag()

    def skip(self, kind: int, depth: int = 0) -> None:
        """Skip one value of type ``kind``."""
        if depth > MAX_DEPTH:
            raise self.fail(f"values nested deeper than {MAX_DEPTH}")
        if kind in (_TRUE, _FALSE):
            return  # a boolean field's value is its type id
        if kind == _BYTE:
            self.skip_bytes(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.skip_bytes(8)
        elif kind == _UUID:
            self.skip_bytes(16)
        elif kind == _BINARY:
            self.skip_bytes(self.varint())
        elif kind in (_LIST, _SET):
            header = self.byte()
            size = header >> 4
            if size == 15:
                size = self.varint()
            self._skip_elements(header & 0x0F, size, depth)
        elif kind == _MAP:
            size = self.varint()
            if size:
                if 2 * size > len(self.data) - self.pos:  # an entry takes two bytes or more
                    raise self.fail(f"a map claims {size} entries")
                types = self.byte()
                for _ in range(size):
                    self._skip_element(types >> 4, depth)
                    self._skip_element(types & 0x0F, depth)
        elif kind == _STRUCT:
            last = 0
            while True:
                field_kind, last = self.field_header(last)
                if field_kind == _STOP:
                    return
                self.skip(field_kind, depth + 1)
        else:
            raise self.fail(f"unknown Thrift type {kind}")

    def _skip_elements(self, kind: int, size: int, depth: int) -> None:
        if size > len(self.data) - self.pos:  # every element takes at least one byte
            raise self.fail(f"a list claims {size} elements")
        for _ in range(size):
            self._skip_element(kind, depth)

    def _skip_element(self, kind: int, depth: int) -> None:
        if kind in (_TRUE, _FALSE):  # booleans inside collections take one byte each
            self.skip_bytes(1)
        else:
            self.skip(kind, depth + 1)


def footer_length(tail: bytes, name: str = "file") -> int:
    """The metadata length from a file's last 8 bytes (:class:`FormatMismatch` if it is not
    Parquet)."""
    if len(tail) < TAIL_BYTES:
        raise FormatMismatch(f"{name}: too short to be Parquet ({len(tail)} bytes)")
    magic = tail[-4:]
    if magic == ENCRYPTED_MAGIC:
        raise FormatMismatch(f"{name}: encrypted Parquet footers are not supported")
    if magic != MAGIC:
        raise FormatMismatch(f"{name}: not Parquet (it does not end with {MAGIC!r})")
    (length,) = struct.unpack("<I", tail[-8:-4])
    return int(length)


def num_rows_from_metadata(metadata: bytes, name: str = "file") -> int:
    """``FileMetaData.num_rows`` from the Thrift-encoded footer."""
    reader = _Reader(metadata, name)
    last = 0
    while True:
        kind, last = reader.field_header(last)
        if kind == _STOP:
            raise reader.fail("it has no num_rows")
        if last == _NUM_ROWS_FIELD:
            if kind != _I64:
                raise reader.fail(f"num_rows has Thrift type {kind}, not i64")
            rows = reader.zigzag()
            if rows < 0:
                raise reader.fail(f"num_rows is {rows}")
            return rows
        reader.skip(kind)


def num_rows_from_tail(tail: bytes, size: int, name: str = "file") -> int | None:
    """The row count if ``tail`` (the last bytes of a ``size``-byte file) holds the whole
    footer; ``None`` when more of the file is needed."""
    length = footer_length(tail, name)
    if length + TAIL_BYTES + len(MAGIC) > size:
        raise FormatMismatch(f"{name}: its footer claims {length:,} bytes of a {size:,}-byte file")
    if length + TAIL_BYTES > len(tail):
        return None
    return num_rows_from_metadata(tail[-TAIL_BYTES - length : -TAIL_BYTES], name)


def count_rows(store: BlobStore, key: str, size: int | None = None) -> int:
    """Rows in the Parquet object ``key`` (``size`` saves a ``stat`` when the caller listed it).

    Reads the last 64 KiB in one ranged request, and the rest of a larger footer in a second.
    """
    if size is None:
        info = store.stat(key)
        if info is None:
            raise NotFound(f"no object {key!r} in {store.uri}")
        size = info.size
    start = max(0, size - SPECULATIVE_TAIL)
    with store.open_range(key, start, size) as handle:
        tail = handle.read()
    if len(tail) != size - start:
        raise FormatMismatch(f"{key}: changed while its footer was read")
    rows = num_rows_from_tail(tail, size, key)
    if rows is not None:
        return rows
    length = footer_length(tail, key)
    with store.open_range(key, size - TAIL_BYTES - length, start) as handle:
        head = handle.read()
    return num_rows_from_metadata((head + tail)[-TAIL_BYTES - length : -TAIL_BYTES], key)
