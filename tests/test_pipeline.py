"""The unified pipeline: pipeline files are validated, stages are cached by content hash, a changed
stage re-runs with everything downstream, a stopped run resumes, the registry grows, the CLI works."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from course_lib.errors import ConfigError, MissingArtifactError
from course_lib.pipeline import evaluation_rows, finished_pipeline, ledger_table, load_pipeline, results_table, run_pipeline
from course_lib.stages import STAGES, RunContext

STAGE_SETTINGS = {
    "sft": {"max_steps": 3, "eval_prompts": 0, "save_steps": 100, "eval_steps": 100},
    "reward": {"max_steps": 2, "ensemble_size": 2, "length_probe_pairs": 2, "bootstrap_resamples": 50},
    "ppo": {"max_steps": 1, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "eval_prompts": 0, "ppo_epochs": 1},
    "dpo": {"max_steps": 2, "batch_size": 4, "save_steps": 1, "eval_prompts": 0, "max_new_tokens": 8},
}
ABLATIONS = {"sft": ["sft"], "sft+dpo": ["sft", "dpo"], "sft+reward+ppo": ["sft", "reward", "ppo"],
             "sft+reward+ppo+dpo": ["sft", "reward", "ppo", "dpo"]}


def write_pipeline(path: Path, stages=None, ablations=None, **top) -> Path:
    data = {"seed": 0, "evaluation": {"prompts": 3, "max_new_tokens": 8}, "stages": stages or STAGE_SETTINGS,
            "ablations": ablations or ABLATIONS, **top}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.unit
@pytest.mark.parametrize("change, key, message", [
    ({"stages": {"sft": {}, "grpo2": {}}}, "stages.grpo2", "unknown stage"),
    ({"stages": {"sft": {"max_stepz": 3}}}, "stages.sft.max_stepz", "unknown setting"),
    ({"stages": {"sft": {"max_steps": 0}}}, "stages.sft.max_steps", ">= 1"),
    ({"stages": {"sft": {}, "dpo": {"loss_type": "kto"}}}, "stages.dpo.loss_type", "expected one of"),
    ({"ablations": None}, "ablations", "missing or empty"),
    ({"ablations": {"x": ["sft", "ppo"]}}, "ablations.x", "needs reward"),
    ({"ablations": {"x": ["dpo", "sft"]}}, "ablations.x", "impossible order"),
    ({"ablations": {"x": ["reward"]}}, "ablations.x", "starts with"),
    ({"ablations": {"x": ["sft", "dpo", "reward", "ppo"]}}, "ablations.x", "impossible order"),
    ({"ablations": {"x": ["sft", "sft"]}}, "ablations.x", "twice"),
    ({"ablations": {"x": "sft"}}, "ablations.x", "list of stage names"),
    ({"seed": "zero"}, "seed", "integer"),
    ({"evaluation": {"prompts": -1}}, "evaluation.prompts", ">= 1"),
    ({"extra": 1}, "extra", "unknown section"),
])
def test_a_malformed_pipeline_file_names_the_file_and_the_key(tmp_path, change, key, message):
    data = {"stages": {"sft": {}, "reward": {}, "ppo": {}, "dpo": {}}, "ablations": {"sft": ["sft"]}}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value) and message in str(err.value)


@pytest.mark.unit
def test_broken_yaml_and_a_missing_file_are_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("stages:\n  sft: {max_steps: 3\nablations: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line"):
        load_pipeline(path)
    with pytest.raises(ConfigError, match="unified"):
        load_pipeline(tmp_path / "nowhere.yaml")


@pytest.mark.unit
def test_the_shipped_pipeline_loads_and_dpo_starts_from_the_previous_policy():
    pipe = load_pipeline("unified")
    assert list(pipe.stages) == ["sft", "reward", "ppo", "dpo"] and len(pipe.ablations) == 4
    assert pipe.config_for("dpo", "sft").start_from == "sft"
    assert pipe.config_for("dpo", "ppo").start_from == "ppo"
    labeled = load_pipeline("unified")  # preferences from the widget reach every stage that reads pairs
    assert labeled.stages["reward"].train_file == "prefs_train.jsonl"


def new_run(tmp_path: Path, data_dir: Path) -> RunContext:
    shutil.copytree(data_dir, tmp_path / "run" / "data")
    return RunContext.create(tmp_path / "run", "tiny-cpu")


def trained(summary) -> list[tuple[str, str]]:
    return [(s["ablation"], s["stage"]) for s in summary["stages"] if s["status"] == "trained"]


@pytest.mark.slow
def test_ablations_share_stages_rerun_nothing_and_rerun_what_changed(tmp_path, data_dir):
    run = new_run(tmp_path, data_dir)
    path = write_pipeline(tmp_path / "p.yaml")
    first = run_pipeline(load_pipeline(path, progress=False), run)
    # Each distinct stage trains once: DPO twice (from SFT, and from PPO); the rest are cache hits.
    assert trained(first) == [("sft", "sft"), ("sft+dpo", "dpo"), ("sft+reward+ppo", "reward"),
                              ("sft+reward+ppo", "ppo"), ("sft+reward+ppo+dpo", "dpo")]
    where = {(s["ablation"], s["stage"]): s["where"] for s in first["stages"]}
    assert where[("sft+dpo", "dpo")] == "dpo" and where[("sft+reward+ppo+dpo", "dpo")] == "variants/sft+reward+ppo+dpo/dpo"
    assert json.loads((run.run_dir / "variants/sft+reward+ppo+dpo/dpo/metrics.json").read_text())["start_from"] == "ppo"
    results = first["results"]
    assert set(results) == set(ABLATIONS)
    assert results["sft"]["gold_gain"]["mean"] == 0 and results["sft"]["kl"] == pytest.approx(0, abs=1e-6)
    assert all(r["reward"] is not None and r["prompts"] == 3 for r in results.values())
    # Every ablation keeps its per-prompt rows, on the same prompts in the same order (notebook 07's statistics).
    rows = {name: evaluation_rows(run, r) for name, r in results.items()}
    assert len({tuple(row["id"] for row in r) for r in rows.values()}) == 1
    assert all(abs(sum(row["score"] for row in rows[n]) / 3 - results[n]["gold_score"]) < 1e-9 for n in rows)
    assert all(isinstance(row["reward"], float) and row["parts"] for r in rows.values() for row in r)
    ledger = ledger_table(first)  # the reward stage keeps one ledger per ensemble member: summed here
    assert ledger.loc[ledger["stage"] == "reward", "tokens"].iloc[0] > 0 and len(results_table(first)) == 4

    again = run_pipeline(load_pipeline(path, progress=False), run)
    assert again["trained"] == 0 and all(r["cached"] for r in again["results"].values())
    # What notebooks 07 and 08 read: the same results, from the caches alone.
    _, finished = finished_pipeline(path, run)
    assert finished["trained"] == 0 and finished["results"].keys() == results.keys()

    # A changed DPO setting re-runs both DPO stages and nothing upstream.
    changed = {**STAGE_SETTINGS, "dpo": {**STAGE_SETTINGS["dpo"], "beta": 0.3}}
    third = run_pipeline(load_pipeline(write_pipeline(tmp_path / "p2.yaml", stages=changed), progress=False), run)
    assert trained(third) == [("sft+dpo", "dpo"), ("sft+reward+ppo+dpo", "dpo")]
    # The notebook-made DPO stage in the run's own folder is kept; the new one goes to the ablation's folder.
    assert [s["where"] for s in third["stages"] if s["status"] == "trained"][0] == "variants/sft+dpo/dpo"

    # A changed SFT setting re-runs everything downstream of it.
    upstream = {**STAGE_SETTINGS, "sft": {**STAGE_SETTINGS["sft"], "max_steps": 2}}
    fourth = run_pipeline(load_pipeline(write_pipeline(tmp_path / "p3.yaml", stages=upstream), progress=False), run,
                          ablations=["sft+reward+ppo+dpo"])
    assert trained(fourth) == [("sft+reward+ppo+dpo", s) for s in ("sft", "reward", "ppo", "dpo")]


@pytest.mark.unit
def test_reading_a_finished_pipeline_never_trains_what_notebook_06_has_not(tmp_path, data_dir):
    run = new_run(tmp_path, data_dir)
    with pytest.raises(MissingArtifactError, match=r"sft/sft.*notebook 06_unified_pipeline"):
        finished_pipeline(write_pipeline(tmp_path / "p.yaml"), run)
    assert not run.has_stage("sft")


@pytest.mark.slow
def test_a_pipeline_stopped_mid_stage_resumes_from_its_checkpoint(tmp_path, data_dir, monkeypatch):
    from training_callbacks import StopAt

    run = new_run(tmp_path, data_dir)
    settings = {"sft": STAGE_SETTINGS["sft"], "dpo": {**STAGE_SETTINGS["dpo"], "max_steps": 3}}
    pipe = load_pipeline(write_pipeline(tmp_path / "p.yaml", stages=settings, ablations={"sft+dpo": ["sft", "dpo"]}),
                         progress=False)
    spec = STAGES["dpo"]
    monkeypatch.setitem(STAGES, "dpo", dataclasses.replace(spec, run=lambda cfg, run: spec.run(cfg, run, [StopAt(2)])))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(pipe, run)
    monkeypatch.setitem(STAGES, "dpo", spec)
    summary = run_pipeline(pipe, run)
    assert trained(summary) == [("sft+dpo", "dpo")]
    # Killed in step 2 before its checkpoint was written: it resumes from step 1 and finishes all 3.
    metrics = json.loads((run.stage_dir("dpo") / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 1 and metrics["global_step"] == 3


@pytest.mark.slow
def test_a_registered_stage_joins_a_pipeline_without_pipeline_code(tmp_path, data_dir):
    """GRPO, registered like any stage, runs after SFT from a pipeline file."""
    run = new_run(tmp_path, data_dir)
    assert STAGES["grpo"].start_field == "start_from"
    stages = {"sft": STAGE_SETTINGS["sft"], "reward": STAGE_SETTINGS["reward"],
              "grpo": {"max_steps": 1, "batch_size": 4, "num_generations": 2, "max_new_tokens": 8, "eval_prompts": 0}}
    pipe = load_pipeline(write_pipeline(tmp_path / "p.yaml", stages=stages, ablations={"sft+grpo": ["sft", "reward", "grpo"]}),
                         progress=False)
    summary = run_pipeline(pipe, run)
    assert trained(summary) == [("sft+grpo", s) for s in ("sft", "reward", "grpo")]
    assert summary["results"]["sft+grpo"]["policy"] == "grpo/merged"


@pytest.mark.slow
def test_an_input_missing_mid_run_is_one_line_and_keeps_what_finished(tmp_path, data_dir, capsys):
    """The labels file a pipeline names is absent: SFT trains and stays cached, DPO stops with one clear line."""
    from course_lib.pipeline import main

    run = new_run(tmp_path, data_dir)
    stages = {"sft": STAGE_SETTINGS["sft"], "dpo": STAGE_SETTINGS["dpo"]}
    path = write_pipeline(tmp_path / "p.yaml", stages=stages, ablations={"sft+dpo": ["sft", "dpo"]},
                          preferences="prefs_labeled.jsonl")
    assert main([str(path), "--run", str(run.run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prefs_labeled.jsonl" in err[0] and "label_preferences" in err[0], err
    assert (run.stage_dir("sft") / "COMPLETE").is_file()


@pytest.mark.slow
def test_labels_from_the_widget_feed_the_pipeline(tmp_path, data_dir):
    from course_lib.atomic import atomic_write_jsonl
    from course_lib.data import load_records

    run = new_run(tmp_path, data_dir)
    labeled = [dict(r) for r in load_records(run.data_file("prefs_train.jsonl"), "preference")][:10]
    atomic_write_jsonl(run.run_dir / "data" / "prefs_labeled.jsonl", labeled)
    stages = {"sft": STAGE_SETTINGS["sft"], "dpo": STAGE_SETTINGS["dpo"]}
    pipe = load_pipeline(write_pipeline(tmp_path / "p.yaml", stages=stages, ablations={"sft+dpo": ["sft", "dpo"]},
                                        preferences="prefs_labeled.jsonl"), progress=False)
    assert pipe.stages["dpo"].train_file == "prefs_labeled.jsonl"
    run_pipeline(pipe, run)
    assert json.loads((run.stage_dir("dpo") / "metrics.json").read_text())["train_rows"] == 10


@pytest.mark.slow
def test_the_command_line_runs_a_pipeline_under_accelerate_launch(tmp_path, data_dir):
    run = new_run(tmp_path, data_dir)
    path = write_pipeline(tmp_path / "p.yaml", stages={"sft": STAGE_SETTINGS["sft"]}, ablations={"sft": ["sft"]})
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--cpu", "-m", "course_lib.pipeline", str(path), "--run", str(run.run_dir),
           "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[sft] sft     trained" in out.stdout and "1 stage(s) trained, 0 reused" in out.stdout
    assert "gain vs SFT" in out.stdout
    again = subprocess.run([sys.executable, "-m", "course_lib.pipeline", str(path), "--run", str(run.run_dir)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 stage(s) trained, 1 reused" in again.stdout
    bad = subprocess.run([sys.executable, "-m", "course_lib.pipeline", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "none.yaml" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.unit
def test_more_reward_models_than_the_reward_stage_trains_is_refused_before_training(tmp_path):
    """Found when the pipeline runs (settings adopted from a run may supply the ensemble size), before SFT trains."""
    stages = {"sft": {}, "reward": {"ensemble_size": 1}, "ppo": {"reward_members": 2}}
    path = write_pipeline(tmp_path / "p.yaml", stages=stages, ablations={"rlhf": ["sft", "reward", "ppo"]})
    run = RunContext.create(tmp_path / "run", "tiny-cpu")
    with pytest.raises(ConfigError, match="ppo reads 2 reward models but the reward stage trains 1") as err:
        run_pipeline(load_pipeline(path, progress=False), run)
    assert err.value.key == "stages.ppo.reward_members" and str(path) in str(err.value)
    assert not run.stage_dir("sft").exists()


@pytest.mark.unit
def test_resuming_passes_over_a_checkpoint_a_kill_left_half_written(tmp_path):
    from course_lib.stages.base import last_checkpoint

    for step, files in ((2, ["trainer_state.json", "adapter_model.safetensors"]), (4, ["adapter_model.safetensors"])):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("x")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert last_checkpoint(tmp_path / "none") is None
