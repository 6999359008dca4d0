"""Confidence intervals and the tests that compare variants, each against its reference package."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from course_lib.stats import (
    best_of_n,
    bootstrap_ci,
    compare_variants,
    drift,
    friedman_test,
    holm,
    kruskal_wallis,
    mcnemar_test,
    one_way_anova,
    paired_permutation_test,
    t_interval,
    two_sample_permutation_test,
)

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


def test_paired_permutation_test_is_the_exact_sign_flip_test_on_few_pairs():
    after = np.array([0.9, 0.7, 0.8, 0.6, 0.75, 0.95, 0.5, 0.85])
    before = np.array([0.7, 0.72, 0.6, 0.5, 0.7, 0.8, 0.55, 0.6])
    diffs = after - before
    # By hand: all 2**8 sign flips; the p-value is the share at least as extreme as observed.
    flipped_means = [np.mean(diffs * signs) for signs in itertools.product([1, -1], repeat=diffs.size)]
    by_hand = np.mean(np.abs(flipped_means) >= abs(diffs.mean()) - 1e-12)
    result = paired_permutation_test(after, before)
    assert result["mean_difference"] == pytest.approx(diffs.mean())
    assert result["p_value"] == pytest.approx(by_hand)
    assert paired_permutation_test(after, before, alternative="greater")["p_value"] < result["p_value"]


def test_paired_permutation_test_agrees_with_the_paired_t_test_on_many_pairs():
    rng = np.random.default_rng(1)
    before = rng.normal(0.5, 0.2, 200)
    after = before + rng.normal(0.02, 0.1, 200)  # a small gain hidden in large between-prompt spread
    p_value = paired_permutation_test(after, before, n_resamples=5000)["p_value"]
    assert p_value == pytest.approx(stats.ttest_rel(after, before).pvalue, abs=0.02)
    with pytest.raises(ValueError, match="same shape"):
        paired_permutation_test(after, before[:-1])


def test_two_sample_permutation_test_enumerates_relabellings_on_small_groups():
    first, second = np.array([3.1, 2.4, 4.0, 3.6]), np.array([2.0, 2.2, 3.0, 1.8, 2.6])
    pooled, observed = np.concatenate([first, second]), first.mean() - second.mean()
    # By hand: every choice of which 4 of the 9 values form the first group.
    differences = np.array([pooled[list(idx)].mean() - np.delete(pooled, list(idx)).mean()
                            for idx in itertools.combinations(range(pooled.size), first.size)])
    # scipy's two-sided p-value: twice the smaller one-sided one (this null is not symmetric).
    by_hand = 2 * min(np.mean(differences >= observed - 1e-12), np.mean(differences <= observed + 1e-12))
    result = two_sample_permutation_test(first, second)
    assert result["mean_difference"] == pytest.approx(observed)
    assert result["p_value"] == pytest.approx(by_hand)


def test_mcnemar_uses_the_exact_binomial_test_when_few_pairs_disagree():
    correct_a = [1] * 30 + [1] * 8 + [0] * 2 + [0] * 10
    correct_b = [1] * 30 + [0] * 8 + [1] * 2 + [0] * 10
    result = mcnemar_test(correct_a, correct_b)
    assert result["table"] == [[30, 8], [2, 10]]
    assert (result["a_only"], result["b_only"], result["method"]) == (8, 2, "exact binomial")
    assert result["p_value"] == pytest.approx(stats.binomtest(8, 10, 0.5).pvalue)  # textbook: 2 * P(X <= 2)
    assert result["p_value"] == pytest.approx(mcnemar(result["table"], exact=True).pvalue)
    assert result["statistic"] == 2


def test_mcnemar_uses_chi_square_with_continuity_correction_when_many_disagree():
    correct_a = [1] * 25 + [0] * 10 + [1] * 40
    correct_b = [0] * 25 + [1] * 10 + [1] * 40
    result = mcnemar_test(correct_a, correct_b)
    assert result["method"] == "chi-square with continuity correction"
    by_hand = (abs(25 - 10) - 1) ** 2 / (25 + 10)
    assert result["statistic"] == pytest.approx(by_hand)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(by_hand, df=1))
    assert result["p_value"] == pytest.approx(mcnemar(result["table"], exact=False, correction=True).pvalue)
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_test([0.5, 1], [1, 1])


GROUPS = {"sft": [0.52, 0.61, 0.48, 0.55, 0.59, 0.50],
          "dpo": [0.63, 0.70, 0.57, 0.66, 0.72, 0.62],
          "ppo": [0.60, 0.54, 0.67, 0.58, 0.64, 0.56]}


def test_one_way_anova_matches_anova_lm_on_an_ols_fit():
    frame = pd.DataFrame([(name, v) for name, values in GROUPS.items() for v in values], columns=["variant", "score"])
    table = anova_lm(ols("score ~ C(variant)", data=frame).fit())
    result = one_way_anova(GROUPS)
    ss_between, ss_within = table.loc["C(variant)", "sum_sq"], table.loc["Residual", "sum_sq"]
    assert result["ss_between"] == pytest.approx(ss_between) and result["ss_within"] == pytest.approx(ss_within)
    assert (result["df_between"], result["df_within"]) == (2, 15)
    assert result["f_statistic"] == pytest.approx(table.loc["C(variant)", "F"])
    assert result["p_value"] == pytest.approx(table.loc["C(variant)", "PR(>F)"])
    assert result["eta_squared"] == pytest.approx(ss_between / (ss_between + ss_within))
    ms_within = ss_within / 15
    assert result["omega_squared"] == pytest.approx((ss_between - 2 * ms_within) / (ss_between + ss_within + ms_within))
    assert 0 < result["omega_squared"] < result["eta_squared"] < 1


def test_kruskal_wallis_matches_the_textbook_h_and_gives_epsilon_squared():
    result = kruskal_wallis(GROUPS)
    pooled = np.concatenate([np.array(v) for v in GROUPS.values()])
    ranks = stats.rankdata(pooled).reshape(3, 6)  # (k, n per group); GROUPS has no ties
    n = pooled.size
    h_by_hand = 12 / (n * (n + 1)) * sum(r.sum() ** 2 / r.size for r in ranks) - 3 * (n + 1)
    assert result["h_statistic"] == pytest.approx(stats.kruskal(*GROUPS.values()).statistic)
    assert result["h_statistic"] == pytest.approx(h_by_hand)
    assert result["epsilon_squared"] == pytest.approx(h_by_hand / (n - 1))


def test_friedman_matches_the_rank_formula_and_gives_kendalls_w():
    result = friedman_test(GROUPS)
    ranks = np.apply_along_axis(stats.rankdata, 1, np.array(list(GROUPS.values())).T)  # (n_prompts, k)
    n, k = ranks.shape
    q_by_hand = 12 / (n * k * (k + 1)) * np.sum(ranks.sum(axis=0) ** 2) - 3 * n * (k + 1)
    assert result["q_statistic"] == pytest.approx(q_by_hand)
    assert result["p_value"] == pytest.approx(stats.friedmanchisquare(*GROUPS.values()).pvalue)
    assert result["kendalls_w"] == pytest.approx(q_by_hand / (n * (k - 1)))


def test_holm_matches_multipletests_and_the_step_down_by_hand():
    p_values = [0.01, 0.04, 0.03, 0.20]
    result = holm(p_values)
    reject, adjusted, _, _ = multipletests(p_values, method="holm")
    assert result["p_adjusted"] == pytest.approx(list(adjusted))
    assert result["reject"] == list(reject)
    # By hand: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, then a running maximum.
    assert result["p_adjusted"] == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert result["reject"] == [True, False, False, False]


def test_drift_psi_by_hand_and_ks_against_scipy():
    reference = np.arange(100, dtype=float)  # quartile edges 24.75, 49.5, 74.25: 25 values per bin
    new = np.concatenate([np.full(40, 10.0), np.full(10, 30.0), np.full(25, 60.0), np.full(25, 90.0)])
    result = drift(reference, new, bins=4)
    ref_share, new_share = np.full(4, 0.25), np.array([0.40, 0.10, 0.25, 0.25])
    assert result["psi"] == pytest.approx(np.sum((new_share - ref_share) * np.log(new_share / ref_share)))
    assert result["bins"] == 4 and result["reading"] == "moderate"  # PSI about 0.21
    ks = stats.ks_2samp(reference, new, method="asymp")  # tied values: the exact method does not apply
    assert (result["ks_statistic"], result["ks_pvalue"]) == pytest.approx((ks.statistic, ks.pvalue))
    untied = drift(np.arange(10.0), np.arange(10.0) + 0.5)
    assert untied["ks_pvalue"] == pytest.approx(stats.ks_2samp(np.arange(10.0), np.arange(10.0) + 0.5).pvalue)


def test_drift_reads_a_same_distribution_as_stable_and_a_shift_as_large():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 2000)
    assert drift(reference, rng.normal(0, 1, 2000))["reading"] == "stable"
    shifted = drift(reference, rng.normal(1, 1, 2000))
    assert shifted["reading"] == "large" and shifted["ks_pvalue"] < 1e-6
    # Values beyond the reference's range land in the open outer bins; an emptied bin gets the epsilon, not log(0).
    assert math.isfinite(drift(reference, np.full(50, 10.0))["psi"])
    # Integer lengths with tied quantiles merge bins instead of leaving zero-width ones.
    lengths = drift([5] * 50 + [6] * 30 + [20] * 20, [5] * 50 + [6] * 30 + [20] * 20)
    assert lengths["bins"] < 10 and lengths["psi"] == pytest.approx(0.0)


def test_compare_variants_reports_paired_tests_with_holm_and_the_omnibus():
    rng = np.random.default_rng(3)
    prompt_difficulty = rng.normal(0.5, 0.2, 60)
    scores = {"sft": prompt_difficulty + rng.normal(0, 0.05, 60),
              "dpo": prompt_difficulty + 0.08 + rng.normal(0, 0.05, 60),
              "ppo": prompt_difficulty + 0.005 + rng.normal(0, 0.05, 60)}
    result = compare_variants(scores, baseline="sft", n_resamples=500)
    rows = {row["variant"]: row for row in result["comparisons"]}
    assert set(rows) == {"dpo", "ppo"} and result["baseline"] == "sft"
    dpo = rows["dpo"]
    assert dpo["mean_difference"] == pytest.approx(np.mean(scores["dpo"] - scores["sft"]))
    assert dpo["ci_low"] < dpo["mean_difference"] < dpo["ci_high"]
    assert dpo["significant"] and not rows["ppo"]["significant"]
    expected_holm = holm([rows["dpo"]["p_value"], rows["ppo"]["p_value"]])["p_adjusted"]
    assert [rows["dpo"]["p_holm"], rows["ppo"]["p_holm"]] == pytest.approx(expected_holm)
    # The between-prompt spread hides the gain from the unpaired omnibus tests; Friedman uses the pairing.
    assert result["omnibus"]["friedman"]["p_value"] < 0.001 < result["omnibus"]["anova"]["p_value"]
    assert set(result["omnibus"]["kruskal_wallis"]) == {"h_statistic", "p_value", "epsilon_squared"}
    assert pd.DataFrame(result["comparisons"]).shape == (2, 9)
    json.dumps(result, allow_nan=False)  # plain floats, ints and bools: a notebook can record it
    with pytest.raises(ValueError, match="baseline"):
        compare_variants(scores, baseline="grpo")


def test_best_of_n_equals_the_mean_over_every_subset_of_the_samples():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 6)), rng.uniform(size=(3, 6))  # (prompts, N): no ties
    for row in best_of_n(proxy, gold, [1, 2, 3, 6]):
        n, picks = row["n"], []
        for subset in itertools.combinations(range(6), n):
            subset = list(subset)
            pick = np.array(subset)[proxy[:, subset].argmax(axis=1)]  # (prompts,)
            picks.append((proxy[np.arange(3), pick], gold[np.arange(3), pick], gold[:, subset].max(axis=1)))
        reward, picked_gold, best_gold = (np.mean([p[k] for p in picks]) for k in range(3))
        assert row["kl"] == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-12)
        assert (row["reward"], row["gold"], row["gold_best"]) == pytest.approx((reward, picked_gold, best_gold), abs=1e-12)
    assert best_of_n(proxy, gold, [1])[0]["gold"] == pytest.approx(gold.mean())  # n = 1: a random reply


def test_best_of_n_refuses_an_n_beyond_the_samples_and_mismatched_shapes():
    with pytest.raises(ValueError, match="every n in 1..4"):
        best_of_n(np.zeros((2, 4)), np.zeros((2, 4)), [1, 8])
    with pytest.raises(ValueError, match="same shape"):
        best_of_n(np.zeros((2, 4)), np.zeros((2, 5)), [1])
