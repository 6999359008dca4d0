"""Confidence intervals the notebooks report."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from course_lib.stats import bootstrap_ci, t_interval

pytestmark = pytest.mark.unit


def test_t_interval_matches_scipy():
    values = [0.71, 0.78, 0.74, 0.80]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)


def test_t_interval_of_one_value_is_that_point_and_of_none_is_an_error():
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        t_interval([])


def test_t_interval_is_clipped_to_the_bounds_a_quantity_cannot_leave():
    # Two seeds: df = 1, so the unclipped interval of an accuracy runs far past 0 and 1.
    mean, low, high = t_interval([0.6, 0.95])
    assert low < 0 and high > 1
    assert t_interval([0.6, 0.95], bounds=(0.0, 1.0)) == (mean, 0.0, 1.0)


def test_bootstrap_ci_brackets_the_mean_with_the_normal_width():
    flips = (np.random.default_rng(0).random(400) < 0.8).astype(float)
    estimate, low, high = bootstrap_ci(flips, n_resamples=2000)
    assert estimate == pytest.approx(flips.mean()) and low < estimate < high
    normal_width = 2 * 1.96 * flips.std() / np.sqrt(len(flips))
    assert high - low == pytest.approx(normal_width, rel=0.15)
    assert bootstrap_ci(flips, n_resamples=2000) == (estimate, low, high)  # seeded
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
