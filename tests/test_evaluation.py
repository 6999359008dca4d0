"""HumanEval through the sandbox, and the per-variant task metrics notebook 07 reports."""
import json
import random

import pytest

from course_lib.domains import domain_module, gold_score
from course_lib.evaluation import humaneval
from course_lib.evaluation.humaneval import check_harness, evaluate_pass_at_k, humaneval_records
from course_lib.evaluation.metrics import pass_at_k
from course_lib.evaluation.variants import dimension_table, label_correct, paired_scores, task_metrics

pytestmark = pytest.mark.unit


def test_the_harness_passes_every_canonical_solution_and_fails_every_empty_body():
    report = check_harness()
    assert report["problems"] == 164 and report["sound"]
    assert report["canonical_passed"] == 164 and report["empty_failed"] == 164


def test_a_broken_harness_is_caught():
    records = humaneval_records(limit=2)
    broken = [dict(r, reference=json.dumps({**json.loads(r["reference"]), "tests": ["assert True"]})) for r in records]
    report = check_harness(broken)  # tests that always pass: empty bodies pass too
    assert not report["sound"] and report["empty_passes"] == [r["id"] for r in records]


def test_pass_at_k_counts_passing_replies_per_problem(monkeypatch):
    records = humaneval_records(limit=3)
    solutions = [json.loads(r["reference"])["solution"] for r in records]
    # Problem 0 gets 2 good replies of 4, problem 1 one, problem 2 none.
    good = {0: 2, 1: 1, 2: 0}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        assert len(prompts) == 12 and kwargs["do_sample"]
        return [f"```python\n{solutions[i // 4]}\n```" if i % 4 < good[i // 4] else "no code" for i in range(12)]

    monkeypatch.setattr("course_lib.generation.generate_responses", fake_generate)
    out = evaluate_pass_at_k(None, None, records, n=4, ks=(1, 2, 4), seed=0)
    assert [t["correct"] for t in out["per_task"]] == [2, 1, 0]
    for k in (1, 2, 4):
        assert out["pass@k"][k] == pytest.approx(sum(pass_at_k(4, c, k) for c in (2, 1, 0)) / 3)
    assert out["pass@k"][1] == pytest.approx(3 / 12)
    with pytest.raises(ValueError, match="every k in"):
        evaluate_pass_at_k(None, None, records, n=2, ks=(4,))
    assert humaneval.humaneval_records(limit=1)[0]["id"] == "HumanEval/0"


def _rows(kind: str, n: int = 12, seed: int = 0):
    """Evaluation records and rows whose replies are each task's good answer or one flawed kind."""
    rng = random.Random(seed)
    records, rows = {}, []
    for i in range(n):
        domain = ("legal", "medical", "code")[i % 3]
        task = domain_module(domain).sample_task(rng)
        rid = f"{domain}-{i}"
        records[rid] = {"id": rid, "domain": domain, "reference": json.dumps(task.reference), "prompt": task.prompt}
        reply = task.good if kind == "good" else task.flawed[kind]
        judged = gold_score(domain, task.reference, reply)
        rows.append({"id": rid, "domain": domain, "response": reply, "score": judged.score, "parts": judged.parts,
                     "reward": float(i)})
    return records, rows


def test_task_metrics_of_good_answers_are_perfect_and_wrong_ones_are_not():
    records, good = _rows("good")
    metrics = task_metrics(records, good)
    assert metrics["medical"]["accuracy"] == 1.0 and metrics["legal"]["macro_f1"] == 1.0
    assert metrics["legal"]["rouge_l"] == pytest.approx(1.0) and metrics["code"]["bleu"] == pytest.approx(100.0)
    assert metrics["code"]["tests_passed"] == 1.0 and 0 < metrics["distinct_2"] <= 1
    _, wrong = _rows("wrong")
    worse = task_metrics(records, wrong)
    assert worse["medical"]["accuracy"] == 0.0 and worse["legal"]["accuracy"] == 0.0
    assert worse["code"]["tests_passed"] < 1.0 and worse["code"]["bleu"] < 100.0
    # Under-triage of emergencies: a wrong medical answer is one level less severe.
    assert label_correct(records, wrong) == {rid: 0 for rid in records if not rid.startswith("code")}


def test_paired_scores_align_variants_and_refuse_other_prompts():
    _, good = _rows("good")
    _, terse = _rows("terse")
    scores = paired_scores({"sft": good, "dpo": terse})
    assert scores["sft"].shape == scores["dpo"].shape == (12,) and (scores["sft"] >= scores["dpo"]).all()
    assert list(paired_scores({"a": good}, key="reward")["a"]) == [float(i) for i in range(12)]
    with pytest.raises(ValueError, match="other prompts"):
        paired_scores({"sft": good, "dpo": terse[::-1]})


def test_dimension_table_shows_what_each_variant_moved():
    results = {"sft": {"parts": {"medical": {"safety": 0.5, "format": 1.0}}},
               "dpo": {"parts": {"medical": {"safety": 0.9, "format": 0.8}}}}
    table = dimension_table(results).set_index(["variant", "dimension"])
    assert table.loc[("dpo", "safety"), "change"] == pytest.approx(0.4)
    assert table.loc[("dpo", "format"), "change"] == pytest.approx(-0.2) and table.loc[("sft", "safety"), "change"] == 0
