"""Simulated annotators follow the gold judge with the noise and biases they are given."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from course_lib.labeling import (
    CachedJudge,
    LabelStore,
    SimulatedAnnotator,
    gold_agreement,
    gold_choice,
    simulated_panel,
)

pytestmark = pytest.mark.unit


def answer_judge(domain, reference, response):
    """1.0 for a response holding the reference answer, 0.4 otherwise; deterministic."""
    return SimpleNamespace(score=1.0 if json.loads(reference)["answer"] in response else 0.4, parts={})


def make_pair(pair_id: str, a: str, b: str, answer: str = "indemnity") -> dict:
    return {
        "id": pair_id,
        "domain": "legal",
        "reference": json.dumps({"answer": answer}),
        "prompt": [{"role": "user", "content": "Which clause is this?"}],
        "response_a": [{"role": "assistant", "content": a}],
        "response_b": [{"role": "assistant", "content": b}],
    }


def pool(n: int) -> list[dict]:
    """Pairs where gold prefers a short correct answer over a long wrong one, on alternating sides."""
    correct, wrong = "Indemnity: indemnity.", "It is probably a warranty clause, judging by the wording used here."
    return [make_pair(f"p{i}", correct, wrong) if i % 2 else make_pair(f"p{i}", wrong, correct) for i in range(n)]


def test_a_noiseless_annotator_agrees_with_gold():
    pairs = pool(20)
    annotator = SimulatedAnnotator("careful", judge=answer_judge)
    assert [annotator.choose(pair) for pair in pairs] == [gold_choice(pair, answer_judge) for pair in pairs]
    assert {annotator.choose(pair) for pair in pairs} == {"A", "B"}


def test_equal_gold_scores_within_the_tie_margin_are_ties():
    pair = make_pair("p0", "indemnity", "an indemnity")
    assert SimulatedAnnotator("ana", judge=answer_judge).choose(pair) == "tie"
    assert gold_choice(pair, answer_judge) == "tie"


def test_noise_sets_the_rate_of_disagreement_with_gold():
    pairs = pool(600)
    for noise in (0.2, 0.6):
        labels = SimulatedAnnotator("noisy", noise=noise, seed=3, judge=answer_judge).annotate(pairs)
        accuracy = gold_agreement(pairs, labels, judge=answer_judge)["noisy"].value
        # a random answer is right half the time: expected accuracy 1 - noise / 2
        assert accuracy == pytest.approx(1 - noise / 2, abs=0.06)


def test_length_bias_prefers_the_longer_answer_against_gold():
    pairs = pool(40)
    biased = SimulatedAnnotator("length-lover", length_bias=1.5, judge=answer_judge)
    longer = ["A" if len(p["response_a"][0]["content"]) > len(p["response_b"][0]["content"]) else "B" for p in pairs]
    assert [biased.choose(pair) for pair in pairs] == longer
    mild = SimulatedAnnotator("mild", length_bias=0.2, judge=answer_judge)
    assert [mild.choose(pair) for pair in pairs] == [gold_choice(pair, answer_judge) for pair in pairs]


def test_position_bias_favours_the_first_response():
    pairs = pool(20)
    assert {SimulatedAnnotator("first", position_bias=1.0, judge=answer_judge).choose(p) for p in pairs} == {"A"}


def test_skip_rate_skips_about_that_share():
    labels = SimulatedAnnotator("skipper", skip_rate=0.3, seed=1, judge=answer_judge).annotate(pool(500))
    share = sum(label["choice"] == "skip" for label in labels) / len(labels)
    assert share == pytest.approx(0.3, abs=0.06)


def test_labels_depend_on_seed_name_and_pair_not_on_order():
    pairs = pool(200)
    annotator = SimulatedAnnotator("ana", noise=0.5, seed=7, judge=answer_judge)
    forward = {label["pair_id"]: label["choice"] for label in annotator.annotate(pairs)}
    backward = {label["pair_id"]: label["choice"] for label in annotator.annotate(pairs[::-1])}
    assert forward == backward
    other_seed = SimulatedAnnotator("ana", noise=0.5, seed=8, judge=answer_judge).annotate(pairs)
    assert [label["choice"] for label in other_seed] != [forward[p["id"]] for p in pairs]


def test_annotate_into_a_store_resumes_without_relabeling(tmp_path):
    pairs = pool(6)
    store = LabelStore(tmp_path / "labels.jsonl")
    annotator = SimulatedAnnotator("sim", noise=0.3, judge=answer_judge)
    first = annotator.annotate(pairs[:4], store)
    lines_after_first = store.path.read_text().count("\n")
    again = annotator.annotate(pairs, store)

    assert store.path.read_text().count("\n") == lines_after_first + 2
    assert again[:4] == first
    assert all(label["source"] == "simulated" and label["rationale"].startswith("simulated: gold") for label in again)
    assert [label["pair_id"] for label in store.labels("sim")] == [p["id"] for p in pairs]


def test_cached_judge_scores_each_response_once():
    calls = []

    def counting_judge(domain, reference, response):
        calls.append(response)
        return answer_judge(domain, reference, response)

    shared = CachedJudge(counting_judge)
    pairs = pool(10)
    for annotator in simulated_panel(shared):
        annotator.annotate(pairs)
    assert len(calls) == 2, "two distinct responses in the pool, whatever the number of annotators"


def test_panel_annotators_differ_in_quality_as_named():
    def close_call_judge(domain, reference, response):
        """Gold prefers the correct answer, but only by 0.2: a length preference can outweigh it."""
        return SimpleNamespace(score=1.0 if json.loads(reference)["answer"] in response else 0.8, parts={})

    pairs = pool(300)
    labels = [label for annotator in simulated_panel(close_call_judge, seed=0) for label in annotator.annotate(pairs)]
    accuracy = {name: score.value for name, score in gold_agreement(pairs, labels, judge=close_call_judge).items()}
    assert accuracy["careful"] > 0.9
    assert accuracy["careful"] - accuracy["hurried"] > 0.1
    assert accuracy["length-lover"] < 0.2, "in this pool the longer answer is always the wrong one"


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="noise is 1.5"):
        SimulatedAnnotator("x", noise=1.5, judge=answer_judge)
    with pytest.raises(ValueError, match="tie_margin"):
        SimulatedAnnotator("x", tie_margin=-0.1, judge=answer_judge)
    with pytest.raises(ValueError, match="name is empty"):
        SimulatedAnnotator("", judge=answer_judge)


def test_with_the_real_gold_judge_careful_follows_gold_and_length_lover_prefers_padding():
    """The kit's own judge on a legal task: the good answer against its padded (verbose) variant."""
    import random

    from course_lib.domains import domain_module

    task = domain_module("legal").sample_task(random.Random(0))
    pair = {
        "id": "legal-verbose",
        "domain": "legal",
        "reference": json.dumps(task.reference),
        "prompt": task.prompt,
        "response_a": [{"role": "assistant", "content": task.flawed["verbose"]}],
        "response_b": [{"role": "assistant", "content": task.good}],
    }
    assert gold_choice(pair) == "B"
    assert SimulatedAnnotator("careful").choose(pair) == "B"
    assert SimulatedAnnotator("length-lover", length_bias=1.0).choose(pair) == "A"
