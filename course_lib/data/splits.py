"""Train / validation / test splits, stratified by domain (scikit-learn's stratified shuffling)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from .report import StepReport, summarize


def stratified_split(dataset, val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0,
                     by: str = "domain") -> tuple[dict[str, Any], StepReport]:
    """Split records so every split keeps the domains' proportions.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        val_fraction: share of records for validation.
        test_fraction: share for a test split (0: none; the kit's held-out evaluation
            prompts are generated separately and decontaminated against).
        seed: shuffling seed.
        by: the column to stratify on.

    Returns:
        ``({"train": ds, "validation": ds[, "test": ds]}, report)``; the report's details
        give each split's size per domain and whether it could be stratified (a small set
        of a user's data may hold a domain once, or fewer held-out records than domains).
    """
    from sklearn.model_selection import train_test_split

    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, 0 <= test_fraction and a sum below 1; "
                         f"got {val_fraction} and {test_fraction}")
    labels = dataset[by]
    indices = list(range(len(dataset)))
    n_test = round(test_fraction * len(indices))
    n_held = max(1, round(val_fraction * len(indices))) + n_test  # never an empty validation split
    if len(indices) - n_held < 1:
        raise ValueError(f"{len(indices)} records are too few for a training and a held-out split")
    stratified = _can_stratify(labels, n_held, len(indices) - n_held)
    train_idx, held_idx = train_test_split(indices, test_size=n_held, random_state=seed,
                                           stratify=labels if stratified else None)
    splits = {"train": sorted(train_idx)}
    if n_test:
        held_labels = [labels[i] for i in held_idx]
        stratify_held = held_labels if _can_stratify(held_labels, n_test, n_held - n_test) else None
        val_idx, test_idx = train_test_split(held_idx, test_size=n_test, random_state=seed, stratify=stratify_held)
        splits.update(validation=sorted(val_idx), test=sorted(test_idx))
    else:
        splits["validation"] = sorted(held_idx)
    out = {name: dataset.select(idx) for name, idx in splits.items()}
    per_domain = {name: {d: sum(1 for i in idx if labels[i] == d) for d in sorted(set(labels))}
                  for name, idx in splits.items()}
    return out, summarize("split", len(dataset), len(dataset), details={"sizes": per_domain, "stratified": stratified})


def _can_stratify(labels: list[str], n_held: int, n_train: int) -> bool:
    """Whether scikit-learn can keep every label in both parts: two of each, and room for each in each part."""
    counts = Counter(labels)
    return min(counts.values()) >= 2 and n_held >= len(counts) and n_train >= len(counts)
