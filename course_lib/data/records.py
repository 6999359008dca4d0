"""Helpers every curation step shares: the text of a record, and filtering with reasons."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from .report import StepReport, summarize

MESSAGE_FIELDS = ("messages", "prompt", "chosen", "rejected")
"""Fields holding chat messages, in reading order."""


def messages_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """Every message of a record of any kind, in reading order."""
    return [m for name in MESSAGE_FIELDS if record.get(name) for m in record[name]]


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages with only ``role`` and ``content`` (what the export formats accept)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def record_text(record: dict[str, Any]) -> str:
    """All message contents of a record joined by newlines (what dedup compares)."""
    return "\n".join(m["content"] for m in messages_of(record))


def user_text(record: dict[str, Any]) -> str:
    """The user turns only (what decontamination compares: the question, not boilerplate)."""
    return "\n".join(m["content"] for m in messages_of(record) if m["role"] == "user")


def map_contents(record: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """The record's message fields with ``fn`` applied to every content."""
    return {name: [{**m, "content": fn(m["content"])} for m in record[name]]
            for name in MESSAGE_FIELDS if record.get(name) is not None}


def _verdict(record: dict[str, Any], judge: Callable[[dict[str, Any]], str]) -> dict[str, str]:
    return {"_reason": judge(record)}


def judge_records(dataset, judge: Callable[[dict[str, Any]], str], step: str, num_proc: int | None = None):
    """Split records into kept ones and ``(id, domain, reason, text)`` verdicts of removed ones.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        judge: returns ``""`` to keep a record, else why it goes (``"reason: detail"``).
            Must be picklable (a module-level function or a ``functools.partial``) for ``num_proc``.
        step: the step's name (progress bar).
        num_proc: worker processes for ``datasets.map`` (None: in process).
    """
    judged = dataset.map(partial(_verdict, judge=judge), num_proc=num_proc, desc=step)
    reasons = judged["_reason"]
    drop = [i for i, reason in enumerate(reasons) if reason]
    removed = [(r["id"], r["domain"], r["_reason"], record_text(r)) for r in judged.select(drop)]
    kept = dataset.select([i for i, reason in enumerate(reasons) if not reason])
    return kept, removed


def filter_with_reasons(dataset, judge: Callable[[dict[str, Any]], str], step: str,
                        num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Drop the records ``judge`` gives a reason for, and report each reason (see :func:`judge_records`)."""
    kept, removed = judge_records(dataset, judge, step, num_proc)
    return kept, summarize(step, len(dataset), len(kept), removed=removed)


def canonical_text(text: str) -> str:
    """Lower-cased text with runs of whitespace collapsed (for exact matching)."""
    return " ".join(text.lower().split())
