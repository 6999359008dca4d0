"""Turn labels into TRL preference rows, the input of the reward-model stage.

The rows have exactly the schema the reward stage reads from
``<run_dir>/data/prefs_train.jsonl``: ``{"id", "domain", "reference", "prompt", "chosen",
"rejected"}``, so labels from the widget or from simulated annotators feed it unchanged.

When several annotators labeled a pair, their judged answers (A, B, tie) are combined by
majority; when no answer has the most votes the pair is a ``split``, handled like a tie. Skips carry
no judgement. What happened to every pair is counted in the rows' ``report``.
Introduced in ``03_reward_model``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Literal, Mapping

TIE_POLICIES = ("drop", "both_orders")
"""``drop``: ties give no row. ``both_orders``: a tie gives two rows, A over B and B over A,
whose Bradley-Terry losses pull the two rewards together rather than apart."""


class PreferenceRows(list):
    """A list of preference rows that also carries a ``report`` of how each pair was handled.

    ``report`` keys: ``pairs`` (given), ``labels`` (used), ``rows`` (produced), ``preferred``
    (pairs with a clear winner), ``ties`` and ``splits`` (kept or dropped per the tie
    policy: see ``ties_dropped``), ``skipped`` (only skips), ``unlabeled``, and
    ``labels_for_unknown_pairs`` (labels whose pair id is not among ``pairs``).
    """

    report: dict[str, int | str]


def majority_choice(choices: list[str]) -> str:
    """Combine one pair's answers: the unique most common of A/B/tie, "split" if none, or "skip"."""
    votes = Counter(choice for choice in choices if choice != "skip")
    if not votes:
        return "skip"
    top = max(votes.values())
    leaders = [choice for choice, count in votes.items() if count == top]
    return leaders[0] if len(leaders) == 1 else "split"


def _row(pair: Mapping[str, Any], chosen: str, row_id: str) -> dict[str, Any]:
    rejected = "B" if chosen == "A" else "A"
    return {
        "id": row_id,
        "domain": pair["domain"],
        "reference": pair["reference"],
        "prompt": [dict(message) for message in pair["prompt"]],
        "chosen": [dict(message) for message in pair[f"response_{chosen.lower()}"]],
        "rejected": [dict(message) for message in pair[f"response_{rejected.lower()}"]],
    }


def labels_to_preferences(
    pairs: list[Mapping[str, Any]],
    labels: Iterable[Mapping[str, Any]],
    tie_policy: Literal["drop", "both_orders"] = "drop",
    annotators: list[str] | None = None,
) -> PreferenceRows:
    """Convert labels into TRL conversational preference rows.

    Args:
        pairs: the pair records, in the order the rows should follow.
        labels: label records in force (e.g. ``store.labels()``); one per annotator and pair.
        tie_policy: what a tie (or an A/B split between annotators) becomes: ``"drop"``
            (no row, counted) or ``"both_orders"`` (two rows with ids ``<id>#tie-a`` and
            ``<id>#tie-b``, one preferring each side).
        annotators: use only these annotators' labels; all by default.

    Returns:
        The rows (``{"id", "domain", "reference", "prompt", "chosen", "rejected"}``), with a
        ``report`` attribute counting what happened to every pair (see :class:`PreferenceRows`).

    Raises:
        ValueError: on an unknown tie policy.
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy is {tie_policy!r}; expected one of {', '.join(TIE_POLICIES)}")
    known = {pair["id"] for pair in pairs}
    choices: dict[str, list[str]] = {}
    used = unknown = 0
    for label in labels:
        if annotators is not None and label["annotator"] not in annotators:
            continue
        if label["pair_id"] not in known:
            unknown += 1
            continue
        used += 1
        choices.setdefault(label["pair_id"], []).append(label["choice"])

    rows = PreferenceRows()
    counts = Counter()
    for pair in pairs:
        verdict = majority_choice(choices[pair["id"]]) if pair["id"] in choices else "unlabeled"
        counts[verdict] += 1
        if verdict in ("A", "B"):
            rows.append(_row(pair, verdict, pair["id"]))
        elif verdict in ("tie", "split") and tie_policy == "both_orders":
            rows.append(_row(pair, "A", f"{pair['id']}#tie-a"))
            rows.append(_row(pair, "B", f"{pair['id']}#tie-b"))
    rows.report = {
        "pairs": len(pairs),
        "labels": used,
        "rows": len(rows),
        "preferred": counts["A"] + counts["B"],
        "ties": counts["tie"],
        "splits": counts["split"],
        "ties_dropped": counts["tie"] + counts["split"] if tie_policy == "drop" else 0,
        "skipped": counts["skip"],
        "unlabeled": counts["unlabeled"],
        "labels_for_unknown_pairs": unknown,
        "tie_policy": tie_policy,
    }
    return rows
