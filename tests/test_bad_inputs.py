"""The bad-input corpus (tests/bad_inputs/cases.yaml): every malformed file a user may hand the kit
gets an error of the kit's own that names the file, the line or key, and the field; the kit raises
it on purpose (no library frame last, no library exception chained); nothing half-written is left."""
from __future__ import annotations

import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml

import course_lib
from course_lib import errors
from course_lib.data import load_records
from course_lib.pipeline import load_pipeline
from course_lib.pipeline import main as pipeline_main
from course_lib.stages import RunContext
from course_lib.stages.base import MARKER
from course_lib.track import main as track_main

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
KIT_DIR = Path(course_lib.__file__).resolve().parent


def open_run(path: Path, case: dict, out: Path):
    """Notebooks 02-05 open their run with the profile: RunContext.create loads it, then makes the folder."""
    return path, lambda: RunContext.create(out / "run", path)


def read_pipeline(path: Path, case: dict, out: Path):
    return path, lambda: load_pipeline(path)


def adopt_recorded_settings(path: Path, case: dict, out: Path):
    """Notebook 06 (and ``course-pipeline --settings-from-run``) reading a finished stage's config.yaml."""
    run = RunContext.create(out / "run", "tiny-cpu")
    stage_dir = run.stage_dir(case["stage"])
    stage_dir.mkdir()
    shutil.copyfile(path, stage_dir / "config.yaml")
    (stage_dir / MARKER).write_text("{}")
    return stage_dir / "config.yaml", lambda: load_pipeline("unified").with_settings_of(run)


def load_dataset(path: Path, case: dict, out: Path):
    return path, lambda: load_records(path, case["kind"], cache_dir=out / "cache")


LOADERS = {"profile": open_run, "pipeline": read_pipeline, "stage_record": adopt_recorded_settings,
           "dataset": load_dataset}


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_raised_on_purpose(err: BaseException) -> None:
    """The kit raised it itself: its last frame is kit code and no library exception hangs from it."""
    last = traceback.extract_tb(err.__traceback__)[-1]
    assert Path(last.filename).resolve().is_relative_to(KIT_DIR), f"raised in {last.filename}:{last.lineno}"
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), repr(err.__context__)


def test_the_corpus_covers_every_kind_of_input_and_each_file_once():
    files = [case["file"] for case in CASES]
    assert len(files) == len(set(files)) >= 20
    assert {case["loader"] for case in CASES} == set(LOADERS)
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "cases.yaml"}
    assert on_disk == set(files)


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_a_bad_input_gets_a_clear_error_and_leaves_nothing_behind(case, tmp_path):
    named, load = LOADERS[case["loader"]](CORPUS / case["file"], case, tmp_path)
    before = files_under(tmp_path)
    with pytest.raises(errors.CourseLibError) as info:
        load()
    err, message = info.value, str(info.value)
    assert type(err) is getattr(errors, case["error"])
    assert str(named) in message
    assert_raised_on_purpose(err)
    if case.get("whole_file"):
        assert not {"line", "key", "field"} & set(case)
    else:
        assert {"line", "key"} & set(case), "a case names the line or the key"
    if isinstance(err, errors.ConfigError):
        assert err.key == case.get("key")
        if err.key:
            assert f"key '{err.key}'" in message
        if "line" in case:
            assert f"at line {case['line']}" in message
    else:
        assert (err.line, err.field) == (case.get("line"), case.get("field"))
        if err.line is not None:
            assert f"{named}:{err.line}" in message
        if err.field is not None:
            assert f"field '{err.field}'" in message
    for words in case["says"]:
        assert words in message
    assert files_under(tmp_path) == before, "a failed load wrote files"


def test_course_pipeline_refuses_a_bad_file_in_one_line_and_makes_no_run_directory(tmp_path):
    bad = CORPUS / "pipelines" / "missing_dependency.yaml"
    proc = subprocess.run([sys.executable, "-m", "course_lib.pipeline", str(bad), "--run", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0] and "'ablations.sft+ppo'" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_course_track_refuses_a_bad_profile_in_one_line_and_makes_no_run_directory(tmp_path):
    bad = CORPUS / "profiles" / "negative_learning_rate.yaml"
    proc = subprocess.run([sys.executable, "-m", "course_lib.track", "--profile", str(bad), "--name", "bad",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("track stopped: ") and str(bad) in lines[0] and "'training.learning_rate'" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, words", [
    (["--set", "budgets.sft=[20"], ["key 'budgets.sft'", "not a YAML"]),
    (["--set", "lora.r.value=8"], ["key 'lora.r'", "not a section"]),
    (["--set", "budgets.sft=0"], ["key 'budgets.sft'", ">= 1"]),
    (["--only", "42"], ["key 'only'", "no notebook matches '42'"]),
    (["--seed", "-1"], ["key 'seed'", ">= 0"]),
    (["--cell-timeout", "0"], ["key 'cell_timeout'"]),
], ids=["set-unparsable", "set-into-a-setting", "set-impossible", "only-unknown", "negative-seed", "zero-timeout"])
def test_bad_track_arguments_stop_before_the_run_directory_is_made(args, words, tmp_path, capsys):
    status = track_main(["--name", "bad", "--runs-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0 and len(lines) == 1, err
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "runs").exists()


def test_an_unknown_ablation_stops_course_pipeline_before_the_run_directory_is_made(tmp_path, capsys):
    status = pipeline_main(["unified", "--run", str(tmp_path / "run"), "--ablation", "sft+grpo"])
    err = capsys.readouterr().err
    assert status != 0 and "no ablation named 'sft+grpo'" in err and "'ablations'" in err
    assert not (tmp_path / "run").exists()
