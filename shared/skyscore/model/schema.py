"""Input schema: turning records into the two model tensors, and naming every bad field.

One implementation serves HTTP instances, JSON Lines/JSON files and queue messages, so every
transport accepts and rejects exactly the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from skyscore.errors import InvalidInput

if TYPE_CHECKING:
    from skyscore.model.card import ModelCard

FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING_CATEGORY = ""  # what a missing categorical value becomes; the ONNX imputer fills it


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected row: where it was, which column, and why (a line of the error report)."""

    row: int
    column: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines record of the error report."""
        return {"row": self.row, "column": self.column, "reason": self.reason}


@dataclass(slots=True)
class Batch:
    """Model-ready rows: ``numeric`` float32 (n, k) and ``categorical`` object (n, m) of ``str``.

    ``rows`` holds each row's 1-based position in its source (file data row, or instance index
    + 1), so outputs and error reports can be joined back to the input.
    """

    rows: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray
    ids: Sequence[Any] | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, mask: np.ndarray) -> Batch:
        """The rows where ``mask`` is true."""
        ids = (
            None
            if self.ids is None
            else [i for i, keep in zip(self.ids, mask, strict=True) if keep]
        )
        return Batch(self.rows[mask], self.numeric[mask], self.categorical[mask], ids)


class InputSchema:
    """The columns a model takes, in tensor order, plus the optional id column."""

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str],
        *,
        id_column: str | None = None,
        strict: bool = False,
    ) -> None:
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.id_column = id_column
        self.strict = strict
        self.columns = self.numeric + self.categorical
        self.known = frozenset(self.columns) | ({id_column} if id_column else frozenset())

    @classmethod
    def from_card(
        cls, card: ModelCard, *, strict: bool = False, id_column: str | None = None
    ) -> InputSchema:
        """The schema a card promises; ``id_column`` overrides the card's default."""
        return cls(
            card.numeric_features,
            card.categorical_features,
            id_column=id_column if id_column is not None else card.id_column,
            strict=strict,
        )

    def empty_batch(self) -> Batch:
        """A batch of zero rows with the right tensor shapes."""
        return Batch(
            np.empty(0, dtype=np.int64),
            np.empty((0, len(self.numeric)), dtype=np.float32),
            np.empty((0, len(self.categorical)), dtype=object),
            [] if self.id_column else None,
        )

    def unknown_columns(self, names: Iterable[str]) -> list[str]:
        """Columns the model does not know (an error only when ``strict``)."""
        return [n for n in names if n not in self.known]

    def missing_columns(self, names: Iterable[str]) -> list[str]:
        """Model columns absent from ``names``."""
        present = set(names)
        return [n for n in self.columns if n not in present]

    def check_columns(self, names: Sequence[str], where: str) -> None:
        """Raise ``InvalidInput`` for a table whose columns (``where``: "the CSV header") lack
        a model column, or, when strict, hold one the model does not know."""
        missing = self.missing_columns(names)
        if missing:
            raise InvalidInput(
                f"{where} has no column {missing[0]!r}"
                + (f" (missing: {', '.join(missing)})" if len(missing) > 1 else ""),
                field=missing[0],
                extra={"missing_columns": missing},
            )
        unknown = self.unknown_columns(names) if self.strict else []
        if unknown:
            raise InvalidInput(
                f"{where} has column {unknown[0]!r}, which the model does not know (strict mode)",
                field=unknown[0],
                extra={"unknown_columns": unknown},
            )

    def check_record(self, record: Any) -> RowError | None:
        """Why one record cannot be scored, or ``None``; row number is filled by the caller."""
        if not isinstance(record, Mapping):
            return RowError(0, None, f"expected a JSON object, got {type(record).__name__}")
        for name in self.numeric:
            if name not in record:
                return RowError(0, name, "missing column")
            reason = numeric_problem(record[name])
            if reason:
                return RowError(0, name, reason)
        for name in self.categorical:
            if name not in record:
                return RowError(0, name, "missing column")
            value = record[name]
            if (
                value is not None
                and not isinstance(value, str)
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                return RowError(0, name, f"expected a string category, got {json_type(value)}")
        if self.strict:
            unknown = self.unknown_columns(record)
            if unknown:
                return RowError(0, unknown[0], "unknown column (strict mode)")
        return None

    def records_to_batch(
        self, records: Sequence[Any], *, first_row: int = 1
    ) -> tuple[Batch, list[RowError]]:
        """Validate and convert records; bad ones become :class:`RowError` and are left out."""
        errors: list[RowError] = []
        good: list[Mapping[str, Any]] = []
        rows: list[int] = []
        for offset, record in enumerate(records):
            problem = self.check_record(record)
            row = first_row + offset
            if problem is not None:
                errors.append(RowError(row, problem.column, problem.reason))
            else:
                good.append(record)
                rows.append(row)
        n = len(good)
        numeric = np.empty((n, len(self.numeric)), dtype=np.float32)
        categorical = np.empty((n, len(self.categorical)), dtype=object)
        nan = math.nan
        for i, record in enumerate(good):
            for j, name in enumerate(self.numeric):
                value = record[name]
                numeric[i, j] = nan if value is None else value
            for j, name in enumerate(self.categorical):
                value = record[name]
                categorical[i, j] = MISSING_CATEGORY if value is None else str(value)
        ids = [record.get(self.id_column) for record in good] if self.id_column else None
        return Batch(np.asarray(rows, dtype=np.int64), numeric, categorical, ids), errors


def numeric_problem(value: Any) -> str | None:
    """Why a JSON value is not a usable numeric feature (``None`` = fine; null means missing)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {json_type(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "non-finite number"
    if abs(value) > FLOAT32_MAX:
        return "number out of float32 range"
    return None


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
