"""Seed generation: deterministic, the right shapes and sizes, pairs ordered by the gold judge."""
import json
import random
import re

import pytest

from course_lib.data.schema import validate_record
from course_lib.config import DataSettings
from course_lib.errors import ConfigError
from course_lib.domains import (DOMAINS, build_seed_sets, domain_corpus_text, domain_module, form_slip, gold_score,
                                gold_scores, near_miss, without_form)
from course_lib.domains import code, legal, medical

pytestmark = pytest.mark.unit
SMALL = {"sft_per_domain": 40, "prefs_per_domain": 40, "eval_per_domain": 12, "stdlib_functions": 5,
         "humaneval": 10, "planted_share": 0.05}


@pytest.fixture(scope="module")
def seeds():
    return build_seed_sets(0, SMALL)


def test_deterministic_and_seed_dependent(seeds):
    again = build_seed_sets(0, SMALL)
    assert again.sft == seeds.sft and again.prefs == seeds.prefs and again.eval_prompts == seeds.eval_prompts
    assert build_seed_sets(1, SMALL).sft != seeds.sft


def test_records_have_trl_formats_and_kit_columns(seeds):
    for record in seeds.sft:
        assert validate_record(record, "sft") == "sft"
    for record in seeds.prefs:
        assert validate_record(record, "preference") == "preference"
    for record in seeds.eval_prompts + seeds.humaneval:
        assert validate_record(record, "prompt") == "prompt"
        assert isinstance(json.loads(record["reference"]), dict)
    ids = [r["id"] for r in seeds.sft + seeds.prefs + seeds.eval_prompts + seeds.humaneval]
    assert len(ids) == len(set(ids))


def test_sizes_and_mixed_quality(seeds):
    for domain in DOMAINS:
        counts = seeds.flaws[domain]
        assert sum(counts.values()) == SMALL["sft_per_domain"]
        assert 0.5 < 1 - counts["good"] / SMALL["sft_per_domain"] < 0.95
    originals = [r for r in seeds.sft if re.fullmatch(r"code-sft-\d{4}", r["id"])]
    assert sum(json.loads(r["reference"])["task"] == "stdlib" for r in originals) == 5
    assert len(seeds.humaneval) == 10
    with pytest.raises(ConfigError, match="data.sft_per_domain"):
        DataSettings(sft_per_domain=1)
    with pytest.raises(ConfigError, match="unknown setting"):
        DataSettings.from_any({"sft": 3})


def test_each_domain_has_one_dominant_flaw_that_its_pairs_target():
    """The headroom the preference stages work on: one habit most demonstrations share, per domain."""
    from course_lib.domains.seeds import sft_flaw_rates

    big = build_seed_sets(0, {"sft_per_domain": 400, "prefs_per_domain": 400, "eval_per_domain": 10, "humaneval": 1})
    for domain in DOMAINS:
        rates = sft_flaw_rates(domain)
        dominant = max(rates, key=rates.get)
        assert rates[dominant] > 0.5 and sum(rates.values()) < 0.95
        counts, kinds = big.flaws[domain], big.pair_kinds[domain]
        assert counts[dominant] / sum(counts.values()) == pytest.approx(rates[dominant], abs=0.07)
        assert max(kinds, key=kinds.get) == dominant
    clean = build_seed_sets(0, {**SMALL, "flaw_scale": 0.0})
    assert all(c["good"] == sum(c.values()) for c in clean.flaws.values())


def test_a_profiles_data_section_sets_the_seed_sizes():
    from course_lib.config import load_profile

    data = load_profile("tiny-cpu", {"data.sft_per_domain": 40}).data
    sizes = DataSettings.from_any(data)
    assert (sizes.sft_per_domain, sizes.prefs_per_domain, sizes.eval_per_domain) == (40, 300, 50)


def test_answers_are_short_and_shaped():
    rng = random.Random(0)
    for domain in DOMAINS:
        for _ in range(30):
            task = domain_module(domain).sample_task(rng)
            assert len(task.good.split()) <= 60
    task = domain_module("legal").sample_task(rng)
    assert task.good.startswith("Clause type: ")
    assert domain_module("medical").sample_task(rng).good.startswith("Triage: ")
    assert domain_module("code").sample_task(rng).good.startswith("```python\n")


def test_a_wrong_answer_differs_from_the_good_one_only_in_its_label():
    """No shortcut: a reward model can tell a wrong triage level or clause type only by checking it against the
    rest of the reply, not by a sentence that only wrong answers leave out."""
    rng = random.Random(1)
    for domain, label in (("medical", "Triage: "), ("legal", "Clause type: ")):
        for _ in range(30):
            task = domain_module(domain).sample_task(rng)
            good, wrong = task.good.split(". ", 1)[1], task.flawed["wrong"].split(". ", 1)[1]
            explanation = good.split(". ")[-2] if domain == "medical" else good
            assert task.flawed["wrong"].startswith(label) and explanation in wrong, (task.good, task.flawed["wrong"])


@pytest.mark.parametrize("domain", ["legal", "medical"])
def test_every_flaw_scores_below_the_good_answer(domain):
    rng = random.Random(3)
    for _ in range(60):
        task = domain_module(domain).sample_task(rng)
        good = gold_score(domain, task.reference, task.good).score
        assert good >= 0.95
        for kind, answer in task.flawed.items():
            assert gold_score(domain, task.reference, answer).score < good, (kind, answer)


def test_code_flaws_score_below_good_answers_in_the_sandbox():
    rng = random.Random(4)
    for _ in range(6):
        task = code.sample_task(rng)
        good = gold_score("code", task.reference, task.good).score
        assert good == 1.0, task.good
        for kind, answer in task.flawed.items():
            assert gold_score("code", task.reference, answer).score < good, (kind, answer)


def test_gold_scores_judge_two_at_a_time_and_equal_gold_score_in_order():
    rng = random.Random(5)
    items = [(domain, task.reference, answer) for domain in ("code", "medical", "legal", "code")
             for task in [domain_module(domain).sample_task(rng)] for answer in [task.good, *task.flawed.values()]]
    together = gold_scores(items)
    code._passed.cache_clear()  # judged again from scratch, one at a time
    assert [(r.score, r.parts) for r in together] == [(r.score, r.parts) for r in [gold_score(*item) for item in items]]


def test_a_near_miss_keeps_the_good_answers_form_and_loses_to_it():
    """Medical: another level, in either direction, the reason kept; code: another prompt's function name on the
    same body; legal: none (its curated ``wrong`` flaw is already the confusable clause type)."""
    rng = random.Random(5)
    directions = set()
    for _ in range(30):
        task, other = medical.sample_task(rng), medical.sample_task(rng)
        miss = near_miss("medical", json.dumps(task.reference), task.good, json.dumps(other.reference), rng)
        level = medical.predicted_level(miss)
        assert level != task.reference["level"] and miss.split(". ", 2)[2] == task.good.split(". ", 2)[2]
        assert gold_score("medical", task.reference, miss).score < gold_score("medical", task.reference, task.good).score
        directions.add(medical.LEVELS.index(level) > medical.LEVELS.index(task.reference["level"]))
    assert directions == {True, False}  # under- and over-triage both
    for _ in range(4):
        task, other = code.sample_task(rng), code.sample_task(rng)
        miss = near_miss("code", task.reference, task.good, other.reference, rng)
        if other.reference["entry_point"] == task.reference["entry_point"]:
            assert miss is None
            continue
        assert miss == task.good.replace(f"def {task.reference['entry_point']}(", f"def {other.reference['entry_point']}(")
        assert gold_score("code", task.reference, miss).score < gold_score("code", task.reference, task.good).score
    task = legal.sample_task(rng)
    assert near_miss("legal", task.reference, task.good, legal.sample_task(rng).reference, rng) is None
    assert near_miss("medical", {"level": "urgent", "explanation": "x"}, "Triage: urgent. mine",
                     {"level": "urgent"}, rng) is None  # a user's own answer is not rewritten


def test_a_form_slip_misses_the_habit_and_still_beats_every_near_miss():
    """The gold judge's order that one-flaw pairs never state: a wrong fact costs more than a missing habit."""
    rng = random.Random(6)
    for _ in range(20):
        task = medical.sample_task(rng)
        slip = form_slip("medical", json.dumps(task.reference), task.good)
        assert slip == task.flawed["no_caveat"] and medical.DISCLAIMER not in slip
        for level in medical.LEVELS:  # every near miss: both other levels
            if level != task.reference["level"]:
                miss = medical.triage_answer(level, medical.triage_reason(task.reference))
                assert gold_score("medical", task.reference, slip).score > gold_score("medical", task.reference, miss).score
    compared = 0
    for _ in range(3):
        task, other = code.sample_task(rng), code.sample_task(rng)
        slip = form_slip("code", task.reference, task.good)
        assert slip == task.flawed["unfenced"] and "```" not in slip
        miss = near_miss("code", task.reference, task.good, other.reference, rng)
        if miss is not None:  # None when both prompts ask for the same name
            assert gold_score("code", task.reference, slip).score > gold_score("code", task.reference, miss).score
            compared += 1
    assert compared
    task = legal.sample_task(rng)
    assert form_slip("legal", task.reference, task.good) is None
    assert form_slip("medical", {"level": "urgent", "explanation": "x"}, "Triage: urgent. mine") is None
    assert form_slip("code", code.sample_task(rng).reference, "def f(): pass") is None  # a user's own answer


def test_without_form_takes_the_habit_from_any_answer_and_the_judge_still_values_it():
    """A near miss less its disclaimer or code block: the gold judge scores it lower, so the habit counts there too."""
    rng = random.Random(7)
    compared = 0
    for _ in range(10):
        domain = rng.choice(["medical", "code"])
        task, other = domain_module(domain).sample_task(rng), domain_module(domain).sample_task(rng)
        miss = near_miss(domain, task.reference, task.good, other.reference, rng)
        if miss is None:  # two code prompts asking for the same name
            continue
        bare = without_form(domain, miss)
        assert bare is not None and bare != miss and medical.DISCLAIMER not in bare and "```" not in bare
        assert gold_score(domain, task.reference, miss).score > gold_score(domain, task.reference, bare).score
        assert without_form(domain, bare) is None  # nothing left to take
        compared += 1
    assert compared
    assert without_form("legal", legal.sample_task(rng).good) is None


def test_preference_pairs_ordered_by_gold_judge(seeds):
    planted = {i for ids in seeds.planted["prefs"].values() for i in ids}
    checked = 0
    for pair in seeds.prefs:
        if pair["id"] in planted or "-" in pair["id"].split("pref-")[-1] or pair["domain"] == "code":
            continue
        chosen = gold_score(pair["domain"], pair["reference"], pair["chosen"][0]["content"]).score
        rejected = gold_score(pair["domain"], pair["reference"], pair["rejected"][0]["content"]).score
        assert chosen > rejected, pair["id"]
        checked += 1
    assert checked > 50
    lengths = [(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"])) for p in seeds.prefs]
    assert 0.2 < sum(lengths) / len(lengths) < 0.8  # longer is sometimes better, sometimes worse


def test_eval_prompts_are_held_out(seeds):
    train_questions = {r["messages"][-2]["content"] for r in seeds.sft if "leak" not in r["id"]}
    planted = {i for ids in seeds.planted["sft"].values() for i in ids}
    eval_questions = {r["prompt"][-1]["content"] for r in seeds.eval_prompts}
    clean = {r["messages"][-2]["content"] for r in seeds.sft if r["id"] not in planted}
    assert not (clean & eval_questions)
    assert train_questions  # planted leaks exist so decontamination has work to do
    assert seeds.planted["sft"]["contamination"]


def test_stdlib_and_humaneval_sources():
    functions = code.stdlib_functions()
    assert len(functions) >= 20
    assert all(f["solution"].startswith("def ") and '"""' not in f["solution"] for f in functions)
    he = code.humaneval_tasks(limit=3)
    assert len(he) == 3 and he[0].reference["task_id"] == "HumanEval/0"
    assert gold_score("code", he[0].reference, he[0].good).score > 0.9


def test_domain_corpus_text_is_prompt_side_and_deterministic():
    text = domain_corpus_text(0)
    assert text == domain_corpus_text(0) and 200_000 < len(text) < 600_000
    assert "Clause type: Indemnification." not in text and "Triage: emergency." not in text
    assert "shall indemnify" in text and "How urgent" in text and "Python" in text


def test_code_preference_pairs_ordered_by_gold_judge_on_a_sample(seeds):
    """Code pairs need a sandbox run per reply, so a sample of them is checked."""
    planted = {i for ids in seeds.planted["prefs"].values() for i in ids}
    sample = [p for p in seeds.prefs if p["domain"] == "code" and p["id"] not in planted
              and "-" not in p["id"].split("pref-")[-1]][:15]
    assert len(sample) == 15
    for pair in sample:
        chosen = gold_score("code", pair["reference"], pair["chosen"][0]["content"]).score
        rejected = gold_score("code", pair["reference"], pair["rejected"][0]["content"]).score
        assert chosen > rejected, pair["id"]
