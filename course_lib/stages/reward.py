"""The reward-model stage: TRL's ``RewardTrainer`` on the SFT model, judged against gold.

A scalar head on the merged SFT model, trained with LoRA (the head itself fully trainable)
on preference pairs. Besides the model it measures what a reward model gets wrong:
held-out accuracy against the gold judge with a bootstrap CI, optional k-fold accuracy,
an optional seed ensemble giving an uncertainty per pair, a length-bias probe, and a
calibration curve. Writes ``runs/<name>/reward/member_<i>/`` (adapters) and
``pair_scores.jsonl``. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_jsonl
from ..data import load_records
from ..domains import gold_score
from ..errors import DataError
from ..labeling import ensemble_uncertainty
from ..models import check_same_tokenizer, detect_device, load_model, load_tokenizer, lora_config, tokenizer_fingerprint
from ..stats import bootstrap_ci
from .base import (
    MARKER, ComputeLedger, RunContext, StageResult, common_training_args, completed, finish_stage, load_stage_metrics, stage_hash,
)
from .reward_config import RewardStageConfig

STAGE = "reward"
LENGTH_FILLER = " To add some further context, it is worth noting again that the points above are the main ones to keep in mind."


def gold_preference(record: dict[str, Any]) -> int:
    """+1 if the gold judge prefers ``chosen``, -1 if ``rejected``, 0 on a tie."""
    chosen = gold_score(record["domain"], record["reference"], record["chosen"][-1]["content"]).score
    rejected = gold_score(record["domain"], record["reference"], record["rejected"][-1]["content"]).score
    return int(np.sign(chosen - rejected))


def score_conversations(model, tokenizer, conversations: Sequence[list[dict[str, str]]], batch_size: int = 32) -> np.ndarray:
    """Reward of each full conversation (prompt + assistant reply), shape ``(n,)``."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    if not texts:
        return np.empty(0, dtype=np.float32)
    input_ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=1024)["input_ids"]
    # Batches of similar length waste little compute on padding (2-3x faster on CPU).
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    scores = np.empty(len(texts), dtype=np.float32)
    model.eval()
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            scores[rows] = model(**batch).logits[:, 0].float().cpu().numpy()  # (batch,)
    return scores


def pair_margins(model, tokenizer, pairs: Sequence[dict[str, Any]]) -> np.ndarray:
    """``r(prompt + chosen) - r(prompt + rejected)`` for each pair, shape ``(n,)``."""
    chosen = score_conversations(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = score_conversations(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    return chosen - rejected


def calibration_curve(margins: np.ndarray, labels: np.ndarray, bins: int, seed: int = 0) -> dict[str, Any]:
    """Predicted P(first beats second) = sigmoid(margin) against how often it really does.

    Pairs are put in a random order first (half flipped), so both outcomes occur.

    Returns:
        ``{"predicted": [...], "observed": [...], "count": [...], "ece": float}`` per bin.
    """
    rng = np.random.default_rng(seed)
    flip = rng.random(len(margins)) < 0.5
    m = np.where(flip, -margins, margins)
    outcome = np.where(flip, labels < 0, labels > 0).astype(float)
    prob = 1 / (1 + np.exp(-m))
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
    predicted, observed, count = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            predicted.append(float(prob[mask].mean()))
            observed.append(float(outcome[mask].mean()))
            count.append(int(mask.sum()))
    ece = sum(c * abs(p - o) for p, o, c in zip(predicted, observed, count)) / max(1, sum(count))
    return {"predicted": predicted, "observed": observed, "count": count, "ece": float(ece)}


def length_bias_probe(model, tokenizer, pairs: Sequence[dict[str, Any]], n_pairs: int) -> dict[str, Any]:
    """How much the reward follows length rather than content.

    Two measures: the Spearman correlation between reward and reply length over every
    reply in ``pairs``, and, on pairs that differ *only* in length (a reply and the same
    reply with a content-free sentence appended), how often the longer one wins.
    """
    from scipy.stats import spearmanr

    replies = [p["prompt"] + p[side] for p in pairs for side in ("chosen", "rejected")]
    rewards = score_conversations(model, tokenizer, replies)
    lengths = [len(r[-1]["content"]) for r in replies]
    rho, p_value = spearmanr(lengths, rewards)
    probe = list(pairs)[:n_pairs]
    short = [p["prompt"] + p["chosen"] for p in probe]
    long = [p["prompt"] + [{"role": "assistant", "content": p["chosen"][-1]["content"] + LENGTH_FILLER}] for p in probe]
    diff = score_conversations(model, tokenizer, long) - score_conversations(model, tokenizer, short)
    return {
        "spearman_reward_vs_length": float(rho),
        "spearman_p_value": float(p_value),
        "length_only_pairs": len(probe),
        "longer_preferred_rate": float((diff > 0).mean()) if len(probe) else None,
        "mean_reward_gain_from_padding": float(diff.mean()) if len(probe) else None,
    }


def make_reward_trainer(profile, sft_dir: Path, tok, rows: list[dict[str, Any]], cfg: RewardStageConfig, seed: int,
                        output_dir: Path, callbacks: list | None = None):
    """TRL's ``RewardTrainer`` for a fresh scalar head (plus LoRA) on the SFT model.

    Args:
        profile: precision, LoRA and budgets.
        sft_dir: the merged SFT model the reward head sits on.
        tok: the SFT tokenizer.
        rows: TRL preference rows (``prompt``, ``chosen``, ``rejected``).
        cfg: steps, learning rate, batch size.
        seed: this model's seed.
        output_dir: where checkpoints go.
        callbacks: extra trainer callbacks.
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model = load_model(profile, str(sft_dir), num_labels=1)
    args = RewardConfig(
        **common_training_args(profile, output_dir=output_dir, max_steps=cfg.max_steps or profile.budgets.reward,
                               learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed, report_to=cfg.report_to),
        max_length=profile.model.max_seq_length,
        center_rewards_coefficient=0.01,
        include_num_input_tokens_seen="non_padding",
    )
    train = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    return RewardTrainer(
        model=model, args=args, train_dataset=train, processing_class=tok,
        peft_config=lora_config(profile, task_type="SEQ_CLS") if profile.lora.enabled else None, callbacks=callbacks,
    )


def reward_trainer_batch(run: RunContext, n_pairs: int = 8, seed: int = 0):
    """An untrained reward trainer and one collated batch of its data (``03_reward_model``).

    The notebook computes the Bradley-Terry loss by hand on this batch and checks it
    against ``trainer.compute_loss``. In the batch the chosen sequences come first and
    the rejected ones after them, pair by pair.
    """
    import tempfile

    sft_dir = run.artifact("sft", "merged", "notebook 02_sft (run_sft)")
    tok = load_tokenizer(run.profile, str(sft_dir))
    rows = [dict(r) for r in load_records(run.data_file("prefs_train.jsonl"), "preference")][:n_pairs]
    trainer = make_reward_trainer(run.profile, sft_dir, tok, rows, RewardStageConfig(max_steps=1), seed,
                                  Path(tempfile.mkdtemp(prefix="reward_probe_")))
    # The trainer drops pairs longer than max_length, so the batch may hold fewer than n_pairs.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    return trainer, {k: v.to(trainer.model.device) for k, v in batch.items()}


def train_reward_model(profile, sft_dir: Path, tok, rows: list[dict[str, Any]], cfg: RewardStageConfig, seed: int,
                       out_dir: Path | None = None, callbacks: list | None = None):
    """Train one reward model on preference ``rows``.

    Args: as :func:`make_reward_trainer`, with ``out_dir`` the folder to save the adapter
    (and checkpoints) in; None trains in a scratch folder and keeps the model in memory.

    Returns:
        ``(model, ledger_summary, training_losses)``.
    """
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="reward_")) if out_dir is None else out_dir
    trainer = make_reward_trainer(profile, sft_dir, tok, rows, cfg, seed, scratch / "checkpoints", callbacks)
    with ComputeLedger(trainer.model, detect_device(profile.device)) as ledger:
        trainer.train()
        ledger.add_tokens(trainer.state.num_input_tokens_seen)
    if out_dir is not None:
        trainer.model.save_pretrained(out_dir, safe_serialization=True)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer.model, ledger.summary(), losses


def load_reward_model(run: RunContext, member: int = 0):
    """The trained reward model (SFT model + reward head adapter), ready to score."""
    from peft import PeftModel

    sft_dir = run.artifact("sft", "merged", "notebook 02_sft (run_sft)")
    adapter = run.artifact(STAGE, f"member_{member}", "notebook 03_reward_model (run_reward)")
    base = load_model(run.profile, str(sft_dir), num_labels=1, for_training=False)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def run_reward(cfg: RewardStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """Train the reward model(s) and measure them against the gold judge.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks.

    Raises:
        MissingArtifactError: no SFT model (notebook 02) or no preference data (notebook 01).
        ConfigError: the SFT stage used another tokenizer.
        DataError: the validation pairs hold no pair the gold judge can order.
    """
    from sklearn.model_selection import KFold

    profile = run.profile
    out = run.stage_dir(STAGE)
    sft_dir = run.artifact("sft", "merged", "notebook 02_sft (run_sft)")
    inputs = {"sft": sft_dir, "train": run.data_file(cfg.train_file), "val": run.data_file("prefs_val.jsonl")}
    digest = stage_hash(cfg, profile, inputs)
    if completed(out, digest):
        return StageResult(STAGE, out, load_stage_metrics(out), skipped=True)
    (out / MARKER).unlink(missing_ok=True)

    tok = load_tokenizer(profile, str(sft_dir))
    sft_info = json.loads((run.stage_dir("sft") / "stage_info.json").read_text())
    check_same_tokenizer({"sft": sft_info["tokenizer_fingerprint"], "reward": tokenizer_fingerprint(tok)})
    train_rows = [dict(r) for r in load_records(inputs["train"], "preference")]
    val_rows = [dict(r) for r in load_records(inputs["val"], "preference")]
    labels = np.array([gold_preference(r) for r in val_rows])
    keep = labels != 0
    if not keep.any():
        raise DataError("no validation pair has a gold preference (all ties)", file=inputs["val"])

    margins, ledgers, losses = [], [], []
    for member in range(cfg.ensemble_size):
        model, ledger, member_losses = train_reward_model(profile, sft_dir, tok, train_rows, cfg, cfg.seed + member, out / f"member_{member}", callbacks)
        margins.append(pair_margins(model, tok, val_rows))
        ledgers.append(ledger)
        losses.append(member_losses)
        if member == 0:
            probe = length_bias_probe(model, tok, [r for r, k in zip(val_rows, keep) if k], cfg.length_probe_pairs)
    margins_arr = np.stack(margins)  # (ensemble, n_val)
    mean_margin = margins_arr.mean(axis=0)
    correct = (np.sign(mean_margin[keep]) == labels[keep]).astype(float)
    acc, low, high = bootstrap_ci(correct, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    member_acc = [float((np.sign(m[keep]) == labels[keep]).mean()) for m in margins_arr]

    kfold = None
    if cfg.kfold:
        fold_acc = []
        for k, (tr, te) in enumerate(KFold(cfg.kfold, shuffle=True, random_state=cfg.seed).split(train_rows)):
            fold_model, _, _ = train_reward_model(profile, sft_dir, tok, [train_rows[i] for i in tr], cfg, cfg.seed, None, callbacks)
            held = [train_rows[i] for i in te]
            fold_labels = np.array([gold_preference(r) for r in held])
            m = pair_margins(fold_model, tok, held)
            fold_acc.append(float((np.sign(m[fold_labels != 0]) == fold_labels[fold_labels != 0]).mean()))
        kfold = {"folds": cfg.kfold, "accuracy": fold_acc, "mean": float(np.mean(fold_acc)), "std": float(np.std(fold_acc))}

    uncertainty = ensemble_uncertainty(margins_arr)  # (n_val,), as active learning measures it
    rows = [
        {"id": r["id"], "domain": r["domain"], "gold_label": int(l), "margins": [float(x) for x in margins_arr[:, i]],
         "mean_margin": float(mean_margin[i]), "uncertainty": float(uncertainty[i])}
        for i, (r, l) in enumerate(zip(val_rows, labels))
    ]
    atomic_write_jsonl(out / "pair_scores.jsonl", rows)
    by_domain = {}
    for domain in sorted({r["domain"] for r in val_rows}):
        mask = np.array([r["domain"] == domain for r in val_rows]) & keep
        by_domain[domain] = float((np.sign(mean_margin[mask]) == labels[mask]).mean()) if mask.any() else None
    metrics = {
        "accuracy": acc, "accuracy_ci_low": low, "accuracy_ci_high": high, "val_pairs": int(keep.sum()),
        "accuracy_by_domain": by_domain, "member_accuracy": member_acc, "ensemble_size": cfg.ensemble_size,
        "mean_uncertainty": float(uncertainty.mean()),
        "kfold": kfold, "length_bias": probe,
        "calibration": calibration_curve(mean_margin[keep], labels[keep], cfg.calibration_bins, cfg.seed),
        "train_pairs": len(train_rows), "train_losses": losses, "ledger": ledgers,
    }
    info = {"tokenizer_fingerprint": tokenizer_fingerprint(tok), "sft_dir": str(sft_dir)}
    finish_stage(out, digest, cfg, metrics, info)
    return StageResult(STAGE, out, metrics)
