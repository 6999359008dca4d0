"""Counterfactual bias probes: the probe sets, the paired statistics, and a planted bias the
probes must find while an unskewed control stays clean."""
from __future__ import annotations

import numpy as np
import pytest

from course_lib.audit.bias import (
    ATTRIBUTES, NAME_ORIGINS, WordPairReward, build_probes, disparity_rows, ensemble_scorer, holm_correct, legal_probes,
    medical_probes, paired_disparity, policy_disparities, probe_run, reward_disparities, run_bias_probes,
    skewed_preferences,
)
from course_lib.domains import gold_score
from course_lib.stats import mcnemar_test, paired_permutation_test


def _groups(probes):
    out: dict[tuple, list[dict]] = {}
    for p in probes:
        out.setdefault((p["domain"], p["attribute"], p["group"]), []).append(p)
    return out


def _anonymised(probe) -> tuple[str, str, str]:
    """The prompt, the reference and the good answer with the person's words blanked out."""
    prompt = " ".join(m["content"] for m in probe["prompt"]).replace(probe["person"], "<person>")
    return prompt, str(probe["reference"]).replace(probe["person"], "<person>"), probe["good"].replace(probe["person"], "<person>")


@pytest.mark.unit
def test_each_group_asks_one_question_about_every_value_and_changes_only_the_person():
    probes = build_probes(n_groups=12, seed=3)
    for (domain, attribute, _), members in _groups(probes).items():
        assert [p["value"] for p in members] == list(ATTRIBUTES[domain][attribute])
        assert len({_anonymised(p) for p in members}) == 1, members[0]["prompt"]  # the same question otherwise
        assert len({p["person"] for p in members}) == len(members)  # and the person does differ
        if domain == "medical":
            assert len({p["good"] for p in members}) == 1  # the same reply is scored for every value
    medical = medical_probes(n_groups=12, seed=3, attributes=("sex",))
    assert [p["reference"]["level"] for p in medical[::2]][:3] == ["emergency", "urgent", "self-care"]
    for members in _groups(legal_probes(n_groups=12, seed=3, attributes=("name_origin",))).values():
        names = [p["person"].split()[-1] for p in members]  # "Tenant Priya" -> "Priya"
        sex = "female" if names[0] in NAME_ORIGINS["English"]["female"] else "male"
        assert all(name in NAME_ORIGINS[p["value"]][sex] for name, p in zip(names, members))  # one sex per group


@pytest.mark.unit
def test_probes_are_deterministic_and_gold_prefers_their_good_answer():
    assert build_probes(8, seed=1) == build_probes(8, seed=1)
    assert build_probes(8, seed=1) != build_probes(8, seed=2)
    for p in build_probes(8, seed=1):
        good, wrong = gold_score(p["domain"], p["reference"], p["good"]), gold_score(p["domain"], p["reference"], p["wrong"])
        assert good.score > wrong.score and good.parts["correctness"] == 1.0
    assert all(len(names["female"]) == len(names["male"]) == 3 for names in NAME_ORIGINS.values())


@pytest.mark.unit
def test_paired_disparity_by_hand():
    rng = np.random.default_rng(0)
    men = rng.normal(size=30)
    women = men - 0.5 + rng.normal(scale=0.3, size=30)
    result = paired_disparity(men, women, n_resamples=500)
    assert result["difference"] == pytest.approx(np.mean(women - men))
    assert result["ci_low"] < result["difference"] < result["ci_high"] < 0
    assert result["p_value"] == pytest.approx(paired_permutation_test(women, men, n_resamples=500)["p_value"])
    assert result["effect_size"] == pytest.approx(np.mean(women - men) / ((men.std() + women.std()) / 2))
    assert (result["n"], result["mean_a"], result["mean_b"]) == (30, pytest.approx(men.mean()), pytest.approx(women.mean()))

    right_men, right_women = np.r_[np.ones(20), np.zeros(10)], np.r_[np.ones(8), np.zeros(22)]
    exact = paired_disparity(right_men, right_women, test="mcnemar", n_resamples=500)
    assert exact["difference"] == pytest.approx(-0.4)
    assert exact["p_value"] == pytest.approx(mcnemar_test(right_men, right_women)["p_value"]) and exact["p_value"] < 0.01

    # Floating-point noise of a deterministic model is no disparity, however consistent its sign.
    assert paired_disparity(men, men + 1e-12, n_resamples=500)["p_value"] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired_disparity([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="permutation"):
        paired_disparity([1.0], [1.0], test="t")


@pytest.mark.unit
def test_rows_compare_each_value_with_the_reference_and_holm_corrects_per_family():
    probes = medical_probes(n_groups=24, seed=0)
    # A score 1 lower for women and 0.01 higher at 75, plus question-to-question spread.
    spread = np.array([p["group"] % 5 for p in probes], dtype=float)
    scores = spread - np.array([p["value"] == "female" for p in probes]) + 0.01 * np.array([p["value"] == "75" for p in probes])
    rows = holm_correct(disparity_rows(probes, scores, "reward_good", "rm", n_resamples=500))
    assert [(r["attribute"], r["values"]) for r in rows] == (
        [("sex", ("male", "female")), ("age", ("25", "75"))] + [("name_origin", ("English", v)) for v in list(NAME_ORIGINS)[1:]])
    by = {r["values"][1]: r for r in rows}
    assert by["female"]["difference"] == pytest.approx(-1.0) and by["female"]["significant"]
    assert by["75"]["difference"] == pytest.approx(0.01)
    assert all(r["difference"] == 0 and r["p_value"] == 1 and not r["significant"] for r in rows if r["attribute"] == "name_origin")
    assert all(r["p_holm"] >= r["p_value"] and r["n"] == 24 for r in rows)
    # Another measure or model is another family: its p-values are not pooled with these.
    both = holm_correct(disparity_rows(probes, scores, "a", "rm", n_resamples=500)
                        + disparity_rows(probes, -scores, "b", "rm", n_resamples=500))
    assert [r["p_holm"] for r in both[:7]] == [r["p_holm"] for r in both[7:]]


@pytest.mark.unit
def test_policy_outcomes_show_a_policy_that_under_triages_women():
    probes = medical_probes(n_groups=30, seed=0, attributes=("sex", "age")) + legal_probes(n_groups=8, seed=0, attributes=("sex",))
    # A hand-written policy: right every time, except that women's emergencies get the urgent answer.
    replies = [p["wrong"] if p["value"] == "female" and p["reference"].get("level") == "emergency" else p["good"] for p in probes]
    rows = {(r["domain"], r["attribute"], r["measure"]): r
            for r in holm_correct(policy_disparities(probes, replies, "policy", scorer=lambda c: np.zeros(len(c)), n_resamples=500))}
    emergency = rows[("medical", "sex", "emergency_rate")]
    assert emergency["difference"] == pytest.approx(-1 / 3) and emergency["mean_a"] == pytest.approx(1 / 3)
    correct = rows[("medical", "sex", "level_correct")]
    assert correct["test"] == "mcnemar" and correct["difference"] == pytest.approx(-1 / 3) and correct["significant"]
    assert rows[("medical", "sex", "gold_score")]["difference"] < 0
    assert rows[("medical", "age", "level_correct")]["difference"] == 0 and not rows[("medical", "age", "gold_score")]["significant"]
    assert rows[("legal", "sex", "clause_correct")]["difference"] == 0
    assert rows[("medical", "sex", "reward_of_reply")]["p_value"] == 1.0
    assert ("legal", "sex", "level_correct") not in rows  # a measure applies to its own domain only


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_bias_is_found_and_an_unskewed_control_is_not(seed):
    """A reward model fitted on pairs where women's emergencies were labeled "urgent" prefers the
    right level less for women, significantly after Holm's correction over seven comparisons; the
    same model fitted on the same questions, unskewed, shows no disparity (docs/ethics.md)."""
    probes = medical_probes(n_groups=40, seed=0)  # other questions than the training pairs' (seed 1000 + seed)
    found = {}
    for name, skew in (("biased", 1.0), ("control", 0.0)):
        model = WordPairReward().fit(skewed_preferences(n_groups=96, seed=1000 + seed, skew=skew))
        rows = holm_correct(reward_disparities(model, probes, model=name, n_resamples=1000))
        found[name] = {(r["measure"], r["values"][1]): r for r in rows}
        if name == "biased":
            assert model.weight("woman", "urgent") > model.weight("man", "urgent")
    biased, control = found["biased"][("reward_margin", "female")], found["control"][("reward_margin", "female")]
    assert biased["significant"] and biased["ci_high"] < -1.0 and biased["effect_size"] < -0.8
    assert not control["significant"] and control["ci_low"] <= 0 <= control["ci_high"]
    assert not any(r["significant"] for r in found["control"].values())


@pytest.mark.slow
def test_run_bias_probes_on_the_tiny_models(tiny_profile, tiny_base_path, tmp_path):
    from course_lib.models import load_model, load_tokenizer
    from course_lib.stages import RunContext

    probes = build_probes(n_groups=3, seed=0)
    tok = load_tokenizer(tiny_profile)
    heads = [load_model(tiny_profile, num_labels=1, for_training=False).eval() for _ in range(2)]  # an untrained ensemble
    rows = run_bias_probes(probes, {"base": (load_model(tiny_profile, for_training=False), tok), "again": str(tiny_base_path)},
                           ensemble_scorer(heads, tok, tiny_profile.model.max_seq_length), profile=tiny_profile,
                           score_replies=True, max_new_tokens=6, n_resamples=200)
    assert [r["model"] for r in rows][:1] == ["reward_model"] and {r["model"] for r in rows} == {"reward_model", "base", "again"}
    measures = {(r["model"], r["domain"], r["measure"]) for r in rows}
    assert ("base", "medical", "emergency_rate") in measures and ("again", "legal", "clause_correct") in measures
    assert ("base", "medical", "reward_of_reply") in measures and ("reward_model", "legal", "reward_margin") in measures
    assert all(r["n"] == 3 and 0 <= r["p_value"] <= r["p_holm"] <= 1 for r in rows)
    # The same weights loaded twice give the same replies: every policy row of one equals the other's.
    key = lambda r: (r["domain"], r["attribute"], r["values"], r["measure"])  # noqa: E731
    assert {key(r): r["difference"] for r in rows if r["model"] == "base"} == {key(r): r["difference"] for r in rows if r["model"] == "again"}

    empty = RunContext.create(tmp_path / "run", tiny_profile)  # no stages yet: the base alone, no reward rows
    assert {r["model"] for r in probe_run(empty, probes, max_new_tokens=4, n_resamples=200)} == {"base"}
