"""A GRPO stage over TRL's ``GRPOTrainer``: the registry's example of a stage added from outside.

GRPO (group relative policy optimisation) samples several replies per prompt and uses each
one's reward relative to its group as the advantage: no value model, as in RLOO. Here the
reward is the run's reward models (their mean, as PPO uses them). The stage follows the
others' contract (a cached, resumable ``run_grpo``, a stage folder with ``merged/``), and
joins the unified pipeline through :func:`~course_lib.stages.register_stage` alone, with no
change to ``course_lib.pipeline``: a pipeline file may then name ``grpo`` (``06_unified_pipeline``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import check_fields
from ..data import load_records
from ..errors import ConfigError
from ..models import detect_device, load_model, load_tokenizer, lora_config
from .base import (
    ComputeLedger, RunContext, StageResult, attach_kit_callbacks, common_training_args, finish_stage, ledger_of,
    run_cached_trl_stage, stage_hash,
)
from .dpo import PRODUCERS
from .lm_head import use_full_logits_on_cpu
from .policy import before_and_after, gold_prompts, save_policy
from .reward import PRODUCER as REWARD_PRODUCER
from .reward import ensemble_scores, load_reward_model

STAGE = "grpo"


@dataclass
class GRPOStageConfig:
    """GRPO with TRL's ``GRPOTrainer``, rewarded by the run's reward models.

    ``None`` means "take it from the profile".
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; None = the profile's budgets.ppo", "min": 1})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = a tenth of the profile's", "above": 0, "below": 1})
    batch_size: int = field(default=16, metadata={"help": "replies per step (prompts x num_generations)", "min": 2})
    num_generations: int = field(default=4, metadata={"help": "replies sampled per prompt: the group each reward is compared with", "min": 2})
    max_new_tokens: int = field(default=96, metadata={"help": "longest sampled reply", "min": 1})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature", "above": 0})
    beta: float = field(default=0.05, metadata={"help": "weight of the KL penalty to the starting model", "min": 0})
    reward_members: int = field(default=2, metadata={"help": "reward-model ensemble members averaged for the reward", "min": 1})
    start_from: str = field(default="sft", metadata={"help": "the finished stage whose merged model GRPO starts from"})
    train_file: str = field(default="prefs_train.jsonl", metadata={"help": "data file in <run>/data whose prompts GRPO samples"})
    save_steps: int = field(default=10, metadata={"help": "steps between checkpoints (for resuming)", "min": 1})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint of an unfinished run"})
    eval_prompts: int = field(default=60, metadata={"help": "held-out prompts scored by the gold judge before and after", "min": 0})
    seed: int = field(default=0, metadata={"help": "seed of the adapter, the prompt order and the sampling"})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size % self.num_generations:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                              f"({self.num_generations})", key="batch_size")


def grpo_inputs(cfg: GRPOStageConfig, run: RunContext) -> dict[str, Path]:
    """The starting model, the reward models, the prompts and the held-out prompts."""
    members = {f"reward_{i}": run.artifact("reward", f"member_{i}", REWARD_PRODUCER) for i in range(cfg.reward_members)}
    return {"policy": run.artifact(cfg.start_from, "merged", PRODUCERS.get(cfg.start_from, f"the {cfg.start_from} stage")),
            **members, "prompts": run.data_file(cfg.train_file), "eval": run.data_file("eval_prompts.jsonl")}


def make_grpo_trainer(cfg: GRPOStageConfig, run: RunContext, callbacks: list | None = None):
    """TRL's ``GRPOTrainer`` from ``cfg.start_from``'s merged model with a fresh LoRA adapter."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    profile = run.profile
    inputs = grpo_inputs(cfg, run)
    tok = load_tokenizer(profile, str(inputs["policy"]))
    members = [load_reward_model(run, i) for i in range(cfg.reward_members)]
    max_length = profile.model.max_seq_length

    def reward(prompts: Sequence[list[dict[str, str]]], completions: Sequence[list[dict[str, str]]], **_: Any) -> list[float]:
        conversations = [p + c for p, c in zip(prompts, completions)]
        return ensemble_scores(members, tok, conversations, max_length).mean(axis=0).tolist()

    args = GRPOConfig(
        **common_training_args(profile, output_dir=run.stage_dir(STAGE) / "checkpoints", max_steps=cfg.max_steps or profile.budgets.ppo,
                               learning_rate=cfg.learning_rate or profile.training.learning_rate / 10,
                               batch_size=cfg.batch_size, seed=cfg.seed, report_to="none", logging_steps=1,
                               save_steps=cfg.save_steps, progress=cfg.progress),
        num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature,
        beta=cfg.beta,
    )
    prompts = Dataset.from_list([{"prompt": r["prompt"]} for r in load_records(inputs["prompts"], "preference")])
    trainer = GRPOTrainer(model=load_model(profile, str(inputs["policy"])), reward_funcs=reward, args=args,
                          train_dataset=prompts, processing_class=tok, peft_config=lora_config(profile), callbacks=callbacks)
    use_full_logits_on_cpu(trainer.model, temperature=cfg.temperature)
    return attach_kit_callbacks(trainer, ComputeLedger(device=detect_device(profile.device)), cfg.progress)


def finish_grpo(trainer, cfg: GRPOStageConfig, run: RunContext, resumed_from_step: int | None = None) -> StageResult:
    """Measure (gold before and after, KL to the starting model), save the policy, and mark the stage."""
    out = run.stage_dir(STAGE)
    inputs = grpo_inputs(cfg, run)
    records, gold_skipped = gold_prompts(inputs["eval"], cfg.eval_prompts)
    measured = before_and_after(trainer.model, trainer.processing_class, records, max_new_tokens=cfg.max_new_tokens,
                                seed=cfg.seed, kl_temperature=cfg.temperature)
    samples = measured.pop("samples")
    save_policy(trainer.model, trainer.processing_class, out, run.profile, inputs["policy"])
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    metrics = {"start_from": cfg.start_from, **measured, "gold_skipped_prompts": gold_skipped,
               "first_reward": rewards[0] if rewards else None, "final_reward": rewards[-1] if rewards else None,
               "resumed_from_step": resumed_from_step,
               "global_step": trainer.state.global_step, "log_history": trainer.state.log_history,
               "ledger": ledger_of(trainer).summary()}
    finish_stage(out, stage_hash(cfg, run.profile, inputs), cfg, metrics, {"samples": samples}, inputs)
    return StageResult(STAGE, out, metrics)


def run_grpo(cfg: GRPOStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """The GRPO stage with its cache: skip when done with the same inputs, resume when interrupted."""
    return run_cached_trl_stage(STAGE, cfg, run, grpo_inputs(cfg, run), make_grpo_trainer, finish_grpo, callbacks)
