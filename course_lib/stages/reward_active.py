"""Label efficiency: reward-model accuracy against the number of labels, by selection strategy.

A simulated annotator labels pairs from a pool (the training pairs, sides shuffled); after
each round a small reward-model ensemble is trained on the labels so far and scored on the
validation pairs against the gold judge. ``random`` picks the next pairs uniformly; the
active strategies pick those the ensemble is least sure about. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..labeling import (
    SimulatedAnnotator, labels_to_preferences, preferences_to_pairs, require_references, select_next,
)
from ..models import load_tokenizer
from ..stats import ranked_correctly, t_interval
from .base import RunContext
from .reward import (
    SFT_PRODUCER, gold_labels, merged_for_scoring, pair_margins, preference_rows, score_conversations, train_reward_model,
)
from .reward_config import RewardStageConfig


@dataclass
class LabelCurveConfig:
    """What the label-efficiency experiment runs.

    Attributes:
        label_counts: labels in hand at each point of the curve (increasing).
        strategies: selection strategies to compare (``random``, ``uncertainty``, ``margin``).
        seeds: one repetition per seed; the CI is over seeds.
        max_steps: optimizer steps of each reward model.
        ensemble_size: reward models per point (the uncertainty strategy needs >= 2).
        annotator_noise: probability that the simulated annotator answers at random.
        candidates: unlabeled pairs the ensemble scores before each round, drawn at random.
    """

    label_counts: tuple[int, ...] = field(default=(30, 60, 120), metadata={"help": "labels at each curve point"})
    strategies: tuple[str, ...] = field(default=("random", "uncertainty"), metadata={"help": "strategies compared"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "repetitions (CI over seeds)"})
    max_steps: int = field(default=25, metadata={"help": "optimizer steps per reward model"})
    ensemble_size: int = field(default=2, metadata={"help": "reward models per point"})
    annotator_noise: float = field(default=0.1, metadata={"help": "simulated annotator's random-answer rate"})
    batch_size: int = field(default=8, metadata={"help": "preference pairs per step (few labels need small batches)"})
    candidates: int = field(default=240, metadata={"help": "unlabeled pairs scored per round, a random draw from the pool "
                                                           "(scoring all of it costs more than training); 0 = all"})

    def __post_init__(self) -> None:
        counts = list(self.label_counts)
        if not counts or counts != sorted(counts) or counts[0] < 1 or len(set(counts)) != len(counts):
            raise ConfigError(f"expected strictly increasing positive label counts, got {counts}", key="label_counts")
        if "uncertainty" in self.strategies and self.ensemble_size < 2:
            raise ConfigError("the uncertainty strategy needs ensemble_size >= 2", key="ensemble_size")
        if not self.seeds:
            raise ConfigError("expected at least one seed", key="seeds")
        if self.candidates < 0:
            raise ConfigError(f"expected candidates >= 0 (0 scores the whole pool), got {self.candidates}", key="candidates")


def label_efficiency_curve(run: RunContext, cfg: LabelCurveConfig, progress: bool = True) -> dict[str, Any]:
    """Run the experiment, with one progress bar over all its reward models.

    Returns:
        ``{"label_counts", "curves": {strategy: {"x", "mean", "low", "high", "per_seed"}}}``.

    Raises:
        DataError: a training pair has no reference, so the simulated annotator cannot label it.
    """
    from tqdm.auto import tqdm

    profile = run.profile
    sft_dir = run.artifact("sft", "merged", SFT_PRODUCER)
    tok = load_tokenizer(profile, str(sft_dir))
    max_length = profile.model.max_seq_length
    train_rows = preference_rows(run, "prefs_train.jsonl")
    val_rows = preference_rows(run, "prefs_val.jsonl")
    require_references(train_rows, file=run.data_file("prefs_train.jsonl"))
    gold = gold_labels(val_rows)
    if cfg.label_counts[-1] > len(train_rows):
        raise ConfigError(f"the pool holds {len(train_rows)} pairs, fewer than {cfg.label_counts[-1]} labels", key="label_counts")
    stage_cfg = RewardStageConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size)
    trainings = len(cfg.seeds) * (1 + len(cfg.strategies) * (len(cfg.label_counts) - 1)) * cfg.ensemble_size
    bar = tqdm(total=trainings, desc="label-efficiency curve (reward models)", disable=not progress)

    def fit_and_score(pool, chosen, labels, seed):
        """Train an ensemble on the labels so far; its members and held-out accuracy against gold."""
        rows = list(labels_to_preferences([pool[i] for i in chosen], labels))
        members = []
        for m in range(cfg.ensemble_size):
            model = train_reward_model(stage_cfg, run, rows, seed * 100 + m)[0]
            members.append(merged_for_scoring(model))
            bar.update()
        margin = np.mean([pair_margins(m, tok, val_rows, max_length) for m in members], axis=0)
        return members, float(ranked_correctly(margin, gold).mean())

    per_seed: dict[str, list[list[float]]] = {s: [] for s in cfg.strategies}
    for seed in cfg.seeds:
        pool = preferences_to_pairs(train_rows, seed=seed)
        annotator = SimulatedAnnotator("simulated", noise=cfg.annotator_noise, seed=seed)
        # Every strategy starts from the same random labels, so the first point is trained once.
        first = select_next(pool, cfg.label_counts[0], "random", seed=seed)
        first_labels = [annotator.label(pool[i]) for i in first]
        first_members, first_accuracy = fit_and_score(pool, first, first_labels, seed)
        for strategy in cfg.strategies:
            chosen, labels = list(first), list(first_labels)
            members, accuracies = first_members, [first_accuracy]
            for round_index, count in enumerate(cfg.label_counts[1:], start=1):
                labeled_ids = {pool[i]["id"] for i in chosen}
                if strategy == "random":
                    new = select_next(pool, count - len(chosen), strategy, seed=seed + round_index, exclude=labeled_ids)
                else:
                    unlabeled = [i for i, p in enumerate(pool) if p["id"] not in labeled_ids]
                    draw = np.random.default_rng([seed, round_index])
                    size = max(cfg.candidates, count - len(chosen))  # never fewer than the labels wanted
                    candidates = (sorted(draw.choice(unlabeled, size, replace=False).tolist())
                                  if 0 < cfg.candidates and size < len(unlabeled) else unlabeled)
                    shown = [pool[i] for i in candidates]
                    # Margins r(A) - r(B) of each candidate under each member of the last ensemble.
                    scores = np.stack([
                        score_conversations(m, tok, [p["prompt"] + p["response_a"] for p in shown], max_length)
                        - score_conversations(m, tok, [p["prompt"] + p["response_b"] for p in shown], max_length)
                        for m in members
                    ])  # (ensemble, candidates)
                    picked = select_next(shown, count - len(chosen), strategy, scores=scores, seed=seed + round_index)
                    new = [candidates[j] for j in picked]
                chosen.extend(new)
                labels.extend(annotator.label(pool[i]) for i in new)
                members, accuracy = fit_and_score(pool, chosen, labels, seed)
                accuracies.append(accuracy)
            per_seed[strategy].append(accuracies)
    bar.close()

    curves = {}
    for strategy, runs in per_seed.items():
        points = [t_interval([r[i] for r in runs], bounds=(0.0, 1.0)) for i in range(len(cfg.label_counts))]
        curves[strategy] = {"x": list(cfg.label_counts), "mean": [p[0] for p in points], "low": [p[1] for p in points],
                            "high": [p[2] for p in points], "per_seed": runs}
    return {"label_counts": list(cfg.label_counts), "curves": curves}
