"""The pipeline's stages: one config dataclass each, a builder, a finisher and a cached runner.

Each stage offers ``make_<stage>_trainer(cfg, run)`` (the configured TRL trainer, for a
notebook to show and train), ``finish_<stage>(trainer, cfg, run)`` (save, measure, mark),
and ``run_<stage>(cfg, run)``, the two with a cache, for the track and the pipeline.

``STAGES`` maps a stage name to its :class:`StageSpec` (runner, config class, inputs, what
it needs before it); the unified pipeline (``course_lib.pipeline``) reads it, and new stages
(GRPO, KTO, ORPO...) join with :func:`register_stage` without touching the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .base import RunContext, StageResult
from .dpo import dpo_inputs, finish_dpo, make_dpo_trainer, run_dpo
from .dpo_config import DPOStageConfig
from .grpo import GRPOStageConfig, finish_grpo, grpo_inputs, make_grpo_trainer, run_grpo
from .ppo import PPOTrainer, finish_ppo, make_ppo_trainer, ppo_inputs, run_ppo
from .ppo_config import PPOStageConfig
from .reward import finish_reward, load_reward_ensemble, load_reward_model, make_reward_trainer, reward_inputs, run_reward
from .reward_config import RewardStageConfig
from .sft import finish_sft, make_sft_trainer, run_sft, sft_inputs
from .sft_config import SFTStageConfig

@dataclass(frozen=True)
class StageSpec:
    """What the unified pipeline needs to know about a stage.

    Attributes:
        run: ``run(cfg, run_context) -> StageResult``, cached and resumable.
        config_class: the stage's config dataclass.
        inputs: ``inputs(cfg, run_context) -> {name: path}``: what its completion hash covers.
        policy: True when it produces a policy (``<stage>/merged``) a later stage can start from.
        needs: stages that must come before it in an ablation.
        start_field: the config field naming the policy stage it starts from (None: always the SFT model).
        multi_process: True when it runs under a multi-process ``accelerate launch`` (every process
            trains, the main one measures and writes; docs/scaling.md); the others run in one process.
    """

    run: Callable[..., StageResult]
    config_class: type
    inputs: Callable[[Any, RunContext], dict[str, Path]]
    policy: bool = False
    needs: tuple[str, ...] = ()
    start_field: str | None = None
    multi_process: bool = False


STAGES: dict[str, StageSpec] = {}


def register_stage(name: str, run: Callable[..., StageResult], config_class: type, *,
                   inputs: Callable[[Any, RunContext], dict[str, Path]], policy: bool = False,
                   needs: tuple[str, ...] = (), start_field: str | None = None, multi_process: bool = False) -> None:
    """Add a stage to the registry; the pipeline can then run it by name.

    Args:
        name: the stage's folder name in the run directory and its name in pipeline files.
        run: ``run(cfg, run_context) -> StageResult``.
        config_class: the stage's config dataclass.
        inputs: ``inputs(cfg, run_context) -> {name: path}``, the files its completion hash covers.
        policy: whether it writes a policy (``<stage>/merged``) later stages may start from.
        needs: stages that must come before it in an ablation (``("sft", "reward")`` for PPO).
        start_field: its config field naming the policy stage to start from, if it has one.
        multi_process: whether it runs under several processes (see :class:`StageSpec`).
    """
    if name in STAGES:
        raise ValueError(f"stage {name!r} is already registered")
    STAGES[name] = StageSpec(run, config_class, inputs, policy, needs, start_field, multi_process)


register_stage("sft", run_sft, SFTStageConfig, inputs=lambda cfg, run: sft_inputs(run), policy=True, multi_process=True)
register_stage("reward", run_reward, RewardStageConfig, inputs=reward_inputs, needs=("sft",), multi_process=True)
register_stage("ppo", run_ppo, PPOStageConfig, inputs=ppo_inputs, policy=True, needs=("sft", "reward"))
register_stage("dpo", run_dpo, DPOStageConfig, inputs=dpo_inputs, policy=True, needs=("sft",), start_field="start_from",
               multi_process=True)
# TRL's GRPO, added as any new stage is: nothing in course_lib.pipeline names it.
register_stage("grpo", run_grpo, GRPOStageConfig, inputs=grpo_inputs, policy=True, needs=("sft", "reward"),
               start_field="start_from")

__all__ = [
    "DPOStageConfig", "GRPOStageConfig", "PPOStageConfig", "PPOTrainer", "STAGES", "RewardStageConfig", "RunContext", "SFTStageConfig",
    "StageResult", "StageSpec", "finish_dpo", "finish_grpo", "finish_ppo", "finish_reward", "finish_sft", "load_reward_ensemble", "load_reward_model", "make_dpo_trainer",
    "make_grpo_trainer", "make_ppo_trainer", "make_reward_trainer", "make_sft_trainer", "register_stage", "run_dpo", "run_grpo", "run_ppo", "run_reward",
    "run_sft",
]
