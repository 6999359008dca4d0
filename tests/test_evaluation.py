"""HumanEval through the sandbox, and the per-variant task metrics notebook 07 reports."""
import json
import random

import pytest

from course_lib.domains import domain_module, gold_score
from course_lib.errors import DataError
from course_lib.evaluation import humaneval
from course_lib.evaluation.humaneval import check_harness, evaluate_pass_at_k, humaneval_records
from course_lib.evaluation.metrics import distinct_n, pass_at_k
from course_lib.evaluation.variants import dimension_table, label_correct, paired_scores, task_metrics
from course_lib.generation import gold_evaluate
from course_lib.pipeline import results_table

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


def _with_own_prompts(records, rows):
    """The records and rows plus two prompts without a reference, as a user's own data brings them.

    One is in the neutral domain, one names a kit domain (medical) but still has no reference.
    """
    records, rows = dict(records), list(rows)
    for i, (domain, question) in enumerate([("general", "How do I free up disk space?"),
                                            ("medical", "Is a daily walk good for me?")]):
        rid = f"own-{i}"
        records[rid] = {"id": rid, "domain": domain, "reference": "", "prompt": [{"role": "user", "content": question}]}
        rows.append({"id": rid, "domain": domain, "response": f"Here is my own answer number {i}.", "score": None,
                     "parts": None, "reward": 20.0 + i})
    return records, rows


def test_gold_evaluate_judges_only_the_prompts_with_a_reference(monkeypatch):
    judged_records, judged_rows = _rows("good")
    records, rows = _with_own_prompts(judged_records, judged_rows)
    reply_to = {json.dumps(records[row["id"]]["prompt"]): row["response"] for row in rows}
    monkeypatch.setattr("course_lib.generation.generate_responses",
                        lambda model, tok, prompts, **kw: [reply_to[json.dumps(p)] for p in prompts])

    out = gold_evaluate(None, None, list(records.values()))
    assert out["gold_skipped_prompts"] == 2
    assert out["gold_score"] == pytest.approx(sum(r["score"] for r in judged_rows) / len(judged_rows))
    medical = [r["score"] for r in judged_rows if r["domain"] == "medical"]
    assert out["by_domain"]["medical"] == pytest.approx(sum(medical) / len(medical)) and "general" not in out["parts"]
    assert [(r["score"], r["parts"]) for r in out["rows"][-2:]] == [(None, None), (None, None)]
    # Length and diversity cover every reply, the unjudged ones included.
    assert out["distinct_2"] == pytest.approx(distinct_n([r["response"] for r in rows], 2))
    assert out["mean_words"] == pytest.approx(sum(len(r["response"].split()) for r in rows) / len(rows))

    none_judged = gold_evaluate(None, None, [records["own-0"], records["own-1"]])
    assert none_judged["gold_score"] is None and none_judged["gold_skipped_prompts"] == 2
    assert none_judged["by_domain"] == none_judged["parts"] == {} and none_judged["mean_words"] > 0


def test_task_metrics_and_paired_scores_leave_out_prompts_without_a_reference():
    judged_records, judged_rows = _rows("good")
    records, rows = _with_own_prompts(judged_records, judged_rows)
    metrics, judged_only = task_metrics(records, rows), task_metrics(judged_records, judged_rows)
    assert metrics["gold_skipped_prompts"] == 2 and judged_only["gold_skipped_prompts"] == 0
    for domain in ("medical", "legal", "code"):
        assert metrics[domain] == judged_only[domain]
    assert metrics["mean_words"] != judged_only["mean_words"]  # length covers every reply
    assert label_correct(records, rows) == label_correct(judged_records, judged_rows)
    assert paired_scores({"sft": rows, "dpo": rows})["sft"].shape == (12,)  # gold scores: the judged prompts
    assert paired_scores({"sft": rows}, key="reward")["sft"].shape == (14,)  # rewards: every prompt
    with pytest.raises(DataError, match="none of the 2 prompts has a 'score'.*reference"):
        paired_scores({"sft": rows[-2:], "dpo": rows[-2:]})


def test_the_ablation_table_leaves_gold_empty_and_counts_what_the_judge_skipped():
    def result(gold, gain, skipped):
        return {"gold_score": gold, "gold_skipped_prompts": skipped, "reward": 0.5, "kl": 0.1, "distinct_2": 0.9,
                "gold_gain": None if gain is None else {"mean": gain, "ci_low": gain - 0.1, "ci_high": gain + 0.1}}

    seed = results_table({"results": {"sft": result(0.6, 0.0, 0), "sft+dpo": result(0.7, 0.1, 0)}})
    assert "gold skipped" not in seed.columns and seed.loc["sft+dpo", "95% CI"] == "(+0.000, +0.200)"
    own = results_table({"results": {"sft": result(None, None, 3), "sft+dpo": result(None, None, 3)}})
    assert own["gold"].isna().all() and own["95% CI"].isna().all() and (own["gold skipped"] == 3).all()
    assert (own["reward"] == 0.5).all()
