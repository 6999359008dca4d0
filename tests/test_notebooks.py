"""Notebook conventions, and the whole track run headless through papermill on tiny settings."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.results import load_metrics

REPO = Path(__file__).resolve().parent.parent
ALL_NOTEBOOKS = sorted((REPO / "notebooks").rglob("*.ipynb"))
TRACK = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ALLOWED_CELL_METADATA = {"tags"}


def test_there_is_a_track():
    assert TRACK, "the track has no numbered notebooks"
    assert TRACK[0].name == "00_setup.ipynb"


@pytest.mark.unit
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_or_execution_counts(path):
    nb = nbformat.read(path, as_version=4)
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


@pytest.mark.notebooks
def test_whole_track_runs_headless(tmp_path):
    """The README's main command, on tiny budgets: every notebook executes and records metrics."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "course_lib.track", "--name", "ci", "--runs-dir", str(runs),
           "--set", "budgets.sft=30", "--set", "budgets.reward=30", "--set", "budgets.ppo=4", "--set", "budgets.dpo=20",
           "--set", "data.sft_per_domain=60", "--set", "data.prefs_per_domain=60", "--set", "data.eval_per_domain=12",
           "--param", "EVAL_PROMPTS=15", "--param", "LABEL_PAIRS=12", "--param", "CURVE_LABELS=20,40",
           "--param", "CURVE_SEEDS=1", "--param", "CURVE_STEPS=10"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = runs / "ci"
    metrics = load_metrics(run_dir)
    assert set(metrics) == {p.stem for p in TRACK}
    for path in TRACK:
        assert (run_dir / "notebooks" / path.name).is_file()
    setup = metrics["00_setup"]
    assert setup["device"] == "cpu" and setup["parameters"] > 1_000_000
    curation = metrics["01_data_curation"]
    assert curation["cards_complete"] is True and curation["final_sizes"]["sft_train"] > 0
    assert sum(curation["contamination_removed"]["sft"].values()) > 0
    for name in ("sft_train", "sft_val", "prefs_train", "prefs_val", "eval_prompts", "humaneval"):
        assert (run_dir / "data" / f"{name}.jsonl").is_file()
    sft, reward = metrics["02_sft"], metrics["03_reward_model"]
    assert sft["eval_loss_after"] < sft["eval_loss_before"]
    assert 0 <= reward["accuracy"] <= 1 and reward["bt_loss_difference"] < 1e-5
    assert set(reward["label_curve"]) == {"random", "uncertainty"}
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
