"""Crash drills: the kit is killed (-9) where it hurts most, and nothing is lost or wrongly reused.

- a label writer killed fifty times in a row: every acknowledged label survives, none is corrupted;
- the pipeline command killed while each of SFT, the reward model, PPO and DPO trains: each run
  after a kill resumes the stage from its last whole checkpoint, and the last one completes;
- a checkpoint left by a killed run is never resumed under another config, other inputs or other code.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from test_pipeline import new_run, write_pipeline  # the pipeline tests' run maker and file writer

from course_lib.stages.base import CHECKPOINT_OWNER, resumable_checkpoint

def _write_labels_forever(path: str, start: int, acknowledge) -> None:
    """A labeling session that never pauses: each label is acknowledged once ``add`` has returned."""
    from course_lib.labeling.store import LabelStore

    store = LabelStore(path)
    for i in range(start, start + 100000):
        store.add(f"p{i}", "ana", "A", "r" * 300)
        acknowledge.send(f"p{i}")


@pytest.mark.unit
def test_fifty_kills_of_a_label_writer_lose_and_corrupt_nothing(tmp_path):
    """Each writer is killed after a random number of acknowledged labels; the next one appends to the same file."""
    import multiprocessing
    import random

    from course_lib.labeling.store import LabelStore, TornLineWarning

    path = tmp_path / "labels.jsonl"
    fork = multiprocessing.get_context("fork")  # a forked writer starts at once: fifty kills take seconds
    rng = random.Random(0)
    acknowledged: list[str] = []
    for kill in range(50):
        receive, send = fork.Pipe(duplex=False)
        writer = fork.Process(target=_write_labels_forever, args=(str(path), kill * 1000, send))
        writer.start()
        acknowledged += [receive.recv() for _ in range(rng.randint(1, 6))]
        time.sleep(rng.uniform(0, 0.003))  # then an arbitrary moment: in a write, its fsync, or between labels
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=30)
        receive.close()
        send.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)  # a torn last line is reported and skipped, by design
        store = LabelStore(path)
        stored = [label["pair_id"] for label in store.labels("ana")]
    assert set(acknowledged) <= set(stored), "an acknowledged label was lost"
    assert len(stored) == len(set(stored)), "a label was stored twice"
    assert all(label["choice"] == "A" and label["rationale"] == "r" * 300 for label in store.labels("ana"))
    assert len(store.problems) <= 50  # at most one torn line per kill, each skipped with a warning


# Every stage saves a checkpoint each step, so a kill after step 2 has something to resume from.
DRILL_STAGES = {
    "sft": {"max_steps": 6, "eval_prompts": 0, "save_steps": 1, "eval_steps": 100},
    "reward": {"max_steps": 6, "save_steps": 1, "ensemble_size": 1, "length_probe_pairs": 2, "bootstrap_resamples": 50},
    "ppo": {"max_steps": 5, "save_steps": 1, "reward_members": 1, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "eval_prompts": 0,
            "ppo_epochs": 1},
    "dpo": {"max_steps": 6, "save_steps": 1, "batch_size": 4, "eval_prompts": 0, "max_new_tokens": 8},
}
CHECKPOINTS = {"sft": "sft/checkpoints", "reward": "reward/member_0/checkpoints", "ppo": "ppo/checkpoints",
               "dpo": "dpo/checkpoints"}


def _run_until_checkpoint(cmd: list[str], folder: Path, step: int, log: Path) -> None:
    """Start the pipeline command and kill -9 its process group once ``folder`` holds a whole checkpoint-<step>."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not any((folder / f"checkpoint-{step}" / name).is_file() for name in ("trainer_state.json", "trainer_state.pt")):
        if proc.poll() is not None:
            raise AssertionError(f"the pipeline ended (exit {proc.returncode}) before {folder} held checkpoint-{step}:\n"
                                 f"{log.read_text()[-3000:]}")
        assert time.time() < deadline, f"no checkpoint-{step} in {folder} after 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_the_pipeline_killed_in_each_training_stage_resumes_and_completes(tmp_path, data_dir):
    """Four kills, one in each of SFT, reward, PPO and DPO; every rerun picks up where the kill left off."""
    run = new_run(tmp_path, data_dir)
    path = write_pipeline(tmp_path / "p.yaml", stages=DRILL_STAGES,
                          ablations={"sft+reward+ppo+dpo": ["sft", "reward", "ppo", "dpo"]})
    cmd = [sys.executable, "-m", "course_lib.pipeline", str(path), "--run", str(run.run_dir), "--no-progress"]
    for stage in ("sft", "reward", "ppo", "dpo"):
        _run_until_checkpoint(cmd, run.run_dir / CHECKPOINTS[stage], 2, tmp_path / f"killed_in_{stage}.log")
        assert not (run.stage_dir(stage) / "COMPLETE").exists(), f"{stage} was marked complete after a kill"
    finished = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "[sft+reward+ppo+dpo] dpo     trained" in finished.stdout
    for stage in ("sft", "reward", "ppo", "dpo"):
        metrics = json.loads((run.stage_dir(stage) / "metrics.json").read_text())
        assert metrics["resumed_from_step"] >= 2, (stage, metrics["resumed_from_step"])
        assert (run.stage_dir(stage) / "COMPLETE").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 stage(s) trained, 4 reused" in again.stdout, again.stdout[-2000:]


@pytest.mark.unit
def test_checkpoints_of_another_config_inputs_or_code_are_never_resumed(tmp_path):
    """Only checkpoints claimed by the same stage hash resume; any other hash starts the stage from scratch."""
    folder = tmp_path / "checkpoints"
    assert resumable_checkpoint(folder, "hash-a") is None  # nothing yet: the folder is claimed for hash-a
    for step in (1, 2):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resumable_checkpoint(folder, "hash-a") == folder / "checkpoint-2"
    assert resumable_checkpoint(folder, "hash-a", resume=False) is None  # resume off: a fresh start
    assert not (folder / "checkpoint-2").exists()

    (folder / "checkpoint-3").mkdir()
    (folder / "checkpoint-3" / "trainer_state.json").write_text("{}")
    # A changed config, input file or kit code changes the stage hash (stage_hash covers all three).
    assert resumable_checkpoint(folder, "hash-b") is None
    assert not (folder / "checkpoint-3").exists() and (folder / CHECKPOINT_OWNER).read_text().strip() == "hash-b"

    legacy = tmp_path / "unclaimed"
    (legacy / "checkpoint-5").mkdir(parents=True)
    (legacy / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert resumable_checkpoint(legacy, "hash-a") is None  # checkpoints of unknown origin are not trusted


@pytest.mark.slow
def test_a_stage_killed_under_one_config_starts_afresh_under_another(tmp_path, data_dir):
    """Killed while DPO trains with one beta, run again with another: DPO trains from step 0, not the old checkpoint."""
    run = new_run(tmp_path, data_dir)
    stages = {"sft": {**DRILL_STAGES["sft"], "max_steps": 2}, "dpo": DRILL_STAGES["dpo"]}
    path = write_pipeline(tmp_path / "p.yaml", stages=stages, ablations={"sft+dpo": ["sft", "dpo"]})
    cmd = [sys.executable, "-m", "course_lib.pipeline", str(path), "--run", str(run.run_dir), "--no-progress"]
    _run_until_checkpoint(cmd, run.run_dir / CHECKPOINTS["dpo"], 2, tmp_path / "killed.log")
    write_pipeline(path, stages={**stages, "dpo": {**stages["dpo"], "beta": 0.3}}, ablations={"sft+dpo": ["sft", "dpo"]})
    changed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    metrics = json.loads((run.stage_dir("dpo") / "metrics.json").read_text())
    assert metrics["resumed_from_step"] is None and metrics["global_step"] == 6
