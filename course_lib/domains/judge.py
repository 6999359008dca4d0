"""The gold judge's common parts: the result type and the scoring helpers every domain shares.

A gold judge is a deterministic rubric: it scores a response to one prompt in [0, 1]
and reports the parts the score is made of. Each domain module defines its parts and
their weights; the score is the weighted mean of the parts. See ``docs/data.md``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

_WORD = re.compile(r"\S+")

GOLD_TIE_MARGIN = 0.02
"""Gold-score difference at or below which two replies count as a tie, wherever ties are called."""


def preference(score_first: float, score_second: float, tie_margin: float = GOLD_TIE_MARGIN) -> int:
    """+1 if the first score wins, -1 if the second does, 0 when they are within ``tie_margin``."""
    if abs(score_first - score_second) <= tie_margin:
        return 0
    return 1 if score_first > score_second else -1


@dataclass(frozen=True)
class JudgeResult:
    """The gold judge's verdict on one response.

    Attributes:
        domain: ``"legal"``, ``"medical"`` or ``"code"``.
        score: weighted mean of the parts, in [0, 1].
        parts: each rubric part's value in [0, 1] (e.g. correctness, safety, format, concision).
        weights: the weight of each part in ``score``.
        notes: short human-readable reasons behind the parts.
    """

    domain: str
    score: float
    parts: dict[str, float]
    weights: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def explain(self) -> str:
        """One line per part with its weight, then the notes: what a learner reads."""
        lines = [f"[{self.domain}] gold score {self.score:.3f}"]
        for name, value in self.parts.items():
            lines.append(f"  {name:<12} {value:.2f}  (weight {self.weights.get(name, 0.0):.2f})")
        lines.extend(f"  - {note}" for note in self.notes)
        return "\n".join(lines)


def parse_reference(reference: str | Mapping[str, Any]) -> dict[str, Any]:
    """The reference as a dict; records carry it as a JSON string (uniform Arrow schema)."""
    if isinstance(reference, Mapping):
        return dict(reference)
    try:
        parsed = json.loads(reference)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"reference must be a JSON object string, got {reference!r:.80}: {err}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"reference must be a JSON object, got {type(parsed).__name__}")
    return parsed


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(_WORD.findall(text))


def concision(words: int, target: int, limit: int) -> float:
    """1 up to ``target`` words, falling linearly to 0 at ``limit`` words."""
    if words <= target:
        return 1.0
    if words >= limit:
        return 0.0
    return 1.0 - (words - target) / (limit - target)


def contains_any(text: str, phrases: tuple[str, ...] | list[str]) -> bool:
    """Case-insensitive: does ``text`` contain any of ``phrases``?"""
    lowered = text.lower()
    return any(p.lower() in lowered for p in phrases)


def combine_with_concision(domain: str, parts: dict[str, float], weights: Mapping[str, float], notes: list[str],
                           response: str, target: int, limit: int) -> JudgeResult:
    """Add the concision part (``target`` to ``limit`` words) and its note, then :func:`combine`."""
    words = word_count(response)
    parts["concision"] = concision(words, target, limit)
    if parts["concision"] < 1:
        notes.append(f"{words} words (target <= {target})")
    return combine(domain, parts, weights, notes)


def combine(domain: str, parts: dict[str, float], weights: Mapping[str, float], notes: list[str]) -> JudgeResult:
    """Build a :class:`JudgeResult` whose score is the weighted mean of ``parts``."""
    used = {name: weights[name] for name in parts}
    total = sum(used.values())
    score = sum(parts[name] * w for name, w in used.items()) / total
    clipped = {name: round(min(1.0, max(0.0, value)), 4) for name, value in parts.items()}
    return JudgeResult(
        domain=domain,
        score=round(min(1.0, max(0.0, score)), 4),
        parts=clipped,
        weights={name: round(w / total, 4) for name, w in used.items()},
        notes=tuple(notes),
    )
