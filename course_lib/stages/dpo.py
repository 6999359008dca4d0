"""The DPO stage: TRL's ``DPOTrainer`` on the preference pairs, from a finished policy.

DPO needs no reward model and no sampling: it raises the log-probability of each chosen reply
relative to the rejected one, measured against a reference, with ``beta`` setting how far the
policy may move. The policy is the starting model (the SFT model, or PPO's policy in the
pipeline's ``sft+reward+ppo+dpo`` variant) with a fresh LoRA adapter, so the adapter switched
off *is* the starting model: the reference, with no second copy of the weights and never the
bare base (DESIGN.md, "The reference model").

As for SFT: notebook 05 builds the trainer with :func:`make_dpo_trainer`, calls ``train()``
and hands it to :func:`finish_dpo`; the pipeline calls :func:`run_dpo`, the same with a cache
and resume. ``runs/<name>/dpo/`` holds ``adapter/``, ``merged/`` (what a later stage starts
from), ``checkpoints/`` while training, and the usual config, metrics and marker.
Introduced in ``05_dpo``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import load_records
from ..models import detect_device, load_model, load_tokenizer, lora_config, tokenizer_fingerprint
from .base import (
    ComputeLedger, RunContext, StageResult, attach_kit_callbacks, common_training_args, finish_stage, is_main_process,
    ledger_of, length_grouped, result_of_main_process, run_cached_trl_stage, stage_hash, wait_for_everyone,
)
from .dpo_config import DPOStageConfig
from .lm_head import use_full_logits_on_cpu
from .policy import before_and_after, gold_prompts, save_policy

STAGE = "dpo"
PRODUCERS = {"sft": "notebook 02_sft (run_sft)", "ppo": "notebook 04_ppo (run_ppo)"}
"""Who makes the model each ``start_from`` names."""


def dpo_inputs(cfg: DPOStageConfig, run: RunContext) -> dict[str, Path]:
    """What the stage reads: the starting model, the training and validation pairs, the held-out prompts."""
    producer = PRODUCERS.get(cfg.start_from, f"the {cfg.start_from} stage")
    return {"policy": run.artifact(cfg.start_from, "merged", producer), "train": run.data_file(cfg.train_file),
            "val": run.data_file("prefs_val.jsonl"), "eval": run.data_file("eval_prompts.jsonl")}


def _pairs(path: Path):
    """A ``datasets.Dataset`` of the TRL preference columns the trainer needs."""
    return load_records(path, "preference").select_columns(["prompt", "chosen", "rejected"])


def dpo_trainer_args(cfg: DPOStageConfig, profile, output_dir: Path) -> dict[str, Any]:
    """``DPOConfig`` keyword arguments from the stage config and the profile.

    The profile's precision and optimizer, not TRL's defaults (TRL's bf16 runs about 20x slower
    on a CPU). ``sft_weight`` adds TRL's ``sft`` loss on the chosen replies (what RPO adds).
    """
    losses, weights = [cfg.loss_type], [1.0]
    if cfg.sft_weight:
        losses.append("sft")
        weights.append(cfg.sft_weight)
    return dict(
        **common_training_args(profile, output_dir=output_dir, max_steps=cfg.max_steps or profile.budgets.dpo,
                               learning_rate=cfg.learning_rate or profile.training.learning_rate / 10,
                               batch_size=cfg.batch_size, seed=cfg.seed, report_to=cfg.report_to,
                               logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, progress=cfg.progress),
        beta=cfg.beta, loss_type=losses, loss_weights=weights,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        max_length=profile.model.max_seq_length,
        eval_strategy="no",
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )


def make_dpo_trainer(cfg: DPOStageConfig, run: RunContext, callbacks: list | None = None):
    """TRL's ``DPOTrainer`` on the run's preference pairs, from ``cfg.start_from``'s merged model.

    A fresh LoRA adapter (shaped by the profile) goes on the starting model; TRL reads the
    reference by switching that adapter off, which gives exactly the starting model.
    Call ``trainer.train()``, then :func:`finish_dpo`. Introduced in ``05_dpo``.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks.

    Raises:
        MissingArtifactError: no starting model (notebook 02 or 04) or no curated pairs (notebook 01).
    """
    from trl import DPOConfig, DPOTrainer

    profile = run.profile
    inputs = dpo_inputs(cfg, run)
    args = DPOConfig(**dpo_trainer_args(cfg, profile, run.stage_dir(STAGE) / "checkpoints"))
    trainer = length_grouped(DPOTrainer)(
        model=load_model(profile, str(inputs["policy"])), args=args, train_dataset=_pairs(inputs["train"]),
        eval_dataset=_pairs(inputs["val"]), processing_class=load_tokenizer(profile, str(inputs["policy"])),
        peft_config=lora_config(profile), callbacks=callbacks,
    )
    use_full_logits_on_cpu(trainer.model)
    return attach_kit_callbacks(trainer, ComputeLedger(device=detect_device(profile.device)), cfg.progress)


def finish_dpo(trainer, cfg: DPOStageConfig, run: RunContext, resumed_from_step: int | None = None) -> StageResult:
    """Save, measure and mark a trained DPO stage: what follows ``trainer.train()``.

    Measures, on held-out data: the implicit reward's accuracy and margin on the validation pairs;
    the gold score of greedy replies before (the adapter off: the starting model) and after, with
    a paired bootstrap CI of the gain; the KL to the reference on sampled replies, as PPO measures
    it. Saves the adapter and the merged policy, then writes config, metrics and marker. Under
    ``accelerate launch`` call it in every process: all of them take part in the held-out pairs'
    evaluation, the main process alone does the rest, and each gets its result.

    Args:
        trainer: a trainer from :func:`make_dpo_trainer`, after ``train()``.
        cfg: the settings it was built with.
        run: the run it belongs to.
        resumed_from_step: the checkpoint step training resumed from, if it did.
    """
    profile, out = run.profile, run.stage_dir(STAGE)
    held_out = trainer.evaluate()  # every process takes part: each scores its share of the pairs
    if not is_main_process():
        return result_of_main_process(STAGE, out)
    inputs = dpo_inputs(cfg, run)
    digest = stage_hash(cfg, profile, inputs)
    tok, policy = trainer.processing_class, trainer.model
    records, gold_skipped = gold_prompts(inputs["eval"], cfg.eval_prompts)
    measured = before_and_after(policy, tok, records, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                kl_temperature=cfg.kl_temperature)
    samples = measured.pop("samples")
    save_policy(policy, tok, out, profile, inputs["policy"])
    train_logs = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    metrics = {
        "start_from": cfg.start_from,
        "implicit_reward_accuracy": held_out.get("eval_rewards/accuracies"),
        "implicit_reward_margin": held_out.get("eval_rewards/margins"),
        "implicit_reward_chosen": held_out.get("eval_rewards/chosen"),
        "implicit_reward_rejected": held_out.get("eval_rewards/rejected"),
        "eval_loss": held_out.get("eval_loss"),
        "train_reward_accuracy": train_logs[-1]["rewards/accuracies"] if train_logs else None,
        "train_reward_margin": train_logs[-1]["rewards/margins"] if train_logs else None,
        **measured,
        "gold_skipped_prompts": gold_skipped,
        "resumed_from_step": resumed_from_step,
        "global_step": trainer.state.global_step,
        "train_rows": len(trainer.train_dataset),
        "log_history": trainer.state.log_history,
        "ledger": ledger_of(trainer).summary(),
    }
    info = {"tokenizer_fingerprint": tokenizer_fingerprint(tok), "max_steps": trainer.args.max_steps, "samples": samples}
    finish_stage(out, digest, cfg, metrics, info, inputs)
    wait_for_everyone()  # the other processes read the finished folder now
    return StageResult(STAGE, out, metrics)


def run_dpo(cfg: DPOStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """The DPO stage with its cache: skip when done with the same inputs, resume when interrupted.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks (progress widgets, tests).

    Returns:
        The stage result; ``skipped`` when a completed stage with the same inputs exists.

    Raises:
        MissingArtifactError: no starting model (notebook 02 or 04) or no curated pairs (notebook 01).
    """
    return run_cached_trl_stage(STAGE, cfg, run, dpo_inputs(cfg, run), make_dpo_trainer, finish_dpo, callbacks)
