"""Bring your own data: a folder of plain TRL-format files is curated, then SFT and DPO train on it."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from course_lib.data import CurationConfig, build_curated_data, load_report
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
