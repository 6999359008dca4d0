"""The SFT stage: TRL's ``SFTTrainer`` with assistant-only loss and (Q)LoRA from the profile.

Writes ``runs/<name>/sft/``: ``adapter/`` (LoRA weights + tokenizer), ``merged/`` (the SFT
model with the adapter merged, which the reward model and the preference stages start
from), ``checkpoints/`` while training, and the usual config, metrics and marker.
Introduced in ``02_sft``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_write_json
from ..data import load_records
from ..generation import balanced_sample, gold_evaluate
from ..models import detect_device, load_model, load_tokenizer, lora_config, tokenizer_fingerprint
from .base import (
    MARKER, ComputeLedger, RunContext, StageResult, common_training_args, completed, finish_stage, load_stage_metrics, stage_hash,
)
from .sft_config import SFTStageConfig

STAGE = "sft"


def _conversations(path: Path):
    """A ``datasets.Dataset`` with just the ``messages`` column the trainer needs."""
    return load_records(path, "sft").select_columns(["messages"])


def merge_adapter(profile, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge a LoRA adapter into an unquantized copy of the base and save it (safetensors).

    With a 4-bit profile the base is loaded in its 16-bit dtype for the merge, so the
    merged weights are exact; later stages re-quantize them when they load.
    """
    from dataclasses import replace

    from peft import PeftModel

    from ..atomic import atomic_path

    full = replace(profile, quantization=replace(profile.quantization, load_in_4bit=False))
    base = load_model(full, for_training=False)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tok = load_tokenizer(profile, str(adapter_dir))
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out_dir


def run_sft(cfg: SFTStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """Fine-tune the profile's base model on the curated SFT conversations.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks (progress widgets, tests).

    Returns:
        The stage result; ``skipped`` when a completed stage with the same inputs exists.

    Raises:
        MissingArtifactError: the curated data of notebook 01 is not in the run directory.
    """
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    profile = run.profile
    out = run.stage_dir(STAGE)
    inputs = {name: run.data_file(f"{name}.jsonl") for name in ("sft_train", "sft_val", "eval_prompts")}
    digest = stage_hash(cfg, profile, inputs)
    if completed(out, digest):
        return StageResult(STAGE, out, load_stage_metrics(out), skipped=True)
    (out / MARKER).unlink(missing_ok=True)

    tok = load_tokenizer(profile)
    model = load_model(profile)
    eval_records = balanced_sample(list(load_records(inputs["eval_prompts"])), cfg.eval_prompts)
    before = gold_evaluate(model, tok, eval_records, max_new_tokens=cfg.max_new_tokens) if eval_records else None

    max_steps = cfg.max_steps or profile.budgets.sft
    args = SFTConfig(
        **common_training_args(profile, output_dir=out / "checkpoints", max_steps=max_steps, learning_rate=cfg.learning_rate,
                               batch_size=cfg.batch_size, seed=cfg.seed, report_to=cfg.report_to,
                               logging_steps=cfg.logging_steps, save_steps=cfg.save_steps),
        assistant_only_loss=True,
        max_length=profile.model.max_seq_length,
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tok,
        train_dataset=_conversations(inputs["sft_train"]), eval_dataset=_conversations(inputs["sft_val"]),
        peft_config=lora_config(profile) if profile.lora.enabled else None, callbacks=callbacks,
    )
    checkpoint = get_last_checkpoint(str(out / "checkpoints")) if cfg.resume and (out / "checkpoints").is_dir() else None
    # The base model's held-out loss (the fresh adapter is a no-op), kept on disk for resumed runs.
    base_file = out / "base_eval.json"
    if checkpoint is None or not base_file.is_file():
        atomic_write_json(base_file, {"eval_loss": trainer.evaluate()["eval_loss"]})
    base_eval_loss = json.loads(base_file.read_text())["eval_loss"]
    with ComputeLedger(trainer.model, detect_device(profile.device)) as ledger:
        trainer.train(resume_from_checkpoint=checkpoint)
        ledger.add_tokens(trainer.state.num_input_tokens_seen)
    final_eval = trainer.evaluate()

    adapter_dir = out / "adapter"
    trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
    tok.save_pretrained(adapter_dir)
    model = trainer.model
    after = gold_evaluate(model, tok, eval_records, max_new_tokens=cfg.max_new_tokens) if eval_records else None
    merge_adapter(profile, adapter_dir, out / "merged")

    metrics = {
        "base_eval_loss": base_eval_loss,
        "eval_loss": final_eval["eval_loss"],
        "perplexity": math.exp(min(final_eval["eval_loss"], 50)),
        "gold_score_before": before["gold_score"] if before else None,
        "gold_score_after": after["gold_score"] if after else None,
        "gold_by_domain_before": before["by_domain"] if before else None,
        "gold_by_domain_after": after["by_domain"] if after else None,
        "resumed_from_step": int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None,
        "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "ledger": ledger.summary(),
    }
    metrics["base_perplexity"] = math.exp(min(metrics["base_eval_loss"], 50))
    samples = {"before": before["rows"][:12] if before else [], "after": after["rows"][:12] if after else []}
    info = {"tokenizer_fingerprint": tokenizer_fingerprint(tok), "samples": samples, "max_steps": max_steps}
    finish_stage(out, digest, cfg, metrics, info)
    return StageResult(STAGE, out, metrics)
