"""The pipeline's stages: one config dataclass each, a builder, a finisher and a cached runner.

Each stage offers ``make_<stage>_trainer(cfg, run)`` (the configured TRL trainer, for a
notebook to show and train), ``finish_<stage>(trainer, cfg, run)`` (save, measure, mark),
and ``run_<stage>(cfg, run)``, the two with a cache, for the track and the pipeline.

``STAGES`` maps a stage name to ``(run_function, config_class)``; the unified pipeline
iterates it, and new stages (KTO, ORPO, GRPO...) join with :func:`register_stage`
without touching the pipeline.
"""
from __future__ import annotations

from typing import Callable

from .base import RunContext, StageResult
from .dpo import finish_dpo, make_dpo_trainer, run_dpo
from .dpo_config import DPOStageConfig
from .ppo import PPOTrainer, finish_ppo, make_ppo_trainer, run_ppo
from .ppo_config import PPOStageConfig
from .reward import finish_reward, load_reward_model, make_reward_trainer, run_reward
from .reward_config import RewardStageConfig
from .sft import finish_sft, make_sft_trainer, run_sft
from .sft_config import SFTStageConfig

STAGES: dict[str, tuple[Callable[..., StageResult], type]] = {}


def register_stage(name: str, run: Callable[..., StageResult], config_class: type) -> None:
    """Add a stage to the registry.

    Args:
        name: the stage's folder name in the run directory.
        run: ``run(cfg, run_context) -> StageResult``.
        config_class: the stage's config dataclass.
    """
    if name in STAGES:
        raise ValueError(f"stage {name!r} is already registered")
    STAGES[name] = (run, config_class)


register_stage("sft", run_sft, SFTStageConfig)
register_stage("reward", run_reward, RewardStageConfig)
register_stage("ppo", run_ppo, PPOStageConfig)
register_stage("dpo", run_dpo, DPOStageConfig)

__all__ = [
    "DPOStageConfig", "PPOStageConfig", "PPOTrainer", "STAGES", "RewardStageConfig", "RunContext", "SFTStageConfig",
    "StageResult", "finish_dpo", "finish_ppo", "finish_reward", "finish_sft", "load_reward_model", "make_dpo_trainer",
    "make_ppo_trainer", "make_reward_trainer", "make_sft_trainer", "register_stage", "run_dpo", "run_ppo", "run_reward",
    "run_sft",
]
