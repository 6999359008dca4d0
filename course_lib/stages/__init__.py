"""The pipeline's stages: one function and one config dataclass each, in a small registry.

``STAGES`` maps a stage name to ``(run_function, config_class)``; the unified pipeline
iterates it, and new stages (KTO, ORPO, GRPO...) join with :func:`register_stage`
without touching the pipeline.
"""
from __future__ import annotations

from typing import Callable

from .base import RunContext, StageResult
from .reward import run_reward
from .reward_config import RewardStageConfig
from .sft import run_sft
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

__all__ = ["STAGES", "RewardStageConfig", "RunContext", "SFTStageConfig", "StageResult", "register_stage", "run_reward", "run_sft"]
