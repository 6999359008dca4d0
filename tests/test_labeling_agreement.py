"""Agreement statistics and the conversion of labels into TRL preference rows."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from course_lib.atomic import atomic_write_jsonl
from course_lib.labeling import (
    LabelStore,
    agreement_summary,
    cohens_kappa,
    gold_agreement,
    krippendorff_alpha,
    labels_to_preferences,
)

pytestmark = pytest.mark.unit


def make_pair(pair_id: str, answer: str = "indemnity") -> dict:
    return {
        "id": pair_id,
        "domain": "legal",
        "reference": json.dumps({"answer": answer}),
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Which clause? ({pair_id})"},
        ],
        "response_a": [{"role": "assistant", "content": f"It is {answer}."}],
        "response_b": [{"role": "assistant", "content": "It is a warranty."}],
    }


def answer_judge(domain, reference, response):
    """Scores 1 when the reference answer appears in the response, else 0."""
    return SimpleNamespace(score=float(json.loads(reference)["answer"] in response), parts={})


def labels_from(table: dict[str, str]) -> list[dict]:
    """Labels from {annotator: "AB.t"} strings, one character per pair p0, p1, ... ('.' = skip)."""
    codes = {"A": "A", "B": "B", "t": "tie", ".": "skip"}
    return [
        {"pair_id": f"p{i}", "annotator": name, "choice": codes[c], "rationale": "", "timestamp": "t"}
        for name, row in table.items()
        for i, c in enumerate(row)
        if c != " "
    ]


def test_cohens_kappa_matches_scikit_learn_on_shared_judged_pairs():
    labels = labels_from({"ana": "AABtBA.A", "bo": "ABBtAA.B"})
    score = cohens_kappa(labels, "ana", "bo")
    expected = cohen_kappa_score(list("AABtBAA"), list("ABBtAAB"))
    assert score.n_items == 7, "the pair ana skipped is left out"
    assert score.value == pytest.approx(expected)


def test_cohens_kappa_edge_cases():
    assert cohens_kappa(labels_from({"ana": "ABAB", "bo": "ABAB"}), "ana", "bo").value == pytest.approx(1.0)
    no_shared = cohens_kappa(labels_from({"ana": "AB  ", "bo": "  AB"}), "ana", "bo")
    assert math.isnan(no_shared.value) and no_shared.n_items == 0
    one_answer = cohens_kappa(labels_from({"ana": "AAA", "bo": "AAA"}), "ana", "bo")
    assert math.isnan(one_answer.value) and one_answer.n_items == 3


def test_krippendorff_alpha_matches_the_package_with_missing_answers():
    labels = labels_from({"ana": "AABt.A", "bo": "ABBtA ", "cy": "AAB BB"})
    score = krippendorff_alpha(labels)
    nan = np.nan
    matrix = [[0, 0, 2, 1, nan, 0], [0, 2, 2, 1, 0, nan], [0, 0, 2, nan, 2, 2]]
    assert score.value == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    assert score.n_items == 6
    perfect = krippendorff_alpha(labels_from({"ana": "ABtA", "bo": "ABtA", "cy": "AB A"}))
    assert perfect.value == pytest.approx(1.0)


def test_ordinal_alpha_counts_a_tie_as_a_near_miss():
    near_misses = labels_from({"ana": "AABBAB", "bo": "AtBtAB"})
    assert krippendorff_alpha(near_misses, level="ordinal").value > krippendorff_alpha(near_misses).value


def test_gold_agreement_scores_each_annotator_on_what_they_judged():
    pairs = [make_pair(f"p{i}") for i in range(4)]  # gold prefers A everywhere
    labels = labels_from({"ana": "AAAA", "bo": "ABt.", "cy": "BBBB"})
    scores = gold_agreement(pairs, labels, judge=answer_judge)
    assert scores["ana"].value == 1.0 and scores["cy"].value == 0.0
    assert (scores["bo"].value, scores["bo"].n_items) == (pytest.approx(1 / 3), 3)


def test_agreement_summary_is_flat_and_json_ready():
    pairs = [make_pair(f"p{i}") for i in range(4)]
    summary = agreement_summary(pairs, labels_from({"ana": "AAAB", "bo": "AABB"}), judge=answer_judge)
    assert set(summary) == {"n_labels", "n_annotators", "alpha", "alpha_items", "kappa/ana~bo", "gold/ana", "gold/bo"}
    assert summary["gold/ana"] == 0.75 and summary["n_labels"] == 8
    json.dumps(summary)
    assert "gold/ana" not in agreement_summary(pairs, labels_from({"ana": "AAAB"}), with_gold=False)


def test_preferences_put_the_chosen_response_first_and_keep_the_trl_schema():
    pairs = [make_pair("p0"), make_pair("p1")]
    rows = labels_to_preferences(pairs, labels_from({"ana": "AB"}))
    assert [set(row) for row in rows] == [{"id", "domain", "reference", "prompt", "chosen", "rejected"}] * 2
    assert rows[0]["chosen"] == pairs[0]["response_a"] and rows[0]["rejected"] == pairs[0]["response_b"]
    assert rows[1]["chosen"] == pairs[1]["response_b"] and rows[1]["rejected"] == pairs[1]["response_a"]
    assert rows[0]["prompt"] == pairs[0]["prompt"] and rows[0]["reference"] == pairs[0]["reference"]


def test_ties_and_skips_are_handled_explicitly_and_counted():
    pairs = [make_pair(f"p{i}") for i in range(5)]
    labels = labels_from({"ana": "At. "}) + [
        {"pair_id": "elsewhere", "annotator": "ana", "choice": "A", "rationale": "", "timestamp": "t"}
    ]
    dropped = labels_to_preferences(pairs, labels)
    assert [row["id"] for row in dropped] == ["p0"]
    assert dropped.report == {
        "pairs": 5, "labels": 3, "rows": 1, "preferred": 1, "ties": 1, "splits": 0, "ties_dropped": 1,
        "skipped": 1, "unlabeled": 2, "labels_for_unknown_pairs": 1, "tie_policy": "drop",
    }
    kept = labels_to_preferences(pairs, labels, tie_policy="both_orders")
    assert [row["id"] for row in kept] == ["p0", "p1#tie-a", "p1#tie-b"]
    assert kept[1]["chosen"] == kept[2]["rejected"] and kept[1]["rejected"] == kept[2]["chosen"]
    assert kept.report["ties_dropped"] == 0
    with pytest.raises(ValueError, match="tie_policy is 'coin'"):
        labels_to_preferences(pairs, labels, tie_policy="coin")


def test_several_annotators_are_combined_by_majority():
    pairs = [make_pair(f"p{i}") for i in range(4)]
    labels = labels_from({"ana": "AAtA", "bo": "ABtB", "cy": "BB.."})
    rows = labels_to_preferences(pairs, labels)
    # p0: A 2-1; p1: B 2-1; p2: tie (skip ignored); p3: A vs B level, a split
    assert [(row["id"], row["chosen"][0]["content"]) for row in rows] == [
        ("p0", "It is indemnity."),
        ("p1", "It is a warranty."),
    ]
    assert (rows.report["ties"], rows.report["splits"], rows.report["ties_dropped"]) == (1, 1, 2)
    only_ana = labels_to_preferences(pairs, labels, annotators=["ana"])
    assert [row["id"] for row in only_ana] == ["p0", "p1", "p3"]


def test_widget_labels_feed_the_reward_stage_file_unchanged(tmp_path):
    """Store labels -> rows -> prefs_train.jsonl, read back identical and conversational for TRL."""
    from trl.data_utils import is_conversational

    pairs = [make_pair(f"p{i}") for i in range(3)]
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("p0", "ana", "A", "names the clause")
    store.add("p1", "ana", "B")
    store.add("p2", "ana", "skip")
    rows = labels_to_preferences(pairs, store.labels())
    path = atomic_write_jsonl(tmp_path / "data" / "prefs_train.jsonl", rows)
    read_back = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert read_back == list(rows)
    assert all(is_conversational(row) for row in read_back)


def test_kappa_and_alpha_match_hand_computed_values():
    """Ten pairs, two annotators agreeing on eight: po = 0.8 and pe = 0.5, so kappa = 0.6;
    Krippendorff's coincidences give Do = 4/20 and De = 200/380, so alpha = 1 - 0.38 = 0.62."""
    from course_lib.labeling import cohens_kappa, krippendorff_alpha

    first = "AAAAABBBBB"
    second = "AAAABBBBBA"
    labels = [{"pair_id": f"p{i}", "annotator": name, "choice": choice}
              for name, row in (("x", first), ("y", second)) for i, choice in enumerate(row)]
    kappa = cohens_kappa(labels, "x", "y")
    alpha = krippendorff_alpha(labels)
    assert kappa.n_items == 10 and kappa.value == pytest.approx(0.6)
    assert alpha.n_items == 10 and alpha.value == pytest.approx(0.62)
