"""Active selection of the next pairs to label."""
from __future__ import annotations

import numpy as np
import pytest

from course_lib.labeling import select_next

pytestmark = pytest.mark.unit


def pool(n: int) -> list[dict]:
    return [{"id": f"p{i}"} for i in range(n)]


def test_uncertainty_picks_the_pairs_the_ensemble_disagrees_on():
    # 3 models x 6 pairs: models agree on pairs 0, 1, 3, 5; they split on 2 (strongly) and 4 (mildly)
    scores = np.array(
        [
            [3.0, -2.0, 4.0, 1.0, 0.5, -3.0],
            [3.1, -2.2, -4.0, 1.1, -0.5, -3.0],
            [2.9, -1.9, 3.5, 0.9, 0.4, -3.1],
        ]
    )
    assert select_next(pool(6), 2, "uncertainty", scores) == [2, 4]


def test_margin_picks_the_pairs_closest_to_the_decision_boundary():
    scores = np.array([[2.0, -0.1, 0.05, -3.0, 0.7]])
    assert select_next(pool(5), 3, "margin", scores) == [2, 1, 4]


def test_margin_averages_an_ensemble():
    scores = np.array([[1.0, 2.0, -1.0], [-1.0, 2.0, -1.2]])  # means 0.0, 2.0, -1.1
    assert select_next(pool(3), 1, "margin", scores) == [0]


def test_labeled_pairs_are_excluded_and_k_is_capped_by_the_pool():
    scores = np.array([[0.0, 0.1, 0.2, 5.0]])
    assert select_next(pool(4), 2, "margin", scores, exclude={"p0"}) == [1, 2]
    assert sorted(select_next(pool(4), 10, "random", exclude=["p1", "p3"])) == [0, 2]
    assert select_next(pool(4), 0, "random") == []


def test_random_is_reproducible_per_seed_and_covers_the_pool():
    pairs = pool(50)
    first = select_next(pairs, 50, "random", seed=1)
    assert sorted(first) == list(range(50))
    assert select_next(pairs, 10, "random", seed=1) == first[:10]
    assert select_next(pairs, 10, "random", seed=2) != first[:10]


def test_equal_priorities_are_broken_by_the_seed_not_the_pool_order():
    scores = np.zeros((1, 30))
    picks = {tuple(select_next(pool(30), 5, "margin", scores, seed=seed)) for seed in range(5)}
    assert len(picks) > 1
    assert select_next(pool(30), 5, "margin", scores, seed=3) == select_next(pool(30), 5, "margin", scores, seed=3)


def test_uncertainty_sampling_finds_the_unknown_region_faster_than_random():
    """Models disagree only on 10% of a pool; uncertainty finds them all with 10% of the labels."""
    rng = np.random.default_rng(0)
    n_pairs, contested = 200, np.arange(0, 200, 10)
    scores = np.tile(rng.normal(3.0, 0.2, n_pairs), (5, 1))  # (5 models, 200 pairs): all agree ...
    scores[:, contested] = rng.normal(0.0, 3.0, (5, len(contested)))  # ... except on these
    picked = select_next(pool(n_pairs), len(contested), "uncertainty", scores)
    assert set(picked) == set(contested.tolist())
    random_hits = [len(set(select_next(pool(n_pairs), 20, "random", seed=s)) & set(contested)) for s in range(20)]
    assert np.mean(random_hits) < 5


@pytest.mark.parametrize(
    "strategy, scores, message",
    [
        ("entropy", None, "strategy is 'entropy'"),
        ("margin", None, "needs scores"),
        ("margin", np.zeros((1, 3)), r"shape \(1, 3\); expected \(n_models, 4\)"),
        ("margin", np.zeros(4), r"shape \(4,\)"),
        ("uncertainty", np.zeros((1, 4)), "at least 2 models"),
        ("margin", np.array([[0.0, np.nan, 1.0, 2.0]]), "NaN"),
    ],
)
def test_bad_requests_say_what_was_expected(strategy, scores, message):
    with pytest.raises(ValueError, match=message):
        select_next(pool(4), 2, strategy, scores)


def test_negative_k_is_rejected():
    with pytest.raises(ValueError, match="k is -1"):
        select_next(pool(4), -1, "random")
