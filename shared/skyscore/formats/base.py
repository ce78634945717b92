"""What every file format shares: the decoder/encoder contracts and bounded-memory line reading.

A decoder turns a binary stream into ``(Batch, list[RowError])`` chunks of at most
``chunk_rows`` rows; an encoder writes scored chunks back out, incrementally. Neither ever holds
more than a chunk (plus one read block) in memory, whatever the file size.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from skyscore.errors import InvalidInput
from skyscore.model.schema import Batch, InputSchema, RowError, numeric_problem

DEFAULT_CHUNK_ROWS = 16_384  # measured: smaller chunks overlap better and bound memory lower
BLOCK_SIZE = 4 << 20  # bytes per read: big enough to amortise Python overhead, small for memory
MAX_LINE_BYTES = 64 << 20  # one record may not be larger: a file without newlines is not a table

Chunk = tuple[Batch, list[RowError]]


class Readable(Protocol):
    """The part of a binary file a decoder uses (``BinaryIO`` and blob-store streams fit)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        ...


class Writable(Protocol):
    """The part of a binary file an encoder uses."""

    def write(self, data: bytes, /) -> int:
        """Write all of ``data``."""
        ...


class FileFormat(abc.ABC):
    """One file format: how to recognise, decode and encode it."""

    name: str = ""
    label: str = ""  # how messages name it: "CSV", "JSON Lines", ...
    extensions: tuple[str, ...] = ()

    @abc.abstractmethod
    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Model-ready chunks of good rows, plus the rows that failed validation."""

    @abc.abstractmethod
    def encoder_type(self) -> type[Encoder]:
        """The :class:`Encoder` subclass that writes this format."""

    def encoder(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> Encoder:
        """An encoder writing predictions in this format to ``sink``."""
        return self.encoder_type()(
            sink, id_column=id_column, classes=classes, class_names=class_names
        )

    @abc.abstractmethod
    def sniff(self, head: bytes) -> str | None:
        """Why the first block of a file cannot be this format, or ``None`` if it may be."""


class Encoder(abc.ABC):
    """Writes predictions chunk by chunk: ``row``, the id column, ``label``, probabilities.

    ``write`` takes label *indices* (``Predictor.label_indices``) so every format maps them to
    classes the same way. ``close`` finishes the format (JSON ``]``, Parquet footer) but leaves
    ``sink`` open: its owner closes it.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> None:
        if len(classes) != len(class_names):
            raise ValueError("classes and class_names differ in length")
        reserved = {"row", "label", "probabilities"} | {f"probability_{c}" for c in class_names}
        if id_column is not None and id_column in reserved:
            raise InvalidInput(
                f"id column {id_column!r} clashes with an output column of the same name; "
                "rename it in the input",
                field=id_column,
            )
        self.sink = sink
        self.id_column = id_column
        self.classes = list(classes)
        self.class_names = list(class_names)
        self.rows_written = 0
        self.bytes_written = 0
        self.closed = False

    def write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Append one scored chunk."""
        if self.closed:
            raise ValueError("encoder is closed")
        if probabilities.shape != (len(batch), len(self.classes)) or labels.shape != (len(batch),):
            raise ValueError(
                f"{len(batch)} rows but probabilities {probabilities.shape}, labels {labels.shape}"
            )
        self._write(batch, probabilities, labels)
        self.rows_written += len(batch)

    def close(self) -> None:
        """Finish the output (idempotent)."""
        if not self.closed:
            self._close()
            self.closed = True

    def _emit(self, data: bytes) -> None:
        if data:
            self.sink.write(data)
            self.bytes_written += len(data)

    @abc.abstractmethod
    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...


# ------------------------------------------------------------------------------ line reading
def iter_line_chunks(
    source: Readable,
    max_lines: int,
    *,
    block_size: int = BLOCK_SIZE,
    max_line_bytes: int = MAX_LINE_BYTES,
    extra_first: int = 0,
) -> Iterator[bytes]:
    """Chunks of at most ``max_lines`` whole lines, joined by ``\\n`` (no trailing newline).

    A chunk of ``k`` lines has ``k - 1`` newlines. The first chunk may hold ``extra_first``
    more lines (a CSV header, so data chunks stay full). See :func:`iter_counted_line_chunks`.
    """
    for chunk, _ in iter_counted_line_chunks(
        source,
        max_lines,
        block_size=block_size,
        max_line_bytes=max_line_bytes,
        extra_first=extra_first,
    ):
        yield chunk


def iter_counted_line_chunks(
    source: Readable,
    max_lines: int,
    *,
    block_size: int = BLOCK_SIZE,
    max_line_bytes: int = MAX_LINE_BYTES,
    extra_first: int = 0,
) -> Iterator[tuple[bytes, int]]:
    """``(chunk, lines)`` pairs as :func:`iter_line_chunks` cuts them, with each line count.

    Newlines are found once per read by numpy (which lets other threads run meanwhile), never
    split into Python objects here: the caller decides how to parse the lines. Each byte is
    copied once after the read, into the chunk that holds it (pieces are views until then),
    and memory stays at about one block plus one chunk whatever the file.
    """
    if max_lines < 1:
        raise ValueError("chunk_rows must be at least 1")
    pieces: list[bytes | memoryview] = []  # the lines of the chunk being filled
    have = 0  # lines in ``pieces``
    room = max_lines + extra_first  # lines the current chunk may hold
    carry = b""  # the start of a line that the previous read cut off
    carry_at = 0  # its file offset, for the error message
    position = 0  # file offset of the next read
    while True:
        data = source.read(block_size)
        if not data:
            break
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        if not len(ends):
            if not carry:
                carry_at = position
            carry += data
            position += len(data)
            if len(carry) > max_line_bytes:
                raise InvalidInput(
                    f"the line starting at byte {carry_at:,} is longer than {max_line_bytes:,} "
                    "bytes; is this a table?"
                )
            continue
        view = memoryview(data)
        start = 0  # where the next line starts in ``data``
        used = 0  # newlines of ``data`` before ``start``
        total = len(ends)  # lines that end in ``data``
        while total - used >= room - have:  # enough to fill the chunk
            need = room - have
            cut = int(ends[used + need - 1])
            pieces.append(carry + view[start:cut] if carry else view[start:cut])
            carry = b""
            yield _joined(pieces), room
            pieces, have, room = [], 0, max_lines
            start, used = cut + 1, used + need
        if used < total:
            last = int(ends[-1])
            pieces.append(carry + view[start:last] if carry else view[start:last])
            carry = b""
            have += total - used
            start = last + 1
        carry, carry_at = bytes(view[start:]), position + start
        position += len(data)
    if carry:
        pieces.append(carry)
        have += 1
    if pieces:
        yield _joined(pieces), have


def _joined(pieces: list[bytes | memoryview]) -> bytes:
    return b"\n".join(pieces) if len(pieces) > 1 else bytes(pieces[0])


# ----------------------------------------------------------------------------- values
def parse_number(text: str) -> float:
    """A CSV numeric field as ``numpy.loadtxt`` reads it, so the fast and slow paths agree.

    Surrounding whitespace is allowed; underscores and non-ASCII digits (which ``float`` alone
    would take) are not. Raises ``ValueError``.
    """
    stripped = text.strip()
    if not stripped.isascii() or "_" in stripped:
        raise ValueError(text)
    return float(stripped)


def number_problem(value: float) -> str | None:
    """Why a parsed float is not a usable feature: the JSON rule, so every format agrees."""
    return numeric_problem(value)


def shown(text: str, limit: int = 40) -> str:
    """A field value for an error message, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def concat_batches(schema: InputSchema, parts: Sequence[Batch]) -> Batch:
    """One batch from several, rows sorted by row number (parts may interleave)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return schema.empty_batch()
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([p.rows for p in parts])
    numeric = np.concatenate([p.numeric for p in parts])
    categorical = np.concatenate([p.categorical for p in parts])
    ids: list[Any] | None = None
    if schema.id_column is not None:
        ids = [i for p in parts for i in (p.ids if p.ids is not None else [None] * len(p))]
    order = np.argsort(rows, kind="stable")
    if np.all(order[1:] > order[:-1]):
        return Batch(rows, numeric, categorical, ids)
    return Batch(
        rows[order],
        numeric[order],
        categorical[order],
        None if ids is None else [ids[i] for i in order.tolist()],
    )
