"""Memorization: how often a model's replies reproduce its training records word for word.

A reply's word n-grams (n = 8 by default) are looked up in the training records' replies; a
reply is *verbatim* when it equals a training reply, and its *overlap* is the share of its
n-grams found in training. On the kit's synthetic domains correct answers share fixed
phrasing ("Triage: emergency. Call your local emergency number now."), so some overlap is
what a perfect model would show too: :func:`memorization_report` measures that baseline on
the evaluation set's own good answers, and the stage's excess over it is what matters.
Introduced in ``08_ethics``.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

DEFAULT_N = 8
"""Word n-gram length: long enough that sharing one is unlikely by chance in free text."""


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class TrainingIndex:
    """The n-grams and the exact replies of a set of training texts, for fast lookups."""

    def __init__(self, texts: Iterable[str], n: int = DEFAULT_N):
        """Index ``texts`` (training replies) by their word ``n``-grams."""
        self.n = n
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for text in texts:
            normalized = " ".join(text.split())
            self.exact.add(normalized)
            self.grams |= _ngrams(normalized, n)

    def overlap(self, reply: str) -> float | None:
        """Share of the reply's n-grams found in training; None for a reply shorter than n words."""
        grams = _ngrams(reply, self.n)
        return sum(g in self.grams for g in grams) / len(grams) if grams else None

    def verbatim(self, reply: str) -> bool:
        """Is the reply, whitespace aside, exactly a training reply?"""
        return " ".join(reply.split()) in self.exact


def memorization_rates(index: TrainingIndex, replies: Sequence[str]) -> dict[str, Any]:
    """Verbatim rate and n-gram overlap of replies against a training index.

    Returns:
        ``{"verbatim_rate", "mean_overlap", "any_overlap_rate", "replies", "scored"}``:
        ``mean_overlap`` over the replies with at least n words (``scored`` of them),
        ``any_overlap_rate`` the share of those sharing at least one n-gram with training.
    """
    overlaps = [o for o in (index.overlap(r) for r in replies) if o is not None]
    return {"verbatim_rate": float(np.mean([index.verbatim(r) for r in replies])) if replies else 0.0,
            "mean_overlap": float(np.mean(overlaps)) if overlaps else 0.0,
            "any_overlap_rate": float(np.mean([o > 0 for o in overlaps])) if overlaps else 0.0,
            "replies": len(replies), "scored": len(overlaps)}


def memorization_report(training_replies: Iterable[str], replies_by_model: dict[str, Sequence[str]],
                        reference_replies: Sequence[str], n: int = DEFAULT_N) -> dict[str, Any]:
    """Each model's memorization rates, next to the baseline of correct answers the model never saw.

    Args:
        training_replies: the assistant replies of the training set (SFT demonstrations, chosen answers).
        replies_by_model: model name -> its replies to held-out prompts.
        reference_replies: correct answers to held-out prompts (never trained on): how much a
            model that only answers correctly would overlap through shared phrasing.
        n: the n-gram length.

    Returns:
        ``{"n", "baseline": rates of reference_replies, "models": {name: rates plus "excess_overlap"}}``;
        ``excess_overlap`` is the model's mean overlap minus the baseline's.
    """
    index = TrainingIndex(training_replies, n)
    baseline = memorization_rates(index, reference_replies)
    models = {}
    for name, replies in replies_by_model.items():
        rates = memorization_rates(index, replies)
        models[name] = {**rates, "excess_overlap": rates["mean_overlap"] - baseline["mean_overlap"]}
    return {"n": n, "baseline": baseline, "models": models}
