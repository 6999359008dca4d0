"""PII detection and scrubbing: each finding replaced by a typed placeholder, counted by type.

Types: emails, phone numbers, SSN-like ids, credit-card numbers (only those that pass the
Luhn check, so order numbers and long integers are left alone), IPv4 addresses (valid
ones; loopback and 0.0.0.0 are not personal), dates of birth (a date next to "DOB",
"date of birth", "born"), and medical record numbers (an id next to "MRN" or "medical
record number"). Patterns are deliberately narrow: a scrubber that eats clause numbers
and unit-test integers would damage the data it protects. Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .records import map_contents, record_text
from .report import StepReport, summarize

PII_TYPES = ("email", "mrn", "dob", "ssn", "credit_card", "ip_address", "phone")
"""Detected types, in the order overlapping matches are resolved (first wins)."""

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = (rf"\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|{_MONTH} \d{{1,2}},? \d{{4}}"
         rf"|\d{{1,2}} {_MONTH} \d{{4}}")
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"),
    "mrn": re.compile(r"\b(?:MRN|medical record (?:number|no\.?|#))\s*[:#]?\s*(?P<value>[A-Z]{0,3}\d{5,10})\b",
                      re.IGNORECASE),
    "dob": re.compile(rf"\b(?:DOB|D\.O\.B\.|date of birth|birth ?date|born(?: on)?)\s*[:\-]?\s*(?P<value>{_DATE})",
                      re.IGNORECASE),
    "ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "credit_card": re.compile(r"\b\d(?:[ \-]?\d){12,18}\b"),
    "ip_address": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{3}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{4}\b"
                        r"|(?<![\w+])\+\d{1,3}(?:[ .\-]\d{2,4}){3,4}\b"),
}
PLACEHOLDERS = {t: f"[{t.upper()}]" for t in PII_TYPES}


def luhn_valid(number: str) -> bool:
    """Does the digit string pass the Luhn checksum card numbers carry?"""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 == 1 else d
    return total % 10 == 0


def _accept(kind: str, text: str) -> bool:
    if kind == "credit_card":
        return luhn_valid(text)
    if kind == "ip_address":
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return not (address.is_loopback or address.is_unspecified)
    return True


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data found in a text."""

    kind: str
    start: int
    end: int
    text: str


def find_pii(text: str) -> list[PiiFinding]:
    """Every PII finding in ``text``, non-overlapping, in order of position.

    Example: ``find_pii("mail me: ana@example.com")`` finds one ``email``.
    """
    taken: list[tuple[int, int]] = []
    found: list[PiiFinding] = []
    for kind in PII_TYPES:
        for match in PATTERNS[kind].finditer(text):
            group = "value" if "value" in match.re.groupindex else 0
            start, end = match.span(group)
            value = match.group(group)
            if not _accept(kind, value) or any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(PiiFinding(kind, start, end, value))
    return sorted(found, key=lambda f: f.start)


def scrub_pii(text: str) -> tuple[str, Counter[str]]:
    """Replace every finding with its placeholder (``[EMAIL]``, ``[PHONE]``...).

    Returns:
        ``(scrubbed_text, counts_per_type)``.
    """
    counts: Counter[str] = Counter()
    out = text
    for finding in sorted(find_pii(text), key=lambda f: f.start, reverse=True):
        out = out[:finding.start] + PLACEHOLDERS[finding.kind] + out[finding.end:]
        counts[finding.kind] += 1
    return out, counts


def _scrub_record(record: dict[str, Any]) -> dict[str, Any]:
    counts: Counter[str] = Counter()

    def scrub(text: str) -> str:
        clean, found = scrub_pii(text)
        counts.update(found)
        return clean

    fields = map_contents(record, scrub)
    return {**fields, **{f"_pii_{kind}": counts.get(kind, 0) for kind in PII_TYPES}}


def pii_step(dataset, num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Scrub PII from every message; report counts per type and the records changed.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        num_proc: worker processes for ``datasets.map``.
    """
    scrubbed = dataset.map(_scrub_record, num_proc=num_proc, desc="pii")
    columns = [f"_pii_{kind}" for kind in PII_TYPES]
    per_type = {kind: int(sum(scrubbed[f"_pii_{kind}"])) for kind in PII_TYPES}
    totals = [sum(row) for row in zip(*(scrubbed[c] for c in columns))]
    rows = scrubbed.select([i for i, n in enumerate(totals) if n])
    changed = [(r["id"], r["domain"], "pii: " + ", ".join(k for k in PII_TYPES if r[f"_pii_{k}"]), record_text(r))
               for r in rows]
    scrubbed = scrubbed.remove_columns(columns)
    return scrubbed, summarize("pii", len(dataset), len(scrubbed), changed=changed,
                               details={"pii_counts": per_type})
