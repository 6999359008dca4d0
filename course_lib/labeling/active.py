"""Active learning: pick the pairs whose labels should teach the reward model the most.

``scores`` are reward margins ``r(A) - r(B)`` with shape ``(n_models, n_pairs)``: one row
per reward model of an ensemble (e.g. models trained on bootstrap resamples or with
different seeds), one column per candidate pair, aligned with ``pairs``.

- ``"uncertainty"``: the ensemble disagrees most, measured as the standard deviation
  across models of ``sigmoid(margin)``, the Bradley-Terry probability that A wins.
  Needs two or more models.
- ``"margin"``: the mean margin is closest to zero, the pairs the model finds hardest
  to call. A single model, shape ``(1, n_pairs)``, is enough.
- ``"random"``: a seeded uniform sample, the baseline of a label-efficiency curve.

Equal scores are ordered by a seeded random key, so the choice never depends on the
order of the pool. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

from typing import Any, Collection, Literal, Mapping, Sequence

import numpy as np

STRATEGIES = ("uncertainty", "margin", "random")


def ensemble_uncertainty(margins: np.ndarray) -> np.ndarray:
    """Disagreement per pair: the spread across models of ``sigmoid(margin)``, shape ``(n_pairs,)``.

    Args:
        margins: reward margins, shape ``(n_models, n_pairs)``.
    """
    win_probability = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=float)))  # (n_models, n_pairs)
    return win_probability.std(axis=0)


def _priorities(strategy: str, scores: np.ndarray) -> np.ndarray:
    """Per-pair priority, higher first. ``scores``: (n_models, n_pairs)."""
    if strategy == "uncertainty":
        return ensemble_uncertainty(scores)
    return -np.abs(scores.mean(axis=0))


def _check_scores(strategy: str, scores: Any, n_pairs: int) -> np.ndarray:
    if scores is None:
        raise ValueError(f"strategy {strategy!r} needs scores: reward margins of shape (n_models, {n_pairs})")
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != n_pairs:
        raise ValueError(f"scores has shape {scores.shape}; expected (n_models, {n_pairs}), one column per pair")
    if strategy == "uncertainty" and scores.shape[0] < 2:
        raise ValueError(
            f"strategy 'uncertainty' measures ensemble disagreement and needs at least 2 models; "
            f"scores has {scores.shape[0]} row(s). Use strategy='margin' for a single model."
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores holds NaN or infinite margins")
    return scores


def select_next(
    pairs: Sequence[Mapping[str, Any]],
    k: int,
    strategy: Literal["uncertainty", "margin", "random"] = "uncertainty",
    scores: Any = None,
    seed: int = 0,
    exclude: Collection[str] = (),
) -> list[int]:
    """Choose the next ``k`` pairs to label.

    Args:
        pairs: the candidate pool of pair records.
        k: how many to choose (fewer come back if fewer candidates remain).
        strategy: ``"uncertainty"``, ``"margin"`` or ``"random"`` (see the module docstring).
        scores: reward margins ``r(A) - r(B)``, shape ``(n_models, len(pairs))``; unused by ``"random"``.
        seed: seed of the random strategy and of tie-breaking.
        exclude: ids of pairs not to choose (typically those labeled already).

    Returns:
        Indices into ``pairs``, most informative first: ``[pairs[i] for i in select_next(...)]``.

    Raises:
        ValueError: on an unknown strategy, a negative ``k``, or scores of the wrong shape.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy is {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if k < 0:
        raise ValueError(f"k is {k}; expected a count >= 0")
    excluded = set(exclude)
    candidates = np.array([i for i, pair in enumerate(pairs) if pair["id"] not in excluded], dtype=int)
    tie_breaker = np.random.default_rng(seed).random(len(pairs))
    if strategy == "random":
        order = np.argsort(tie_breaker[candidates])
    else:
        priority = _priorities(strategy, _check_scores(strategy, scores, len(pairs)))
        # lexsort sorts by its last key first: highest priority, then the random key.
        order = np.lexsort((tie_breaker[candidates], -priority[candidates]))
    return candidates[order][:k].tolist()
