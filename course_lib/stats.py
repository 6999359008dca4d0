"""Statistics the stages and notebooks report with: confidence intervals, accuracy against
gold, tests that compare model variants, and drift between model versions.

Introduced in ``03_reward_model`` (accuracy with a CI); the tests, effect sizes, multiple-test
correction and drift in ``07_evaluation``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

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
    after, before = _paired_arrays(after, before)
    mean, low, high = bootstrap_ci(after - before, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def best_of_n(proxy_scores: Sequence[Sequence[float]], gold_scores: Sequence[Sequence[float]],
              ns: Sequence[int]) -> list[dict[str, float]]:
    """Best-of-n sampling measured from ``N`` replies per prompt: for each n, what the proxy's pick scores.

    Best-of-n keeps, of n sampled replies, the one a proxy (a reward model) scores highest. With
    ``N >= n`` replies per prompt scored, the expectation over every n-subset is exact: the reply
    ranked ``i``-th lowest by the proxy (0-based) is the pick of ``C(i, n - 1)`` of the ``C(N, n)``
    subsets. That uses every sample for every n, so the curve has far less noise than disjoint groups.

    Args:
        proxy_scores: the proxy's score of each reply, shape ``(prompts, N)``.
        gold_scores: the gold judge's score of the same replies, shape ``(prompts, N)``.
        ns: the values of n, each from 1 to N.

    Returns:
        One row per n: ``n``; ``kl``, the KL of the best-of-n distribution from the sampler,
        ``log n - (n - 1) / n`` nats; ``reward``, the proxy's mean score of its pick; ``gold``, the gold
        score of that pick; ``gold_best``, the gold score of the best of n replies by gold itself.
    """
    from math import comb

    proxy, gold = np.asarray(proxy_scores, dtype=float), np.asarray(gold_scores, dtype=float)
    if proxy.ndim != 2 or proxy.shape != gold.shape:
        raise ValueError(f"expected proxy and gold scores of the same shape (prompts, N), got {proxy.shape} and {gold.shape}")
    samples = proxy.shape[1]
    if not all(1 <= n <= samples for n in ns):
        raise ValueError(f"expected every n in 1..{samples} (the replies per prompt), got {list(ns)}")
    by_proxy = np.argsort(proxy, axis=1, kind="stable")  # (prompts, N), ascending
    proxy_sorted, gold_by_proxy = np.take_along_axis(proxy, by_proxy, 1), np.take_along_axis(gold, by_proxy, 1)
    gold_sorted = np.sort(gold, axis=1)
    rows = []
    for n in ns:
        weight = np.array([comb(i, n - 1) for i in range(samples)], dtype=float) / comb(samples, n)  # (N,), sums to 1
        rows.append({"n": n, "kl": float(np.log(n) - (n - 1) / n), "reward": float((proxy_sorted @ weight).mean()),
                     "gold": float((gold_by_proxy @ weight).mean()), "gold_best": float((gold_sorted @ weight).mean())})
    return rows


def paired_permutation_test(after: Sequence[float], before: Sequence[float], n_resamples: int = 2000,
                            seed: int = 0, alternative: str = "two-sided") -> dict[str, float]:
    """Sign-flip permutation test of the mean of ``after - before`` over the same units.

    Under the null the two scores of a unit are exchangeable, so each paired difference is
    as likely to have either sign; the p-value is the share of sign flips whose mean
    difference is at least as extreme as the observed one. With ``2**n <= n_resamples``
    every flip is enumerated (an exact test).

    Args:
        after: one score per unit (e.g. per prompt) for the variant.
        before: the same units' scores for the baseline.
        n_resamples: random sign flips when they are too many to enumerate.
        seed: seed of the flips.
        alternative: ``"two-sided"``, ``"greater"`` (after > before) or ``"less"``.

    Returns:
        ``{"mean_difference", "p_value"}``.
    """
    from scipy.stats import permutation_test

    after, before = _paired_arrays(after, before)
    # permutation_type="samples" swaps the two values within each pair: a sign flip of the difference.
    res = permutation_test(
        (after, before), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=n_resamples, alternative=alternative, rng=np.random.default_rng(seed),
    )
    return {"mean_difference": float(res.statistic), "p_value": float(res.pvalue)}


def two_sample_permutation_test(first: Sequence[float], second: Sequence[float], n_resamples: int = 2000,
                                seed: int = 0, alternative: str = "two-sided") -> dict[str, float]:
    """Permutation test of ``mean(first) - mean(second)`` for two independent samples.

    Under the null the group labels are exchangeable; a one-sided p-value is the share of
    relabellings whose difference in means is at least as extreme as the observed one
    (exact when all relabellings fit in ``n_resamples``), and the two-sided one is twice
    the smaller one-sided p-value (scipy's convention; with unequal group sizes the null
    distribution need not be symmetric).

    Args:
        first: scores of one group (e.g. replies of variant A to its own prompts).
        second: scores of the other group.
        n_resamples: random relabellings when they are too many to enumerate.
        seed: seed of the relabellings.
        alternative: ``"two-sided"``, ``"greater"`` (first > second) or ``"less"``.

    Returns:
        ``{"mean_difference", "p_value"}``.
    """
    from scipy.stats import permutation_test

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    res = permutation_test(
        (first, second), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        permutation_type="independent", vectorized=True, n_resamples=n_resamples, alternative=alternative,
        rng=np.random.default_rng(seed),
    )
    return {"mean_difference": float(res.statistic), "p_value": float(res.pvalue)}


MCNEMAR_EXACT_BELOW = 25
"""Discordant pairs below which McNemar uses the exact binomial test (the chi-square
approximation is poor for few discordant pairs)."""


def mcnemar_test(correct_a: Sequence[int], correct_b: Sequence[int]) -> dict[str, Any]:
    """McNemar's test: do two models, graded 0/1 on the same items, differ in accuracy?

    Only the discordant items (one model right, the other wrong) carry information. With
    fewer than :data:`MCNEMAR_EXACT_BELOW` of them the test is the exact binomial test
    of ``a_only`` out of ``a_only + b_only`` at 1/2 (``statistic`` is then ``min(a_only,
    b_only)``); otherwise it is the chi-square test with continuity correction,
    ``(|a_only - b_only| - 1)^2 / (a_only + b_only)``. Uses statsmodels' ``mcnemar``.

    Args:
        correct_a: 1 where model A is right, 0 where wrong, one per item.
        correct_b: the same items graded for model B.

    Returns:
        ``{"table", "statistic", "p_value", "a_only", "b_only", "method"}``; ``table`` is
        ``[[both right, only A right], [only B right, both wrong]]`` (rows: A right/wrong,
        columns: B right/wrong) and ``method`` is ``"exact binomial"`` or
        ``"chi-square with continuity correction"``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = _paired_arrays(correct_a, correct_b)
    if not np.isin(np.concatenate([a, b]), (0, 1)).all():
        raise ValueError("McNemar's test needs 0/1 correctness per item")
    a, b = a.astype(bool), b.astype(bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    a_only, b_only = table[0][1], table[1][0]
    exact = a_only + b_only < MCNEMAR_EXACT_BELOW
    res = mcnemar(table, exact=exact, correction=True)
    return {
        "table": table,
        "statistic": float(res.statistic),
        "p_value": float(res.pvalue),
        "a_only": a_only,
        "b_only": b_only,
        "method": "exact binomial" if exact else "chi-square with continuity correction",
    }


def one_way_anova(groups: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """One-way ANOVA across k groups (``scipy.stats.f_oneway``) with its effect sizes.

    Effect sizes: eta squared ``SS_between / SS_total`` (the share of variance the group
    explains; biased upward in small samples) and omega squared
    ``(SS_between - df_between * MS_within) / (SS_total + MS_within)`` (less biased).

    Args:
        groups: group name -> its scores (independent samples).

    Returns:
        ``{"f_statistic", "p_value", "eta_squared", "omega_squared", "ss_between",
        "ss_within", "df_between", "df_within"}``.
    """
    from scipy.stats import f_oneway

    samples = [np.asarray(values, dtype=float) for values in groups.values()]
    pooled = np.concatenate(samples)  # (n_total,)
    ss_between = float(sum(s.size * (s.mean() - pooled.mean()) ** 2 for s in samples))
    ss_within = float(sum(((s - s.mean()) ** 2).sum() for s in samples))
    df_between, df_within = len(samples) - 1, pooled.size - len(samples)
    ms_within = ss_within / df_within
    res = f_oneway(*samples)
    return {
        "f_statistic": float(res.statistic),
        "p_value": float(res.pvalue),
        "eta_squared": ss_between / (ss_between + ss_within),
        "omega_squared": (ss_between - df_between * ms_within) / (ss_between + ss_within + ms_within),
        "ss_between": ss_between,
        "ss_within": ss_within,
        "df_between": df_between,
        "df_within": df_within,
    }


def kruskal_wallis(groups: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Kruskal-Wallis H test across k groups (``scipy.stats.kruskal``) with epsilon squared.

    The rank-based counterpart of one-way ANOVA: no normality assumption, robust to the
    skewed scores reward models give. Effect size: epsilon squared ``H / (n - 1)`` with
    ``n`` the total count (Tomczak & Tomczak 2014; ``H / ((n^2 - 1) / (n + 1))`` is the
    same number), from 0 (no group effect) to 1.

    Args:
        groups: group name -> its scores (independent samples).

    Returns:
        ``{"h_statistic", "p_value", "epsilon_squared"}``.
    """
    from scipy.stats import kruskal

    samples = [np.asarray(values, dtype=float) for values in groups.values()]
    n_total = sum(s.size for s in samples)
    res = kruskal(*samples)
    return {"h_statistic": float(res.statistic), "p_value": float(res.pvalue),
            "epsilon_squared": float(res.statistic) / (n_total - 1)}


def friedman_test(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Friedman test across k variants scored on the same units (``scipy.stats.friedmanchisquare``).

    The repeated-measures counterpart of Kruskal-Wallis: each prompt ranks the variants
    among themselves, so differences between prompts do not count against the variants.
    Effect size: Kendall's W ``Q / (n (k - 1))`` with ``n`` units and ``k`` variants, from
    0 (no agreement on an order) to 1 (every prompt ranks the variants the same way).

    Args:
        scores: variant name -> its scores over the same units, in the same order (k >= 3).

    Returns:
        ``{"q_statistic", "p_value", "kendalls_w"}``.
    """
    from scipy.stats import friedmanchisquare

    samples = [np.asarray(values, dtype=float) for values in scores.values()]
    res = friedmanchisquare(*samples)
    return {"q_statistic": float(res.statistic), "p_value": float(res.pvalue),
            "kendalls_w": float(res.statistic) / (samples[0].size * (len(samples) - 1))}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> dict[str, list]:
    """Holm's step-down correction for several tests (statsmodels ``multipletests``).

    Controls the chance of any false rejection among the tests at ``alpha`` and is never
    less powerful than Bonferroni.

    Args:
        p_values: one p-value per test.
        alpha: the family-wise error rate.

    Returns:
        ``{"p_adjusted", "reject"}``, lists in the order of ``p_values``.
    """
    from statsmodels.stats.multitest import multipletests

    reject, p_adjusted, _, _ = multipletests(np.asarray(p_values, dtype=float), alpha=alpha, method="holm")
    return {"p_adjusted": [float(p) for p in p_adjusted], "reject": [bool(r) for r in reject]}


PSI_EPSILON = 1e-4
"""Share given to an empty bin, so the PSI's logarithm stays finite."""


def psi_reading(psi: float) -> str:
    """The usual reading of a PSI: below 0.1 ``"stable"``, 0.1 to 0.25 ``"moderate"``, above ``"large"``."""
    return "stable" if psi < 0.1 else "moderate" if psi <= 0.25 else "large"


def drift(reference_values: Sequence[float], new_values: Sequence[float], bins: int = 10) -> dict[str, Any]:
    """How far a new model version's scores (rewards, reply lengths) moved from a reference's.

    PSI (population stability index): ``sum((new% - ref%) * ln(new% / ref%))`` over bins
    cut at the reference's quantiles, the outer bins open-ended so every new value lands in
    one; a bin left empty gets the share :data:`PSI_EPSILON`. Tied quantiles (e.g. integer
    lengths) merge bins, so there may be fewer than ``bins``. Usual reading: below 0.1
    stable, 0.1 to 0.25 moderate, above 0.25 a large shift. The two-sample
    Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) adds a p-value for "same distribution"
    (its asymptotic form when values are tied, as reply lengths are).

    Args:
        reference_values: the reference version's values (e.g. reward per reply).
        new_values: the new version's values.
        bins: quantile bins of the reference.

    Returns:
        ``{"psi", "reading", "ks_statistic", "ks_pvalue", "reference_mean", "new_mean", "bins"}``
        (``bins``: how many bins were used).
    """
    from scipy.stats import ks_2samp

    reference, new = np.asarray(reference_values, dtype=float), np.asarray(new_values, dtype=float)
    inner_edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])  # (<= bins - 1,)
    n_bins = inner_edges.size + 1
    # side="right": a value equal to an edge goes to the bin above it, for both samples alike.
    ref_share = np.bincount(np.searchsorted(inner_edges, reference, side="right"), minlength=n_bins) / reference.size
    new_share = np.bincount(np.searchsorted(inner_edges, new, side="right"), minlength=n_bins) / new.size
    ref_share, new_share = np.clip(ref_share, PSI_EPSILON, None), np.clip(new_share, PSI_EPSILON, None)  # (n_bins,)
    psi = float(np.sum((new_share - ref_share) * np.log(new_share / ref_share)))
    pooled = np.concatenate([reference, new])
    # The exact KS distribution assumes no ties; with tied values (integer lengths, repeated replies) scipy's
    # exact method fails and falls back with a warning, so ask for the asymptotic one directly.
    ks = ks_2samp(reference, new, method="asymp" if np.unique(pooled).size < pooled.size else "auto")
    return {
        "psi": psi,
        "reading": psi_reading(psi),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "reference_mean": float(reference.mean()),
        "new_mean": float(new.mean()),
        "bins": n_bins,
    }


def compare_variants(scores: Mapping[str, Sequence[float]], baseline: str, n_resamples: int = 2000,
                     seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Compare every variant with a baseline on the same prompts, corrected for multiple tests.

    Per variant: the paired mean difference to the baseline with a bootstrap 95% CI
    (:func:`paired_difference`), the sign-flip permutation p-value
    (:func:`paired_permutation_test`), its Holm-adjusted p-value across the variants
    (:func:`holm`) and whether that is below ``alpha``. Omnibus across all variants,
    baseline included: one-way ANOVA and Kruskal-Wallis (which treat the variants as
    independent samples, ignoring that they share prompts, so they are conservative here)
    and the Friedman test (which uses the pairing).

    Args:
        scores: variant name -> one score per prompt, same prompts in the same order.
        baseline: the name of the variant the others are compared with.
        n_resamples: bootstrap resamples and permutations (each test).
        seed: seed of the resampling.
        alpha: the family-wise error rate of the Holm correction.

    Returns:
        ``{"baseline", "comparisons", "omnibus"}``: ``comparisons`` is a list of rows
        ``{"variant", "mean", "baseline_mean", "mean_difference", "ci_low", "ci_high",
        "p_value", "p_holm", "significant"}`` (``pd.DataFrame(result["comparisons"])``
        makes the table); ``omnibus`` holds ``{"anova", "kruskal_wallis", "friedman"}``
        (Friedman only with three or more variants).
    """
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not among the variants {sorted(scores)}")
    if len(scores) < 2:
        raise ValueError("compare_variants needs the baseline and at least one other variant")
    base = np.asarray(scores[baseline], dtype=float)
    rows = []
    for variant, values in scores.items():
        if variant == baseline:
            continue
        values = np.asarray(values, dtype=float)
        difference = paired_difference(values, base, n_resamples=n_resamples, seed=seed)
        test = paired_permutation_test(values, base, n_resamples=n_resamples, seed=seed)
        rows.append({"variant": variant, "mean": float(values.mean()), "baseline_mean": float(base.mean()),
                     "mean_difference": difference["mean"], "ci_low": difference["ci_low"],
                     "ci_high": difference["ci_high"], "p_value": test["p_value"]})
    corrected = holm([row["p_value"] for row in rows], alpha=alpha)
    for row, p_holm, reject in zip(rows, corrected["p_adjusted"], corrected["reject"]):
        row.update(p_holm=p_holm, significant=reject)
    omnibus = {"anova": one_way_anova(scores), "kruskal_wallis": kruskal_wallis(scores)}
    if len(scores) >= 3:
        omnibus["friedman"] = friedman_test(scores)
    return {"baseline": baseline, "comparisons": rows, "omnibus": omnibus}


def _paired_arrays(first: Sequence[float], second: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The two paired samples as float arrays; they must cover the same units."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"paired scores must have the same shape, got {first.shape} and {second.shape}")
    return first, second
