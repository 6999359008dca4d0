"""PII audit of datasets and model generations, and the measurement of PII detectors behind it.

An audit counts personal data per type and shows a few examples masked (:func:`audit_texts`,
:func:`audit_dataset`). A detector is any function from a text to
:class:`~course_lib.data.pii.PiiFinding` s: the kit's :func:`~course_lib.data.pii.find_pii` (what
curation scrubs with) or Microsoft Presidio's analyzer run offline (:func:`presidio_detector`).
Detectors are measured on a planted corpus with known PII of every type and hard negatives
(:func:`planted_corpus`, :func:`score_detector`, :func:`side_by_side`); ``benchmarks/pii_detectors.py``
writes the comparison to ``docs/pii.md``. Introduced in ``08_ethics``.
"""
from __future__ import annotations

import importlib
import itertools
import random
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..data.io import iter_records
from ..data.pii import PII_TYPES, PLACEHOLDERS, PiiFinding, find_pii, name_lists
from ..data.records import record_text

Detector = Callable[[str], list[PiiFinding]]
"""A PII detector: every finding in a text, typed with the kit's :data:`~course_lib.data.pii.PII_TYPES`."""

# --- auditing -----------------------------------------------------------------------------------


def mask(text: str, findings: Iterable[PiiFinding], context: int = 25) -> str:
    """The text around each finding, with the finding replaced by its type: safe to show.

    Example: ``mask("mail ana@example.com now", find_pii(...), context=5)`` gives ``"mail [EMAIL] now"``.

    Args:
        text: the text the findings come from.
        findings: what a detector found in it.
        context: characters kept on each side of a finding; the rest becomes "…".
    """
    ordered = sorted(findings, key=lambda f: f.start)
    windows: list[list[int]] = []
    for finding in ordered:
        start, end = max(0, finding.start - context), min(len(text), finding.end + context)
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    pieces = []
    for start, end in windows:
        cursor, out = start, []
        for finding in ordered:
            if start <= finding.start < end:
                out += [text[cursor:finding.start], PLACEHOLDERS[finding.kind]]
                cursor = finding.end
        out.append(text[cursor:end])
        pieces.append(("…" if start > 0 else "") + "".join(out).strip() + ("…" if end < len(text) else ""))
    return " ".join(pieces)


def audit_texts(texts: Iterable[str], detector: Detector = find_pii, *, ids: Iterable[str] | None = None,
                max_examples: int = 5, context: int = 25) -> dict[str, Any]:
    """Count the PII in texts (model generations, or any strings) per type, with masked examples.

    Args:
        texts: the texts to audit.
        detector: the detector to audit with (the kit's by default; see :func:`presidio_detector`).
        ids: a name for each text in the examples (default: its index).
        max_examples: examples to keep; the first text showing each type comes first, then the earliest.
        context: characters kept around each masked finding.

    Returns:
        ``{"records": n, "records_with_pii": n, "counts": {type: n}, "examples": [{"id", "types",
        "masked"}]}``, with every type of :data:`~course_lib.data.pii.PII_TYPES` in ``counts``.
    """
    names = iter(ids) if ids is not None else None
    counts: Counter[str] = Counter()
    first_per_type: dict[str, dict[str, Any]] = {}
    earliest: list[dict[str, Any]] = []
    records = with_pii = 0
    for index, text in enumerate(texts):
        name = next(names) if names is not None else str(index)
        records += 1
        findings = detector(text)
        if not findings:
            continue
        with_pii += 1
        types = sorted({f.kind for f in findings}, key=PII_TYPES.index)
        counts.update(f.kind for f in findings)
        example = {"id": name, "types": types, "masked": mask(text, findings, context)}
        for kind in types:
            first_per_type.setdefault(kind, example)
        if len(earliest) < max_examples:
            earliest.append(example)
    examples: list[dict[str, Any]] = []
    for example in [first_per_type[k] for k in PII_TYPES if k in first_per_type] + earliest:
        if len(examples) < max_examples and example not in examples:
            examples.append(example)
    return {"records": records, "records_with_pii": with_pii, "counts": {k: counts[k] for k in PII_TYPES},
            "examples": examples}


def audit_dataset(source: str | Path | Iterable[dict[str, Any]], detector: Detector = find_pii, *,
                  max_examples: int = 5, context: int = 25) -> dict[str, Any]:
    """:func:`audit_texts` over a dataset's records, each read as all its message contents.

    Args:
        source: a JSONL or Parquet file of TRL-format records (the kit's columns not required), or
            records in memory (a list, a ``datasets.Dataset``).
        detector: the detector to audit with.
        max_examples: masked examples to keep.
        context: characters kept around each masked finding.

    Returns:
        The dictionary :func:`audit_texts` returns; example ids are the records' ``id`` (or index).
    """
    records = iter_records(source, kit_columns=False) if isinstance(source, (str, Path)) else source
    pairs = [(str(r.get("id", i)), record_text(r)) for i, r in enumerate(records)]
    return audit_texts([text for _, text in pairs], detector, ids=[name for name, _ in pairs],
                       max_examples=max_examples, context=context)


# --- Presidio, offline ---------------------------------------------------------------------------

PRESIDIO_TYPES = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "US_SSN": "ssn", "CREDIT_CARD": "credit_card",
                  "IP_ADDRESS": "ip_address", "DATE_TIME": "dob", "PERSON": "person"}
"""Presidio's entities read as the kit's types. Presidio has no MRN recognizer, and no date-of-birth
one: every date it finds counts as a ``dob``."""


@cache
def _presidio_analyzer():
    """Presidio's analyzer with its predefined pattern recognizers and a names list, fully offline.

    No spaCy model: the no-op NLP engine gives no NER and no tokens, so context words in the text
    do not raise scores (only the pattern recognizers and their validators act). The email recognizer's
    domain check uses tldextract's bundled public-suffix snapshot instead of fetching the list, and
    people's names come from a deny list of the same faker names the kit's recognizer knows,
    matched case-sensitively (Presidio's default ignores case, which would flag "will" and "may").
    """
    try:
        import tldextract
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_analyzer.predefined_recognizers import EmailRecognizer
    except ImportError as err:
        raise ImportError("Presidio is optional: pip install 'course-lib[presidio]' "
                          "(presidio-analyzer; no spaCy model is needed)") from err

    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_suffixes(pattern_text).fqdn != ""

    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    first, last = name_lists()
    registry.add_recognizer(PatternRecognizer(supported_entity="PERSON", name="FakerNamesRecognizer",
                                              deny_list=sorted(first | last),
                                              global_regex_flags=re.DOTALL | re.MULTILINE))
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def presidio_detector(text: str) -> list[PiiFinding]:
    """Presidio's findings in ``text`` as the kit's types (see :data:`PRESIDIO_TYPES`), non-overlapping.

    Needs the optional ``presidio-analyzer`` package; runs without a network or a spaCy model.
    Overlaps are resolved like the kit's: the higher score wins, then the earlier type in
    :data:`~course_lib.data.pii.PII_TYPES`.
    """
    results = _presidio_analyzer().analyze(text, language="en", entities=sorted(PRESIDIO_TYPES))
    ranked = sorted(results, key=lambda r: (-r.score, PII_TYPES.index(PRESIDIO_TYPES[r.entity_type]), r.start))
    kept: list[PiiFinding] = []
    for result in ranked:
        if not any(result.start < f.end and f.start < result.end for f in kept):
            kept.append(PiiFinding(PRESIDIO_TYPES[result.entity_type], result.start, result.end,
                                   text[result.start:result.end]))
    return sorted(kept, key=lambda f: f.start)


# --- the planted corpus ---------------------------------------------------------------------------

CORPUS_SEEN_LOCALES = ("en_US", "en_GB", "es_MX", "fr_FR", "de_DE", "it_IT", "en_IN", "yo_NG")
"""Locales of planted names whose lists the kit's recognizer also reads (a subset of ``NAME_LOCALES``)."""
CORPUS_HELD_OUT_LOCALES = ("en_KE", "tw_GH", "sv_SE", "nl_NL", "tr_TR", "id_ID", "sw", "zh_CN", "ja_JP")
"""Locales of planted names the recognizer never read: its recall on them is the honest one."""


@dataclass(frozen=True)
class PlantedSpan:
    """A span of a planted text whose label is known."""

    kind: str
    """A PII type, or ``"negative"`` for a hard negative (text that must not be flagged)."""
    form: str
    """How it is written: ``international`` phone, ``ipv6_mixed``, ``title`` name, ``clause_number``..."""
    start: int
    end: int


@dataclass(frozen=True)
class PlantedText:
    """A text of the planted corpus with its known PII and hard negatives."""

    text: str
    domain: str
    pii: tuple[PlantedSpan, ...]
    negatives: tuple[PlantedSpan, ...]


@cache
def _corpus_names() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Sorted one-word first and last names of each corpus locale (romanized for zh_CN and ja_JP)."""
    names = {}
    for locale in CORPUS_SEEN_LOCALES + CORPUS_HELD_OUT_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        romanized = hasattr(provider, "first_romanized_names")
        first = provider.first_romanized_names if romanized else provider.first_names
        last = provider.last_romanized_names if romanized else provider.last_names
        names[locale] = tuple(tuple(sorted({n for n in pool if n.isalpha()})) for pool in (first, last))
    return names


def _ascii(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def _luhn_number(rng: random.Random, prefix: str, length: int, valid: bool = True) -> str:
    body = [int(c) for c in prefix + _digits(rng, length - len(prefix) - 1)]
    total = sum(sum(divmod(d * 2, 10)) if i % 2 == 0 else d for i, d in enumerate(reversed(body)))
    check = (10 - total % 10) % 10
    return "".join(map(str, body)) + str(check if valid else (check + rng.randint(1, 9)) % 10)


def _person(rng: random.Random) -> tuple[str, str, str]:
    """``(form, prefix, name)``: how the name is written, words before it (a title), the name."""
    held_out = rng.random() < 0.5
    locale = rng.choice(CORPUS_HELD_OUT_LOCALES if held_out else CORPUS_SEEN_LOCALES)
    first_names, last_names = _corpus_names()[locale]
    first, last = rng.choice(first_names), rng.choice(last_names)
    origin = "held-out locale" if held_out else "seen locale"
    style = rng.choice(["plain", "plain", "title", "cue", "initial", "lowercase"])
    prefix = ""
    if style == "title":
        prefix = rng.choice(["Dr. ", "Mr. ", "Mrs. ", "Ms. ", "Prof. "])
        name = rng.choice([f"{first} {last}", last])
    elif style == "initial":
        name = f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
    elif style == "lowercase":
        name = f"{first} {last}".lower()
    else:
        name = f"{first} {last}"
    return f"{style}, {origin}", prefix, name


def _phone(rng: random.Random) -> tuple[str, str, str]:
    d = partial(_digits, rng)
    if rng.random() < 0.5:
        area, exchange, line = f"{rng.randint(2, 9)}{d(2)}", f"{rng.randint(2, 9)}{d(2)}", d(4)
        return "us", "", rng.choice([f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}",
                                     f"{area}.{exchange}.{line}", f"+1 {area} {exchange} {line}",
                                     f"+1-{area}-{exchange}-{line}"])
    return "international", "", rng.choice([
        f"+44 20 {d(4)} {d(4)}", f"+44 7{d(3)} {d(6)}", f"+49 30 {d(8)}", f"+49 (0)89 {d(3)} {d(4)}",
        f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"+91 9{d(4)} {d(5)}", f"+81 3-{d(4)}-{d(4)}",
        f"+55 11 9{d(4)}-{d(4)}", f"+234 803 {d(3)} {d(4)}", f"+61 2 {d(4)} {d(4)}", f"+52 55 {d(4)} {d(4)}"])


def _email(rng: random.Random) -> tuple[str, str, str]:
    locale = rng.choice(CORPUS_SEEN_LOCALES + CORPUS_HELD_OUT_LOCALES)
    first_names, last_names = _corpus_names()[locale]
    first, last = _ascii(rng.choice(first_names)), _ascii(rng.choice(last_names))
    domain = rng.choice(["example.com", "example.org", "mail.example.net", "clinic.example.co.uk"])
    form, user = rng.choice([("first.last", f"{first}.{last}"), ("initial_last", f"{first[0]}{last}"),
                             ("subaddress", f"{first}.{last}+billing")])
    return form, "", f"{user}@{domain}"


def _ssn(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    parts = (f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}")
    return ("dashed", "", "-".join(parts)) if rng.random() < 0.8 else ("spaced", "", " ".join(parts))


def _card(rng: random.Random) -> tuple[str, str, str]:
    brand, prefix, length = rng.choice([("visa", "4", 16), ("mastercard", str(rng.randint(51, 55)), 16),
                                        ("amex", rng.choice(["34", "37"]), 15), ("discover", "6011", 16)])
    number = _luhn_number(rng, prefix, length)
    groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i:i + 4] for i in range(0, 16, 4)]
    return brand, "", rng.choice([" ", "-", ""]).join(groups)


def _ipv4(rng: random.Random) -> str:
    first = rng.choice([n for n in range(1, 224) if n not in (10, 127)])  # public, not loopback
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _ip(rng: random.Random) -> tuple[str, str, str]:
    groups = [f"{rng.randrange(1, 0x10000):x}" for _ in range(8)]
    form = rng.choice(["ipv4", "ipv4", "ipv6_full", "ipv6_compressed", "ipv6_mixed"])
    if form == "ipv4":
        return form, "", _ipv4(rng)
    if form == "ipv6_full":
        return form, "", ":".join(["2001", "0db8"] + [g.zfill(4) for g in groups[2:]])
    if form == "ipv6_compressed":
        zeros = rng.randint(1, 3)
        return form, "", ":".join(["2001", "db8"] + groups[2:8 - zeros - 1]) + "::" + groups[-1]
    return form, "", rng.choice(["::ffff:", "64:ff9b::"]) + _ipv4(rng)


def _dob(rng: random.Random) -> tuple[str, str, str]:
    born = date(1935, 1, 1) + timedelta(days=rng.randrange(27000))
    form, value = rng.choice([("numeric", f"{born:%m/%d/%Y}"), ("iso", f"{born:%Y-%m-%d}"),
                              ("written", f"{born.day} {born:%B %Y}"),
                              ("written", f"{born:%B} {born.day}, {born.year}")])
    return form, rng.choice(["DOB: ", "DOB ", "date of birth: ", "born on ", "D.O.B. "]), value


def _mrn(rng: random.Random) -> tuple[str, str, str]:
    form, value = rng.choice([("digits", _digits(rng, 8)), ("digits", _digits(rng, 7)),
                              ("prefixed", rng.choice(["AB", "MR", "H"]) + _digits(rng, 6))])
    return form, rng.choice(["MRN: ", "MRN# ", "medical record number "]), value


_GENERATORS = {"email": _email, "phone": _phone, "ssn": _ssn, "credit_card": _card, "ip_address": _ip,
               "dob": _dob, "mrn": _mrn, "person": _person}
_SLOTS = ("email", "phone", "ssn", "credit_card", "ip_address", "dob", "mrn", "person", "person")
"""One round of planted types: names come in more forms than the other types, so twice as often."""

# One sentence per PII type and domain; {} is where the value goes.
_SENTENCES = {
    "email": {"medical": ["Send the discharge summary to {} before Friday.", "Patient portal login: {}."],
              "legal": ["Notices under this Agreement shall be sent to {}.", "Invoices go to {} each month."],
              "code": ['AUTHOR_EMAIL = "{}"', "# maintainer: {}"]},
    "phone": {"medical": ["Call the patient back at {} with the results.", "Emergency contact phone: {}."],
              "legal": ["The Customer's support line is {}.", "Questions about this clause: {}."],
              "code": ['SUPPORT_PHONE = "{}"', "# on-call pager: {}"]},
    "ssn": {"medical": ["The insurance form lists SSN {}.", "Social security number on file: {}."],
            "legal": ["Employee SSN: {} (withholding).", "The guarantor's social security number is {}."],
            "code": ['ssn = "{}"  # from the HR export', "# fixture SSN {}"]},
    "credit_card": {"medical": ["Copay charged to card {}.", "Billing: card {} declined twice."],
                    "legal": ["Payment by card number {} on signing.", "The deposit was paid with card {}."],
                    "code": ['card_number = "{}"', "# test charge on {}"]},
    "ip_address": {"medical": ["Telehealth session opened from {}.", "Portal access logged from {}."],
                   "legal": ["The licence server accepted a login from {}.", "Licensee's fixed address: {}."],
                   "code": ['ALLOWED_HOSTS = ["{}"]', "# blocked client {}"]},
    "dob": {"medical": ["{}; allergic to penicillin.", "Patient identified by {}."],
            "legal": ["Guarantor details, {}.", "The Tenant, {}, is of full age."],
            "code": ["# test patient, {}", 'notes = "{}"']},
    "mrn": {"medical": ["{} admitted to ward 4.", "Lab results filed under {}."],
            "legal": ["The claim concerns {}.", "Records requested for {}."],
            "code": ['lookup("{}")', "# sample record: {}"]},
    "person": {"medical": ["{} was seen today for chest pain.", "Referred for follow-up: {}."],
               "legal": ["{} will attend the closing.", "Notices for the Tenant go to {} at the premises."],
               "code": ["# TODO({}): handle empty input", "# reviewed by {}"]},
}
# A name in the "cue" form follows a cue word ("Patient", "signed by", "Name:"); the other forms never do.
_CUE_SENTENCES = {"medical": "Patient {} reports a mild fever.",
                  "legal": "This Agreement is signed by {} on behalf of the Supplier.", "code": "# Name: {}"}

_NEGATIVES = {
    "clause_number": ["See Section {} for termination.", "Clause {} survives expiry."],
    "version": ["Requires Python {} or later.", "Pinned to numpy {}."],
    "money": ["The fee is {} payable within 30 days.", "Damages are capped at {}."],
    "test_integers": ["{}"],
    "order_number": ["Order {} shipped on time.", "Invoice reference {}."],
    "loopback": ["The dev server listens on {}.", "Bind to {} only."],
    "other_date": ["The Agreement is effective {}.", "Follow-up visit on {}."],
    "month_or_verb": ["{} the Supplier assign this Agreement?", "{} Customer be liable for delays?"],
    "name_like_term": ["The {} clause applies.", "Wire the refund to {}."],
    "code_identifier": ["{}"],
    "clinical_number": ["{}"],
}


def _negative(rng: random.Random, form: str) -> str:
    """A lookalike of the given form (the text that must not be flagged)."""
    d = partial(_digits, rng)
    return {
        "clause_number": lambda: f"{rng.randint(1, 20)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}",
        "version": lambda: f"{rng.randint(1, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        "money": lambda: rng.choice([f"${rng.randint(1, 999)},{d(3)},{d(3)}.00", f"USD {rng.randint(1, 99)},{d(3)}",
                                     f"EUR {rng.randint(100, 999)}.{d(2)}"]),
        "test_integers": lambda: rng.choice([f"assert add({d(6)}, {d(6)}) == {d(7)}", f"x = {d(13)}",
                                             f"assert f({rng.randint(1, 99)}, {rng.randint(1, 99)}) == {d(3)}"]),
        "order_number": lambda: re.sub(r"(\d{4})(?=\d)", r"\1 ", _luhn_number(rng, "4", 16, valid=False)),
        "loopback": lambda: rng.choice(["127.0.0.1", "::1", "0.0.0.0", "127.0.0.1:8000"]),
        "other_date": lambda: rng.choice([f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                                          f"March {rng.randint(1, 28)}, 2025",
                                          f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/2024"]),
        "month_or_verb": lambda: rng.choice(["May", "Will", "Shall", "Must"]),
        "name_like_term": lambda: rng.choice(["Grace Period", "Chase Bank", "Force Majeure", "Glasgow Coma Scale",
                                              "Apgar Score", "Hodgkin Lymphoma"]),
        "code_identifier": lambda: rng.choice(["class DataLoader:", "items[1::2]", "std::vector<int>",
                                               "raise ValueError('bad input')", "started at 12:30:45",
                                               "self.max_len = 512", "MAC 00:1A:2B:3C:4D:5E"]),
        "clinical_number": lambda: rng.choice([f"BP {rng.randint(100, 160)}/{rng.randint(60, 100)}",
                                               f"{rng.randint(1, 50)}.5 mg twice daily",
                                               f"temperature 38.{rng.randint(0, 9)} C for {rng.randint(2, 9)} days",
                                               f"ISBN 978-3-16-{d(6)}-0"]),
    }[form]()


def planted_corpus(n: int = 600, seed: int = 0) -> list[PlantedText]:
    """Texts in the kit's domains' styles with known PII of every type and hard negatives.

    Each text holds one or two PII sentences (types in turn, names twice as often, in several forms
    and from name lists of several origins) and one hard-negative sentence, shuffled. Values are
    made up: documentation IP ranges and random digits; names from faker's lists, half of them from
    locales the kit's names recognizer never read (:data:`CORPUS_HELD_OUT_LOCALES`). Deterministic.

    Args:
        n: number of texts.
        seed: seed of the generator.
    """
    rng = random.Random(seed)
    order = itertools.chain.from_iterable(rng.sample(_SLOTS, len(_SLOTS)) for _ in itertools.count())
    corpus = []
    for _ in range(n):
        domain = rng.choice(["medical", "legal", "code"])
        parts: list[tuple[str, str, str, str, str]] = []  # (kind, form, sentence, prefix, value)
        for _ in range(rng.choice([1, 2])):
            kind = next(order)
            form, prefix, value = _GENERATORS[kind](rng)
            if kind == "person":
                cue = form.startswith("cue")
                sentence = _CUE_SENTENCES[domain] if cue else rng.choice(_SENTENCES["person"][domain])
            else:
                sentence = rng.choice(_SENTENCES[kind][domain])
            parts.append((kind, form, sentence, prefix, value))
        negative_form = rng.choice(sorted(_NEGATIVES))
        parts.append(("negative", negative_form, rng.choice(_NEGATIVES[negative_form]), "",
                      _negative(rng, negative_form)))
        rng.shuffle(parts)
        text, pii, negatives = "", [], []
        for kind, form, sentence, prefix, value in parts:
            if text:
                text += "\n" if domain == "code" else " "
            before, after = sentence.split("{}")
            start = len(text) + len(before) + len(prefix)
            text += before + prefix + value + after
            span = PlantedSpan(kind, form, start, start + len(value))
            (negatives if kind == "negative" else pii).append(span)
        corpus.append(PlantedText(text, domain, tuple(pii), tuple(negatives)))
    return corpus


def name_overlap(corpus: Iterable[PlantedText]) -> dict[str, float]:
    """Share of planted names whose first word / last word / both are in the kit recognizer's lists."""
    first, last = name_lists()
    names = [t.text[s.start:s.end].replace(".", "").split() for t in corpus for s in t.pii if s.kind == "person"]
    names = [words for words in names if len(words) >= 2]
    def share(hits: Iterable[bool]) -> float:
        return round(sum(hits) / max(len(names), 1), 3)

    return {"names": len(names), "first_listed": share(w[0] in first for w in names),
            "last_listed": share(w[-1] in last for w in names),
            "both_listed": share(w[0] in first and w[-1] in last for w in names)}


# --- scoring -----------------------------------------------------------------------------------------


def _overlaps(a: PlantedSpan | PiiFinding, b: PlantedSpan | PiiFinding) -> bool:
    return a.start < b.end and b.start < a.end


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return round(2 * precision * recall / (precision + recall), 3) if precision + recall else 0.0


def score_detector(detector: Detector, corpus: Iterable[PlantedText]) -> dict[str, Any]:
    """Span-level precision and recall per type of a detector on a planted corpus.

    Matching rule: a detection is correct when it overlaps a planted span of the same type (by at
    least one character); a planted span is found when a correct detection overlaps it. So a name
    flagged as two pieces counts as two correct detections and one found name.

    Returns:
        ``{"per_type": {type: {"planted", "detections", "correct", "found", "precision", "recall", "f1"}},
        "all_types": {same keys, micro-averaged}, "recall_by_form": {"type: form": {"planted", "found",
        "recall"}}, "hard_negatives": {"total", "flagged", "flagged_by_form"}, "seconds": s, "texts": n}``.
        ``precision`` is None for a type the detector never reports.
    """
    planted, detections, correct, found = Counter(), Counter(), Counter(), Counter()
    form_planted, form_found, flagged_by_form = Counter(), Counter(), Counter()
    negatives_total, texts, seconds = 0, 0, 0.0
    for item in corpus:
        started = time.perf_counter()
        findings = [f for f in detector(item.text) if f.kind in PII_TYPES]
        seconds += time.perf_counter() - started
        texts += 1
        for finding in findings:
            detections[finding.kind] += 1
            correct[finding.kind] += any(s.kind == finding.kind and _overlaps(s, finding) for s in item.pii)
        for span in item.pii:
            hit = any(f.kind == span.kind and _overlaps(span, f) for f in findings)
            planted[span.kind] += 1
            found[span.kind] += hit
            form_planted[f"{span.kind}: {span.form}"] += 1
            form_found[f"{span.kind}: {span.form}"] += hit
        for span in item.negatives:
            negatives_total += 1
            flagged_by_form[span.form] += any(_overlaps(span, f) for f in findings)

    def row(p: int, d: int, c: int, f: int) -> dict[str, Any]:
        precision, recall = _ratio(c, d), _ratio(f, p)
        return {"planted": p, "detections": d, "correct": c, "found": f, "precision": precision, "recall": recall,
                "f1": _f1(precision, recall)}

    return {
        "per_type": {k: row(planted[k], detections[k], correct[k], found[k]) for k in PII_TYPES},
        "all_types": row(sum(planted.values()), sum(detections.values()), sum(correct.values()), sum(found.values())),
        "recall_by_form": {key: {"planted": form_planted[key], "found": form_found[key],
                                 "recall": _ratio(form_found[key], form_planted[key])} for key in sorted(form_planted)},
        "hard_negatives": {"total": negatives_total, "flagged": sum(flagged_by_form.values()),
                           "flagged_by_form": dict(sorted(flagged_by_form.items()))},
        "seconds": round(seconds, 3), "texts": texts,
    }


def compare_detectors(detectors: Mapping[str, Detector], corpus: Iterable[PlantedText]) -> dict[str, dict[str, Any]]:
    """:func:`score_detector` for each named detector on the same corpus."""
    corpus = list(corpus)
    return {name: score_detector(detector, corpus) for name, detector in detectors.items()}


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = [header, ["---"] * len(header)] + rows
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def side_by_side(scores: Mapping[str, dict[str, Any]]) -> str:
    """A Markdown table of precision and recall per type, one pair of columns per detector.

    Its last two rows give, in each detector's precision column, the hard negatives it flagged
    and its time per text.

    Args:
        scores: what :func:`compare_detectors` returns.
    """
    header = ["type", "planted"] + [f"{name} {m}" for name in scores for m in ("P", "R")]
    rows = []
    for kind in PII_TYPES + ("all_types",):
        per_detector = [s["all_types"] if kind == "all_types" else s["per_type"][kind] for s in scores.values()]
        rows.append(["**all types**" if kind == "all_types" else kind, per_detector[0]["planted"]]
                    + [_cell(r[m]) for r in per_detector for m in ("precision", "recall")])
    negatives = next(iter(scores.values()))["hard_negatives"]["total"]
    rows.append([f"hard negatives flagged (of {negatives})", ""]
                + [v for s in scores.values() for v in (s["hard_negatives"]["flagged"], "")])
    rows.append(["ms per text", ""]
                + [v for s in scores.values() for v in (f"{1000 * s['seconds'] / s['texts']:.2f}", "")])
    return _markdown(header, rows)


def recall_by_form(scores: Mapping[str, dict[str, Any]]) -> str:
    """A Markdown table of each detector's recall per way of writing a type (US or international phone...)."""
    forms = next(iter(scores.values()))["recall_by_form"]
    rows = [[key, forms[key]["planted"]] + [_cell(s["recall_by_form"][key]["recall"]) for s in scores.values()]
            for key in forms]
    return _markdown(["type: form", "planted"] + [f"{name} R" for name in scores], rows)


def negatives_flagged(scores: Mapping[str, dict[str, Any]]) -> str:
    """A Markdown table of the hard negatives each detector flagged, per kind of negative."""
    forms = next(iter(scores.values()))["hard_negatives"]["flagged_by_form"]
    rows = [[form] + [s["hard_negatives"]["flagged_by_form"][form] for s in scores.values()] for form in forms]
    return _markdown(["hard negative"] + list(scores), rows)
