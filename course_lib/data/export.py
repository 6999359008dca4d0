"""Exports to OpenAI's fine-tuning JSONL formats, for users who take the data to a hosted API.

- chat SFT: ``{"messages": [{"role", "content"}, ...]}``
- preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [assistant],
  "non_preferred_output": [assistant]}``

The kit's extra columns (id, domain, reference) are dropped: the API rejects unknown keys.
Introduced in ``01_data_curation``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from ..atomic import atomic_write_jsonl
from ..errors import DataError
from .io import iter_records
from .schema import detect_kind

OPENAI_ROLES = ("system", "user", "assistant")


def _clean(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def to_openai(record: dict[str, Any]) -> dict[str, Any]:
    """One kit record in the matching OpenAI fine-tuning shape.

    Raises:
        DataError: for evaluation prompts, which have no answer to fine-tune on.
    """
    kind = detect_kind(record)
    if kind == "sft":
        return {"messages": _clean(record["messages"])}
    if kind == "preference":
        return {
            "input": {"messages": _clean(record["prompt"])},
            "preferred_output": _clean(record["chosen"]),
            "non_preferred_output": _clean(record["rejected"]),
        }
    raise DataError("prompt-only records have no answer to export for fine-tuning", field="prompt")


def check_openai_record(obj: Any, kind: str) -> None:
    """Check one exported object against OpenAI's documented fine-tuning shape.

    Args:
        obj: the parsed JSON object.
        kind: ``"sft"`` or ``"preference"``.

    Raises:
        DataError: naming the offending field.
    """
    def messages(value: Any, field: str, roles: tuple[str, ...]) -> None:
        if not isinstance(value, list) or not value:
            raise DataError("expected a non-empty list", field=field)
        for i, m in enumerate(value):
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise DataError("expected exactly 'role' and 'content'", field=f"{field}[{i}]")
            if m["role"] not in roles:
                raise DataError(f"role {m['role']!r} not in {roles}", field=f"{field}[{i}].role")
            if not isinstance(m["content"], str) or not m["content"]:
                raise DataError("expected non-empty text", field=f"{field}[{i}].content")

    if kind == "sft":
        if set(obj) != {"messages"}:
            raise DataError(f"expected only 'messages', got {sorted(obj)}")
        messages(obj["messages"], "messages", OPENAI_ROLES)
        if obj["messages"][-1]["role"] != "assistant":
            raise DataError("the last message must be the assistant's", field="messages")
    elif kind == "preference":
        if set(obj) != {"input", "preferred_output", "non_preferred_output"}:
            raise DataError(f"expected input, preferred_output, non_preferred_output; got {sorted(obj)}")
        if not isinstance(obj["input"], dict) or "messages" not in obj["input"]:
            raise DataError("expected an object with 'messages'", field="input")
        messages(obj["input"]["messages"], "input.messages", OPENAI_ROLES)
        for name in ("preferred_output", "non_preferred_output"):
            messages(obj[name], name, ("assistant",))
            if len(obj[name]) != 1:
                raise DataError("expected exactly one assistant message", field=name)
    else:
        raise ValueError(f"kind must be 'sft' or 'preference', got {kind!r}")


def export_openai(records: Iterable[dict[str, Any]] | str | Path, path: str | Path) -> Path:
    """Write records in OpenAI's fine-tuning JSONL format, atomically.

    Args:
        records: SFT or preference records (dicts, a ``datasets.Dataset``, or a file to load).
        path: the ``.jsonl`` file to write.

    Returns:
        The path written.
    """
    source: Iterable[dict[str, Any]] = iter_records(records) if isinstance(records, (str, Path)) else records

    def converted() -> Iterator[dict[str, Any]]:
        for record in source:
            yield to_openai(record)

    return atomic_write_jsonl(path, converted())
