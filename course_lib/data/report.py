"""What each curation step did: counts kept and removed, per domain and per reason, with examples."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_EXAMPLES = 5
"""Removed or changed records shown per step (the report must stay readable)."""


@dataclass
class StepReport:
    """One curation step's account of itself.

    Attributes:
        step: the step's name (``normalize``, ``quality``, ``pii``, ``exact_dedup``...).
        before: records in.
        after: records out.
        removed_by_domain: removed records per domain.
        reasons: removed (or, for steps that only edit, changed) records per reason.
        changed: records edited in place (normalization, PII scrubbing).
        examples: a few ``{"id", "reason", "text"}`` of what was removed or changed.
        removals: every removed record's id and the reason it was removed.
        details: step-specific extras (PII counts per type, matched evaluation ids...).
    """

    step: str
    before: int
    after: int
    removed_by_domain: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    removals: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        """Records this step removed."""
        return self.before - self.after

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``removed`` spelled out."""
        return {**asdict(self), "removed": self.removed}

    def line(self) -> str:
        """One line for a log or a notebook printout."""
        what = f"removed {self.removed}" + (f", changed {self.changed}" if self.changed else "")
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        return f"{self.step:<14} {self.before:>6} -> {self.after:<6} {what}" + (f" ({reasons})" if reasons else "")


def summarize(step: str, before: int, after: int, removed: list[tuple[str, str, str, str]] = (),
              changed: list[tuple[str, str, str, str]] = (), details: dict[str, Any] | None = None) -> StepReport:
    """Build a :class:`StepReport` from ``(id, domain, reason, text)`` verdicts.

    Args:
        step: the step's name.
        before: records in.
        after: records out.
        removed: one verdict per removed record.
        changed: one verdict per record edited in place.
        details: step-specific extras.
    """
    reasons: Counter[str] = Counter(reason.split(":")[0] for _, _, reason, _ in [*removed, *changed])
    examples = [{"id": rid, "reason": reason, "text": text[:200]}
                for rid, _, reason, text in [*removed, *changed][:MAX_EXAMPLES]]
    return StepReport(step=step, before=before, after=after,
                      removed_by_domain=dict(Counter(domain for _, domain, _, _ in removed)),
                      reasons=dict(reasons), changed=len(changed), examples=examples,
                      removals={rid: reason for rid, _, reason, _ in removed}, details=details or {})
