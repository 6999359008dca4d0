"""PII detection and scrubbing: each finding replaced by a typed placeholder, counted by type.

Types: emails, phone numbers (US formats, and international ones written with ``+`` and a
country code), SSN-like ids, credit-card numbers (only those that start like a card network's and
pass the Luhn check, so order numbers and long integers are left alone), IP addresses (valid IPv4
and IPv6 ones; loopback and unspecified addresses are not personal), dates of birth (a date next
to "DOB", "date of birth", "born"), medical record numbers (an id next to "MRN" or "medical record
number") and people's names (see :func:`person_spans`). Patterns are deliberately narrow: a scrubber that eats clause
numbers, version strings and code would damage the data it protects. ``docs/pii.md`` measures
this detector against Microsoft Presidio on a planted corpus. Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import importlib
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any, Iterator

from .records import map_contents, record_text
from .report import StepReport, summarize

PII_TYPES = ("email", "mrn", "dob", "ssn", "credit_card", "ip_address", "phone", "person")
"""Detected types, in the order overlapping matches are resolved (first wins)."""

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = (rf"\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|{_MONTH} \d{{1,2}},? \d{{4}}"
         rf"|\d{{1,2}} {_MONTH} \d{{4}}")
# Candidates only: ``ipaddress`` decides what is an address (so times like 12:30:45 are not).
_IPV6 = r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?:%\w+)?(?![\w:]|\.\d)"
_IPV4 = r"\b(?:\d{1,3}\.){3}\d{1,3}\b"
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"),
    "mrn": re.compile(r"\b(?:MRN|medical record (?:number|no\.?|#))\s*[:#]?\s*(?P<value>[A-Z]{0,3}\d{5,10})\b",
                      re.IGNORECASE),
    "dob": re.compile(rf"\b(?:DOB|D\.O\.B\.|date of birth|birth ?date|born(?: on)?)\s*[:\-]?\s*(?P<value>{_DATE})",
                      re.IGNORECASE),
    # Dashed anywhere; spaced only shortly after "SSN" or "social security number" (else: a count, a code).
    "ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
                      r"|\b(?:SSN|social security (?:number|no\.?))[^\d\n]{0,20}?"
                      r"(?P<value>(?!000|666|9\d\d)\d{3} (?!00)\d{2} (?!0000)\d{4})\b", re.IGNORECASE),
    "credit_card": re.compile(r"(?<!\+)\b\d(?:[ \-]?\d){12,18}\b"),
    "ip_address": re.compile(f"{_IPV6}|{_IPV4}"),
    "phone": re.compile(r"(?<![\w+])(?:\+1[ .\-]?)?(?:\(\d{3}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{4}\b"
                        r"|(?<![\w+])\+\d{1,3}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){2,5}(?![\w\-])"),
}
PLACEHOLDERS = {t: f"[{t.upper()}]" for t in PII_TYPES}

NAME_LOCALES = ("en_US", "en_GB", "en_IN", "es_ES", "es_MX", "fr_FR", "de_DE", "it_IT", "pt_BR",
                "en_NG", "yo_NG", "ig_NG", "ha_NG")
"""Faker locales whose first- and last-name lists the person recognizer knows (Latin-script ones)."""

_UPPER = "A-ZÀ-ÖØ-ÞĀ-ſḀ-ỿ"  # Latin capitals (the extended blocks interleave lowercase letters: harmless here)
_NAME_WORD = rf"[{_UPPER}](?:['’][{_UPPER}])?[^\W\d_]+(?:-[{_UPPER}][^\W\d_]+)?"  # Maria, O'Brien, Jean-Luc
_TITLES = r"Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Sir|Dame|Rev|Herr|Frau|Mme|Mlle|Sra?"
_RUN_WORD = re.compile(rf"{_NAME_WORD}|[A-Z]\.")
# A title and capitalized words, or two or more capitalized words (initials allowed after the first).
_NAME_RUN = re.compile(
    rf"(?<![\w@./\-])(?:(?:{_TITLES})\.?[ \t]+(?P<titled>{_NAME_WORD}(?:[ \t]+(?:{_NAME_WORD}|[A-Z]\.)){{0,2}})"
    rf"|(?P<words>{_NAME_WORD}(?:[ \t]+(?:{_NAME_WORD}|[A-Z]\.))+))")
_CUES = ("name", "named", "patient", "dear", "attn", "signed by", "prepared by", "contact", "details", "client",
         "employee", "author", "witness")
_CUE_BEFORE = re.compile(rf"\b(?:{'|'.join(_CUES)})\b\W{{0,3}}$", re.IGNORECASE)


def luhn_valid(number: str) -> bool:
    """Does the digit string pass the Luhn checksum card numbers carry?"""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 == 1 else d
    return total % 10 == 0


def _is_personal_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version == 6 and not any(len(group) >= 3 for group in re.split(r"[:.%]", text)):
        return False  # slices like x[1::2] parse as IPv6; real addresses carry a longer group
    return not (address.is_loopback or address.is_unspecified)


def _accept(kind: str, text: str) -> bool:
    if kind == "credit_card":
        return text[0] in "23456" and luhn_valid(text)  # card networks' numbers start with 2-6
    if kind == "ip_address":
        return _is_personal_ip(text)
    if kind == "phone":
        return 10 <= sum(c.isdigit() for c in text) <= 15  # E.164 allows at most 15 digits
    return True


@cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """The first names and last names the person recognizer knows.

    Faker's person-provider lists for :data:`NAME_LOCALES`: data inside its wheel, read offline.
    Names of several words ("Anthony Gabriel") are left out: the recognizer matches single words.

    Returns:
        ``(first_names, last_names)``.
    """
    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        first.update(provider.first_names)
        last.update(provider.last_names)
    word = re.compile(_NAME_WORD)
    return (frozenset(n for n in first if word.fullmatch(n)), frozenset(n for n in last if word.fullmatch(n)))


def _known(word: str, names: frozenset[str]) -> bool:
    """Is the word, or the first part of a hyphenated one (Jean-Luc, Smith-Jones), in ``names``?"""
    return word in names or word.split("-", 1)[0] in names


def _listed_name_end(words: list[tuple[int, int, str]], i: int, first: frozenset[str], last: frozenset[str]) -> int:
    """Index after a listed name starting at ``words[i]`` (first, optional middle, last names), or ``i``."""
    if not _known(words[i][2], first):
        return i
    j = i + 1
    middle = j + 1 < len(words) and (_known(words[j][2], first) or words[j][2].endswith("."))
    if middle and _known(words[j + 1][2], last):
        j += 1  # a middle name or initial
    if j >= len(words) or not _known(words[j][2], last):
        return i
    while j + 1 < len(words) and _known(words[j + 1][2], last):
        j += 1  # double surnames: García López
    return j + 1


def person_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each person's name in ``text``, by three rules that keep precision high.

    1. A title (Dr, Mrs, Prof...) then up to three capitalized words: "Dr. Kofi Mensah".
    2. Capitalized words that are a known first name then a known last name, with an optional
       middle name or initial and double surnames: "Maria Garcia", "John F. Smith".
    3. After a cue ("patient", "signed by", "Name:"...), two capitalized words of which the first
       is a known first name or the second a known last name: "patient Raj Chen".

    Without a title, one capitalized word is never a name, so "Will", "May", "Grace Period",
    "Supplier" and "Customer" stay. Lowercase and all-caps names are missed (see ``docs/pii.md``).
    """
    first, last = name_lists()
    for run in _NAME_RUN.finditer(text):
        group = "titled" if run.group("titled") else "words"
        words = [(m.start(), m.end(), m.group()) for m in _RUN_WORD.finditer(text, *run.span(group))]
        if group == "titled":
            yield words[0][0], words[-1][1]
            continue
        cued = _CUE_BEFORE.search(text, max(0, run.start() - 30), run.start()) is not None
        if words[0][2].lower() in _CUES:
            cued, words = True, words[1:]
        i, found = 0, False
        while i < len(words) - 1:
            end = _listed_name_end(words, i, first, last)
            if end > i:
                yield words[i][0], words[end - 1][1]
                i, found = end, True
            else:
                i += 1
        if cued and not found and len(words) >= 2 and (_known(words[0][2], first) or _known(words[1][2], last)):
            yield words[0][0], words[1][1]


def _candidates(kind: str, text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``kind`` in ``text``, before overlaps between types are resolved."""
    if kind == "person":
        yield from person_spans(text)
        return
    for match in PATTERNS[kind].finditer(text):
        group = "value" if match.groupdict().get("value") is not None else 0
        if _accept(kind, match.group(group)):
            yield match.span(group)


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
        for start, end in _candidates(kind, text):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(PiiFinding(kind, start, end, text[start:end]))
    return sorted(found, key=lambda f: f.start)


def scrub_pii(text: str) -> tuple[str, Counter[str]]:
    """Replace every finding with its placeholder (``[EMAIL]``, ``[PERSON]``...).

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
