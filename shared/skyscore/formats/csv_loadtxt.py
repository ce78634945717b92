"""The ``numpy.loadtxt`` CSV path: one C pass per chunk with a structured dtype.

Takes what the msgspec path declines (quoted fields, numbers JSON does not spell, a chunk
whose field boundaries do not line up): one ``loadtxt`` call with one field per CSV column,
cutting around the lines it rejects (:meth:`LoadtxtPlan.isolate`), which then go to the exact
per-row reader. Empty numeric fields are filled with :data:`EMPTY_SENTINEL` first (loadtxt
refuses empty numbers).
"""

from __future__ import annotations

import re

import numpy as np
from numpy.lib.stride_tricks import as_strided

from skyscore.formats.csv_records import Columns, Records, fill_at_empty
from skyscore.model.schema import FLOAT32_MAX, MISSING_CATEGORY

# loadtxt names the failing row in its message ("at row 3"), 0- or 1-based depending on the error
_ROW_HINT = re.compile(r"at row (\d+)")
# Empty fields are filled with this before the loadtxt parse (which refuses empty numbers). It
# is beyond float32, so as a real value it is an error anyway; if it occurs in a chunk's text,
# rows holding it are left to the slow path, which tells an empty field from the literal.
EMPTY_SENTINEL = "-1.2345678e300"
_SENTINEL_VALUE = float(EMPTY_SENTINEL)
_SENTINEL_BYTES = EMPTY_SENTINEL.encode()
MIN_SEGMENT = 64  # below this many lines a failing loadtxt parse goes to the slow path directly
MAX_FAST_FAILURES = 16  # per chunk; past this the chunk is error-dense and the slow path wins


def fill_empty_fields(data: bytes) -> bytes:
    """Write :data:`EMPTY_SENTINEL` into every empty field of quote-free, blank-free lines."""
    return fill_at_empty(data, _SENTINEL_BYTES, lines=True)


class LoadtxtPlan:
    """The structured dtype for one file's columns, and the loadtxt parse built on it."""

    def __init__(self, columns: Columns) -> None:
        self.n_fields = columns.n_fields
        self.numeric_idx = columns.numeric_idx
        self.categorical_idx = columns.categorical_idx
        self.id_idx = columns.id_idx
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

    def fast(
        self, records: Records, fast_lines: list[str], data: bytes | None
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

    def parse(
        self, records: Records, fast_lines: list[str], fast_index: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, list[int]]:
        """``(index, numeric, categorical, ids, good, failed)`` from the loadtxt path."""
        k, m = len(self.numeric_fields), len(self.categorical_fields)
        parsed, failed, filled, literal = self.fast(records, fast_lines, records.data)
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
