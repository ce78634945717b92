"""The exact CSV reader: one record at a time with the stdlib ``csv`` module.

Rows the fast paths do not take whole, or whose values need a closer look (non-finite, out of
float32 range, quoted newlines, invalid UTF-8), are read here: it decides exactly and names the
bad column. It is also the reference the fast paths are tested against.
"""

from __future__ import annotations

import csv as stdlib_csv
import math
from typing import Any

from skyscore.formats.base import number_problem, parse_number, shown
from skyscore.formats.csv_records import SURROGATE, Columns
from skyscore.model.schema import RowError


class ExactReader:
    """Reads single records of one file's columns exactly."""

    def __init__(self, columns: Columns) -> None:
        self.schema = columns.schema
        self.n_fields = columns.n_fields
        self.numeric_idx = columns.numeric_idx
        self.categorical_idx = columns.categorical_idx
        self.id_idx = columns.id_idx

    def parse_record(self, record: str, row: int) -> tuple[list[float], list[str], Any] | RowError:
        """One record, exactly: its values, or why it is rejected."""
        if SURROGATE.search(record):
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
