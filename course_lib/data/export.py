"""Exports to OpenAI's fine-tuning JSONL formats, for users who take the data to a hosted API.

- chat SFT: ``{"messages": [{"role", "content"}, ...]}``
- preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [assistant],
  "non_preferred_output": [assistant]}``

The kit's extra columns (id, domain, reference) are dropped: the API rejects unknown keys, and a
user's own files need none of them. Every record is validated and every exported object checked
against the documented shape, so a bad record stops the export with its file, line and field.
Introduced in ``01_data_curation``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from ..atomic import atomic_write_jsonl
from ..errors import DataError
from .io import raw_rows, writable_file
from .records import clean_messages
from .schema import NEUTRAL_DOMAIN, detect_kind, validate_record
from .user import as_kit_record

OPENAI_ROLES = ("system", "user", "assistant")


def to_openai(record: dict[str, Any]) -> dict[str, Any]:
    """One kit record in the matching OpenAI fine-tuning shape.

    Raises:
        DataError: for evaluation prompts, which have no answer to fine-tune on.
    """
    kind = detect_kind(record)
    if kind == "sft":
        return {"messages": clean_messages(record["messages"])}
    if kind == "preference":
        return {
            "input": {"messages": clean_messages(record["prompt"])},
            "preferred_output": clean_messages(record["chosen"]),
            "non_preferred_output": clean_messages(record["rejected"]),
        }
    raise DataError("prompt-only records have no answer to export for fine-tuning", field="prompt")


def check_openai_record(obj: Any, kind: str, *, file: str | Path | None = None, line: int | None = None) -> None:
    """Check one exported object against OpenAI's documented fine-tuning shape.

    Args:
        obj: the parsed JSON object.
        kind: ``"sft"`` or ``"preference"``.
        file: the file the record came from (for the error message).
        line: its line or record number.

    Raises:
        DataError: naming the offending field.
    """
    where = {"file": file, "line": line}

    def messages(value: Any, field: str, roles: tuple[str, ...]) -> None:
        if not isinstance(value, list) or not value:
            raise DataError("expected a non-empty list", field=field, **where)
        for i, m in enumerate(value):
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise DataError("expected exactly 'role' and 'content'", field=f"{field}[{i}]", **where)
            if m["role"] not in roles:
                raise DataError(f"role {m['role']!r} not in {roles}", field=f"{field}[{i}].role", **where)
            if not isinstance(m["content"], str) or not m["content"]:
                raise DataError("expected non-empty text", field=f"{field}[{i}].content", **where)

    if kind == "sft":
        if set(obj) != {"messages"}:
            raise DataError(f"expected only 'messages', got {sorted(obj)}", **where)
        messages(obj["messages"], "messages", OPENAI_ROLES)
        if obj["messages"][-1]["role"] != "assistant":
            raise DataError("the last message must be the assistant's", field="messages", **where)
    elif kind == "preference":
        if set(obj) != {"input", "preferred_output", "non_preferred_output"}:
            raise DataError(f"expected input, preferred_output, non_preferred_output; got {sorted(obj)}", **where)
        if not isinstance(obj["input"], dict) or "messages" not in obj["input"]:
            raise DataError("expected an object with 'messages'", field="input", **where)
        messages(obj["input"]["messages"], "input.messages", OPENAI_ROLES)
        for name in ("preferred_output", "non_preferred_output"):
            messages(obj[name], name, ("assistant",))
            if len(obj[name]) != 1:
                raise DataError("expected exactly one assistant message", field=name, **where)
    else:
        raise ValueError(f"kind must be 'sft' or 'preference', got {kind!r}")


def export_openai(records: Iterable[dict[str, Any]] | str | Path, path: str | Path) -> Path:
    """Write records in OpenAI's fine-tuning JSONL format, atomically.

    Args:
        records: SFT or preference records in any of TRL's conversational formats (dicts, a
            ``datasets.Dataset``, or a file or ``datasets`` folder to load); the kit's columns
            are optional.
        path: the ``.jsonl`` file to write.

    Returns:
        The path written.

    Raises:
        DataError: the first record that is malformed or has no answer to fine-tune on (an
            evaluation prompt, a conversation that does not end with the assistant), with its
            file or record number and field. Nothing is written then.
    """
    path = writable_file(path)
    if isinstance(records, (str, Path)):
        source: str | None = str(records)
        numbered: Iterable[tuple[int, Any]] = raw_rows(records)
    else:
        source, numbered = None, enumerate(records, start=1)

    def converted() -> Iterator[dict[str, Any]]:
        for number, raw in numbered:
            record = as_kit_record(raw, NEUTRAL_DOMAIN)  # TRL's other shapes; the kit's columns go unused
            kind = validate_record(record, kit_columns=False, file=source, line=number)
            if kind == "prompt":
                raise DataError("a prompt-only record has no answer to fine-tune on", file=source, line=number,
                                field="prompt")
            exported = to_openai(record)
            check_openai_record(exported, kind, file=source, line=number)
            yield exported

    return atomic_write_jsonl(path, converted())
