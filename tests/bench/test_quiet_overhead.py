"""The bench's estimator of the handler's overhead in quiet rounds."""

import pytest
from bench.__main__ import quiet_overhead


def test_busy_rounds_are_left_out() -> None:
    # rounds 0 and 2 are quiet (baseline ~20 µs); round 1 is a busy spell where both doubled
    baseline = [[20.0, 20.0, 21.0], [40.0, 41.0, 42.0], [22.0, 22.0, 22.0]]
    ours = [[45.0, 45.0, 46.0], [90.0, 91.0, 92.0], [49.0, 49.0, 49.0]]
    overhead, quiet = quiet_overhead(baseline, ours)
    assert quiet == 2
    assert overhead == pytest.approx((25.0 + 27.0) / 2)


def test_all_quiet_is_the_median_of_every_round() -> None:
    baseline = [[10.0], [11.0], [12.0]]
    ours = [[20.0], [31.0], [52.0]]
    assert quiet_overhead(baseline, ours) == (20.0, 3)
