"""The reward-model stage: TRL's ``RewardTrainer`` on the SFT model, judged against gold.

A scalar head on the merged SFT model, trained with LoRA (the head itself fully trainable), or
whole where the profile says so (``lora.reward: false``: tiny-cpu), on preference pairs, on
answer-swap pairs (a prompt's good answer against another prompt's: reading the question) and on
near-miss pairs (the good answer against the same answer at another triage level, or under another
function name: checking the one fact the question decides).
Two ways in, one stage folder out: notebook 03 builds the first model's trainer in plain sight
(:func:`make_reward_trainer`), trains it and hands it to :func:`finish_reward`; the track and
the pipeline call :func:`run_reward`, which does the same with a cache. Besides the model, the
stage measures what a reward model gets wrong: held-out accuracy against the gold judge with a
bootstrap CI, optional k-fold accuracy, an optional seed ensemble giving an uncertainty per
pair, a length-bias probe, the answer-swap and near-miss probes, and a calibration curve. Writes
``runs/<name>/reward/member_<i>/`` (adapters or whole models) and ``pair_scores.jsonl``.
Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_jsonl
from ..data import has_reference, load_records
from ..domains import form_slip, gold_preference, near_miss, without_form
from ..errors import DataError
from ..labeling import ensemble_uncertainty
from ..models import check_same_tokenizer, detect_device, load_model, load_tokenizer, lora_config, tokenizer_fingerprint
from ..stats import bootstrap_ci, ranked_correctly
from .base import (
    ComputeLedger, RunContext, StageResult, attach_kit_callbacks, common_training_args, completed, checkpoint_step,
    finish_stage, is_main_process, ledger_of, length_grouped, load_stage_metrics, reopen_stage, result_of_main_process,
    resumable_checkpoint, stage_hash, wait_for_everyone,
)
from .reward_config import RewardStageConfig

STAGE = "reward"
SFT_PRODUCER = "notebook 02_sft (run_sft)"
PRODUCER = "notebook 03_reward_model (run_reward)"
LENGTH_FILLER = " To add some further context, it is worth noting again that the points above are the main ones to keep in mind."


def gold_labels(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Gold's verdict on each preference row: +1 chosen wins, -1 rejected wins, 0 a tie; shape ``(n,)``.

    A row without a reference (a user's own pair: no gold judge) keeps its own label, +1: the
    reward model's accuracy on it is the usual agreement with the data's chosen reply.
    """
    return np.array([gold_preference(r["domain"], r["reference"], r["chosen"][-1]["content"], r["rejected"][-1]["content"])
                     if has_reference(r) else 1 for r in rows], dtype=int)


def score_conversations(model, tokenizer, conversations: Sequence[list[dict[str, str]]], max_length: int,
                        batch_size: int = 32) -> np.ndarray:
    """Reward of each full conversation (prompt + assistant reply), shape ``(n,)``.

    Args:
        model: a sequence-classification model with one output.
        tokenizer: its tokenizer, with the chat template.
        conversations: message lists, each ending with the assistant's reply.
        max_length: tokens kept per conversation: the length the reward model trained at
            (the profile's ``max_seq_length``). Longer ones are cut, with a warning.
        batch_size: conversations per forward pass.
    """
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    if not texts:
        return np.empty(0, dtype=np.float32)
    # Each distinct conversation is scored once: best-of-n samples repeat (about half of notebook 04's).
    position: dict[str, int] = {}
    copies = np.array([position.setdefault(t, len(position)) for t in texts])  # (n,): each one's distinct row
    texts = list(position)
    input_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cut = sum(len(ids) > max_length for ids in input_ids)
    if cut:
        warnings.warn(f"{cut} of {len(texts)} conversations are longer than max_length={max_length} tokens; "
                      "they are scored on their first max_length tokens, as the reward model was trained", stacklevel=2)
        input_ids = [ids[:max_length] for ids in input_ids]
    # Batches of similar length waste little compute on padding (2-3x faster on CPU).
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    scores = np.empty(len(texts), dtype=np.float32)
    model.eval()
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            scores[rows] = model(**batch).logits[:, 0].float().cpu().numpy()  # (batch,)
    return scores[copies]


def pair_margins(model, tokenizer, pairs: Sequence[dict[str, Any]], max_length: int) -> np.ndarray:
    """``r(prompt + chosen) - r(prompt + rejected)`` for each pair, shape ``(n,)``."""
    chosen = score_conversations(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], max_length)
    rejected = score_conversations(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], max_length)
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


def length_bias_probe(model, tokenizer, pairs: Sequence[dict[str, Any]], n_pairs: int, max_length: int) -> dict[str, Any]:
    """How much the reward follows length rather than content.

    Two measures: the Spearman correlation between reward and reply length over every
    reply in ``pairs``, and, on pairs that differ *only* in length (a reply and the same
    reply with a content-free sentence appended), how often the longer one wins.
    """
    from scipy.stats import spearmanr

    replies = [p["prompt"] + p[side] for p in pairs for side in ("chosen", "rejected")]
    rewards = score_conversations(model, tokenizer, replies, max_length)
    lengths = [len(r[-1]["content"]) for r in replies]
    rho, p_value = spearmanr(lengths, rewards)
    probe = list(pairs)[:n_pairs]
    short = [p["prompt"] + p["chosen"] for p in probe]
    long = [p["prompt"] + [{"role": "assistant", "content": p["chosen"][-1]["content"] + LENGTH_FILLER}] for p in probe]
    diff = score_conversations(model, tokenizer, long, max_length) - score_conversations(model, tokenizer, short, max_length)
    return {
        "spearman_reward_vs_length": float(rho),
        "spearman_p_value": float(p_value),
        "length_only_pairs": len(probe),
        "longer_preferred_rate": float((diff > 0).mean()) if len(probe) else None,
        "mean_reward_gain_from_padding": float(diff.mean()) if len(probe) else None,
    }


def ensemble_scores(models: Sequence[Any], tokenizer, conversations: Sequence[list[dict[str, str]]],
                    max_length: int, batch_size: int = 32) -> np.ndarray:
    """Each ensemble member's reward of each conversation, shape ``(members, n)``: PPO, GRPO, the
    pipeline and the bias probes take the members' mean (PPO may subtract their spread)."""
    return np.stack([score_conversations(m, tokenizer, conversations, max_length, batch_size) for m in models])


def answer_swap_pairs(pairs: Sequence[dict[str, Any]], seed: int | None = None) -> list[dict[str, Any]]:
    """Pairs that only a model reading the question can order: a prompt's good answer (chosen)
    against a good answer written for another prompt of the same domain (rejected).

    Args:
        pairs: TRL preference rows with a ``domain``.
        seed: None pairs each prompt with the next one of its domain (the probe's fixed pairs);
            a seed draws the other prompt at random (training pairs).

    Returns:
        One row per pair whose partner has another prompt and another good answer.
    """
    rng = None if seed is None else random.Random(seed)
    out = []
    for domain in sorted({p["domain"] for p in pairs}):
        rows = [p for p in pairs if p["domain"] == domain]
        others = rows[1:] + rows[:1] if rng is None else rng.sample(rows, len(rows))
        for row, other in zip(rows, others):
            if other["chosen"][-1]["content"] != row["chosen"][-1]["content"] and other["prompt"] != row["prompt"]:
                out.append({**row, "id": f"{row['id']}-swap", "rejected": other["chosen"]})
    return out


def near_miss_pairs(pairs: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Pairs that set a prompt's good answer against a near miss of it (:func:`course_lib.domains.near_miss`):
    the same answer at another triage level, the same code under another prompt's function name.

    Args:
        pairs: TRL preference rows with a ``domain`` and a ``reference``.
        seed: draws the other prompt each near miss may borrow from, and the miss itself.

    Returns:
        One row per pair with a reference whose domain makes a near miss of its good answer (medical, code).
    """
    rng = random.Random(seed)
    out = []
    for domain in sorted({p["domain"] for p in pairs}):
        rows = [p for p in pairs if p["domain"] == domain and has_reference(p)]
        for row, other in zip(rows, rng.sample(rows, len(rows))):
            good = row["chosen"][-1]["content"]
            miss = near_miss(domain, row["reference"], good, other["reference"], rng)
            if miss is not None:
                out.append({**row, "id": f"{row['id']}-near", "rejected": [{"role": "assistant", "content": miss}]})
    return out


def fact_over_form_pairs(pairs: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Pairs that weigh a fact against a habit: the good answer's form slip (no disclaimer, no code block)
    chosen over its near miss (the form kept, the level or the function's name wrong), as the gold judge
    orders them.

    One-flaw pairs say that each flaw costs, never which costs more; the caveat is the flaw the medical
    pairs show most, and reward models trained on them rate a wrong level with the caveat above the right
    level without it, on every seed: PPO may trade one for the other (``docs/preference_feasibility.md``,
    "Which flaw costs more"). The reward stage adds them with :func:`form_kept_pairs`, which keep the habit's
    value (``RewardStageConfig.fact_over_form_pairs``).

    Args:
        pairs: TRL preference rows with a ``domain`` and a ``reference``.
        seed: as for :func:`near_miss_pairs`, whose misses these pairs reuse.

    Returns:
        One row per near-miss pair whose good answer has a form slip (medical, code).
    """
    return _weighing_pairs(near_miss_pairs(pairs, seed))[0]


def form_kept_pairs(pairs: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The counterweight of :func:`fact_over_form_pairs`: each near miss, its form kept (disclaimer, code
    block), chosen over the same near miss without it, as the gold judge orders them.

    Trade-off pairs alone teach that the habit counts for little: at half the near misses the right level
    with the caveat scored barely above it without, and PPO dropped the caveat (``docs/preference_feasibility.md``,
    "Which flaw costs more"). These pairs say the habit counts on a wrong answer too.

    Args:
        pairs: TRL preference rows with a ``domain`` and a ``reference``.
        seed: as for :func:`near_miss_pairs`, whose misses these pairs reuse.

    Returns:
        One row per near-miss pair whose miss has a form to lose (medical, code).
    """
    return _weighing_pairs(near_miss_pairs(pairs, seed))[1]


def _weighing_pairs(misses: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From near-miss pairs, in one pass: the trade-off pairs and the form-kept pairs (the two functions above)."""
    trades, kept = [], []
    for row in misses:
        name, good, miss = row["id"].removesuffix("-near"), row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        slip = form_slip(row["domain"], row["reference"], good)
        if slip is not None:
            trades.append({**row, "id": name + "-trade", "chosen": [{"role": "assistant", "content": slip}]})
        bare = without_form(row["domain"], miss)
        if bare is not None:
            kept.append({**row, "id": name + "-form", "chosen": row["rejected"],
                         "rejected": [{"role": "assistant", "content": bare}]})
    return trades, kept


def answer_swap_probe(models: Sequence[Any], tokenizer, pairs: Sequence[dict[str, Any]], max_length: int) -> dict[str, Any]:
    """Does the reward check a reply against its prompt, or only the reply's form?

    Each prompt's own good answer against a good answer written for the next prompt of the same
    domain (a reply that answers another question). A reward model that scores only the form
    prefers its own answer about half the time; PPO then finds one reply that scores well and gives
    it to every prompt. Scored by the ensemble's mean, as PPO's reward is.

    Returns:
        ``{"own_preferred_rate": float, "by_domain": {domain: rate}, "pairs": n}``.
    """
    return _chosen_preferred(models, tokenizer, answer_swap_pairs(pairs), max_length)


def near_miss_probe(models: Sequence[Any], tokenizer, pairs: Sequence[dict[str, Any]], max_length: int) -> dict[str, Any]:
    """Does the reward check the one fact the question decides: the triage level, the function's name?

    Each held-out prompt's good answer against its near miss (:func:`near_miss_pairs`, drawn with a
    fixed seed). Trained on the curated pairs alone, a reward model prefers an over-triaged answer (the
    curated wrong answers only ever under-triage). Scored by the ensemble's mean, as PPO's reward is.

    Returns:
        ``{"own_preferred_rate": float, "by_domain": {domain: rate}, "pairs": n}`` (medical and code only).
    """
    return _chosen_preferred(models, tokenizer, near_miss_pairs(pairs, seed=0), max_length)


def fact_over_form_probe(models: Sequence[Any], tokenizer, pairs: Sequence[dict[str, Any]], max_length: int) -> dict[str, Any]:
    """Does a wrong fact cost more than a missing habit, as the gold judge scores?

    Each held-out prompt's form slip against its near miss (:func:`fact_over_form_pairs`, drawn with a
    fixed seed): the gold judge prefers the slip in every pair. A low share is the order PPO may exploit,
    trading the triage level for the disclaimer. Scored by the ensemble's mean, as PPO's reward is.

    Returns:
        ``{"own_preferred_rate": float, "by_domain": {domain: rate}, "pairs": n}`` (medical and code only).
    """
    return _chosen_preferred(models, tokenizer, fact_over_form_pairs(pairs, seed=0), max_length)


def _chosen_preferred(models: Sequence[Any], tokenizer, pairs: Sequence[dict[str, Any]], max_length: int) -> dict[str, Any]:
    """How often the ensemble's mean scores ``chosen`` above ``rejected``, overall and by domain."""
    if not pairs:
        return {"own_preferred_rate": None, "by_domain": {}, "pairs": 0}
    diff = (ensemble_scores(models, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], max_length)
            - ensemble_scores(models, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], max_length)).mean(axis=0)  # (n,)
    domains = np.array([p["domain"] for p in pairs])
    return {"own_preferred_rate": float((diff > 0).mean()), "pairs": len(pairs),
            "by_domain": {d: float((diff[domains == d] > 0).mean()) for d in sorted(set(domains))}}


def preference_rows(run: RunContext, file: str) -> list[dict[str, Any]]:
    """The TRL preference rows of a data file in the run (curated pairs or the workshop's labels)."""
    return [dict(r) for r in load_records(run.data_file(file), "preference")]


def make_reward_trainer(cfg: RewardStageConfig, run: RunContext, rows: list[dict[str, Any]] | None = None,
                        seed: int | None = None, output_dir: Path | None = None, callbacks: list | None = None,
                        progress: bool | None = None):
    """TRL's ``RewardTrainer`` for a fresh scalar head (plus LoRA) on the SFT model.

    Introduced in ``03_reward_model``, which builds it in plain sight and calls ``train()``.

    Args:
        cfg: steps, learning rate, batch size, the training file.
        run: the run (its SFT model and data).
        rows: TRL preference rows to train on; None reads ``cfg.train_file``.
        seed: this model's seed; None takes ``cfg.seed``.
        output_dir: where checkpoints go; None is ``<run>/reward/member_0/checkpoints``.
        callbacks: extra trainer callbacks.
        progress: show a live progress bar; None takes ``cfg.progress``.

    Raises:
        MissingArtifactError: no SFT model (notebook 02) or no preference data (notebook 01).
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    profile = run.profile
    sft_dir = run.artifact("sft", "merged", SFT_PRODUCER)
    rows = preference_rows(run, cfg.train_file) if rows is None else rows
    progress = cfg.progress if progress is None else progress
    seed = cfg.seed if seed is None else seed
    adapter = reward_uses_adapter(profile)
    learning_rate = cfg.learning_rate or score_model_learning_rate(profile, adapter)
    args = RewardConfig(
        **common_training_args(profile, output_dir=output_dir or run.stage_dir(STAGE) / "member_0" / "checkpoints",
                               max_steps=cfg.max_steps or profile.budgets.reward, learning_rate=learning_rate,
                               batch_size=cfg.batch_size, seed=seed,
                               report_to=cfg.report_to, save_steps=cfg.save_steps, progress=progress),
        max_length=profile.model.max_seq_length,
        center_rewards_coefficient=0.01,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )
    curated = rows
    if cfg.swap_pairs:  # teach it to read the question: the curated pairs differ only within one prompt's answers
        swaps = answer_swap_pairs(curated, seed)
        rows = rows + random.Random(seed).sample(swaps, round(cfg.swap_pairs * len(swaps)))
    misses = near_miss_pairs(curated, seed) if cfg.near_miss_pairs or cfg.fact_over_form_pairs else []
    if cfg.near_miss_pairs:  # and to check the one fact the question decides: the level, the function's name
        rows = rows + random.Random(seed + 1).sample(misses, round(cfg.near_miss_pairs * len(misses)))
    if cfg.fact_over_form_pairs:  # and that a wrong fact costs more than a missing habit, which still counts
        trades, kept = _weighing_pairs(misses)
        rows = (rows + random.Random(seed + 2).sample(trades, round(cfg.fact_over_form_pairs * len(trades)))
                + random.Random(seed + 3).sample(kept, round(cfg.fact_over_form_pairs * len(kept))))
    train = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    # The head is new, so transformers reports score.weight as missing: expected, and said once in notebook 03.
    model = load_model(profile, str(sft_dir), num_labels=1)
    trainer = length_grouped(RewardTrainer)(  # random batches of these pairs are half padding
        model=model, args=args, train_dataset=train, processing_class=load_tokenizer(profile, str(sft_dir)),
        peft_config=lora_config(profile, task_type="SEQ_CLS") if adapter else None, callbacks=callbacks,
    )
    device = detect_device(profile.device)
    if profile.quantization.load_in_4bit and device == "cpu":
        _head_in_float32(trainer.model)
    return attach_kit_callbacks(trainer, ComputeLedger(device=device), progress)


def reward_uses_adapter(profile) -> bool:
    """Whether the reward model trains a LoRA adapter (``lora.enabled`` and ``lora.reward``) or all its weights."""
    return profile.lora.enabled and profile.lora.reward


def score_model_learning_rate(profile, adapter: bool) -> float:
    """The default learning rate of a reward or value model: the profile's for an adapter, a fifth of it
    for all weights (a step that suits an adapter makes a whole tiny model's loss jump)."""
    return profile.training.learning_rate / (1 if adapter else 5)


def save_score_model(model, folder: Path) -> None:
    """Save a reward or value model (an adapter and head, or all weights) into ``folder``.

    The weights an earlier run left there go first: a folder holding both an adapter and whole weights
    would load as whichever :func:`load_score_model` looks for first (a profile changed between runs).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in ("adapter_config.json", "adapter_model.*", "README.md", "config.json", "model*.safetensors*"):
        for old in folder.glob(pattern):
            old.unlink()
    model.save_pretrained(folder, safe_serialization=True)


def load_score_model(profile, sft_dir: Path, folder: Path, trainable: bool = False):
    """A saved reward or value model: an adapter on the SFT model, or a whole model (``lora.reward: false``).

    Args:
        profile: the run's profile (precision, device).
        sft_dir: the merged SFT model an adapter sits on.
        folder: the saved model's folder.
        trainable: load it for further training instead of frozen, in eval mode.
    """
    if not (Path(folder) / "adapter_config.json").is_file():
        model = load_model(profile, str(folder), num_labels=1, for_training=trainable)
    else:
        from peft import PeftModel

        base = load_model(profile, str(sft_dir), num_labels=1, for_training=trainable)
        model = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    return model if trainable else model.requires_grad_(False).eval()  # frozen: a whole model's weights too


def merged_for_scoring(model):
    """A reward model that will only score from here on: its adapter folded into the weights (the same scores,
    without the adapter's extra matmuls); a model trained whole as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def _head_in_float32(model) -> None:
    """Keep a 4-bit model's trainable reward head in float32 on CPU.

    TRL casts every trainable parameter of a quantized model to bf16 (the QLoRA paper's choice).
    LoRA layers cast their input to match; the plain linear head does not, and on a CPU, with no
    autocast, its bf16 weight would meet float32 activations. On a GPU autocast reconciles them.
    """
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            param.data = param.data.to(torch.float32)


def train_reward_model(cfg: RewardStageConfig, run: RunContext, rows: list[dict[str, Any]], seed: int,
                       out_dir: Path | None = None, callbacks: list | None = None, stage_digest: str | None = None):
    """Train one reward model quietly (ensembles, k-fold, the label-efficiency curve).

    Args: as :func:`make_reward_trainer`, with ``out_dir`` the folder to save the adapter
    (and checkpoints) in; None trains in a scratch folder, removed afterwards, and keeps
    the model in memory only. ``stage_digest``, with an ``out_dir``, resumes from that
    folder's last checkpoint written under the same stage hash (an ensemble member of a
    killed run).

    Returns:
        ``(model, ledger_summary, training_losses)``.
    """
    scratch = Path(tempfile.mkdtemp(prefix="reward_")) if out_dir is None else out_dir
    try:
        trainer = make_reward_trainer(cfg, run, rows, seed, scratch / "checkpoints", callbacks, progress=False)
        checkpoint = (resumable_checkpoint(scratch / "checkpoints", stage_digest, cfg.resume)
                      if out_dir is not None and stage_digest is not None else None)
        trainer.train(resume_from_checkpoint=checkpoint)
        if out_dir is not None and is_main_process():
            save_score_model(trainer.model, out_dir)
    finally:
        if out_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return trainer.model, ledger_of(trainer).summary(), _losses(trainer)


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def train_weak_proxy(run: RunContext, share: float, steps: int, seed: int, batch_size: int) -> tuple[Any, int, int]:
    """A reward model weak on purpose: notebook 04's over-optimization lab pushes best-of-n against it.

    One model, on a random ``share`` of the run's training pairs, for ``steps`` optimizer steps of
    ``batch_size`` pairs, without the answer-swap and near-miss pairs that teach the stage's models to
    read the question: it learns what a good reply looks like more than whether it is right.

    Args:
        run: the run whose ``prefs_train.jsonl`` and SFT model it starts from.
        share: the share of the training pairs to learn from, in (0, 1].
        steps: optimizer steps.
        seed: seed of the pair sample and of the training.
        batch_size: pairs per step (notebook 04 uses 8, half tiny-cpu's 16: half the compute, and its proxy
            turned as often; docs/preference_feasibility.md, "A cheaper lab").

    Returns:
        ``(model, pairs it learned from, training pairs in the run)``.

    Raises:
        ValueError: ``share`` outside (0, 1].
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    pairs = preference_rows(run, "prefs_train.jsonl")
    chosen = random.Random(seed).sample(pairs, max(1, round(share * len(pairs))))
    cfg = RewardStageConfig(max_steps=steps, batch_size=batch_size, swap_pairs=0, near_miss_pairs=0,
                            fact_over_form_pairs=0, seed=seed, progress=False)
    model, _, _ = train_reward_model(cfg, run, chosen, seed=seed)
    return model, len(chosen), len(pairs)


def score_replies(model, tokenizer, records: Sequence[dict[str, Any]], replies: Sequence[Sequence[str]],
                  max_length: int) -> np.ndarray:
    """Reward of each reply to each record's prompt, shape ``(records, replies per record)``.

    Args:
        model: a sequence-classification model with one output.
        tokenizer: its tokenizer, with the chat template.
        records: prompt records (each with its ``prompt`` messages).
        replies: the same number of reply texts for each record.
        max_length: as for :func:`score_conversations`.
    """
    per_record = {len(texts) for texts in replies}
    if len(replies) != len(records) or len(per_record) > 1:
        raise ValueError(f"expected the same number of replies for each of {len(records)} records, got "
                         f"{[len(texts) for texts in replies]}")
    conversations = [record["prompt"] + [{"role": "assistant", "content": text}]
                     for record, texts in zip(records, replies) for text in texts]
    width = per_record.pop() if per_record else 0
    return score_conversations(model, tokenizer, conversations, max_length).reshape(len(records), width)


def load_reward_model(run: RunContext, member: int = 0, trainable: bool = False):
    """The trained reward model (the SFT model with its head and adapter, or all weights trained), ready to score (``03b``).

    Args:
        run: the run whose reward stage trained it.
        member: which ensemble member.
        trainable: load its trained weights for further training (PPO's value model starts here)
            instead of frozen, in eval mode.
    """
    return load_score_model(run.profile, run.artifact("sft", "merged", SFT_PRODUCER),
                            run.artifact(STAGE, f"member_{member}", PRODUCER), trainable)


def load_reward_ensemble(run: RunContext) -> list[Any]:
    """Every member the run's reward stage trained (``member_0``, ``member_1``, ...), ready to score."""
    folder = run.artifact(STAGE, "member_0", PRODUCER).parent
    members = [d for d in folder.glob("member_*") if any(d.glob("*.safetensors"))]  # an adapter or whole weights
    return [load_reward_model(run, member) for member in range(len(members))]


def reward_inputs(cfg: RewardStageConfig, run: RunContext) -> dict[str, Path]:
    return {"sft": run.artifact("sft", "merged", SFT_PRODUCER), "train": run.data_file(cfg.train_file),
            "val": run.data_file("prefs_val.jsonl")}


def finish_reward(trainer, cfg: RewardStageConfig, run: RunContext, resumed_from_step: int | None = None) -> StageResult:
    """Complete the reward stage from its first trained model: what follows ``trainer.train()``.

    Saves that model as ``member_0``, trains the rest of the ensemble (and the k-fold
    models) quietly, measures accuracy against gold with a bootstrap CI, per domain and
    per member, the length-bias probe and the calibration curve, and writes the stage's
    config, metrics and marker exactly as :func:`run_reward` does. Under ``accelerate launch``
    call it in every process: all of them train the other models together, the main process
    alone saves and measures, and each gets its result.

    Args:
        trainer: a trainer from :func:`make_reward_trainer`, after ``train()``.
        cfg: the settings it was built with.
        run: the run it belongs to.
        resumed_from_step: the checkpoint step the first model resumed from, if it did.

    Raises:
        ConfigError: the SFT stage used another tokenizer.
        DataError: the validation pairs hold no pair the gold judge can order.
    """
    from sklearn.model_selection import KFold

    profile, out = run.profile, run.stage_dir(STAGE)
    inputs = reward_inputs(cfg, run)
    digest = stage_hash(cfg, profile, inputs)
    max_length = profile.model.max_seq_length
    tok = trainer.processing_class
    sft_info = json.loads((inputs["sft"].parent / "stage_info.json").read_text())  # a variant reads its parent's SFT
    check_same_tokenizer({"sft": sft_info["tokenizer_fingerprint"], "reward": tokenizer_fingerprint(tok)})
    train_rows = preference_rows(run, cfg.train_file)
    val_rows = preference_rows(run, "prefs_val.jsonl")
    labels = gold_labels(val_rows)
    keep = labels != 0
    if not keep.any():
        raise DataError("no validation pair has a gold preference (all ties)", file=inputs["val"])

    if is_main_process():
        save_score_model(trainer.model, out / "member_0")
    members = [(trainer.model, ledger_of(trainer).summary(), _losses(trainer))]
    for member in range(1, cfg.ensemble_size):
        members.append(train_reward_model(cfg, run, train_rows, cfg.seed + member, out / f"member_{member}",
                                          stage_digest=digest))
    fold_acc = []
    for tr, te in KFold(cfg.kfold, shuffle=True, random_state=cfg.seed).split(train_rows) if cfg.kfold else ():
        fold_model, _, _ = train_reward_model(cfg, run, [train_rows[i] for i in tr], cfg.seed)  # in every process
        if is_main_process():
            held = [train_rows[i] for i in te]
            fold_acc.append(float(ranked_correctly(pair_margins(fold_model, tok, held, max_length), gold_labels(held)).mean()))
    if not is_main_process():
        return result_of_main_process(STAGE, out)

    models = [m for m, _, _ in members]
    margins_arr = np.stack([pair_margins(m, tok, val_rows, max_length) for m in models])  # (ensemble, n_val)
    probe = length_bias_probe(members[0][0], tok, [r for r, k in zip(val_rows, keep) if k], cfg.length_probe_pairs, max_length)
    mean_margin = margins_arr.mean(axis=0)
    acc, low, high = bootstrap_ci(ranked_correctly(mean_margin, labels), n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)

    kfold = {"folds": cfg.kfold, "accuracy": fold_acc, "mean": float(np.mean(fold_acc)),
             "std": float(np.std(fold_acc))} if cfg.kfold else None

    uncertainty = ensemble_uncertainty(margins_arr)  # (n_val,), as active learning measures it
    rows = [
        {"id": r["id"], "domain": r["domain"], "gold_label": int(l), "margins": [float(x) for x in margins_arr[:, i]],
         "mean_margin": float(mean_margin[i]), "uncertainty": float(uncertainty[i])}
        for i, (r, l) in enumerate(zip(val_rows, labels))
    ]
    atomic_write_jsonl(out / "pair_scores.jsonl", rows)
    domains = np.array([r["domain"] for r in val_rows])
    by_domain = {d: float(ranked_correctly(mean_margin[domains == d], labels[domains == d]).mean())
                 if (keep & (domains == d)).any() else None for d in sorted(set(domains))}
    metrics = {
        "accuracy": acc, "accuracy_ci_low": low, "accuracy_ci_high": high, "val_pairs": int(keep.sum()),
        "accuracy_by_domain": by_domain,
        "member_accuracy": [float(ranked_correctly(m, labels).mean()) for m in margins_arr],
        "ensemble_size": cfg.ensemble_size, "mean_uncertainty": float(uncertainty.mean()),
        "kfold": kfold, "length_bias": probe,
        "answer_swap": answer_swap_probe(models, tok, val_rows, max_length),
        "near_miss": near_miss_probe(models, tok, val_rows, max_length),
        "fact_over_form": fact_over_form_probe(models, tok, val_rows, max_length),
        "calibration": calibration_curve(mean_margin[keep], labels[keep], cfg.calibration_bins, cfg.seed),
        "train_pairs": len(train_rows), "train_losses": [m[2] for m in members], "ledger": [m[1] for m in members],
        "resumed_from_step": resumed_from_step,
    }
    info = {"tokenizer_fingerprint": tokenizer_fingerprint(tok), "sft_dir": str(inputs["sft"])}
    finish_stage(out, digest, cfg, metrics, info, inputs)
    wait_for_everyone()  # the other processes read the finished folder now
    return StageResult(STAGE, out, metrics)


def run_reward(cfg: RewardStageConfig, run: RunContext, callbacks: list | None = None) -> StageResult:
    """The reward stage with its cache: skip when done with the same inputs, resume when interrupted.

    Args:
        cfg: the stage's settings.
        run: the run directory and profile.
        callbacks: extra ``transformers`` trainer callbacks.

    Raises:
        MissingArtifactError: no SFT model (notebook 02) or no preference data (notebook 01).
        ConfigError: the SFT stage used another tokenizer.
        DataError: the validation pairs hold no pair the gold judge can order.
    """
    out = run.stage_dir(STAGE)
    digest = stage_hash(cfg, run.profile, reward_inputs(cfg, run))
    if completed(out, digest):
        return StageResult(STAGE, out, load_stage_metrics(out), skipped=True)
    checkpoint = reopen_stage(out, out / "member_0" / "checkpoints", digest, cfg.resume, run.profile)
    trainer = make_reward_trainer(cfg, run, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=checkpoint)
    return finish_reward(trainer, cfg, run, resumed_from_step=checkpoint_step(checkpoint))
