"""Statistics the stages and notebooks report with: confidence intervals and accuracy against gold.

Introduced in ``03_reward_model`` (accuracy with a CI).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap interval of ``statistic`` over ``values``.

    Args:
        values: one number per independent unit (e.g. 1/0 per correctly ranked pair).
        statistic: the statistic to estimate, applied along the last axis.
        confidence: the interval's coverage.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``(estimate, low, high)``.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    estimate = float(statistic(data))
    if data.size == 1 or np.all(data == data[0]):
        return estimate, estimate, estimate
    res = bootstrap(
        (data,), lambda x, axis: statistic(x, axis=axis), confidence_level=confidence,
        n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed),
    )
    return estimate, float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_interval(values: Sequence[float], confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and Student-t interval of a few repetitions (e.g. one value per seed).

    With one value the interval is that point: a single seed says nothing about spread.

    Args:
        values: one measurement per repetition.
        confidence: the interval's coverage.
        bounds: the range the quantity cannot leave (``(0, 1)`` for an accuracy); with few
            repetitions the t interval is wide and is clipped to it.

    Returns:
        ``(mean, low, high)``.
    """
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(data.mean())
    if data.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def ranked_correctly(margins: Sequence[float], gold: Sequence[int]) -> np.ndarray:
    """1.0 where a score margin ranks a pair the way gold does, 0.0 where it does not.

    Pairs that gold calls a tie (``gold == 0``) are left out; a zero margin counts as wrong.
    The mean is the pairwise accuracy against gold (``03_reward_model``).

    Args:
        margins: ``score(first) - score(second)`` per pair.
        gold: +1 (gold prefers the first), -1 (the second) or 0 (tie) per pair.

    Returns:
        One 0/1 value per non-tie pair, shape ``(n_non_tie,)``.
    """
    margins, gold = np.asarray(margins, dtype=float), np.asarray(gold)
    if margins.shape != gold.shape:
        raise ValueError(f"margins {margins.shape} and gold {gold.shape} must have the same shape")
    keep = gold != 0
    return (np.sign(margins[keep]) == gold[keep]).astype(float)


def paired_difference(after: Sequence[float], before: Sequence[float], n_resamples: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``after - before`` over the same units (prompts), with a bootstrap 95% CI.

    Pairing removes the spread between prompts, so a small real gain shows where two
    separate means would overlap.

    Returns:
        ``{"mean", "ci_low", "ci_high"}``.
    """
    after, before = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    if after.shape != before.shape:
        raise ValueError(f"paired scores must have the same shape, got {after.shape} and {before.shape}")
    mean, low, high = bootstrap_ci(after - before, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high}
