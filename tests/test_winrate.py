"""Win rates: judges, position flips, ties, human labels and length control."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from course_lib.domains import domain_module
from course_lib.errors import DataError
from course_lib.evaluation.winrate import (
    gold_judge,
    labels_judge,
    length_controlled_win_rate,
    position_biased_judge,
    score_judge,
    win_rate,
)
from course_lib.labeling import LabelStore, gold_choice, simulated_panel

pytestmark = pytest.mark.unit


def medical_tasks(n: int):
    rng = random.Random(0)
    tasks = [domain_module("medical").sample_task(rng) for _ in range(n)]
    records = [{"id": f"medical-{i}", "domain": "medical", "reference": json.dumps(task.reference),
                "prompt": task.prompt} for i, task in enumerate(tasks)]
    return tasks, records


def test_gold_judge_prefers_the_good_answer_and_never_flips():
    tasks, records = medical_tasks(12)
    good, wrong = [t.good for t in tasks], [t.flawed["wrong"] for t in tasks]
    result = win_rate(records, good, wrong, gold_judge(), n_resamples=200)
    assert (result["win_rate"], result["wins"], result["losses"]) == (1.0, 12, 0)
    assert result["flips"] == 0 and result["flip_rate"] == 0.0
    assert result["outcomes"] == [1] * 12
    # The same answer on both sides is a tie, and a tie is half a win.
    tied = win_rate(records[:4], good[:4], good[:4], gold_judge(), n_resamples=200)
    assert (tied["ties"], tied["win_rate"]) == (4, 0.5)
    json.dumps(result, allow_nan=False)


def own_prompts() -> list[dict]:
    """Two prompts of a user's own data: no reference, one in the neutral domain, one naming a kit domain."""
    return [{"id": f"own-{i}", "domain": domain, "reference": "", "prompt": [{"role": "user", "content": f"My question {i}"}]}
            for i, domain in enumerate(["general", "medical"])]


def test_the_gold_judge_leaves_out_prompts_without_a_reference_and_counts_them():
    tasks, records = medical_tasks(8)
    records += own_prompts()
    good = [t.good for t in tasks] + ["Sure, here is how.", "Yes, a daily walk helps most people."]
    wrong = [t.flawed["wrong"] for t in tasks] + ["No idea.", "Never walk; stay in bed for weeks."]
    result = win_rate(records, good, wrong, gold_judge(), n_resamples=200)
    assert (result["win_rate"], result["wins"], result["n_judged"], result["unjudged"]) == (1.0, 8, 8, 2)
    assert result["outcomes"][-2:] == [None, None]
    controlled = length_controlled_win_rate(records, good, wrong, gold_judge(), n_resamples=200)
    assert (controlled["raw_win_rate"], controlled["n_judged"]) == (1.0, 8)
    with pytest.raises(DataError, match="no verdict on any of the 2 prompts; the gold judge needs records with a reference"):
        win_rate(records[-2:], good[-2:], wrong[-2:], gold_judge(), n_resamples=200)


def test_simulated_annotators_refuse_pairs_without_a_reference_before_labeling_any(tmp_path):
    tasks, records = medical_tasks(2)
    pairs = [{"id": f"pair-{i}", "domain": "medical", "reference": r["reference"], "prompt": r["prompt"],
              "response_a": [{"role": "assistant", "content": t.good}],
              "response_b": [{"role": "assistant", "content": t.flawed["wrong"]}]} for i, (t, r) in enumerate(zip(tasks, records))]
    own = {**pairs[0], "id": "own-pair", "domain": "general", "reference": ""}
    store = LabelStore(tmp_path / "labels.jsonl")
    for annotator in simulated_panel(seed=0):
        with pytest.raises(DataError, match="1 pair.s. have no reference, the first is 'own-pair'.*labeling widget") as err:
            annotator.annotate([*pairs, own], store)
        assert err.value.field == "reference"
    assert store.labels() == []  # refused up front: no label of the judgeable pairs either
    with pytest.raises(DataError, match="'own-pair'"):
        gold_choice(own)
    assert [label["choice"] for label in simulated_panel(seed=0)[0].annotate(pairs, store)] == ["A", "A"]


def test_a_position_biased_judge_flips_and_its_flips_count_as_ties():
    tasks, records = medical_tasks(40)
    good, wrong = [t.good for t in tasks], [t.flawed["wrong"] for t in tasks]
    biased = position_biased_judge(gold_judge(), first_bias=0.5, seed=1)
    result = win_rate(records, good, wrong, biased, n_resamples=200)
    # A flip needs the coin in the (wrong, good) order: about half the pairs.
    assert 0.3 < result["flip_rate"] < 0.7
    assert result["ties"] == result["flips"] and result["losses"] == 0
    assert result["win_rate"] == pytest.approx((result["wins"] + 0.5 * result["ties"]) / 40)
    assert result["ci_low"] < result["win_rate"] < result["ci_high"]
    one_order = win_rate(records, good, wrong, position_biased_judge(gold_judge(), 0.5, seed=1),
                         both_orders=False, n_resamples=200)
    assert one_order["flips"] is None and one_order["flip_rate"] is None and one_order["win_rate"] == 1.0


def test_score_judge_scores_every_distinct_reply_in_one_batch_and_never_flips():
    calls = []

    def reward_model(records, replies):
        calls.append(len(replies))
        return [len(reply) + 0.01 * len(record["prompt"][0]["content"]) for record, reply in zip(records, replies)]

    tasks, records = medical_tasks(10)
    replies_a, replies_b = [t.flawed["verbose"] for t in tasks], [t.good for t in tasks]
    result = win_rate(records, replies_a, replies_b, score_judge(reward_model), n_resamples=200)
    assert calls == [20]  # one call, each of the 2 x 10 replies once, although each pair is judged twice
    assert result["win_rate"] == 1.0 and result["flips"] == 0  # this scorer rewards length
    judge = score_judge(reward_model, tie_margin=1000.0)
    assert judge(records[0], replies_a[0], replies_b[0]) == 0  # within the margin: a tie


def test_labels_judge_reads_which_reply_was_shown_first(tmp_path):
    tasks, records = medical_tasks(4)
    replies_a, replies_b = [t.good for t in tasks], [t.flawed["terse"] for t in tasks]

    def pair(pair_id, first, second, **prompt_id):
        return {"id": pair_id, **prompt_id, "domain": "medical", "reference": "{}", "prompt": [],
                "response_a": [{"role": "assistant", "content": first}],
                "response_b": [{"role": "assistant", "content": second}]}

    pairs = [
        pair("medical-0", replies_a[0], replies_b[0]),  # A's reply shown first; the pair id is the prompt id
        pair("p1", replies_b[1], replies_a[1], prompt_id="medical-1"),  # A's reply shown second
        pair("p2", replies_a[2], replies_b[2], prompt_id="medical-2"),
        pair("p3", replies_a[3], replies_b[3], prompt_id="medical-3"),  # shown in both orders:
        pair("p3-swapped", replies_b[3], replies_a[3], prompt_id="medical-3"),  # the first slot picked twice
    ]
    store = LabelStore(tmp_path / "labels.jsonl")
    for pair_id, choice in [("medical-0", "A"), ("p1", "B"), ("p2", "skip"), ("p3", "A"), ("p3-swapped", "A")]:
        store.add(pair_id, "ana", choice)
    store.add("p1", "ben", "tie")
    store.add("p1", "cy", "B")  # majority: B, the second slot, which showed A's reply
    result = win_rate(records, replies_a, replies_b, labels_judge(pairs, store.labels()), n_resamples=200)
    assert result["outcomes"] == [1, 1, None, 0]
    assert (result["unjudged"], result["n_judged"], result["flips"]) == (1, 3, 1)
    only_ben = labels_judge(pairs, store.labels(), annotators=["ben"])
    assert only_ben(records[1], replies_a[1], replies_b[1]) == 0
    assert only_ben(records[0], replies_a[0], replies_b[0]) is None  # ben did not label medical-0


def longer_is_better_judge(quality_gain: float, seed: int):
    """A reward-model-like scorer: a point per word plus Gumbel noise fixed per reply.

    The difference of two Gumbel draws is logistic, so the logit model of the length fit is the true one.
    """
    rng = np.random.default_rng(seed)
    noise: dict[str, float] = {}

    def score(records, replies):
        return [len(reply.split()) + noise.setdefault(reply, rng.gumbel(0, 3)) + quality_gain * reply.startswith("A")
                for reply in replies]

    return score_judge(score)


def padded_replies(n: int, seed: int):
    rng = np.random.default_rng(seed)
    records = [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"question {i}"}]} for i in range(n)]
    # A's replies are 6 words longer on average; the spread lets the fit see length at work.
    replies_a = [f"A{i} " + "w " * int(rng.integers(20, 36)) for i in range(n)]
    replies_b = [f"B{i} " + "w " * int(rng.integers(14, 30)) for i in range(n)]
    return records, replies_a, replies_b


def test_length_control_removes_a_win_that_comes_from_length_alone():
    records, replies_a, replies_b = padded_replies(600, seed=0)
    result = length_controlled_win_rate(records, replies_a, replies_b, longer_is_better_judge(0.0, seed=1),
                                        n_resamples=200)
    assert result["raw_win_rate"] > 0.7
    assert result["length_controlled_win_rate"] == pytest.approx(0.5, abs=0.08)
    assert result["ci_low"] < 0.5 < result["ci_high"]
    assert result["length_coef"] > 1 and result["length_coef_pvalue"] < 1e-6
    assert result["mean_length_diff_words"] == pytest.approx(6, abs=1)


def test_length_control_keeps_a_win_that_is_not_about_length():
    records, replies_a, replies_b = padded_replies(600, seed=0)
    result = length_controlled_win_rate(records, replies_a, replies_b, longer_is_better_judge(6.0, seed=1),
                                        n_resamples=200)
    assert result["length_controlled_win_rate"] > 0.7 and result["ci_low"] > 0.5
    assert result["note"] is None
    same = length_controlled_win_rate(records[:3], ["a b", "c d", "e f"], ["a", "c", "e"], longer_is_better_judge(0.0, 1))
    assert same["length_controlled_win_rate"] is None and "same on every prompt" in same["note"]
    assert same["raw_win_rate"] is not None


def test_length_control_says_so_when_length_alone_decides_every_pair():
    records, replies_a, replies_b = padded_replies(100, seed=0)
    word_count_judge = score_judge(lambda records, replies: [len(reply.split()) for reply in replies])
    result = length_controlled_win_rate(records, replies_a, replies_b, word_count_judge, n_resamples=200)
    assert result["length_controlled_win_rate"] is None and "did not converge" in result["note"]
