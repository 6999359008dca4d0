"""The SFT stage: TRL's ``SFTTrainer`` with assistant-only loss and (Q)LoRA from the profile.

Two ways in, one stage folder out. Notebook 02 builds the trainer in plain sight with
:func:`make_sft_trainer`, calls ``trainer.train()`` and hands it to :func:`finish_sft`; the
track and the pipeline call :func:`run_sft`, which does the same with a cache and resumes
an interrupted run from its last checkpoint. Either way ``runs/<name>/sft/`` holds
``adapter/`` (LoRA weights + tokenizer), ``merged/`` (the SFT model with the adapter merged,
which the reward model and the preference stages start from), ``checkpoints/`` while
training, and the usual config, metrics and marker. Introduced in ``02_sft``.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..data import load_records
from ..generation import gold_evaluate
from ..models import detect_device, load_model, load_tokenizer, lora_config, tokenizer_fingerprint
from .base import (
    ComputeLedger, RunContext, StageResult, attach_kit_callbacks, common_training_args, finish_stage, is_main_process,
    ledger_of, result_of_main_process, run_cached_trl_stage, stage_hash, wait_for_everyone,
)
from .lm_head import use_full_logits_on_cpu
from .policy import gold_prompts
from .sft_config import SFTStageConfig

STAGE = "sft"
INPUTS = ("sft_train", "sft_val", "eval_prompts")


def _conversations(path: Path):
    """A ``datasets.Dataset`` with just the ``messages`` column the trainer needs."""
    return load_records(path, "sft").select_columns(["messages"])


def sft_inputs(run: RunContext) -> dict[str, Path]:
    """The curated files the stage reads (notebook 01's output)."""
    return {name: run.data_file(f"{name}.jsonl") for name in INPUTS}


def merge_adapter(profile, adapter_dir: Path, out_dir: Path, base: str | Path | None = None) -> Path:
    """Merge a LoRA adapter into an unquantized copy of its base and save it (safetensors).

    With a 4-bit profile the base is loaded in its 16-bit dtype for the merge, so the
    merged weights are exact; later stages re-quantize them when they load.

    Args:
        profile: the run's profile.
        adapter_dir: the saved adapter.
        out_dir: where the merged model goes.
        base: the model the adapter was trained on (default: the profile's base model).
    """
    from dataclasses import replace

    from peft import PeftModel

    from ..atomic import atomic_path

    full = replace(profile, quantization=replace(profile.quantization, load_in_4bit=False))
    model = load_model(full, None if base is None else str(base), for_training=False)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tok = load_tokenizer(profile, str(adapter_dir))
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out_dir


def make_sft_trainer(cfg: SFTStageConfig, run: RunContext, callbacks: list | None = None):
    """TRL's ``SFTTrainer`` for the profile's base model on the curated conversations.

    Everything comes from the profile and ``cfg``: LoRA (or QLoRA) shape, precision,
    assistant-only loss, step budget, learning rate, evaluation and checkpoint cadence.
    Call ``trainer.train()``, then :func:`finish_sft`. Introduced in ``02_sft``.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks.

    Raises:
        MissingArtifactError: the curated data of notebook 01 is not in the run directory.
    """
    from trl import SFTConfig, SFTTrainer

    profile = run.profile
    inputs = sft_inputs(run)
    max_steps = cfg.max_steps or profile.budgets.sft
    args = SFTConfig(
        **common_training_args(profile, output_dir=run.stage_dir(STAGE) / "checkpoints", max_steps=max_steps,
                               learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
                               report_to=cfg.report_to, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps,
                               progress=cfg.progress),
        assistant_only_loss=cfg.assistant_only_loss,
        max_length=profile.model.max_seq_length,
        packing=cfg.packing,
        packing_strategy=cfg.packing_strategy,
        # Similar lengths in a batch: about 1.7x the real tokens per second of random batches on CPU, same loss;
        # the fastest mode that keeps conversations apart there (docs/benchmarks.md, "SFT batching").
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing else "random",
        padding_free=cfg.padding_free,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=True,  # the base model's held-out loss, the "before" of the loss curve
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=load_model(profile), args=args, processing_class=load_tokenizer(profile),
        train_dataset=_conversations(inputs["sft_train"]), eval_dataset=_conversations(inputs["sft_val"]),
        peft_config=lora_config(profile) if profile.lora.enabled else None, callbacks=callbacks,
    )
    use_full_logits_on_cpu(trainer.model)
    return attach_kit_callbacks(trainer, ComputeLedger(device=detect_device(profile.device)), cfg.progress)


def _gold_before(trainer, profile, tok, records, max_new_tokens: int):
    """Gold evaluation of the model as it was before SFT: the adapter switched off, or a fresh load."""
    if hasattr(trainer.model, "disable_adapter"):
        with trainer.model.disable_adapter():
            return gold_evaluate(trainer.model, tok, records, max_new_tokens=max_new_tokens)
    return gold_evaluate(load_model(profile, for_training=False), tok, records, max_new_tokens=max_new_tokens)


def finish_sft(trainer, cfg: SFTStageConfig, run: RunContext, resumed_from_step: int | None = None) -> StageResult:
    """Save, measure and mark a trained SFT stage: what follows ``trainer.train()``.

    Saves the adapter and the merged model, measures held-out loss and the gold score of
    greedy replies before SFT (the adapter switched off) and after (on the held-out prompts
    that carry a reference), and writes the stage's config, metrics and completion marker,
    exactly as :func:`run_sft` does. Under ``accelerate launch`` call it in every process: all of them
    take part in the held-out loss, the main process alone does the rest, and each gets its result.

    Args:
        trainer: a trainer from :func:`make_sft_trainer`, after ``train()``.
        cfg: the settings it was built with.
        run: the run it belongs to.
        resumed_from_step: the checkpoint step training resumed from, if it did.
    """
    profile, out = run.profile, run.stage_dir(STAGE)
    final_eval = trainer.evaluate()  # every process takes part: each scores its share of the held-out set
    if not is_main_process():
        return result_of_main_process(STAGE, out)
    inputs = sft_inputs(run)
    digest = stage_hash(cfg, profile, inputs)
    tok = trainer.processing_class
    eval_records, gold_skipped = gold_prompts(inputs["eval_prompts"], cfg.eval_prompts)
    before = _gold_before(trainer, profile, tok, eval_records, cfg.max_new_tokens) if eval_records else None
    after = gold_evaluate(trainer.model, tok, eval_records, max_new_tokens=cfg.max_new_tokens) if eval_records else None

    adapter_dir = out / "adapter"
    trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
    tok.save_pretrained(adapter_dir)
    merge_adapter(profile, adapter_dir, out / "merged")

    history = trainer.state.log_history
    base_eval_loss = next(h["eval_loss"] for h in history if "eval_loss" in h)  # eval_on_start: the base model
    metrics = {
        "base_eval_loss": base_eval_loss,
        "base_perplexity": math.exp(min(base_eval_loss, 50)),
        "eval_loss": final_eval["eval_loss"],
        "perplexity": math.exp(min(final_eval["eval_loss"], 50)),
        "gold_score_before": before["gold_score"] if before else None,
        "gold_score_after": after["gold_score"] if after else None,
        "gold_by_domain_before": before["by_domain"] if before else None,
        "gold_by_domain_after": after["by_domain"] if after else None,
        "gold_parts_before": before["parts"] if before else None,
        "gold_parts_after": after["parts"] if after else None,
        "gold_skipped_prompts": gold_skipped,
        "resumed_from_step": resumed_from_step,
        "global_step": trainer.state.global_step,
        "train_rows": len(trainer.train_dataset),
        "log_history": history,
        "ledger": ledger_of(trainer).summary(),
    }
    samples = {"before": before["rows"][:12] if before else [], "after": after["rows"][:12] if after else []}
    info = {"tokenizer_fingerprint": tokenizer_fingerprint(tok), "samples": samples, "max_steps": trainer.args.max_steps}
    finish_stage(out, digest, cfg, metrics, info, inputs)
    wait_for_everyone()  # the other processes read the finished folder now
    return StageResult(STAGE, out, metrics)


def run_sft(cfg: SFTStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """The SFT stage with its cache: skip when done with the same inputs, resume when interrupted.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks (progress widgets, tests).

    Returns:
        The stage result; ``skipped`` when a completed stage with the same inputs exists.

    Raises:
        MissingArtifactError: the curated data of notebook 01 is not in the run directory.
    """
    return run_cached_trl_stage(STAGE, cfg, run, sft_inputs(run), make_sft_trainer, finish_sft, callbacks)
