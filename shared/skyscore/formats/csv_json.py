"""The msgspec CSV path (no pyarrow needed): numpy finds fields, msgspec parses them as JSON.

For quote-free, single-line records: field boundaries are found with numpy, the numeric fields
go to msgspec as one JSON array of numbers (empty fields as ``null``) and the text fields as
one JSON array of strings; about 1.6x faster than ``loadtxt``. This is the fast path of the
function packages (the Lambda zip), where pyarrow does not fit.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import numpy as np

from skyscore.formats.csv_records import (
    BlankLines,
    Columns,
    Simple,
    empty_points,
    fitting_rows,
    insert_at,
)

_AT_INDEX = re.compile(r"at `\$\[(\d+)\]`")  # where msgspec failed: element index...
_AT_BYTE = re.compile(r"\(byte (\d+)\)")  # ... or byte offset
JSON_NUMBERS = msgspec.json.Decoder(list[float | None])
JSON_STRINGS = msgspec.json.Decoder(list[str])


def decode_rows(
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


class JsonPlan:
    """How :meth:`parse` reads one file's columns (planned once per file)."""

    def __init__(self, columns: Columns) -> None:
        """Group columns: runs of adjacent numeric columns, and the string columns."""
        self.columns = columns
        self.numeric_idx = columns.numeric_idx
        self.categorical_idx = columns.categorical_idx
        self.id_idx = columns.id_idx
        self.n_fields = columns.n_fields
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

    def parse(self, data: bytes, n: int) -> Simple | None:
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
            raise BlankLines  # not rows: the caller drops them and asks again
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
                points = empty_points(body, lines=False)
                if len(points):
                    before = np.searchsorted(points, raw_offsets, side="left")
                    fills = np.diff(before)
                    offsets += 4 * before
                    pieces = [insert_at(body, points, b"null")]
            pieces[0] = b"[" + pieces[0]
            pieces[-1] += b"]"
            buf = bytearray(b",").join(pieces)
            offsets += 1
            offsets[-1] = len(buf)
            segments = decode_rows(JSON_NUMBERS, buf, offsets, 1, len(columns), bad)
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
            segments = decode_rows(JSON_STRINGS, buf, offsets, 2, run, bad)
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
