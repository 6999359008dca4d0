"""Bring your own data: a folder of plain TRL-format files is curated, then SFT and DPO train on it,
and the unified pipeline runs on it end to end."""
from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from course_lib.data import CurationConfig, build_curated_data, load_report
from course_lib.pipeline import PIPELINES_DIR, evaluation_rows
from course_lib.pipeline import main as course_pipeline
from course_lib.stages import DPOStageConfig, RunContext, SFTStageConfig, run_dpo, run_sft
from user_folder import SEED_SIZES, write_user_folder

pytestmark = pytest.mark.slow
QUICK = dict(max_steps=3, eval_prompts=2, max_new_tokens=4, logging_steps=1, save_steps=100, progress=False)


def changed_tensors(before, after) -> list[str]:
    """Names of the weights two safetensors files hold with different values."""
    old, new = load_file(before), load_file(after)
    return [name for name, tensor in new.items() if not tensor.equal(old[name])]


def test_a_user_folder_is_curated_and_trains_sft_and_dpo(tmp_path, tiny_base_path):
    run = RunContext.create(tmp_path / "run", "tiny-cpu")
    build_curated_data(run.run_dir, CurationConfig(sizes=SEED_SIZES, user_data=write_user_folder(tmp_path / "mine")))
    assert load_report(run.run_dir)["gold_judge"]["prefs_train"]["with_reference"] == 0

    sft = run_sft(SFTStageConfig(eval_steps=100, **QUICK), run)
    assert changed_tensors(tiny_base_path / "model.safetensors", sft.output_dir / "merged" / "model.safetensors")
    assert [h["loss"] for h in sft.metrics["log_history"] if "loss" in h]
    # one held-out prompt has a reference: it alone is judged; the other is counted as skipped
    assert sft.metrics["gold_skipped_prompts"] == 1 and sft.metrics["gold_score_after"] is not None

    dpo = run_dpo(DPOStageConfig(batch_size=4, **QUICK), run)
    assert changed_tensors(sft.output_dir / "merged" / "model.safetensors", dpo.output_dir / "merged" / "model.safetensors")
    assert [h["rewards/margins"] for h in dpo.metrics["log_history"] if "rewards/margins" in h]
    assert dpo.metrics["implicit_reward_accuracy"] is not None and dpo.metrics["gold_skipped_prompts"] == 1


SMALL_STAGES = {  # PPO averages reward_members of the reward stage's ensemble_size models
    "sft": {"max_steps": 3, "eval_prompts": 0, "save_steps": 100, "eval_steps": 100},
    "reward": {"max_steps": 2, "ensemble_size": 1, "length_probe_pairs": 2, "bootstrap_resamples": 50},
    "ppo": {"max_steps": 1, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "eval_prompts": 0, "ppo_epochs": 1,
            "reward_members": 1},
    "dpo": {"max_steps": 2, "batch_size": 4, "save_steps": 100, "eval_prompts": 0, "max_new_tokens": 8},
}


def test_course_pipeline_runs_the_shipped_pipeline_on_a_user_folder(tmp_path, tiny_base_path, capsys):
    """course-pipeline on a curated user folder: every ablation is scored, gold where a reference allows."""
    run = RunContext.create(tmp_path / "run", "tiny-cpu")
    build_curated_data(run.run_dir, CurationConfig(sizes=SEED_SIZES, user_data=write_user_folder(tmp_path / "mine")))
    shipped = yaml.safe_load((PIPELINES_DIR / "unified.yaml").read_text())
    assert set(shipped["stages"]) == set(SMALL_STAGES)
    small = {**shipped, "evaluation": {"prompts": 2, "max_new_tokens": 8}, "stages": SMALL_STAGES}
    (tmp_path / "unified.yaml").write_text(yaml.safe_dump(small, sort_keys=False))

    assert course_pipeline([str(tmp_path / "unified.yaml"), "--run", str(run.run_dir), "--no-progress"]) == 0
    assert "gold skipped" in capsys.readouterr().out  # the ablation table says what the gold judge left out
    results = json.loads((run.run_dir / "pipeline" / "results.json").read_text())["results"]
    assert set(results) == set(shipped["ablations"])
    for result in results.values():
        # Two held-out prompts: the medical one with a reference is judged, the user's own is not.
        assert result["prompts"] == 2 and result["gold_skipped_prompts"] == 1
        assert result["gold_score"] is not None and result["gold_gain"] is not None and list(result["by_domain"]) == ["medical"]
        # The reward models, the KL and distinct-2 cover every prompt, the unjudged one included.
        assert isinstance(result["reward"], float) and result["kl"] is not None and result["distinct_2"] is not None
        rows = evaluation_rows(run, result)
        assert {row["domain"]: row["score"] is None for row in rows} == {"general": True, "medical": False}
        assert all(isinstance(row["reward"], float) for row in rows)
    assert results["sft"]["gold_gain"]["mean"] == 0
