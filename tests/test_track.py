"""The headless track runner on small stand-in notebooks: success, failure, subset, resume."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib.errors import ConfigError
from course_lib.env import package_versions
from course_lib.results import load_metrics
from course_lib.track import TrackConfig, TrackFailure, run_track

pytestmark = pytest.mark.unit

PARAMS = 'PROFILE = "tiny-cpu"\nRUN_DIR = "runs/dev"\nSEED = 0\nVALUE = 1'


def make_notebook(path, body: str, params: str = PARAMS):
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {path.stem}"), cell, new_code_cell(body),
                new_code_cell(f"from course_lib.results import record_metrics\nrecord_metrics(RUN_DIR, {path.stem!r}, {{'value': VALUE, 'seed': SEED}})")]
    nbformat.write(nb, path)


@pytest.fixture
def track_dir(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    make_notebook(folder / "00_first.ipynb", "x = VALUE * 2")
    make_notebook(folder / "01_second.ipynb", "import os\nassert os.path.isdir(RUN_DIR)")
    return folder


def config(track_dir, **kw):
    return TrackConfig(name="t", runs_dir=track_dir.parent / "runs", notebooks_dir=track_dir, **kw)


def test_runs_in_order_injects_parameters_and_reports(track_dir):
    lines = []
    state = run_track(config(track_dir, seed=3, params={"VALUE": 21}), log=lines.append)
    run_dir = track_dir.parent / "runs" / "t"
    assert [s["status"] for s in state["notebooks"].values()] == ["done", "done"]
    assert (run_dir / "notebooks" / "00_first.ipynb").is_file()
    assert load_metrics(run_dir) == {"00_first": {"value": 21, "seed": 3}, "01_second": {"value": 21, "seed": 3}}
    report = (run_dir / "report.md").read_text()
    assert "## Headline" in report and "### 00_first" in report and "| value | 21 |" in report
    assert "<table>" in (run_dir / "report.html").read_text()
    assert any("[1/2] 00_first: running" in line for line in lines)
    assert (run_dir / "profile.yaml").is_file()
    # Every executed notebook and the report carry the versions they ran with.
    executed = nbformat.read(run_dir / "notebooks" / "00_first.ipynb", as_version=4)
    assert executed.metadata["course_lib"]["versions"]["trl"] == package_versions(("trl",))["trl"]
    assert f"trl {package_versions(('trl',))['trl']}" in report


def test_failure_stops_and_names_notebook_cell_source_and_error(track_dir):
    make_notebook(track_dir / "01_second.ipynb", "numbers = [1, 2]\nnumbers[5]")
    make_notebook(track_dir / "02_never.ipynb", "pass")
    with pytest.raises(TrackFailure) as info:
        run_track(config(track_dir))
    failure = info.value
    assert failure.notebook == "01_second" and failure.cell_index == 3
    assert "numbers[5]" in failure.source and "IndexError" in failure.error
    state = json.loads((track_dir.parent / "runs" / "t" / "track_state.json").read_text())
    assert state["notebooks"]["01_second"]["status"] == "failed" and "02_never" not in state["notebooks"]


def test_subset_and_resume(track_dir):
    state = run_track(config(track_dir, only=["01"]))
    assert list(state["notebooks"]) == ["01_second"]
    lines = []
    run_track(config(track_dir, resume=True), log=lines.append)
    assert any("01_second: already done, skipped" in line for line in lines)
    assert any("00_first: running" in line for line in lines)
    # A changed notebook is run again even with --resume.
    make_notebook(track_dir / "00_first.ipynb", "x = 3")
    lines.clear()
    run_track(config(track_dir, resume=True), log=lines.append)
    assert any("00_first: running" in line for line in lines)
    assert any("01_second: already done" in line for line in lines)


def test_bad_selection_and_overrides_fail_before_running(track_dir):
    with pytest.raises(ConfigError, match="no notebook matches '07'"):
        run_track(config(track_dir, only=["07"]))
    with pytest.raises(ConfigError, match="budgets.sft"):
        run_track(config(track_dir, overrides={"budgets.sft": "many"}))


def test_command_line_prints_failure_and_exits_nonzero(track_dir):
    make_notebook(track_dir / "00_first.ipynb", "print('before')\nraise RuntimeError('boom in cell')")
    proc = subprocess.run(
        [sys.executable, "-m", "course_lib.track", "--name", "cli", "--runs-dir", str(track_dir.parent / "runs"),
         "--notebooks-dir", str(track_dir), "--only", "00"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "notebook 00_first failed in cell 3" in proc.stderr
    assert "raise RuntimeError('boom in cell')" in proc.stderr and "RuntimeError: boom in cell" in proc.stderr


def test_command_line_success_prints_where_outputs_are(track_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "course_lib.track", "--name", "ok", "--runs-dir", str(track_dir.parent / "runs"),
         "--notebooks-dir", str(track_dir), "--set", "budgets.sft=5", "--param", "VALUE=4"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Executed notebooks:" in proc.stdout and "report.html" in proc.stdout
    assert "IPKernelApp" not in proc.stderr  # no kernel log noise between the progress lines
    assert load_metrics(track_dir.parent / "runs" / "ok")["00_first"]["value"] == 4
