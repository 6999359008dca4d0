"""Unicode normalization with ftfy: mojibake repaired, NFC, curly quotes straightened.

Runs first, so every later step (dedup hashes, PII patterns, n-grams) sees one spelling
of each character. Indentation and line breaks are kept: code depends on them.
"""
from __future__ import annotations

from typing import Any

import ftfy

from .records import map_contents, record_text
from .report import StepReport, summarize


def normalize_text(text: str) -> str:
    """Repair and normalize one string (ftfy's defaults, NFC), trimming outer whitespace.

    Example: ``"donâ€™t"`` (UTF-8 read as cp1252) becomes ``"don't"``.
    """
    return ftfy.fix_text(text, normalization="NFC").strip()


def _normalize_record(record: dict[str, Any]) -> dict[str, Any]:
    fixed = map_contents(record, normalize_text)
    changed = any(fixed[name] != record[name] for name in fixed)
    return {**fixed, "_changed": changed}


def normalize_step(dataset, num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Normalize every message of every record; report how many records changed.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        num_proc: worker processes for ``datasets.map``.
    """
    fixed = dataset.map(_normalize_record, num_proc=num_proc, desc="normalize")
    flags = fixed["_changed"]
    changed_rows = fixed.select([i for i, flag in enumerate(flags) if flag])
    changed = [(r["id"], r["domain"], "unicode repaired", record_text(r)) for r in changed_rows]
    fixed = fixed.remove_columns("_changed")
    return fixed, summarize("normalize", len(dataset), len(fixed), changed=changed)
