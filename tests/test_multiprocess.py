"""The stages and the pipeline command under a two-process ``accelerate launch`` on CPU (gloo): every
process trains, the main process alone measures and writes, and the run is the one a single process
would leave (docs/scaling.md)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.accelerate_configs import config_path
from course_lib.errors import ConfigError
from course_lib.pipeline import check_processes, load_pipeline, main
from test_pipeline import STAGE_SETTINGS, new_run, write_pipeline  # the pipeline tests' run maker and file writer

STAGES = {
    "sft": {**STAGE_SETTINGS["sft"], "eval_prompts": 2, "max_new_tokens": 8},
    "reward": STAGE_SETTINGS["reward"],  # two ensemble members: the second trains after the first is saved
    "dpo": {**STAGE_SETTINGS["dpo"], "eval_prompts": 2},
}
ABLATION = "sft+reward+dpo"


def free_port() -> int:
    """A port no one listens on, so this launch does not meet another one on accelerate's default."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, *args: str, processes: int) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    # No GPU visible, as on the CPU machines cpu_gloo.yaml is for; torchrun's temporary files go to tmp_path.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    cmd = [str(accelerate), "launch", "--config_file", str(config_path("cpu_gloo")), "--num_processes", str(processes),
           "--main_process_port", str(free_port()), "-m", "course_lib.pipeline", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_train_sft_reward_and_dpo_and_one_process_reuses_them(tmp_path, data_dir):
    run = new_run(tmp_path, data_dir)
    path = write_pipeline(tmp_path / "p.yaml", stages=STAGES, ablations={ABLATION: list(STAGES)})
    out = launch(tmp_path, str(path), "--run", str(run.run_dir), "--no-progress", processes=2)
    assert out.returncode == 0, out.stderr[-3000:]
    # Printed by the main process alone.
    for stage in STAGES:
        assert out.stdout.count(f"[{ABLATION}] {stage:<7} trained") == 1, out.stdout
    assert out.stdout.count("3 stage(s) trained, 0 reused") == 1 and out.stdout.count("gain vs SFT") == 1

    markers = {}
    for stage in STAGES:
        folder = run.stage_dir(stage)
        assert {"COMPLETE", "config.yaml", "metrics.json", "stage_info.json"} <= {p.name for p in folder.iterdir()}
        markers[stage] = (folder / "COMPLETE").read_text()
        metrics = json.loads((folder / "metrics.json").read_text())
        ledgers = metrics["ledger"] if stage == "reward" else [metrics["ledger"]]
        assert [ledger["processes"] for ledger in ledgers] == [2] * len(ledgers)
        assert metrics["resumed_from_step"] is None
    # What the main process measured after training, as one process measures it.
    sft = json.loads((run.stage_dir("sft") / "metrics.json").read_text())
    assert sft["global_step"] == 3 and sft["gold_score_after"] is not None and sft["eval_loss"] > 0
    assert (run.stage_dir("sft") / "merged" / "model.safetensors").is_file()
    reward = json.loads((run.stage_dir("reward") / "metrics.json").read_text())
    assert len(reward["member_accuracy"]) == 2 and 0 <= reward["accuracy"] <= 1
    assert all((run.stage_dir("reward") / f"member_{i}" / "model.safetensors").is_file() for i in (0, 1))  # trained whole
    dpo = json.loads((run.stage_dir("dpo") / "metrics.json").read_text())
    assert dpo["global_step"] == 2 and dpo["implicit_reward_accuracy"] is not None and dpo["gold_gain"] is not None
    assert (run.stage_dir("dpo") / "merged" / "model.safetensors").is_file()
    results = json.loads((run.run_dir / "pipeline" / "results.json").read_text())
    assert list(results["results"]) == [ABLATION] and results["trained"] == 3

    # One process on a run of its own writes the same kinds of metrics (the batch per step is half).
    single = new_run(tmp_path / "single", data_dir)
    alone = subprocess.run([sys.executable, "-m", "course_lib.pipeline", str(path), "--run", str(single.run_dir),
                            "--no-progress"], capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    for stage in STAGES:
        one, two = (json.loads((r.stage_dir(stage) / "metrics.json").read_text()) for r in (single, run))
        assert one.keys() == two.keys(), stage
        assert (one["ledger"]["processes"] if stage != "reward" else one["ledger"][0]["processes"]) == 1
        if stage != "reward":  # each process trained on its own batches, so the same steps read twice the tokens
            assert two["ledger"]["tokens"] > 1.5 * one["ledger"]["tokens"], stage
    assert json.loads((single.run_dir / "pipeline" / "results.json").read_text())["results"][ABLATION].keys() \
        == results["results"][ABLATION].keys()

    # The same stage hashes in one process: every stage is reused, nothing is written again.
    again = subprocess.run([sys.executable, "-m", "course_lib.pipeline", str(path), "--run", str(run.run_dir),
                            "--no-progress"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 stage(s) trained, 3 reused" in again.stdout
    assert {stage: (run.stage_dir(stage) / "COMPLETE").read_text() for stage in STAGES} == markers


@pytest.mark.unit
def test_a_stage_that_needs_one_process_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    path = write_pipeline(tmp_path / "p.yaml")  # its ablations run the kit's PPO
    pipe = load_pipeline(path)
    check_processes(pipe, ["sft+dpo"])  # one process: anything goes
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_processes(pipe, ["sft+dpo"])
    with pytest.raises(ConfigError, match=r"the ppo stage \(ablation 'sft\+reward\+ppo'\) runs in one process") as err:
        check_processes(pipe, ["sft", "sft+reward+ppo"])
    assert str(path) in str(err.value) and "'stages.ppo'" in str(err.value)
    # The command says it once, from the main process, and makes no run directory.
    assert main([str(path), "--run", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.count("runs in one process") == 1 and not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "1")
    assert main([str(path), "--run", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == ""
