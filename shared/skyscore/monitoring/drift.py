"""Drift: how far a scored batch has moved from the training baseline in its model card.

Population stability index (PSI) per feature on the card's bins (numeric: the baseline's decile
edges; categorical: known categories plus one bucket for unseen ones), the same on predicted
classes, plus missing-value and out-of-range rates. Counts accumulate per chunk, so memory stays
bounded whatever the batch size; numpy only (this runs on the inference path).
"""

from __future__ import annotations

import copy
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyscore.model.card import CategoricalBaseline, ModelCard, NumericBaseline
from skyscore.model.schema import MISSING_CATEGORY, Batch

PSI_EPSILON = 1e-4  # share given to empty bins, so PSI stays finite
PSI_WARN = 0.1
PSI_ALARM = 0.25
UNSEEN = "__unseen__"


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over bins, shares smoothed by
    ``PSI_EPSILON`` and renormalised. 0 means identical; above 0.25 is conventionally drift."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.size == 0:
        raise ValueError("psi needs two share vectors of the same, non-zero length")
    if a.sum() <= 0:
        return 0.0
    e = np.maximum(e / max(e.sum(), 1e-12), PSI_EPSILON)
    a = np.maximum(a / a.sum(), PSI_EPSILON)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def level(value: float) -> str:
    """``ok`` below 0.1, ``warn`` below 0.25, else ``drift``."""
    if value >= PSI_ALARM:
        return "drift"
    if value >= PSI_WARN:
        return "warn"
    return "ok"


SLICE_ROWS = 16_384  # rows binned at once: bounds the (features, edges, rows) comparison


def _float32_up(values: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64: for a float32 ``x``, ``edge <= x`` exactly when
    ``_float32_up(edge) <= x``, so bins can be found without widening the values."""
    with np.errstate(over="ignore"):
        narrow = values.astype(np.float32)
    below = narrow.astype(np.float64) < values
    narrow[below] = np.nextafter(narrow[below], np.float32(np.inf))
    return narrow


def _float32_down(values: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 (``x <= bound`` exactly when ``x <= down(bound)``)."""
    return -_float32_up(-values)


class _NumericBlock:
    """Every numeric feature's counts in a few arrays, whatever the number of features.

    Each slice is copied one contiguous row per feature and sorted; on a sorted row a bin's
    count is the distance between the positions of its edges (``searchsorted``), and the
    missing (NaN sorts last) and out-of-range counts are positions too. Measured here on a
    16k-row float32 chunk: 1.6 ms at 30 features and 12 ms at 200, against 2.8 and 20 ms for
    the broadcast comparison of every value with every edge that it replaced (same counts,
    ``test_sorted_counts_equal_broadcast_counts``), and 13 ms at 30 for a ``searchsorted`` of
    the values into each feature's edges. Float32 values (what the decoders produce) are
    compared with float32 copies of the bounds, rounded so that every comparison decides as
    in float64: no float64 copy of the chunk is made.
    """

    def __init__(self, columns: list[int], baselines: list[NumericBaseline]) -> None:
        self.columns = np.asarray(columns, dtype=np.intp)
        self.baselines = baselines
        self.widths = [len(b.frequencies) for b in baselines]
        k, width = len(baselines), max(self.widths, default=1)
        # bin of x = number of edges <= x (``searchsorted(edges, x, side="right")``); padding
        # edges are +inf, never <= a finite value
        self.edges = np.full((k, max(width - 1, 0)), np.inf)
        for j, base in enumerate(baselines):
            if len(base.edges) != self.widths[j] - 1:
                raise ValueError(f"baseline of feature {j} has inconsistent bins")
            self.edges[j, : len(base.edges)] = base.edges
        self.low = np.asarray([b.min for b in baselines], dtype=np.float64)
        self.high = np.asarray([b.max for b in baselines], dtype=np.float64)
        self.edges32 = _float32_up(self.edges)
        self.low32, self.high32 = _float32_up(self.low), _float32_down(self.high)
        self.counts = np.zeros((k, width), dtype=np.int64)
        self.missing = np.zeros(k, dtype=np.int64)
        self.out_of_range = np.zeros(k, dtype=np.int64)
        self.total = np.zeros(k, dtype=np.int64)

    def add(self, numeric: np.ndarray) -> None:
        if not len(self.baselines) or not len(numeric):
            return
        if numeric.dtype == np.float32:
            edges, low, high = self.edges32, self.low32, self.high32
        else:
            numeric = np.asarray(numeric, dtype=np.float64)
            edges, low, high = self.edges, self.low, self.high
        for start in range(0, len(numeric), SLICE_ROWS):
            # one contiguous row per feature (a copy, so it can be sorted in place)
            values = np.take(numeric[start : start + SLICE_ROWS].T, self.columns, axis=0)
            values.sort(axis=1)  # NaN last
            self._count_sorted(values, edges, low, high)

    def _count_sorted(
        self, values: np.ndarray, edges: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> None:
        """Count a slice whose rows (one per feature) are sorted, NaN last.

        On a sorted row every count is a position: values below an edge are
        ``searchsorted(row, edge, "left")`` (NaN sorts above everything, +inf padding edges
        included), so a bin holds the values between its edges' positions.
        """
        n = values.shape[1]
        k, width = self.counts.shape
        # per feature, where each query would go: its edges, then low (values below it are out
        # of range), then NaN (the missing start there)
        left_queries = np.concatenate(
            [edges, low[:, None], np.full((k, 1), np.nan, dtype=edges.dtype)], axis=1
        )
        left = np.empty(left_queries.shape, dtype=np.int64)
        above_high = np.empty(k, dtype=np.int64)
        for j in range(k):
            row = values[j]
            left[j] = np.searchsorted(row, left_queries[j], side="left")
            above_high[j] = n - np.searchsorted(row, high[j], side="right")
        present = left[:, -1]
        missing = n - present
        self.total += n
        self.missing += missing
        self.out_of_range += left[:, -2] + above_high - missing  # NaN is above high too
        # bin i holds the values from edge i - 1 (or the start) up to edge i (or the missing)
        bounds = np.concatenate(
            [np.zeros((k, 1), np.int64), left[:, : width - 1], present[:, None]], axis=1
        )
        self.counts += bounds[:, 1:] - bounds[:, :-1]

    def empty_like(self) -> _NumericBlock:
        """Zero counts over the same (shared, read-only) bins."""
        clone = copy.copy(self)
        clone.counts = np.zeros_like(self.counts)
        clone.missing = np.zeros_like(self.missing)
        clone.out_of_range = np.zeros_like(self.out_of_range)
        clone.total = np.zeros_like(self.total)
        return clone

    def merge(self, other: _NumericBlock, sign: int = 1) -> None:
        self.counts += sign * other.counts
        self.missing += sign * other.missing
        self.out_of_range += sign * other.out_of_range
        self.total += sign * other.total


class _BlockCell:
    """An int attribute of :class:`_NumericCounts` stored in its block's per-feature array."""

    def __init__(self, array: str) -> None:
        self.array = array

    def __get__(self, counts: _NumericCounts, owner: type | None = None) -> int:
        return int(getattr(counts.block, self.array)[counts.row])

    def __set__(self, counts: _NumericCounts, value: int) -> None:
        getattr(counts.block, self.array)[counts.row] = value


class _NumericCounts:
    """One numeric feature's view of a :class:`_NumericBlock`."""

    __slots__ = ("baseline", "block", "row")

    def __init__(self, block: _NumericBlock, row: int) -> None:
        self.block = block
        self.row = row
        self.baseline = block.baselines[row]

    @property
    def counts(self) -> np.ndarray:
        return self.block.counts[self.row, : self.block.widths[self.row]]

    @counts.setter
    def counts(self, value: np.ndarray) -> None:
        self.block.counts[self.row, : self.block.widths[self.row]] = value

    missing = _BlockCell("missing")
    out_of_range = _BlockCell("out_of_range")
    total = _BlockCell("total")

    def result(self) -> dict[str, Any]:
        present = self.total - self.missing
        return {
            "kind": "numeric",
            "psi": psi(self.baseline.frequencies, self.counts) if present else 0.0,
            "missing_rate": self.missing / self.total if self.total else 0.0,
            "baseline_missing_rate": self.baseline.missing_rate,
            "out_of_range_rate": self.out_of_range / present if present else 0.0,
            "counts": self.counts.tolist(),
        }


@dataclass(slots=True)
class _CategoricalCounts:
    baseline: CategoricalBaseline
    index: dict[str, int]
    counts: np.ndarray
    missing: int = 0
    total: int = 0

    def add(self, values: np.ndarray) -> None:
        self.total += values.size
        unseen = len(self.index)
        # a hash count, not a sort: decoded categories are a few str objects repeated
        for value, count in Counter(values.ravel().tolist()).items():
            name = value if isinstance(value, str) else str(value)
            if name == MISSING_CATEGORY:
                self.missing += count
            else:
                self.counts[self.index.get(name, unseen)] += count

    def merge(self, other: _CategoricalCounts, sign: int = 1) -> None:
        self.counts += sign * other.counts
        self.missing += sign * other.missing
        self.total += sign * other.total

    def empty_like(self) -> _CategoricalCounts:
        return _CategoricalCounts(self.baseline, self.index, np.zeros_like(self.counts))

    def result(self) -> dict[str, Any]:
        present = self.total - self.missing
        expected = [*self.baseline.frequencies.values(), 0.0]
        return {
            "kind": "categorical",
            "psi": psi(expected, self.counts) if present else 0.0,
            "missing_rate": self.missing / self.total if self.total else 0.0,
            "baseline_missing_rate": self.baseline.missing_rate,
            # for categories "out of range" means unseen in training
            "out_of_range_rate": int(self.counts[-1]) / present if present else 0.0,
            "counts": dict(zip([*self.index, UNSEEN], self.counts.tolist(), strict=True)),
        }


_Counts = _NumericCounts | _CategoricalCounts


class DriftAccumulator:
    """Scoring observer: feed it every scored chunk, read the batch's ``drift`` object at the end."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.categorical: list[tuple[int, str, _CategoricalCounts]] = []
        numeric = [
            (j, feature.name, feature.baseline)
            for j, feature in enumerate(f for f in card.features if f.kind == "numeric")
            if isinstance(feature.baseline, NumericBaseline)
        ]
        self.numeric_block = _NumericBlock([j for j, _, _ in numeric], [b for _, _, b in numeric])
        self.numeric: list[tuple[int, str, _NumericCounts]] = [
            (j, name, _NumericCounts(self.numeric_block, row))
            for row, (j, name, _) in enumerate(numeric)
        ]
        for j, feature in enumerate(f for f in card.features if f.kind == "categorical"):
            base = feature.baseline
            if isinstance(base, CategoricalBaseline):
                index = {name: i for i, name in enumerate(base.frequencies)}
                counts = np.zeros(len(index) + 1, dtype=np.int64)
                self.categorical.append((j, feature.name, _CategoricalCounts(base, index, counts)))
        classes = card.class_names
        self.class_baseline = (
            [card.prediction_baseline.class_frequencies.get(c, 0.0) for c in classes]
            if card.prediction_baseline
            else None
        )
        self.predicted = np.zeros(len(classes), dtype=np.int64)
        self.rows = 0

    def empty_like(self) -> DriftAccumulator:
        """An empty accumulator for the same card, sharing this one's read-only bins (cheap:
        online drift makes one per flush)."""
        clone = copy.copy(self)
        clone.numeric_block = self.numeric_block.empty_like()
        clone.numeric = [
            (j, name, _NumericCounts(clone.numeric_block, counts.row))
            for j, name, counts in self.numeric
        ]
        clone.categorical = [(j, name, c.empty_like()) for j, name, c in self.categorical]
        clone.predicted = np.zeros_like(self.predicted)
        clone.rows = 0
        return clone

    def observe(self, batch: Batch, probabilities: np.ndarray) -> None:
        """Count one scored chunk."""
        self.rows += len(batch)
        self.numeric_block.add(batch.numeric)
        for j, _, categorical_counts in self.categorical:
            categorical_counts.add(batch.categorical[:, j])
        if len(batch):
            self.predicted += np.bincount(
                probabilities.argmax(axis=1), minlength=self.predicted.size
            )

    def result(self) -> dict[str, Any]:
        """The manifest's ``drift`` object."""
        features = {name: c.result() for _, name, c in self.numeric}
        features.update({name: c.result() for _, name, c in self.categorical})
        prediction_psi = (
            psi(self.class_baseline, self.predicted)
            if self.class_baseline is not None and self.rows
            else 0.0
        )
        worst = max(features, key=lambda n: features[n]["psi"], default=None)
        max_psi = features[worst]["psi"] if worst else 0.0
        return {
            "rows": self.rows,
            "model_version": self.card.version,
            "features": features,
            "prediction_psi": prediction_psi,
            "prediction_counts": dict(
                zip(self.card.class_names, self.predicted.tolist(), strict=True)
            ),
            "max_psi": max_psi,
            "max_psi_feature": worst,
            "missing_rate": _mean(f["missing_rate"] for f in features.values()),
            "out_of_range_rate": _mean(f["out_of_range_rate"] for f in features.values()),
            "status": level(max(max_psi, prediction_psi)),
        }


class RollingDrift:
    """Drift over the last ``window`` scored batches (HTTP requests), for online traffic."""

    def __init__(self, card: ModelCard, window: int = 500) -> None:
        self.card = card
        self.total = DriftAccumulator(card)
        self.window: deque[DriftAccumulator] = deque()
        self.size = window

    def observe(self, batch: Batch, probabilities: np.ndarray) -> None:
        """Add a batch; forget the oldest beyond the window."""
        one = self.total.empty_like()
        one.observe(batch, probabilities)
        self._merge(one, 1)
        self.window.append(one)
        if len(self.window) > self.size:
            self._merge(self.window.popleft(), -1)

    def _merge(self, one: DriftAccumulator, sign: int) -> None:
        self.total.rows += sign * one.rows
        self.total.predicted += sign * one.predicted
        self.total.numeric_block.merge(one.numeric_block, sign)
        for (_, _, cmine), (_, _, ctheirs) in zip(
            self.total.categorical, one.categorical, strict=True
        ):
            cmine.merge(ctheirs, sign)

    def result(self) -> dict[str, Any]:
        """Drift over the window."""
        return self.total.result()


def _mean(values: Any) -> float:
    items = list(values)
    return float(sum(items) / len(items)) if items else 0.0


def summary(drift: Mapping[str, Any]) -> str:
    """One line for logs and the CLI."""
    worst = drift.get("max_psi_feature")
    return (
        f"drift {drift['status']}: max PSI {drift['max_psi']:.3f}"
        + (f" ({worst})" if worst else "")
        + f", prediction PSI {drift['prediction_psi']:.3f}, rows {drift['rows']:,}"
        + ("" if math.isfinite(drift["max_psi"]) else " (non-finite!)")
    )
