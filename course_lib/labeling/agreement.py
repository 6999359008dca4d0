"""How much annotators agree: with each other (Cohen's kappa, Krippendorff's alpha) and with gold.

Skips are treated as "no answer" everywhere: they leave an item out of kappa, count as
missing in alpha, and are not scored against gold. Every score carries the number of
items it rests on, because a kappa over 8 pairs says little. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score

from .annotators import GOLD_TIE_MARGIN, CachedJudge, Judge, as_cached, gold_choice

JUDGED_CHOICES = ("A", "tie", "B")
"""The answers that carry a judgement, in the order that makes ``tie`` lie between A and B."""


@dataclass(frozen=True)
class AgreementScore:
    """An agreement statistic and the number of items it was computed on.

    Attributes:
        value: the statistic (NaN when it is undefined, e.g. no shared items).
        n_items: how many pairs it rests on.
    """

    value: float
    n_items: int


def _answers(labels: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Judged answers by annotator then pair id (skips dropped)."""
    answers: dict[str, dict[str, str]] = {}
    for label in labels:
        if label["choice"] != "skip":
            answers.setdefault(label["annotator"], {})[label["pair_id"]] = label["choice"]
    return answers


def cohens_kappa(labels: Iterable[Mapping[str, Any]], annotator_a: str, annotator_b: str) -> AgreementScore:
    """Cohen's kappa between two annotators over the pairs both judged (scikit-learn).

    Args:
        labels: label records (e.g. ``store.labels()``), at most one per annotator and pair.
        annotator_a: the first annotator id.
        annotator_b: the second annotator id.

    Returns:
        Kappa in [-1, 1] (1 = perfect, 0 = chance level) and the number of shared pairs.
    """
    answers = _answers(labels)
    first, second = answers.get(annotator_a, {}), answers.get(annotator_b, {})
    shared = sorted(set(first) & set(second))
    if not shared:
        return AgreementScore(math.nan, 0)
    y_a = [first[pair_id] for pair_id in shared]
    y_b = [second[pair_id] for pair_id in shared]
    if len(set(y_a) | set(y_b)) == 1:
        # Both gave one and the same answer throughout: agreement is total, kappa is 0/0.
        return AgreementScore(math.nan, len(shared))
    return AgreementScore(float(cohen_kappa_score(y_a, y_b, labels=list(JUDGED_CHOICES))), len(shared))


def krippendorff_alpha(
    labels: Iterable[Mapping[str, Any]],
    annotators: list[str] | None = None,
    level: Literal["nominal", "ordinal"] = "nominal",
) -> AgreementScore:
    """Krippendorff's alpha over any number of annotators, with missing answers allowed.

    Args:
        labels: label records, at most one per annotator and pair.
        annotators: whose labels to include; all by default.
        level: ``"nominal"`` treats A, tie, B as unordered; ``"ordinal"`` treats a tie as
            lying between A and B, so A-vs-tie disagrees less than A-vs-B.

    Returns:
        Alpha (1 = perfect, 0 = chance level) and the number of pairs judged by two or more.
    """
    answers = _answers(labels)
    annotators = sorted(answers) if annotators is None else annotators
    pair_ids = sorted({pair_id for name in annotators for pair_id in answers.get(name, {})})
    code = {choice: float(i) for i, choice in enumerate(JUDGED_CHOICES)}
    # (n_annotators, n_pairs), NaN where an annotator gave no judgement.
    matrix = np.array(
        [[code.get(answers.get(name, {}).get(pair_id), math.nan) for pair_id in pair_ids] for name in annotators],
        dtype=float,
    ).reshape(len(annotators), len(pair_ids))
    n_items = int((np.sum(~np.isnan(matrix), axis=0) >= 2).sum())
    values_seen = np.unique(matrix[~np.isnan(matrix)])
    if n_items == 0 or len(values_seen) < 2:
        return AgreementScore(math.nan, n_items)
    alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=[0.0, 1.0, 2.0])
    return AgreementScore(float(alpha), n_items)


def gold_agreement(
    pairs: list[Mapping[str, Any]],
    labels: Iterable[Mapping[str, Any]],
    judge: Judge | CachedJudge | None = None,
    tie_margin: float = GOLD_TIE_MARGIN,
) -> dict[str, AgreementScore]:
    """Each annotator's accuracy against the gold judge, over the pairs they judged.

    A label counts as correct when it equals :func:`~course_lib.labeling.annotators.gold_choice`
    (a ``tie`` is correct only where gold scores are within ``tie_margin``).

    Args:
        pairs: the pair records the labels refer to (labels of other pairs are ignored).
        labels: label records.
        judge: the gold judge; defaults to ``course_lib.domains.gold_score``.
        tie_margin: gold score difference at or below which gold calls a tie.

    Returns:
        Accuracy in [0, 1] and the number of judged pairs, by annotator.
    """
    judge = as_cached(judge)
    by_id = {pair["id"]: pair for pair in pairs}
    gold = {}
    scores = {}
    for annotator, given in _answers(labels).items():
        judged = [pair_id for pair_id in given if pair_id in by_id]
        for pair_id in judged:
            if pair_id not in gold:
                gold[pair_id] = gold_choice(by_id[pair_id], judge, tie_margin)
        correct = sum(given[pair_id] == gold[pair_id] for pair_id in judged)
        scores[annotator] = AgreementScore(correct / len(judged) if judged else math.nan, len(judged))
    return scores


def agreement_summary(
    pairs: list[Mapping[str, Any]],
    labels: list[Mapping[str, Any]],
    judge: Judge | CachedJudge | None = None,
    with_gold: bool = True,
) -> dict[str, float | int | None]:
    """A flat dict of every agreement figure, ready for ``record_metrics``.

    Args:
        pairs: the labeled pair records.
        labels: label records in force (e.g. ``store.labels()``).
        judge: the gold judge; defaults to ``course_lib.domains.gold_score``.
        with_gold: also score each annotator against the gold judge.

    Returns:
        ``n_labels``, ``n_annotators``, ``alpha`` and ``alpha_items``, ``kappa/<a>~<b>`` for
        each two annotators, and ``gold/<annotator>`` with ``with_gold``; undefined values are None.
    """
    def clean(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    annotators = sorted({label["annotator"] for label in labels})
    alpha = krippendorff_alpha(labels)
    summary: dict[str, float | int | None] = {
        "n_labels": len(labels),
        "n_annotators": len(annotators),
        "alpha": clean(alpha.value),
        "alpha_items": alpha.n_items,
    }
    for first, second in itertools.combinations(annotators, 2):
        summary[f"kappa/{first}~{second}"] = clean(cohens_kappa(labels, first, second).value)
    if with_gold:
        for annotator, score in sorted(gold_agreement(pairs, labels, judge).items()):
            summary[f"gold/{annotator}"] = clean(score.value)
    return summary
