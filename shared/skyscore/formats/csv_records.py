"""What every CSV decode path shares: records split from a chunk, quotes, the header, ranges.

A chunk of lines becomes :class:`Records`: raw bytes while every line is a plain record (the
fast paths parse those bytes directly), text lines once a path needs them, and records joined
across lines where a quoted field holds a newline. The column layout of a file
(:class:`Columns`) and the float32 range check (:func:`fitting_rows`) are shared too.
"""

from __future__ import annotations

import csv as stdlib_csv
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from skyscore.errors import InvalidInput
from skyscore.model.schema import FLOAT32_MAX, InputSchema

SURROGATE = re.compile("[\udc80-\udcff]")  # invalid UTF-8 bytes, kept by surrogateescape
CSV_SPECIAL = re.compile(r'[,"\r\n]')
_EOF_SENTINEL = "\x00\n"
BOM = b"\xef\xbb\xbf"
MAX_RECORD_LINES = 10_000  # a quoted field may span this many lines before it is "unterminated"

# what a fast parser hands the chunk decoder: rows, numeric, categorical, ids, rows in range
Simple = tuple[np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]


class BlankLines(Exception):
    """Raised by a fast path for a chunk with blank lines (the caller drops them, asks again)."""


class Columns:
    """Where the model's columns sit in one file's header (checked against the schema)."""

    def __init__(self, schema: InputSchema, header: Sequence[str]) -> None:
        positions: dict[str, int] = {}
        for index, name in enumerate(header):
            if name in positions and name in schema.known:
                raise InvalidInput(f"column {name!r} appears twice in the CSV header", field=name)
            positions.setdefault(name, index)
        schema.check_columns(header, "the CSV header")
        self.schema = schema
        self.n_fields = len(header)
        self.numeric_idx = [positions[name] for name in schema.numeric]
        self.categorical_idx = [positions[name] for name in schema.categorical]
        self.id_idx = positions.get(schema.id_column) if schema.id_column else None


def csv_field(text: str) -> str:
    """Quote a field the way ``csv.QUOTE_MINIMAL`` does."""
    if CSV_SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def parse_header(record: str) -> list[str]:
    """Column names of a header record."""
    try:
        return next(stdlib_csv.reader((record,)))
    except (stdlib_csv.Error, StopIteration) as exc:
        raise InvalidInput(f"the CSV header cannot be read: {exc}") from exc


def decode_text(data: bytes) -> tuple[str, bool]:
    """UTF-8 text and whether it had invalid bytes (kept as surrogates, rejected per row)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


class Records:
    """One chunk's records: raw bytes while they are plain lines, text lines when needed.

    A quote-free chunk is kept as bytes and only split into ``str`` lines if a path needs
    them (the JSON path does not). Records joined from several lines (a quoted newline) and
    records whose quote never closes are marked for the slow path.
    """

    def __init__(
        self,
        lines: list[str] | None = None,
        data: bytes | None = None,
        *,
        quoted: bool = False,
        bad_utf8: bool = False,
        count: int | None = None,
    ) -> None:
        self._lines = lines
        self.data = data  # the records as bytes, while they still match ``lines``
        self.quoted = quoted
        self.bad_utf8 = bad_utf8
        self.multiline: set[int] = set()
        self.unterminated: set[int] = set()
        if lines is not None:
            self.count = len(lines)
        else:
            self.count = 0 if not data else count or data.count(b"\n") + 1

    @property
    def lines(self) -> list[str]:
        """The records as text (decoded on first use)."""
        if self._lines is None:
            text, self.bad_utf8 = decode_text(self.data or b"")
            self._lines = text.split("\n") if self.data else []
        return self._lines

    def has_blank(self) -> bool:
        """Whether some record is empty (a blank line)."""
        if self._lines is None:
            data = self.data or b""
            return b"\n\n" in data or data[:1] == b"\n" or data[-1:] == b"\n"
        return "" in self._lines

    def drop_blank(self) -> None:
        """Remove empty records (blank lines), which are not rows."""
        if not self.has_blank():
            return
        keep = [i for i, line in enumerate(self.lines) if line]
        plain = self.data is not None  # plain lines: keep a bytes copy for the fast paths
        self.data = None
        if self.multiline or self.unterminated:
            where = {old: new for new, old in enumerate(keep)}
            self.multiline = {where[i] for i in self.multiline if i in where}
            self.unterminated = {where[i] for i in self.unterminated if i in where}
        self._lines = [self.lines[i] for i in keep]
        self.count = len(self._lines)
        if plain and not self.bad_utf8:
            self.data = "\n".join(self._lines).encode()

    def drop_leading_blank(self) -> None:
        """Remove blank lines before the first record (before a header, they are no rows)."""
        if self._lines is None and self.data is not None:
            self.data = self.data.lstrip(b"\n")
            self.count = 0 if not self.data else self.data.count(b"\n") + 1
        else:
            self.drop_blank()

    def drop_first(self) -> str:
        """Take the first record off (the header)."""
        if self._lines is None and self.data is not None:
            cut = self.data.find(b"\n")
            head, self.data = (
                (self.data, b"") if cut < 0 else (self.data[:cut], self.data[cut + 1 :])
            )
            self.count = 0 if not self.data else self.data.count(b"\n") + 1
            return decode_text(head)[0]
        first = self.lines.pop(0)
        self.data = None
        self.count -= 1
        self.multiline = {i - 1 for i in self.multiline if i > 0}
        self.unterminated = {i - 1 for i in self.unterminated if i > 0}
        return first


def record_end(lines: list[str], start: int) -> int | None:
    """Index after the last line of the record starting at ``start`` (per the ``csv`` module).

    ``None`` when the record is still open after the last line of ``lines``.
    """
    stop = min(len(lines), start + MAX_RECORD_LINES)

    def feed() -> Iterator[str]:
        for k in range(start, stop):
            yield lines[k] + "\n"
        yield _EOF_SENTINEL

    reader = stdlib_csv.reader(feed())
    try:
        next(reader)
    except stdlib_csv.Error:
        return start + 1  # not a quoting problem: the slow path reports it for this line
    consumed: int = reader.line_num
    if start + consumed > stop:
        return None
    return start + consumed


def join_quoted(lines: list[str], *, final: bool, bad_utf8: bool) -> tuple[Records, list[str]]:
    """Records of a chunk containing quotes, and the lines of an open record to carry over."""
    out: list[str] = []
    records = Records(out, quoted=True, bad_utf8=bad_utf8)
    i = 0
    n = len(lines)
    for start in [k for k, line in enumerate(lines) if '"' in line and line.count('"') % 2]:
        if start < i:
            continue  # inside a record already joined
        out.extend(lines[i:start])
        end = record_end(lines, start)
        if end is None:
            if not final and n - start < MAX_RECORD_LINES:
                records.count = len(out)
                return records, lines[start:]
            records.unterminated.add(len(out))
            out.append(lines[start])
            i = start + 1
            continue
        if end > start + 1:
            records.multiline.add(len(out))
            out.append("\n".join(lines[start:end]))
        else:
            out.append(lines[start])
        i = end
    out.extend(lines[i:])
    records.count = len(out)
    return records, []


def fitting_rows(numeric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows' values are all within float32 range or NaN (missing), and the indices of
    rows that hold a NaN or a value out of range.

    Two reductions over the matrix: a row whose max and min are in range holds no NaN and
    nothing too large. Only the others (missing values, overflows) are looked at per value.
    """
    if numeric.shape[1] == 0:
        return np.ones(len(numeric), dtype=bool), np.empty(0, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        fits: np.ndarray = (numeric.max(axis=1) <= FLOAT32_MAX) & (
            numeric.min(axis=1) >= -FLOAT32_MAX
        )
    suspect = np.flatnonzero(~fits)
    if len(suspect):
        values = numeric[suspect]
        fits[suspect] = ((np.abs(values) <= FLOAT32_MAX) | np.isnan(values)).all(axis=1)
    return fits, suspect


def empty_points(data: bytes, *, lines: bool) -> np.ndarray:
    """Where empty fields are (insertion points), fields split by commas (and newlines)."""
    array = np.frombuffer(data, dtype=np.uint8)
    separator = (array == 44) | (array == 10) if lines else array == 44
    points = np.flatnonzero(separator[:-1] & separator[1:]) + 1
    head = [0] if separator[0] else []
    tail = [len(data)] if separator[-1] else []
    if head or tail:
        points = np.concatenate(
            [np.asarray(head, dtype=np.intp), points, np.asarray(tail, dtype=np.intp)]
        )
    return points


def insert_at(data: bytes, points: np.ndarray, token: bytes) -> bytes:
    """``data`` with ``token`` inserted at each of the sorted ``points``."""
    if len(points) > 100_000:  # many: one vectorised insert beats a Python-level join
        where = np.repeat(points, len(token))
        values = np.tile(np.frombuffer(token, dtype=np.uint8), len(points))
        inserted: bytes = np.insert(np.frombuffer(data, dtype=np.uint8), where, values).tobytes()
        return inserted
    bounds = [0, *points.tolist(), len(data)]
    return token.join([data[i:j] for i, j in itertools.pairwise(bounds)])


def fill_at_empty(data: bytes, token: bytes, *, lines: bool) -> bytes:
    """Write ``token`` into every empty field (fields split by commas, and newlines if ``lines``)."""
    if not data:
        return token
    return insert_at(data, empty_points(data, lines=lines), token)
