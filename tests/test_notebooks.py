"""Notebook conventions, and the whole track run headless through papermill on tiny settings."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.exercises import SOLUTION_TAG, TIERS, exercise_solutions, with_solutions
from course_lib.results import load_metrics
from course_lib.track import track_notebooks

REPO = Path(__file__).resolve().parent.parent
ALL_NOTEBOOKS = sorted((REPO / "notebooks").rglob("*.ipynb"))
TRACK = track_notebooks(REPO / "notebooks")
ALLOWED_CELL_METADATA = {"tags"}
NOISE = ("Failed to load CPU gemm_4bit_forward", "LOAD REPORT", "FutureWarning", "DeprecationWarning",
         "{'loss':", "{'eval_loss':", "{'train_runtime':", "Loading weights", "Writing model shards",
         "Tokenizing train dataset")
"""Library output a learner cannot act on; an executed notebook carrying any of it fails the track test."""


def test_there_is_a_track():
    assert TRACK, "the track has no numbered notebooks"
    assert TRACK[0].name == "00_setup.ipynb"


@pytest.mark.unit
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_or_execution_counts(path):
    text = path.read_text(encoding="utf-8")
    # Ids from the raw JSON: nbformat fills in a missing cell id with only a warning.
    ids = [cell.get("id") for cell in json.loads(text)["cells"]]
    assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: every cell needs its own id, got {ids}"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        assert set(cell.metadata) <= ALLOWED_CELL_METADATA, f"{path.name} cell {i} carries metadata {set(cell.metadata)}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs; strip them"


@pytest.mark.unit
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_upper_case_scalars(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} must have exactly one cell tagged 'parameters'"
    tree = ast.parse(tagged[0].source)
    names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    assert names and all(n.isupper() for n in names)
    assert {"RUN_DIR", "SEED"} <= set(names)
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), "parameters must be scalar constants"
    # papermill silently drops a parameter whose line it cannot parse (e.g. a comment with ';').
    import papermill

    assert list(papermill.inspect_notebook(str(path))) == names


@pytest.mark.unit
@pytest.mark.parametrize("path", TRACK, ids=lambda p: p.stem)
def test_track_notebook_template(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "What you will learn" in nb.cells[0].source
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "import course_lib" in first_code.source and "pip install" in first_code.source
    last = nb.cells[-1]
    assert last.cell_type == "code" and f"record_metrics(RUN_DIR, \"{path.stem}\"" in last.source
    assert "RUN_SOLUTIONS" in papermill_parameters(path)


def papermill_parameters(path):
    import papermill

    return set(papermill.inspect_notebook(str(path)))


@pytest.mark.unit
@pytest.mark.parametrize("path", TRACK, ids=lambda p: p.stem)
def test_tiered_exercises_with_worked_solutions(path):
    """Two or three exercises, tiered, each with a cell to fill in and a collapsed worked solution."""
    nb = nbformat.read(path, as_version=4)
    with_heading = [(i, line) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("### Exercise")]
    headings = [line for _, line in with_heading]
    assert 2 <= len(headings) <= 3, f"{path.name}: {headings}"
    assert [h.split("(")[1].split(")")[0] for h in headings] == list(TIERS[:len(headings)])
    solutions = exercise_solutions(nb)
    assert len(solutions) == len(headings)
    for code in solutions:
        compile(code, path.name, "exec")  # plain Python: no magics, no syntax errors
    for i, _ in with_heading:
        fill_in, solution = nb.cells[i + 1], nb.cells[i + 2]
        assert fill_in.cell_type == "code" and "Your code here" in fill_in.source
        assert solution.cell_type == "markdown" and solution.source.startswith("<details><summary>Solution")


@pytest.mark.unit
def test_solutions_are_inserted_after_their_blocks_and_the_source_is_untouched():
    nb = nbformat.read(TRACK[0], as_version=4)
    before = nbformat.writes(nb)
    executed = with_solutions(nb)
    assert nbformat.writes(nb) == before
    inserted = [(i, c) for i, c in enumerate(executed.cells) if SOLUTION_TAG in c.metadata.get("tags", [])]
    assert [c.source for _, c in inserted] == exercise_solutions(nb)
    for i, _ in inserted:
        assert executed.cells[i - 1].source.startswith("<details><summary>Solution")


def noise_in(executed: Path) -> list[str]:
    """stderr output, and known library noise in any output, of an executed notebook."""
    found = []
    for i, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            text += "".join(output.get("data", {}).get("text/plain", "")) if "data" in output else ""
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                found.append(f"{executed.name} cell {i} stderr: {text[:200]!r}")
            found += [f"{executed.name} cell {i}: {marker!r}" for marker in NOISE if marker in text]
    return found


@pytest.mark.notebooks
def test_whole_track_runs_headless(tmp_path):
    """The README's main command, on tiny budgets: every notebook and every exercise solution executes,
    records its metrics and its by-hand checks, and shows no library noise."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "course_lib.track", "--name", "ci", "--runs-dir", str(runs),
           "--set", "budgets.sft=30", "--set", "budgets.reward=30", "--set", "budgets.ppo=4", "--set", "budgets.dpo=4",
           "--set", "data.eval_per_domain=12",
           # Notebook 01's own setting, not the profile's: later notebooks must train on what 01 built.
           "--param", "N_PER_DOMAIN=60",
           "--param", "EVAL_PROMPTS=15", "--param", "LABEL_PAIRS=12", "--param", "CURVE_LABELS=20,40",
           "--param", "CURVE_SEEDS=1", "--param", "CURVE_STEPS=6", "--param", "EXERCISE_STEPS=3",
           "--param", "PRETRAIN_STEPS=5", "--param", "ENSEMBLE_SIZE=2",
           "--param", "LAB_STEPS=2", "--param", "LAB_BATCH=4", "--param", "BON_N=4", "--param", "BON_PROMPTS=1", "--param", "PROXY_STEPS=4", "--param", "RLOO_STEPS=2",
           "--param", "LAB_PROMPTS=6", "--param", "HUMANEVAL_PROBLEMS=4", "--param", "HUMANEVAL_SAMPLES=2",
           "--param", "HUMAN_PAIRS=4", "--param", "RESAMPLES=500", "--param", "PROBE_GROUPS=4",
           "--param", "PLANTED_TEXTS=60", "--param", "MEMO_PROMPTS=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = runs / "ci"
    metrics = load_metrics(run_dir)
    assert set(metrics) == {p.stem for p in TRACK}
    noise = []
    for path in TRACK:
        executed = run_dir / "notebooks" / path.name
        assert executed.is_file()
        cells = nbformat.read(executed, as_version=4).cells
        solutions = [c for c in cells if SOLUTION_TAG in c.metadata.get("tags", [])]
        assert len(solutions) == len(exercise_solutions(nbformat.read(path, as_version=4))) >= 2
        assert all(not any(o.get("output_type") == "error" for o in c.outputs) for c in solutions)
        noise += noise_in(executed)
    assert not noise, "\n".join(noise)
    setup = metrics["00_setup"]
    assert setup["device"] == "cpu" and setup["parameters"] > 1_000_000
    verdicts = {v["profile"]: v["verdict"] for v in setup["preflight"]["verdicts"]}
    assert verdicts == {"tiny-cpu": "fits", "gpu-qlora": "does not fit"} and setup["precision"]["dtype"] == "float32"
    assert setup["pretrain_loss_by_hand_diff"] < 1e-5
    curation = metrics["01_data_curation"]
    assert curation["cards_complete"] is True and curation["final_sizes"]["sft_train"] > 0
    assert sum(curation["contamination_removed"]["sft"].values()) > 0
    assert abs(curation["jaccard_by_hand"] - curation["jaccard_minhash"]) < 0.3
    assert curation["curation_config"]["sizes"]["sft_per_domain"] == 60
    for name in ("sft_train", "sft_val", "prefs_train", "prefs_val", "eval_prompts", "humaneval"):
        assert (run_dir / "data" / f"{name}.jsonl").is_file()
    sft, reward, limits = metrics["02_sft"], metrics["03_reward_model"], metrics["03b_reward_model_limits"]
    # 02 trained on notebook 01's 60-per-domain build, not on a default (300 per domain) rebuild.
    assert sft["train_rows"] == curation["final_sizes"]["sft_train"] < 200
    assert sft["eval_loss_after"] < sft["eval_loss_before"]
    assert sft["masked_loss_by_hand_diff"] < 1e-5 and sft["lora_update_max_diff"] < 1e-5
    assert 0 <= reward["accuracy"] <= 1 and reward["bt_loss_difference"] < 1e-5
    assert set(limits["label_curve"]) == {"random", "uncertainty"}
    assert 0 <= limits["answer_swap"]["own_preferred_rate"] <= 1 and limits["answer_swap"]["pairs"] > 0
    assert limits["fact_over_form"]["pairs"] == limits["near_miss"]["pairs"] > 0
    ppo = metrics["04_ppo"]
    assert ppo["steps"] == 4 and ppo["reference_kl_at_start"] < 1e-3
    assert max(ppo["kl_by_hand_diff"], ppo["gae_by_hand_diff"], ppo["policy_loss_by_hand_diff"]) < 1e-4
    assert {"mean", "ci_low", "ci_high"} <= set(ppo["gold_gain"]) and ppo["rloo"]["steps"] == 2
    assert set(ppo["best_of_n"]) == {"weak_proxy", "reward_models"} and ppo["proxy_pairs"] > 0
    for best_of_n in ppo["best_of_n"].values():  # n = 1, 2, 4: a larger n's pick scores at least as high
        assert [row["n"] for row in best_of_n] == [1, 2, 4] and best_of_n[0]["kl"] == 0
        assert all(a["reward"] <= b["reward"] + 1e-6 for a, b in zip(best_of_n, best_of_n[1:]))
        assert all(row["gold"] <= row["gold_best"] + 1e-9 for row in best_of_n)
    breaks = ppo["break_it"]  # each failure ran, with its signature's columns
    assert set(breaks) == {"healthy (section 3)", "learning rate x20", "learning rate x20, no KL",
                           "missing EOS (24 tokens, no penalty)"}
    # Twenty times the rate: one update moves the policy much further than a healthy update does.
    assert breaks["learning rate x20"]["largest update (approx KL)"] > 10 * breaks["healthy (section 3)"]["largest update (approx KL)"]
    assert (run_dir / "ppo" / "value_model" / "model.safetensors").is_file()  # tiny-cpu's value model trains whole
    dpo = metrics["05_dpo"]
    assert dpo["steps"] == 4 and abs(dpo["loss_at_start"] - 0.6931) < 1e-3
    assert dpo["dpo_loss_by_hand_diff"] < 1e-4 and dpo["reference_vs_sft_diff"] < 1e-3
    assert set(dpo["lab"]) == {"beta 0.1", "beta 1.0", "beta 0.1 + SFT term"} and set(dpo["versus_ppo"]) == {"DPO", "PPO"}
    unified = metrics["06_unified_pipeline"]
    # Notebooks 02-05 trained every stage but DPO-after-PPO: the pipeline reuses them and trains only that.
    trained = [(s["ablation"], s["stage"]) for s in unified["stages"] if s["status"] == "trained"]
    assert trained == [("sft+reward+ppo+dpo", "dpo")] and unified["rerun_trained"] == 0
    assert set(unified["results"]) == {"sft", "sft+dpo", "sft+reward+ppo", "sft+reward+ppo+dpo"}
    assert unified["results"]["sft+dpo"]["policy"] == "dpo/merged"
    assert {row["stage"] for row in unified["planned_after_dpo_change"] if row["action"] == "train"} == {"dpo"}
    assert all(row["action"] == "train" for row in unified["planned_after_sft_change"])
    evaluation = metrics["07_evaluation"]
    # Every variant of 06, on the same prompts, read from its cache; each compared with SFT, Holm-corrected.
    assert evaluation["variants"] == list(unified["results"]) and evaluation["prompts"] == 15
    significance = {row["variant"]: row for row in evaluation["significance"]}
    assert set(significance) == set(unified["results"]) - {"sft"}
    assert all(row["p_value"] <= row["p_holm"] <= 1 and row["ci_low"] <= row["mean_difference"] <= row["ci_high"]
               for row in significance.values())
    assert evaluation["mcnemar_by_hand_diff"] is None or evaluation["mcnemar_by_hand_diff"] < 1e-9
    assert evaluation["humaneval_harness"] == {"problems": 164, "canonical_passed": 164, "empty_failed": 164, "sound": True}
    assert set(evaluation["pass_at_k"]) == set(unified["results"])
    # Pointwise judges (the rubric, the reward models) cannot flip; the hurried annotator's random answers can.
    assert all(row["position flips"] == 0 for row in evaluation["win_rates"])
    assert {row["annotator"] for row in evaluation["human_win_rates"]} >= {"careful", "hurried", "length-lover"}
    assert {"medical", "legal", "code"} <= set(evaluation["task_metrics"]["sft"])
    ethics = metrics["08_ethics"]
    assert ethics["models"] == ["base", "sft", "ppo", "dpo"] and ethics["disparity_by_hand_diff"] < 1e-6
    # Curation scrubbed what the seed sets planted: PII in the raw sets, none in the curated ones.
    assert sum(ethics["pii_datasets"]["raw/sft"].values()) > 0 and sum(ethics["pii_datasets"]["sft_train"].values()) == 0
    assert {row["model"] for row in ethics["bias"]} == {"reward_model", "base", "sft", "ppo", "dpo"}
    assert all(row["p_value"] <= row["p_holm"] <= 1 for row in ethics["bias"])
    assert set(ethics["refusals"]) == set(ethics["memorization"]["models"]) == {"base", "sft", "ppo", "dpo"}
    assert set(ethics["model_cards"]) == {"sft", "ppo", "dpo"} and not any(ethics["model_card_gaps"].values())
    assert all((run_dir / path).is_file() for path in ethics["model_cards"].values()) and not any(ethics["data_card_gaps"].values())
    assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
    state = json.loads((run_dir / "track_state.json").read_text())
    assert all(s["status"] == "done" for s in state["notebooks"].values())


@pytest.mark.notebooks
def test_labeling_notebook_runs_headless_with_simulated_annotators(tmp_path):
    """The workshop's labeling notebook end to end: labels -> curated TRL rows the reward stage reads."""
    import papermill

    from course_lib.data import load_records

    papermill.execute_notebook(
        str(REPO / "notebooks" / "labeling" / "label_preferences.ipynb"), str(tmp_path / "out.ipynb"),
        parameters={"RUN_DIR": str(tmp_path), "SIMULATE": True, "NUM_PAIRS": 15}, progress_bar=False, cwd=str(REPO),
    )
    recorded = load_metrics(tmp_path)["label_preferences"]
    assert recorded["agreement"]["n_annotators"] == 3 and recorded["conversion"]["pairs"] == 15
    rows = list(load_records(tmp_path / "data" / "prefs_labeled.jsonl", "preference"))
    assert len(rows) == recorded["rows_after_curation"] > 0
