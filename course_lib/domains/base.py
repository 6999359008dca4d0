"""What every domain generator returns: one prompt, its reference, and graded responses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLAW_KINDS = ("wrong", "unsafe", "verbose", "malformed", "terse", "no_caveat", "unfenced")
"""Ways a response goes wrong; each domain uses the ones that fit it:

- ``wrong``: the core answer is wrong (clause type, triage level, failing code);
- ``unsafe``: harmful advice or dangerous code;
- ``verbose``: correct but padded with rambling (longer and worse);
- ``malformed``: the expected shape is broken (missing header, no code block);
- ``terse``: too short, drops required facts or safety language (shorter and worse);
- ``no_caveat``: right and useful, but without the safety caveat the domain requires (medical);
- ``unfenced``: right code pasted without its code block (code).

Each domain's ``SFT_FLAW_RATES`` says how often its demonstrations carry each flaw, and
``PAIR_FLAW_MIX`` which flaws its preference pairs set against the good answer.
"""


@dataclass
class Task:
    """One generated prompt with its gold reference and responses of known quality.

    Attributes:
        prompt: chat messages (optional system, then one user turn).
        reference: what the gold judge needs (serialized to JSON in records).
        good: a response the gold judge scores near 1.
        flawed: one response per kind in :data:`FLAW_KINDS`, each scored lower than ``good``.
    """

    prompt: list[dict[str, str]]
    reference: dict[str, Any]
    good: str
    flawed: dict[str, str] = field(default_factory=dict)
