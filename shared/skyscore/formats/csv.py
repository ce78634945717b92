"""CSV in and out: msgspec and ``numpy.loadtxt`` per chunk for speed, ``csv`` for exactness.

Each chunk of lines goes down the first path that takes it whole:

1. quote-free, well-formed lines (the usual machine-written table): numpy finds the field
   boundaries, msgspec parses the numeric fields as one JSON array of numbers and the text
   fields as one JSON array of strings (:meth:`CsvLayout.parse_json`);
2. otherwise one ``loadtxt`` call with a structured dtype (one field per CSV column), cutting
   around the lines it rejects (:meth:`CsvLayout.isolate`);
3. rows neither takes, or whose values need a closer look (non-finite, out of float32 range,
   quoted newlines, invalid UTF-8), are read one by one with the stdlib ``csv`` module, which
   decides exactly and names the bad column.

All paths accept the same inputs and produce the same values (the test suite checks this).

Conventions: the header row is required; data rows are numbered from 1 (header and blank lines
not counted); an empty (or blank) numeric field is missing (NaN, the model's imputer fills it);
an empty categorical field is the missing category ``""``; ``nan``/``inf`` text, unparseable
numbers and numbers beyond float32 are row errors. Line endings ``\\n`` and ``\\r\\n`` (a
``\\r\\n`` inside a quoted field is read as ``\\n``); UTF-8, with or without a BOM.
"""

from __future__ import annotations

import contextlib
import csv as stdlib_csv
import itertools
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np
from numpy.lib.stride_tricks import as_strided

from skyscore.errors import InvalidInput
from skyscore.formats.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    Encoder,
    FileFormat,
    Readable,
    Writable,
    iter_counted_line_chunks,
    number_problem,
    parse_number,
    shown,
)
from skyscore.model.schema import FLOAT32_MAX, MISSING_CATEGORY, Batch, InputSchema, RowError

# loadtxt names the failing row in its message ("at row 3"), 0- or 1-based depending on the error
_ROW_HINT = re.compile(r"at row (\d+)")
# Empty fields are filled with this before the loadtxt parse (which refuses empty numbers). It
# is beyond float32, so as a real value it is an error anyway; if it occurs in a chunk's text,
# rows holding it are left to the slow path, which tells an empty field from the literal.
EMPTY_SENTINEL = "-1.2345678e300"
_SENTINEL_VALUE = float(EMPTY_SENTINEL)
_SENTINEL_BYTES = EMPTY_SENTINEL.encode()
_SURROGATE = re.compile("[\udc80-\udcff]")  # invalid UTF-8 bytes, kept by surrogateescape
_CSV_SPECIAL = re.compile(r'[,"\r\n]')
_EOF_SENTINEL = "\x00\n"
_BOM = b"\xef\xbb\xbf"

_AT_INDEX = re.compile(r"at `\$\[(\d+)\]`")  # where msgspec failed: element index...
_AT_BYTE = re.compile(r"\(byte (\d+)\)")  # ... or byte offset
_JSON_NUMBERS = msgspec.json.Decoder(list[float | None])
_JSON_STRINGS = msgspec.json.Decoder(list[str])

MIN_SEGMENT = 64  # below this many lines a failing loadtxt parse goes to the slow path directly
MAX_FAST_FAILURES = 16  # per chunk; past this the chunk is error-dense and the slow path wins
MAX_RECORD_LINES = 10_000  # a quoted field may span this many lines before it is "unterminated"


def csv_field(text: str) -> str:
    """Quote a field the way ``csv.QUOTE_MINIMAL`` does."""
    if _CSV_SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def parse_header(record: str) -> list[str]:
    """Column names of a header record."""
    try:
        return next(stdlib_csv.reader((record,)))
    except (stdlib_csv.Error, StopIteration) as exc:
        raise InvalidInput(f"the CSV header cannot be read: {exc}") from exc


def _decode_text(data: bytes) -> tuple[str, bool]:
    """UTF-8 text and whether it had invalid bytes (kept as surrogates, rejected per row)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


class _Records:
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
            text, self.bad_utf8 = _decode_text(self.data or b"")
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
            return _decode_text(head)[0]
        first = self.lines.pop(0)
        self.data = None
        self.count -= 1
        self.multiline = {i - 1 for i in self.multiline if i > 0}
        self.unterminated = {i - 1 for i in self.unterminated if i > 0}
        return first


def _record_end(lines: list[str], start: int) -> int | None:
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


def _join_quoted(lines: list[str], *, final: bool, bad_utf8: bool) -> tuple[_Records, list[str]]:
    """Records of a chunk containing quotes, and the lines of an open record to carry over."""
    out: list[str] = []
    records = _Records(out, quoted=True, bad_utf8=bad_utf8)
    i = 0
    n = len(lines)
    for start in [k for k, line in enumerate(lines) if '"' in line and line.count('"') % 2]:
        if start < i:
            continue  # inside a record already joined
        out.extend(lines[i:start])
        end = _record_end(lines, start)
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


def _empty_points(data: bytes, *, lines: bool) -> np.ndarray:
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


def _insert(data: bytes, points: np.ndarray, token: bytes) -> bytes:
    """``data`` with ``token`` inserted at each of the sorted ``points``."""
    if len(points) > 100_000:  # many: one vectorised insert beats a Python-level join
        where = np.repeat(points, len(token))
        values = np.tile(np.frombuffer(token, dtype=np.uint8), len(points))
        inserted: bytes = np.insert(np.frombuffer(data, dtype=np.uint8), where, values).tobytes()
        return inserted
    bounds = [0, *points.tolist(), len(data)]
    return token.join([data[i:j] for i, j in itertools.pairwise(bounds)])


def _fill(data: bytes, token: bytes, *, lines: bool) -> bytes:
    """Write ``token`` into every empty field (fields split by commas, and newlines if ``lines``)."""
    if not data:
        return token
    return _insert(data, _empty_points(data, lines=lines), token)


class _BlankLines(Exception):
    """Raised by :meth:`CsvLayout.parse_json` for a chunk with blank lines."""


def _decode_rows(
    decoder: Any,  # a msgspec JSON decoder of a list
    buf: bytearray,
    starts: np.ndarray,
    lead: int,
    per_row: int,
    bad: set[int],
) -> list[tuple[int, list[Any]]] | None:
    """Decode a JSON array laid out row by row in ``buf``, leaving out the rows that fail.

    Row ``i`` starts at byte ``starts[i]`` (``starts[n]``: one past the end); the byte ``lead``
    before a row start is a separator that becomes ``[`` (``]``) where a segment starts (ends),
    so any run of rows decodes in place, without copying. A failing row is found from the
    error (``$[index]`` or ``(byte offset)``), added to ``bad``, and the rows around it are
    decoded again: about two passes however many rows fail. Returns ``(first row, values)``
    segments, or ``None`` when an error cannot be placed (the caller falls back).
    """
    n = len(starts) - 1
    view = memoryview(buf)
    done: list[tuple[int, list[Any]]] = []
    pending = [(0, n)]
    while pending:
        a, b = pending.pop()
        if a >= b:
            continue
        lo, hi = int(starts[a]) - lead, int(starts[b]) - lead
        saved = buf[lo], buf[hi]
        buf[lo], buf[hi] = 91, 93  # "[", "]"
        try:
            values = decoder.decode(view[lo : hi + 1])
            problem = None
        except msgspec.DecodeError as exc:  # ValidationError included
            problem = str(exc)
        except UnicodeDecodeError:
            return None
        finally:
            buf[lo], buf[hi] = saved
        if problem is None:
            if len(values) != (b - a) * per_row:
                return None
            done.append((a, values))
            continue
        at_index = _AT_INDEX.search(problem)
        at_byte = _AT_BYTE.search(problem)
        if at_index:
            row = a + int(at_index.group(1)) // per_row
        elif at_byte:
            row = int(np.searchsorted(starts, lo + int(at_byte.group(1)), side="right")) - 1
        else:
            return None
        row = min(max(row, a), b - 1)
        bad.add(row)
        if len(bad) > max(64, n // 4):
            return None  # error-dense: the slow path is as good
        pending.append((row + 1, b))
        pending.append((a, row))
    return done


def fill_empty_fields(data: bytes) -> bytes:
    """Write :data:`EMPTY_SENTINEL` into every empty field of quote-free, blank-free lines."""
    return _fill(data, _SENTINEL_BYTES, lines=True)


_ARROW: list[tuple[Any, Any] | None] = []
# what a fast parser hands decode_records: rows, numeric, categorical, ids, rows in range
Simple = tuple[np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]
# pyarrow parses a chunk's blocks on its thread pool (measured for 1M rows on 2 CPUs: 2.9 s in
# 4 blocks, 4.3 s in one; only splitting while inference waited for data was slower for a
# costly model). SKYSCORE_DECODE_THREADS=1 parses each chunk on one thread.
ARROW_BLOCKS = 4
ARROW_SPLIT = os.environ.get("SKYSCORE_DECODE_THREADS", "") != "1"
DECODE_WORKERS = 2  # chunks parsed at once beside the line splitter (measured: 10 % faster)


def _pyarrow() -> tuple[Any, Any] | None:
    """``(pyarrow, pyarrow.csv)`` if installed (looked up once), else ``None``.

    ``SKYSCORE_CSV_ENGINE=numpy`` turns the pyarrow path off (benchmarks, parity tests).
    """
    if not _ARROW:
        found: tuple[Any, Any] | None = None
        if os.environ.get("SKYSCORE_CSV_ENGINE", "auto") != "numpy":
            try:
                import pyarrow
                import pyarrow.csv
            except ImportError:
                found = None
            else:
                found = (pyarrow, pyarrow.csv)
                _prefer_mimalloc(pyarrow)
        _ARROW.append(found)
    return _ARROW[0]


def _prefer_mimalloc(pa: Any) -> None:
    """Arrow's mimalloc pool, process-wide, unless the user chose one
    (``ARROW_DEFAULT_MEMORY_POOL``). Measured here: CSV scoring ~4 % faster than with the
    default jemalloc pool (three alternating runs each), and a lower peak RSS."""
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    with contextlib.suppress(AttributeError, NotImplementedError):  # a build without mimalloc
        pa.set_memory_pool(pa.mimalloc_memory_pool())


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


def _arrow_matrix(table: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """float64 columns as one row-major float32 [n, k] matrix (empty fields NaN) and the rows
    that fit float32; ``None`` if a field held a NaN literal (which the exact paths report as
    an error, not as missing).

    One C++ call (``RecordBatch.to_tensor``) per record batch instead of a ``to_numpy`` per
    column, which measured ten times slower here; each float64 block is checked and narrowed
    straight into the result, so the whole chunk is never held as float64.
    """
    k = table.num_columns
    out = np.empty((n, k), dtype=np.float32)
    fits = np.ones(n, dtype=bool)
    if k == 0:
        return out, fits
    nulls = sum(column.null_count for column in table.columns)
    nans = 0
    start = 0
    for batch in table.to_batches():
        rows = batch.num_rows
        if not rows:
            continue
        if hasattr(batch, "to_tensor"):
            wide = np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
        else:  # a pyarrow without to_tensor
            wide = np.column_stack([column.to_numpy(zero_copy_only=False) for column in batch])
        fits[start : start + rows], suspect = fitting_rows(wide)
        if len(suspect):  # the only rows that can hold a NaN
            nans += int(np.isnan(wide[suspect]).sum())
        with np.errstate(over="ignore"):
            out[start : start + rows] = wide
        start += rows
    if nans != nulls:
        return None
    return out, fits


class ArrowTexts(Sequence[Any]):
    """An id column as pyarrow parsed it: the CSV encoder writes the Arrow array back as is,
    with no Python ``str`` per row; any other reader gets a list, built on first use."""

    __slots__ = ("_items", "array")

    def __init__(self, array: Any) -> None:
        self.array = array
        self._items: list[Any] | None = None

    def _list(self) -> list[Any]:
        if self._items is None:
            self._items = self.array.to_pylist()
        return self._items

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Any:
        return self._list()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, ArrowTexts) else other)

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"ArrowTexts({self._list()!r})"


class CsvLayout:
    """Where the model's columns sit in one file, and the fast parser built from that."""

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
        # One field per CSV column, so loadtxt checks the field count of every row. Numeric
        # fields are float64 (the float32 range check needs the real value) and laid out first,
        # contiguous in schema order, so the numeric matrix is a strided view, not a copy.
        kinds: list[str] = ["U1"] * self.n_fields  # unused columns: parsed, counted, dropped
        for index in self.categorical_idx:
            kinds[index] = "O"
        if self.id_idx is not None and kinds[self.id_idx] == "U1":
            kinds[self.id_idx] = "O"
        offsets = [0] * self.n_fields
        position = 0
        for index in self.numeric_idx:
            kinds[index] = "f8"
            offsets[index] = position
            position += 8
        for index, kind in enumerate(kinds):
            if kind != "f8":
                offsets[index] = position
                position += np.dtype(kind).itemsize
        self.dtype = np.dtype(
            {
                "names": [f"c{i}" for i in range(self.n_fields)],
                "formats": kinds,
                "offsets": offsets,
                "itemsize": max(position, 1),
            }
        )
        self.numeric_fields = [f"c{i}" for i in self.numeric_idx]
        self.categorical_fields = [f"c{i}" for i in self.categorical_idx]
        self.id_field = None if self.id_idx is None else f"c{self.id_idx}"
        self._plan_json()

    # ------------------------------------------------- fastest path: pyarrow, where installed
    def parse_arrow(self, data: bytes, n: int) -> Simple | None:
        """``(rows, numeric, categorical, ids, fits)`` of a quote-free chunk via pyarrow, or
        ``None``. ``ids`` is pyarrow's string column, ``fits`` the rows within float32 range.

        pyarrow's parser is multi-threaded C++ and releases the GIL, so decoding overlaps with
        ONNX inference; it is used only where pyarrow is installed (the local runtime, container
        images), never required: the Lambda zip goes without it. It takes a chunk only when every
        row converts cleanly; any doubt (a bad field count, text in a number, a ``nan`` literal,
        blank lines) returns ``None`` and the chunk goes down the exact paths below, so results
        are the same either way. Values beyond float32 are left for the per-row check.
        """
        arrow = _pyarrow()
        if arrow is None or (self.id_idx is not None and self.id_idx in self.numeric_idx):
            return None
        pa, pacsv = arrow
        names = [f"c{i}" for i in range(self.n_fields)]
        types: dict[str, Any] = {names[i]: pa.float64() for i in self.numeric_idx}
        types.update(
            {names[i]: pa.dictionary(pa.int32(), pa.string()) for i in self.categorical_idx}
        )
        if self.id_idx is not None:
            types[names[self.id_idx]] = pa.string()
        blocks = ARROW_BLOCKS if ARROW_SPLIT else 1
        ascii_only = data.isascii()
        while True:
            try:
                table = pacsv.read_csv(
                    pa.py_buffer(data),
                    read_options=pacsv.ReadOptions(
                        column_names=names,
                        block_size=max(len(data) // blocks + 1, 1),
                        use_threads=blocks > 1,
                    ),
                    parse_options=pacsv.ParseOptions(quote_char=False, newlines_in_values=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types=types,
                        include_columns=list(types),
                        null_values=[""],
                        strings_can_be_null=False,
                        # pyarrow's UTF-8 check took 30 % of its parse here; ASCII (the usual
                        # machine-written table, found in one fast pass) needs none
                        check_utf8=not ascii_only,
                    ),
                )
                break
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                if blocks > 1 and "straddl" in str(exc):  # a row longer than a block
                    blocks = 1
                    continue
                return None
        if table.num_rows != n:  # blank lines were skipped: let the exact path number rows
            return None
        matrix = _arrow_matrix(table.select([names[i] for i in self.numeric_idx]), n)
        if matrix is None:  # a literal nan in the text
            return None
        numeric, fits = matrix
        categorical = np.empty((n, len(self.categorical_idx)), dtype=object)
        for j, index in enumerate(self.categorical_idx):
            column = table.column(names[index]).combine_chunks()
            dictionary = np.empty(len(column.dictionary), dtype=object)
            dictionary[:] = column.dictionary.to_pylist()
            codes = np.frombuffer(
                column.indices.buffers()[1], np.int32, len(column), column.indices.offset * 4
            )
            categorical[:, j] = dictionary[codes]
        # one array: Arrow's CSV writer (26.0) writes a block of NUL bytes for a column whose
        # chunks include empty ones, which a chunk split over threads can have
        ids = None if self.id_idx is None else table.column(names[self.id_idx]).combine_chunks()
        return np.arange(n, dtype=np.int64), numeric, categorical, ids, fits

    # ------------------------------------------------------------------ fast path: JSON
    def _plan_json(self) -> None:
        """Group columns for :meth:`parse_json`: runs of adjacent numeric columns, strings."""
        self.numeric_runs: list[tuple[int, int, list[int]]] = []  # first, last CSV col, schema
        where = {csv_col: j for j, csv_col in enumerate(self.numeric_idx)}
        for csv_col in sorted(where):
            if self.numeric_runs and self.numeric_runs[-1][1] == csv_col - 1:
                first, _, cols = self.numeric_runs[-1]
                self.numeric_runs[-1] = (first, csv_col, [*cols, where[csv_col]])
            else:
                self.numeric_runs.append((csv_col, csv_col, [where[csv_col]]))
        self.string_cols = sorted(
            set(self.categorical_idx) | ({self.id_idx} if self.id_idx is not None else set())
        )
        self.string_runs: list[tuple[int, int]] = []  # first, last CSV column of adjacent ones
        for column in self.string_cols:
            if self.string_runs and self.string_runs[-1][1] == column - 1:
                self.string_runs[-1] = (self.string_runs[-1][0], column)
            else:
                self.string_runs.append((column, column))
        self.json_ready = self.id_idx is None or self.id_idx not in where

    def parse_json(self, data: bytes, n: int) -> Simple | None:
        """``(rows, numeric, categorical, ids, fits)`` of the simple lines of ``data``, or
        ``None``.

        For ``n`` quote-free, single-line records: field boundaries are found with numpy, the
        numeric fields go to msgspec as one JSON array of numbers (empty fields as ``null``)
        and the text fields as one JSON array of strings; about 1.6x faster than ``loadtxt``.
        JSON numbers are a subset of what loadtxt reads and both parsers round correctly, so
        the values are the same. ``rows`` lists the records parsed (positions in ``data``);
        the others (a wrong field count, ``.5``, ``nan``, ``abc``, ``null``...) are left to the
        caller's slow path. ``None``: use the loadtxt path for the whole chunk.
        """
        if not self.json_ready or b"\\" in data:
            return None
        width = self.n_fields
        array = np.frombuffer(data, dtype=np.uint8)
        separator = np.empty(len(array) + 1, dtype=bool)  # + a final one: the end of the data
        np.equal(array, 44, out=separator[:-1])
        separator[:-1] |= array == 10
        separator[-1] = True
        positions = np.flatnonzero(separator)
        line_ends = np.flatnonzero(np.append(array[positions[:-1]] == 10, True))
        if len(line_ends) != n:
            return None
        line_first = np.zeros(n, dtype=np.int64)
        line_first[1:] = positions[line_ends[:-1]] + 1
        if (positions[line_ends] == line_first).any():
            raise _BlankLines  # not rows: the caller drops them and asks again
        fields = np.diff(line_ends, prepend=-1)
        if (fields == width).all():
            rows = np.arange(n)
            ends = positions.reshape(n, width)
        else:  # some lines have the wrong field count: keep them for the slow path
            rows = np.flatnonzero(fields == width)
            if not len(rows):
                return None
            ends = positions[line_ends[rows][:, None] - np.arange(width - 1, -1, -1)]
        count = len(rows)
        line_starts = line_first[rows]

        def starts(column: int) -> np.ndarray:
            return line_starts if column == 0 else ends[:, column - 1] + 1

        # an empty field somewhere: two separators side by side, or one at the start
        empty = bool(separator[0]) or bool((separator[:-1] & separator[1:]).any())
        bad: set[int] = set()  # positions in ``rows`` left to the slow path
        numeric = np.empty((count, len(self.numeric_idx)), dtype=np.float64)
        for first, last, columns in self.numeric_runs:
            begin, end = starts(first), ends[:, last]
            pieces = [data[i:j] for i, j in zip(begin.tolist(), end.tolist(), strict=True)]
            raw_offsets = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(end - begin + 1, out=raw_offsets[1:])  # row starts in the joined body
            offsets = raw_offsets.copy()
            fills = np.zeros(count, dtype=np.int64)  # empty fields per row, written as null
            if empty:
                body = b",".join(pieces)
                points = _empty_points(body, lines=False)
                if len(points):
                    before = np.searchsorted(points, raw_offsets, side="left")
                    fills = np.diff(before)
                    offsets += 4 * before
                    pieces = [_insert(body, points, b"null")]
            pieces[0] = b"[" + pieces[0]
            pieces[-1] += b"]"
            buf = bytearray(b",").join(pieces)
            offsets += 1
            offsets[-1] = len(buf)
            segments = _decode_rows(_JSON_NUMBERS, buf, offsets, 1, len(columns), bad)
            if segments is None:
                return None
            nulls = filled = 0
            for a, values in segments:
                block = np.fromiter(values, dtype=np.float64, count=len(values))
                stop = a + len(values) // len(columns)
                numeric[a:stop, columns] = block.reshape(-1, len(columns))
                nulls += int(np.count_nonzero(np.isnan(block)))  # JSON has no NaN: null only
                filled += int(fills[a:stop].sum())
            if nulls > filled:  # "null" text in the file must not pass for an empty field
                raw = b",".join(
                    [data[i:j] for i, j in zip(begin.tolist(), end.tolist(), strict=True)]
                )
                where = raw.find(b"null")
                while where >= 0:
                    bad.add(int(np.searchsorted(raw_offsets, where, side="right")) - 1)
                    where = raw.find(b"null", where + 1)
        text: dict[int, np.ndarray] = {}  # CSV column -> its values
        for first, last in self.string_runs:
            begin, end = starts(first), ends[:, last]
            body = b",".join([data[i:j] for i, j in zip(begin.tolist(), end.tolist(), strict=True)])
            run = last - first + 1
            # no quote or backslash in the text: quoting every field makes it JSON
            buf = bytearray(b'["' + body.replace(b",", b'","') + b'"]')
            offsets = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(end - begin + 2 * (run - 1) + 3, out=offsets[1:])
            offsets += 2
            segments = _decode_rows(_JSON_STRINGS, buf, offsets, 2, run, bad)
            if segments is None:
                return None
            block = np.empty((count, run), dtype=object)
            for a, values in segments:
                flat = np.empty(len(values), dtype=object)
                flat[:] = values
                block[a : a + len(values) // run] = flat.reshape(-1, run)
            for offset in range(run):
                text[first + offset] = block[:, offset]
        keep = np.ones(count, dtype=bool)
        if bad:
            keep[list(bad)] = False
        categorical = np.empty((int(keep.sum()), len(self.categorical_idx)), dtype=object)
        for j, column in enumerate(self.categorical_idx):
            categorical[:, j] = text[column][keep]
        ids = None if self.id_idx is None else text[self.id_idx][keep]
        numeric = numeric[keep]
        return rows[keep], numeric, categorical, ids, fitting_rows(numeric)[0]

    # ------------------------------------------------------------------------- fast path
    def numeric_view(self, array: np.ndarray) -> np.ndarray:
        """The (n, k) float64 numeric matrix of a parsed structured array, without a copy."""
        n, k = len(array), len(self.numeric_fields)
        if k == 0 or n == 0:
            return np.zeros((n, k), dtype=np.float64)
        first = array[self.numeric_fields[0]]
        view: np.ndarray = as_strided(first, shape=(n, k), strides=(array.strides[0], 8))
        return view

    def loadtxt(self, lines: list[str]) -> np.ndarray:
        """Parse quote-simple single-line records in one C pass; raises ``ValueError``."""
        array = np.loadtxt(
            lines, dtype=self.dtype, delimiter=",", quotechar='"', comments=None, ndmin=1
        )
        if array.shape[0] != len(lines):  # loadtxt skips whitespace-only lines
            raise ValueError("row count changed")
        return array

    def isolate(
        self, lines: list[str], first_error: str | None = None
    ) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
        """Fast-parse ``lines``, cutting around the lines loadtxt rejects.

        Returns parsed ``(start, array)`` segments and the positions left to the slow path.
        ``first_error`` is the message of a whole-list parse that already failed.
        """
        parsed: list[tuple[int, np.ndarray]] = []
        failed: list[int] = []
        stack = [(0, len(lines))]
        failures = 0
        while stack:
            lo, hi = stack.pop()
            if lo >= hi:
                continue
            if failures > MAX_FAST_FAILURES:
                failed.extend(range(lo, hi))
                continue
            if first_error is not None and lo == 0 and hi == len(lines):
                message, first_error = first_error, None
            else:
                try:
                    part = lines[lo:hi] if lo or hi < len(lines) else lines
                    parsed.append((lo, self.loadtxt(part)))
                    continue
                except (ValueError, TypeError, OverflowError) as exc:
                    message = str(exc)
            failures += 1
            if hi - lo <= MIN_SEGMENT:
                failed.extend(range(lo, hi))
                continue
            match = _ROW_HINT.search(message)
            hint = int(match.group(1)) if match else -1
            if 0 <= hint <= hi - lo:
                bad_lo = lo + max(hint - 1, 0)
                bad_hi = min(lo + hint + 1, hi)
                failed.extend(range(bad_lo, bad_hi))
                stack.append((bad_hi, hi))
                stack.append((lo, bad_lo))
            else:
                mid = (lo + hi) // 2
                stack.append((mid, hi))
                stack.append((lo, mid))
        parsed.sort(key=lambda part: part[0])
        return parsed, failed

    # ------------------------------------------------------------------------- slow path
    def parse_record(self, record: str, row: int) -> tuple[list[float], list[str], Any] | RowError:
        """One record, exactly: its values, or why it is rejected."""
        if _SURROGATE.search(record):
            return RowError(row, None, "invalid UTF-8")
        try:
            fields = next(stdlib_csv.reader((record,)))
        except stdlib_csv.Error as exc:
            return RowError(row, None, f"malformed CSV: {exc}")
        except StopIteration:
            fields = []
        if len(fields) != self.n_fields:
            return RowError(row, None, f"expected {self.n_fields} fields, got {len(fields)}")
        numeric: list[float] = []
        for name, index in zip(self.schema.numeric, self.numeric_idx, strict=True):
            text = fields[index]
            if not text.strip():
                numeric.append(math.nan)
                continue
            try:
                value = parse_number(text)
            except ValueError:
                return RowError(row, name, f"expected a number, got {shown(text)}")
            problem = number_problem(value)
            if problem:
                return RowError(row, name, problem)
            numeric.append(value)
        categorical = [fields[index] for index in self.categorical_idx]
        ident = None if self.id_idx is None else fields[self.id_idx]
        return numeric, categorical, ident

    # ------------------------------------------------------------------------- one chunk
    def _fast(
        self, records: _Records, fast_lines: list[str], data: bytes | None
    ) -> tuple[list[tuple[int, np.ndarray]], list[int], bool, bool]:
        """Fast-parse: ``(parsed segments, failed positions, filled, sentinel_in_text)``."""
        try:
            return [(0, self.loadtxt(fast_lines))], [], False, False
        except (ValueError, TypeError, OverflowError) as exc:
            message = str(exc)
        if "string ''" not in message or records.quoted or not self.numeric_fields:
            return (*self.isolate(fast_lines, message), False, False)
        # empty numeric fields: fill them with the sentinel and parse again
        if data is None:
            data = "\n".join(fast_lines).encode("utf-8", "surrogateescape")
        literal = _SENTINEL_BYTES in data
        filled = fill_empty_fields(data).decode("utf-8", "surrogateescape").split("\n")
        return (*self.isolate(filled), True, literal)

    def _from_loadtxt(
        self, records: _Records, fast_lines: list[str], fast_index: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, list[int]]:
        """``(index, numeric, categorical, ids, good, failed)`` from the loadtxt path."""
        k, m = len(self.numeric_fields), len(self.categorical_fields)
        parsed, failed, filled, literal = self._fast(records, fast_lines, records.data)
        if fast_index is not None:
            failed = fast_index[failed].tolist() if failed else []
        if not parsed:
            return (
                np.empty(0, dtype=np.int64),
                np.empty((0, k), dtype=np.float64),
                np.empty((0, m), dtype=object),
                None if self.id_field is None else np.empty(0, dtype=object),
                np.empty(0, dtype=bool),
                failed,
            )
        array = parsed[0][1] if len(parsed) == 1 else np.concatenate([p[1] for p in parsed])
        if len(parsed) == 1 and parsed[0][0] == 0:
            position = np.arange(len(array))
        else:
            position = np.concatenate([np.arange(s, s + len(a)) for s, a in parsed])
        index = position if fast_index is None else fast_index[position]
        numeric = self.numeric_view(array)
        usable = np.abs(numeric) <= FLOAT32_MAX  # False for nan, inf and out of range
        categorical = np.empty((len(array), m), dtype=object)
        for j, name in enumerate(self.categorical_fields):
            categorical[:, j] = array[name]
        ids = None if self.id_field is None else np.asarray(array[self.id_field], dtype=object)
        good = np.ones(len(array), dtype=bool)
        if filled:
            empty = numeric == _SENTINEL_VALUE
            empty_category = categorical == EMPTY_SENTINEL
            empty_id = None if ids is None else ids == EMPTY_SENTINEL
            if literal:  # the sentinel is also real text here: let the slow path decide
                good &= ~empty.any(axis=1) & ~empty_category.any(axis=1)
                if empty_id is not None:
                    good &= ~empty_id
            else:
                numeric = np.where(empty, np.nan, numeric)
                usable |= empty
                categorical[empty_category] = MISSING_CATEGORY
                if ids is not None and empty_id is not None:
                    ids[empty_id] = ""
        good &= usable.all(axis=1)
        return index, numeric, categorical, ids, good, failed

    def decode_records(self, records: _Records, first_row: int) -> Chunk:
        """Validate and convert one chunk of records (row numbers from ``first_row``)."""
        n = records.count
        k, m = len(self.numeric_fields), len(self.categorical_fields)
        slow: set[int] = records.multiline | records.unterminated
        simple = None
        if records.data is not None and n and not slow:
            simple = self.parse_arrow(records.data, n)
        if simple is None and records.data is not None and n and not slow:
            try:
                simple = self.parse_json(records.data, n)
            except _BlankLines:
                records.drop_blank()
                n = records.count
                if records.data is not None and n:
                    simple = self.parse_json(records.data, n)
        failed: list[int] = []
        if simple is None:
            records.drop_blank()
            n = records.count
        texts: Any = None  # the id column as pyarrow parsed it, while no row is set aside
        if simple is not None:
            index, numeric, categorical, ids, good = simple
            if len(index) < n:  # lines the JSON path left out
                slow.update(np.setdiff1d(np.arange(n), index).tolist())
            if ids is not None and not isinstance(ids, np.ndarray):
                if slow or not good.all():
                    ids = np.array(ids.to_pylist(), dtype=object).reshape(-1)
                else:
                    texts, ids = ids, None
        else:
            lines = records.lines
            if records.bad_utf8:
                slow.update(i for i, line in enumerate(lines) if _SURROGATE.search(line))
            fast_index: np.ndarray | None = None
            fast_lines = lines
            if slow:
                fast_index = np.setdiff1d(np.arange(n), np.fromiter(slow, np.int64, len(slow)))
                fast_lines = [lines[i] for i in fast_index.tolist()]
                records.data = None
            if fast_lines:
                index, numeric, categorical, ids, good, failed = self._from_loadtxt(
                    records, fast_lines, fast_index
                )
            else:
                index = np.empty(0, dtype=np.int64)
                numeric = np.empty((0, k), dtype=np.float64)
                categorical = np.empty((0, m), dtype=object)
                ids = None if self.id_field is None else np.empty(0, dtype=object)
                good = np.empty(0, dtype=bool)
        if not good.all():
            slow.update(index[~good].tolist())
            index, numeric, categorical = index[good], numeric[good], categorical[good]
            ids = None if ids is None else ids[good]
        slow.update(failed)

        errors: list[RowError] = []
        if slow:
            lines = records.lines
            extra_index: list[int] = []
            extra_numeric: list[list[float]] = []
            extra_categorical: list[list[str]] = []
            extra_ids: list[Any] = []
            for i in sorted(slow):
                row = first_row + i
                if i in records.unterminated:
                    errors.append(RowError(row, None, "unterminated quoted field"))
                    continue
                result = self.parse_record(lines[i], row)
                if isinstance(result, RowError):
                    errors.append(result)
                    continue
                extra_index.append(i)
                extra_numeric.append(result[0])
                extra_categorical.append(result[1])
                extra_ids.append(result[2])
            if extra_index:
                index = np.concatenate([index, np.asarray(extra_index, dtype=np.int64)])
                numeric = np.concatenate(
                    [numeric, np.asarray(extra_numeric, dtype=np.float64).reshape(-1, k)]
                )
                more = np.empty((len(extra_index), m), dtype=object)
                for r, values in enumerate(extra_categorical):
                    more[r, :] = values
                categorical = np.concatenate([categorical, more])
                if ids is not None:
                    more_ids = np.empty(len(extra_ids), dtype=object)
                    more_ids[:] = extra_ids
                    ids = np.concatenate([ids, more_ids])
                order = np.argsort(index, kind="stable")
                index, numeric, categorical = index[order], numeric[order], categorical[order]
                ids = None if ids is None else ids[order]

        id_list: Sequence[Any] | None = None
        if texts is not None:
            id_list = ArrowTexts(texts)
        elif self.schema.id_column is not None:
            id_list = [None] * len(index) if ids is None else ids.tolist()
        batch = Batch(
            (index + first_row).astype(np.int64, copy=False),
            numeric.astype(np.float32, copy=False),
            categorical,
            id_list,
        )
        return batch, errors


class _ChunkWorkers:
    """Decodes up to ``DECODE_WORKERS`` chunks at once and hands them back in file order.

    Used where pyarrow parses chunks: its parser releases the GIL, so two chunks decode on two
    cores while this thread splits the next lines off the stream. Holds at most that many
    chunks beyond the one being read (memory stays bounded).
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or DECODE_WORKERS
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="skyscore-parse")
        self._pending: deque[Future[Chunk]] = deque()

    def submit(
        self, decode: Callable[[_Records, int], Chunk], records: _Records, first_row: int
    ) -> Iterator[Chunk]:
        """Start one chunk; yield those finished that must go first to keep the queue short."""
        self._pending.append(self._pool.submit(decode, records, first_row))
        while len(self._pending) > self.workers:
            yield from self._take()

    def drain(self) -> Iterator[Chunk]:
        """The remaining chunks, in order."""
        try:
            while self._pending:
                yield from self._take()
        finally:
            self.close()

    def _take(self) -> Iterator[Chunk]:
        batch, errors = self._pending.popleft().result()
        if len(batch) or errors:
            yield batch, errors

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __del__(self) -> None:
        self._pool.shutdown(wait=False)


class CsvFormat(FileFormat):
    """Comma-separated values with a header row."""

    name = "csv"
    label = "CSV"
    extensions = (".csv",)

    def __init__(self, *, block_size: int | None = None) -> None:
        self.block_size = block_size

    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows; raises ``InvalidInput`` for a bad header."""
        kwargs = {} if self.block_size is None else {"block_size": self.block_size}
        chunks = iter_counted_line_chunks(source, chunk_rows, extra_first=1, **kwargs)
        layout: CsvLayout | None = None
        next_row = 1
        carry: list[str] = []  # lines of a quoted record still open at the end of a chunk
        carry_bad = False
        first = True
        final = False
        workers: _ChunkWorkers | None = None
        try:
            while not final:
                data, line_count = next(chunks, (None, 0))
                if data is None:
                    if not carry:
                        break
                    final, data = True, b""
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
                if first:
                    data = data.removeprefix(_BOM)
                    first = False
                if carry or b'"' in data:
                    text, bad = _decode_text(data)
                    lines = text.split("\n")
                    records, carry = _join_quoted(
                        carry + lines if carry else lines, final=final, bad_utf8=bad or carry_bad
                    )
                    carry_bad = (bad or carry_bad) and bool(carry)
                    records.drop_blank()
                else:
                    # blank lines are dropped when lines are needed
                    records = _Records(data=data, count=line_count)
                if layout is None:
                    records.drop_leading_blank()
                    if not records.count:
                        continue
                    if 0 in records.unterminated:
                        raise InvalidInput("the CSV header has an unterminated quoted field")
                    layout = CsvLayout(schema, parse_header(records.drop_first()))
                if not records.count:
                    continue
                if workers is None:
                    workers = _ChunkWorkers() if _pyarrow() is not None else None
                if workers is None:
                    chunk = layout.decode_records(records, next_row)
                    if len(chunk[0]) or chunk[1]:
                        yield chunk
                else:
                    yield from workers.submit(layout.decode_records, records, next_row)
                next_row += records.count
            if workers is not None:
                yield from workers.drain()
        finally:
            if workers is not None:
                workers.close()  # the consumer may stop early
        if layout is None:
            raise InvalidInput("the CSV file is empty: it has no header row")

    def encoder_type(self) -> type[CsvEncoder]:
        """Writes CSV."""
        return CsvEncoder

    def sniff(self, head: bytes) -> str | None:
        """Reject JSON-looking text (binary content is checked for every text format)."""
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        if start in (b"{", b"["):
            return "it starts with '" + start.decode() + "', like JSON"
        return None


def _csv_ids(ids: Sequence[Any] | None, n: int) -> list[str]:
    if ids is None:
        return [""] * n
    texts = [v if isinstance(v, str) else ("" if v is None else str(v)) for v in ids]
    if _CSV_SPECIAL.search("".join(texts)) is None:
        return texts
    return [csv_field(t) for t in texts]


# ------------------------------------------------------------------------- probability text
SIGNIFICANT_DIGITS = 9  # always enough to read a float32 back exactly
_EXPONENT = re.compile(r"^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$")


def significant_text(value: float) -> str:
    """``value`` to 9 significant digits, written the way Arrow's CSV writer writes numbers.

    That is the shortest decimal of the 9-digit rounding, positional from 1e-6 up to 1e10 and
    with a bare exponent outside (``1.5e-7``, ``2e+10``). It is the one float text both CSV
    encoders produce, so output bytes do not depend on whether pyarrow is installed.
    """
    text = f"{value:.9g}"
    found = _EXPONENT.match(text)
    if found is None:
        return text
    sign, head, tail = found.group(1), found.group(2), found.group(3) or ""
    exponent = int(found.group(4))
    if exponent < -6 or exponent >= 10:
        return f"{sign}{head}{'.' + tail if tail else ''}e{exponent:+d}"
    digits = head + tail
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole, fraction = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
    return f"{sign}{whole}.{fraction}" if fraction else sign + whole


def round_significant(values: np.ndarray) -> np.ndarray:
    """float64 values whose shortest text is :func:`significant_text` of ``values``.

    Vectorised: the mantissa ``m = rint(v * 10**k)`` and ``m / 10**k`` are exact or correctly
    rounded while ``10**k`` is an exact double (|k| <= 22) and no product lands near a tie; the
    few values outside that (near-ties, extremes, non-finite) are rounded by ``%.9g`` itself.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    out = v.copy()  # zeros (and their sign) stay as they are
    magnitude = np.abs(v)
    usable = np.isfinite(v) & (magnitude > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.where(usable, magnitude, 1.0)))
        places = (SIGNIFICANT_DIGITS - 1) - exponent
        usable &= np.abs(places) <= 22
        power = 10.0 ** np.abs(np.where(usable, places, 0.0))
        scaled = np.where(places >= 0, v * power, v / power)
        mantissa = np.rint(scaled)
        exact = (
            usable
            & (np.abs(np.abs(scaled - mantissa) - 0.5) > 1e-6)
            & (np.abs(mantissa) >= 10.0 ** (SIGNIFICANT_DIGITS - 1))
            & (np.abs(mantissa) < 10.0**SIGNIFICANT_DIGITS)
        )
        out[exact] = np.where(places >= 0, mantissa / power, mantissa * power)[exact]
    rest = np.flatnonzero(~exact & (v != 0))
    if len(rest):
        out[rest] = [float(f"{x:.9g}") for x in v[rest].tolist()]
    return out.reshape(np.shape(values))


def significant_texts(values: np.ndarray) -> list[str]:
    """:func:`significant_text` of every value (flattened), in bulk: ~10x faster.

    msgspec writes the shortest text of each :func:`round_significant` value in C, which is
    Arrow's text except for whole numbers (``1.0``: the ``.0`` is cut), 1e-6 <= |x| < 1e-5
    (msgspec switches to an exponent sooner), |x| >= 1e10, float64 subnormals (which nine
    digits do not round-trip) and non-finite values; the last four are rare and written one
    by one.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not len(flat):
        return []
    rounded = round_significant(flat)
    texts = msgspec.json.encode(rounded.tolist()).decode()[1:-1].split(",")
    magnitude = np.abs(rounded)
    with np.errstate(invalid="ignore"):
        odd = ~np.isfinite(rounded) | ((magnitude >= 1e-6) & (magnitude < 1e-5))
        odd |= (magnitude >= 1e10) | ((magnitude < 1e-300) & (magnitude > 0))  # subnormal
        whole = ~odd & (rounded == np.trunc(rounded))
    for i in np.flatnonzero(whole).tolist():
        texts[i] = texts[i].removesuffix(".0")
    for i in np.flatnonzero(odd).tolist():
        texts[i] = significant_text(float(flat[i]))
    return texts


def _arrow_numbers(pa: Any, values: np.ndarray, kind: Any) -> Any:
    """A numpy vector as an Arrow array over the same memory (no conversion, no copy)."""
    array = np.ascontiguousarray(values, dtype=kind.to_pandas_dtype())
    return pa.Array.from_buffers(kind, len(array), [None, pa.py_buffer(array)])


def _arrow_strings(pa: Any, texts: Sequence[Any]) -> Any:
    """Texts (``None`` as empty) as an Arrow string array, or ``None`` if one is not a str.

    Built from buffers: ``pyarrow.array`` on a list would import pandas where installed,
    ~0.5 s and tens of MB on the first chunk of a process.
    """
    try:
        encoded = [b"" if t is None else t.encode() for t in texts]
    except (AttributeError, UnicodeEncodeError):
        return None
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_string(),
        len(encoded),
        [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
    )


class CsvEncoder(Encoder):
    """``row[,<id>],label,probability_<class>...``; probabilities to 9 significant digits.

    Nine significant digits always read back to the same float32 (:func:`significant_text`).
    Where pyarrow is installed a chunk is written by Arrow's C++ CSV writer, off the GIL, from
    :func:`round_significant` values; otherwise (or when an id needs quoting) rows are
    formatted with one ``%``-template per row over column lists. Both give the same bytes.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> None:
        super().__init__(sink, id_column=id_column, classes=classes, class_names=class_names)
        header = ["row", *([id_column] if id_column is not None else []), "label"]
        header += [f"probability_{name}" for name in self.class_names]
        self._header = (",".join(csv_field(h) for h in header) + "\n").encode()
        label_texts = [csv_field(str(c)) for c in self.classes]
        self._labels = np.array(label_texts, dtype=object)
        self._template = (
            "%d" + (",%s" if id_column is not None else "") + ",%s" * (1 + len(self.classes))
        )
        self._arrow = _pyarrow()
        self._label_dictionary = (
            None if self._arrow is None else _arrow_strings(self._arrow[0], label_texts)
        )
        if self._arrow is not None and any(
            t != str(c) for t, c in zip(label_texts, self.classes, strict=True)
        ):
            self._arrow = None  # a label needs quoting: Arrow would quote every string
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._emit(self._header)
            self._started = True

    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        self._start()
        n = len(batch)
        if n == 0:
            return
        if self._arrow is not None:
            data = self._write_arrow(batch, probabilities, labels)
            if data is not None:
                self._emit(data)
                return
        columns: list[list[Any]] = [batch.rows.tolist()]
        if self.id_column is not None:
            columns.append(_csv_ids(batch.ids, n))
        columns.append(self._labels[labels].tolist())
        texts = significant_texts(np.asarray(probabilities).T)
        columns.extend(texts[j : j + n] for j in range(0, len(texts), n))
        text = "\n".join(map(self._template.__mod__, zip(*columns, strict=True)))
        self._emit((text + "\n").encode())

    def _write_arrow(
        self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray
    ) -> bytes | None:
        """The chunk as CSV bytes from Arrow's writer, or ``None`` if an id needs quoting."""
        assert self._arrow is not None
        pa, pacsv = self._arrow
        columns: dict[str, Any] = {"row": _arrow_numbers(pa, batch.rows, pa.int64())}
        if self.id_column is not None:
            if isinstance(batch.ids, ArrowTexts):
                ids = batch.ids.array
            else:
                ids = _arrow_strings(
                    pa, batch.ids if batch.ids is not None else [None] * len(batch)
                )
            if ids is None:
                return None  # not all text: str() of other types is left to the Python path
            columns["id"] = ids
        columns["label"] = pa.DictionaryArray.from_arrays(
            _arrow_numbers(pa, labels, pa.int32()), self._label_dictionary
        )
        rounded = round_significant(np.asarray(probabilities))
        for j in range(rounded.shape[1]):
            columns[f"p{j}"] = _arrow_numbers(pa, rounded[:, j], pa.float64())
        sink = pa.BufferOutputStream()
        try:
            pacsv.write_csv(
                pa.table(columns),
                sink,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None  # an id holds a comma, quote or newline
        data: bytes = sink.getvalue().to_pybytes()
        return data

    def _close(self) -> None:
        self._start()


FORMAT = CsvFormat()
