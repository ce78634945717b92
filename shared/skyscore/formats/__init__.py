"""File formats for batch scoring: CSV, JSON Lines, JSON arrays and Parquet.

Pick a format by file extension (:func:`detect_format`), check that the content agrees
(:func:`check_content`), then decode chunks with ``decoder_for(fmt).decode(...)`` and write
predictions with :func:`open_encoder`. Parquet needs the optional ``pyarrow``, imported only
when a Parquet file is actually read or written.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from pathlib import PurePath

from skyscore.errors import FormatMismatch, UnsupportedFormat
from skyscore.formats.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    Encoder,
    FileFormat,
    Readable,
    Writable,
)
from skyscore.formats.csv import FORMAT as CSV
from skyscore.formats.jsonl import JSON, JSONL
from skyscore.formats.parquet import FORMAT as PARQUET
from skyscore.model.schema import InputSchema

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FORMATS",
    "SNIFF_BYTES",
    "Chunk",
    "Encoder",
    "FileFormat",
    "Readable",
    "Writable",
    "check_content",
    "decode",
    "decoder_for",
    "detect_format",
    "format_for",
    "open_encoder",
]

FORMATS: dict[str, FileFormat] = {f.name: f for f in (CSV, JSONL, JSON, PARQUET)}
_BY_EXTENSION = {ext: f.name for f in FORMATS.values() for ext in f.extensions}
SNIFF_BYTES = 64 << 10  # how much of a file the content check looks at


def detect_format(filename: str | PurePath) -> str:
    """The format named by a file's extension (``csv``, ``jsonl``, ``json``, ``parquet``)."""
    name = PurePath(filename).name
    suffix = PurePath(name).suffix.lower()
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    supported = ", ".join(sorted(_BY_EXTENSION))
    if not suffix:
        raise UnsupportedFormat(f"{name} has no file extension; supported: {supported}")
    raise UnsupportedFormat(
        f"{name}: unsupported file extension {suffix!r}; supported: {supported}",
        extra={"extension": suffix},
    )


def format_for(fmt: str) -> FileFormat:
    """The :class:`FileFormat` called ``fmt`` (a name from :data:`FORMATS`)."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise UnsupportedFormat(
            f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}"
        ) from None


decoder_for = format_for


def _binary_reason(head: bytes) -> str | None:
    """Why ``head`` is not UTF-8 text (shared by every text format)."""
    if head[:4] == b"PAR1":
        return "it starts with the Parquet magic bytes 'PAR1' (a Parquet file? name it .parquet)"
    if head[:2] == b"\x1f\x8b":
        return "it is gzip-compressed; decompress it first"
    if head[:4] == b"PK\x03\x04":
        return "it is a ZIP archive (an Excel workbook?); export it as CSV"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "it is UTF-16 text; save it as UTF-8"
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"it contains binary data (a NUL byte at offset {nul})"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text (invalid byte at offset {exc.start})"
    return None


def check_content(fmt: str, head: bytes, *, name: str = "the input") -> None:
    """Raise one clear :class:`FormatMismatch` if the first block contradicts the format.

    ``head`` is the first :data:`SNIFF_BYTES` (or fewer) bytes of the file.
    """
    file_format = format_for(fmt)
    reason = None if fmt == PARQUET.name else _binary_reason(head)
    if reason is None:
        reason = file_format.sniff(head)
    if reason is not None:
        raise FormatMismatch(
            f"{name} does not look like {file_format.label}: {reason}",
            extra={"format": fmt},
        )


def decode(
    fmt: str, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[Chunk]:
    """Decode ``source`` as ``fmt`` (see :meth:`FileFormat.decode`)."""
    return format_for(fmt).decode(source, schema, chunk_rows=chunk_rows)


def open_encoder(
    fmt: str,
    sink: Writable,
    *,
    id_column: str | None,
    classes: Sequence[str | int],
    class_names: Sequence[str],
) -> Encoder:
    """An encoder writing predictions as ``fmt`` to ``sink``."""
    return format_for(fmt).encoder(
        sink, id_column=id_column, classes=classes, class_names=class_names
    )
