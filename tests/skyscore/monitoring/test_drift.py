"""Drift statistics, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyscore.model.card import NumericBaseline
from skyscore.model.predictor import Predictor
from skyscore.model.schema import Batch
from skyscore.monitoring.drift import (
    PSI_EPSILON,
    SLICE_ROWS,
    DriftAccumulator,
    RollingDrift,
    _float32_down,
    _float32_up,
    _NumericBlock,
    level,
    psi,
    summary,
)


def test_psi_hand_worked_table() -> None:
    """Three bins, expected (0.25, 0.25, 0.5), actual (0.5, 0.25, 0.25):
    (0.5-0.25)·ln(0.5/0.25) + 0 + (0.25-0.5)·ln(0.25/0.5) = 0.5·ln 2 = 0.34657..."""
    assert psi([0.25, 0.25, 0.5], [50, 25, 25]) == pytest.approx(0.5 * math.log(2), rel=1e-9)
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-12)


def test_psi_empty_bin_is_smoothed_not_infinite() -> None:
    value = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    assert math.isfinite(value) and value > 0.2
    # by hand with the same smoothing: shares floored at epsilon and renormalised
    e = np.array([0.5, 0.5, PSI_EPSILON]) / (1 + PSI_EPSILON)
    a = np.array([0.4, 0.4, 0.2])
    assert value == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-9)


def test_psi_matches_scipy_on_a_larger_table() -> None:
    """PSI equals KL(a||e) + KL(e||a); scipy.stats.entropy computes KL independently."""
    from scipy.stats import entropy

    rng = np.random.default_rng(3)
    expected = rng.dirichlet(np.full(40, 20.0))
    actual = rng.dirichlet(np.full(40, 20.0))
    assert psi(expected, actual) == pytest.approx(
        entropy(actual, expected) + entropy(expected, actual), rel=1e-6
    )


def test_levels() -> None:
    assert level(0.05) == "ok" and level(0.15) == "warn" and level(0.3) == "drift"


def _batch(predictor: Predictor, rows: int, shift: float, seed: int) -> Batch:
    from skyscore.training.datasets import synthetic_arrays

    numeric, categorical, _ = synthetic_arrays(rows, seed=seed, shift=shift)
    return Batch(np.arange(1, rows + 1), numeric, categorical.astype(object), None)


def test_same_distribution_is_quiet_and_shift_raises_drift(hgb_predictor: Predictor) -> None:
    quiet = DriftAccumulator(hgb_predictor.card)
    batch = _batch(hgb_predictor, 4000, 0.0, 123)
    quiet.observe(batch, hgb_predictor.predict_proba(batch))
    result = quiet.result()
    assert result["rows"] == 4000
    assert result["max_psi"] < 0.1 and result["status"] == "ok"
    assert result["out_of_range_rate"] < 0.01

    shifted = DriftAccumulator(hgb_predictor.card)
    for seed in (1, 2):  # two chunks accumulate like one batch
        chunk = _batch(hgb_predictor, 2000, 1.5, seed)
        shifted.observe(chunk, hgb_predictor.predict_proba(chunk))
    drift = shifted.result()
    assert drift["rows"] == 4000
    assert drift["max_psi"] > 0.25 and drift["status"] == "drift"
    assert drift["max_psi_feature"] in hgb_predictor.card.numeric_features
    assert set(drift["features"]) == {f.name for f in hgb_predictor.card.features}
    assert "drift drift" in summary(drift)


def test_numeric_psi_matches_an_independent_histogram(hgb_predictor: Predictor) -> None:
    card = hgb_predictor.card
    batch = _batch(hgb_predictor, 3000, 0.7, 9)
    accumulator = DriftAccumulator(card)
    accumulator.observe(batch, hgb_predictor.predict_proba(batch))
    feature = card.features[0]
    baseline = feature.baseline
    assert baseline is not None and hasattr(baseline, "edges")
    edges = [-np.inf, *baseline.edges, np.inf]
    counts, _ = np.histogram(batch.numeric[:, 0].astype(np.float64), bins=edges)
    # np.histogram's bins are [a, b) like searchsorted(side="right") except the last: close enough
    # for continuous data, and the PSI must agree to many digits.
    expected = psi(baseline.frequencies, counts)
    assert accumulator.result()["features"][feature.name]["psi"] == pytest.approx(
        expected, rel=1e-9
    )


def test_categorical_unseen_and_missing(hgb_predictor: Predictor) -> None:
    card = hgb_predictor.card
    batch = _batch(hgb_predictor, 1000, 0.0, 5)
    j = card.categorical_features.index("region")
    batch.categorical[:100, j] = "atlantis"  # unseen in training
    batch.categorical[100:150, j] = ""  # missing
    accumulator = DriftAccumulator(card)
    accumulator.observe(batch, hgb_predictor.predict_proba(batch))
    region = accumulator.result()["features"]["region"]
    assert region["missing_rate"] == pytest.approx(0.05)
    assert region["out_of_range_rate"] == pytest.approx(100 / 950)
    assert region["counts"]["__unseen__"] == 100


def test_rolling_window_forgets_old_batches(hgb_predictor: Predictor) -> None:
    rolling = RollingDrift(hgb_predictor.card, window=3)
    for seed in range(3):
        chunk = _batch(hgb_predictor, 500, 2.0, seed)
        rolling.observe(chunk, hgb_predictor.predict_proba(chunk))
    assert rolling.result()["status"] == "drift"
    for seed in range(3, 6):
        chunk = _batch(hgb_predictor, 500, 0.0, seed)
        rolling.observe(chunk, hgb_predictor.predict_proba(chunk))
    result = rolling.result()
    assert result["rows"] == 1500 and result["max_psi"] < 0.1


@pytest.mark.parametrize(
    ("n", "dtype"),
    [(7, np.float32), (500, np.float32), (SLICE_ROWS + 999, np.float32), (500, np.float64)],
)
def test_vectorised_counts_match_searchsorted_per_feature(
    hgb_predictor: Predictor, n: int, dtype: type
) -> None:
    """All numeric features are counted at once; each must equal its own float64
    searchsorted, with values on bin edges, one float32 step either side of them, beyond the
    training range, and missing, in one slice and in several."""
    card = hgb_predictor.card
    rng = np.random.default_rng(8)
    numeric_features = [f for f in card.features if f.kind == "numeric"]
    values = rng.normal(0, 3, (n, len(numeric_features))).astype(np.float32)
    for j, feature in enumerate(numeric_features):
        edges = np.asarray(feature.baseline.edges, dtype=np.float32)  # type: ignore[union-attr]
        near = np.concatenate(
            [
                edges,
                np.nextafter(edges, np.float32(-np.inf)),
                np.nextafter(edges, np.float32(np.inf)),
            ]
        )
        values[: min(len(near), n), j] = near[:n]  # on the edges, and just either side
    values[rng.random(values.shape) < 0.1] = np.nan
    values = values.astype(dtype)
    batch = Batch(
        np.arange(1, n + 1),
        values,
        np.full((n, len(card.categorical_features)), "a", dtype=object),
        None,
    )
    accumulator = DriftAccumulator(card)
    accumulator.observe(batch, np.full((n, len(card.classes)), 0.5, dtype=np.float32))
    for j, name, counts in accumulator.numeric:
        base = counts.baseline
        column = values[:, j].astype(np.float64)
        present = column[~np.isnan(column)]
        bins = np.searchsorted(np.asarray(base.edges), present, side="right")
        assert counts.counts.tolist() == np.bincount(bins, minlength=len(base.frequencies)).tolist()
        assert counts.missing == int(np.isnan(column).sum()), name
        outside = int(((present < base.min) | (present > base.max)).sum())
        assert (counts.out_of_range, counts.total) == (outside, n), name


@settings(max_examples=300, deadline=None)
@given(
    bound=st.floats(allow_nan=False, width=64),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),
)
def test_float32_bounds_decide_as_float64(bound: float, value: float) -> None:
    """The float32 copies of bin edges and range bounds never change a comparison."""
    x = np.float32(value)
    up, down = _float32_up(np.array([bound]))[0], _float32_down(np.array([bound]))[0]
    assert (bound <= float(x)) == bool(up <= x)
    assert (float(x) <= bound) == bool(x <= down)


def test_float32_bounds_of_extremes() -> None:
    huge = np.array([1e39, -1e39, np.inf, -np.inf, 0.1])
    assert _float32_up(huge).tolist()[:4] == [
        np.inf,
        -float(np.finfo(np.float32).max),
        np.inf,
        -np.inf,
    ]
    assert _float32_down(huge).tolist()[:4] == [
        float(np.finfo(np.float32).max),
        -np.inf,
        np.inf,
        -np.inf,
    ]
    assert float(_float32_up(huge)[4]) >= 0.1 > float(_float32_down(huge)[4])


def test_categorical_counts_take_non_text_values_as_their_text(hgb_predictor: Predictor) -> None:
    accumulator = DriftAccumulator(hgb_predictor.card)
    _, name, counts = accumulator.categorical[0]
    known = next(iter(counts.index))
    counts.add(np.array([known, known, "", 7, None], dtype=object))
    assert (counts.total, counts.missing, int(counts.counts[-1])) == (5, 1, 2)
    assert int(counts.counts[counts.index[known]]) == 2, name


def _broadcast_counts(
    block: _NumericBlock, numeric: np.ndarray
) -> tuple[list[list[int]], list[int], list[int], list[int]]:
    """The counts as the earlier implementation found them (every value against every edge):
    the reference the sorted counting must reproduce exactly."""
    if numeric.dtype == np.float32:
        edges, low, high = block.edges32, block.low32, block.high32
    else:
        edges, low, high = block.edges, block.low, block.high
    values = np.take(numeric.T, block.columns, axis=0)
    n = values.shape[1]
    missing = np.count_nonzero(np.isnan(values), axis=1)
    outside = np.count_nonzero((values < low[:, None]) | (values > high[:, None]), axis=1)
    reached = np.count_nonzero(values[:, None, :] >= edges[:, :, None], axis=2)
    cumulative = np.concatenate(
        [(n - missing)[:, None], reached, np.zeros((len(reached), 1), np.int64)], axis=1
    )
    counts = cumulative[:, :-1] - cumulative[:, 1:]
    return counts.tolist(), missing.tolist(), outside.tolist(), [n] * len(block.baselines)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 300, SLICE_ROWS + 5])
def test_sorted_counts_equal_broadcast_counts(dtype: type, n: int) -> None:
    """Sorting each feature and reading positions gives exactly the broadcast comparison's
    counts: features with different numbers of bins (padding edges), repeated edges' values,
    values on, just beside and between edges, ±inf, NaN, beyond the training range, and
    features whose columns are not in order."""
    rng = np.random.default_rng(11)
    k = 40
    baselines = []
    for j in range(k):
        drawn = np.unique(rng.normal(0, 2, int(rng.integers(0, 10))).astype(np.float32))
        edges = drawn.astype(np.float64) + (1e-9 if j % 3 == 0 else 0.0)  # not float32 exact
        baselines.append(
            NumericBaseline(
                edges=edges.tolist(),
                frequencies=[1 / (len(edges) + 1)] * (len(edges) + 1),
                missing_rate=0.0,
                min=float(edges[0]) - 1 if len(edges) else -1.0,
                max=float(edges[-1]) + 1 if len(edges) else 1.0,
                mean=0.0,
                std=1.0,
            )
        )
    columns = rng.permutation(k + 5)[:k].tolist()
    numeric: np.ndarray = rng.normal(0, 3, (n, k + 5))
    for j, base in zip(columns, baselines, strict=True):
        edges32 = np.asarray(base.edges, dtype=np.float32)
        special = np.array(
            [
                *base.edges,
                *np.nextafter(edges32, np.float32(-np.inf)),
                *np.nextafter(edges32, np.float32(np.inf)),
                base.min,
                base.max,
                np.inf,
                -np.inf,
                np.nan,
            ]
        )
        take = rng.choice(special, n)
        chosen = rng.random(n) < 0.5
        numeric[chosen, j] = take[chosen]
    numeric = numeric.astype(dtype)
    block = _NumericBlock(columns, baselines)
    block.add(numeric)
    expected = _broadcast_counts(block, numeric)
    assert block.counts.tolist() == expected[0]
    assert (block.missing.tolist(), block.out_of_range.tolist()) == expected[1:3]
    assert block.total.tolist() == expected[3]
