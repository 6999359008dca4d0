"""Learning signals on tiny-cpu, for three seeds: SFT learns the task, the reward model learns gold.

Margins are set well inside what the seeds give (measured values in the comments), so a
pass means the stages learn, not that a lucky seed passed.
"""
from __future__ import annotations

import shutil

import pytest

from course_lib.data import ensure_curated_data
from course_lib.stages import RewardStageConfig, RunContext, SFTStageConfig, run_reward, run_sft

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)
SFT_STEPS, REWARD_STEPS, EVAL_PROMPTS = 60, 40, 45


@pytest.fixture(scope="module")
def curated(tmp_path_factory, tiny_base_path):
    folder = tmp_path_factory.mktemp("curated")
    ensure_curated_data(folder, seed=0)
    return folder / "data"


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def trained(request, curated, tmp_path_factory):
    seed = request.param
    run_dir = tmp_path_factory.mktemp(f"signal_seed{seed}")
    shutil.copytree(curated, run_dir / "data")
    run = RunContext.create(run_dir, "tiny-cpu")
    sft = run_sft(SFTStageConfig(max_steps=SFT_STEPS, eval_prompts=EVAL_PROMPTS, seed=seed, save_steps=10_000, eval_steps=10_000), run)
    reward = run_reward(RewardStageConfig(max_steps=REWARD_STEPS, seed=seed, bootstrap_resamples=500), run)
    return sft.metrics, reward.metrics


def test_sft_lowers_held_out_loss(trained):
    sft, _ = trained
    assert sft["eval_loss"] < sft["base_eval_loss"] - 1.5


def test_sft_raises_the_gold_score_over_the_base_model(trained):
    sft, _ = trained
    assert sft["gold_score_after"] > sft["gold_score_before"] + 0.05


def test_sft_alone_does_not_saturate_the_gold_score(trained):
    """Flawed demonstrations cap what imitation reaches, leaving work for the preference stages."""
    sft, _ = trained
    assert sft["gold_score_after"] < 0.85


def test_reward_model_accuracy_against_gold_is_well_above_chance(trained):
    _, reward = trained
    assert reward["accuracy"] >= 0.75
    assert reward["accuracy_ci_low"] > 0.5
