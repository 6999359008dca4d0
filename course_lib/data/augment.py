"""Augmentation: templated paraphrases of the user's request, answers unchanged.

Each paraphrase rewrites the instruction around the user's content (a prefix or a
suffix from a fixed list), so the model sees the same task asked in more ways; the gold
reference is unchanged, so the gold judge still applies. Applied to the training split
only, after decontamination, so no paraphrase can leak an evaluation prompt.
"""
from __future__ import annotations

import copy
import random
from typing import Any

from .report import StepReport, summarize

PREFIXES = ["Quick question: ", "Please help with this. ", "I need a short answer. ", "Hi! ", "Question: "]
SUFFIXES = [" Keep it short.", " Thanks in advance.", " One or two sentences, please.", " Be brief."]


def paraphrase(text: str, rng: random.Random) -> str:
    """One templated paraphrase of a user request (a prefix, a suffix, or both)."""
    style = rng.randrange(3)
    prefix = rng.choice(PREFIXES) if style in (0, 2) else ""
    suffix = rng.choice(SUFFIXES) if style in (1, 2) else ""
    return f"{prefix}{text}{suffix}"


def _augmented(record: dict[str, Any], copy_index: int, rng: random.Random) -> dict[str, Any]:
    new = copy.deepcopy(record)
    new["id"] = f"{record['id']}-aug{copy_index}"
    turns = new["messages"] if "messages" in new else new["prompt"]
    last_user = max(i for i, m in enumerate(turns) if m["role"] == "user")
    turns[last_user]["content"] = paraphrase(turns[last_user]["content"], rng)
    return new


def augment_step(dataset, copies: int = 1, fraction: float = 0.5, seed: int = 0) -> tuple[Any, StepReport]:
    """Add ``copies`` paraphrased copies of a ``fraction`` of the records.

    Args:
        dataset: a ``datasets.Dataset`` of SFT or preference records.
        copies: paraphrases per chosen record.
        fraction: share of records that get paraphrases.
        seed: which records, and which paraphrases.

    Returns:
        ``(augmented_dataset, report)``; the report's ``changed`` counts the added records.
    """
    import datasets

    if copies < 0 or not 0 <= fraction <= 1:
        raise ValueError(f"need copies >= 0 and 0 <= fraction <= 1, got {copies} and {fraction}")
    rng = random.Random(f"augment-{seed}")
    chosen = sorted(rng.sample(range(len(dataset)), round(fraction * len(dataset)))) if copies else []
    added = [_augmented(dataset[i], c, rng) for i in chosen for c in range(copies)]
    if not added:
        return dataset, summarize("augment", len(dataset), len(dataset))
    extra = datasets.Dataset.from_list(added, features=dataset.features)
    out = datasets.concatenate_datasets([dataset, extra])
    verdicts = [(r["id"], r["domain"], "paraphrase", "") for r in added]
    return out, summarize("augment", len(dataset), len(out), changed=verdicts)


def prompt_diversity(dataset) -> dict[str, float]:
    """How varied the user requests are: distinct requests, distinct word bigrams, and distinct-2.

    distinct-2 is distinct bigrams over all bigrams; templated paraphrases add new bigrams
    (the count grows) while repeating their own wording (the ratio can fall).

    Used to show augmentation's effect: more distinct phrasings, the same answers.
    """
    from .records import user_text

    texts = [user_text(r) for r in dataset]
    bigrams = [tuple(pair) for t in texts for pair in zip(t.lower().split(), t.lower().split()[1:])]
    return {
        "records": len(texts),
        "distinct_requests": len(set(texts)),
        "distinct_bigrams": len(set(bigrams)),
        "distinct_2": round(len(set(bigrams)) / len(bigrams), 4) if bigrams else 0.0,
    }
