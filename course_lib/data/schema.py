"""Record validation against TRL's conversational formats plus the kit's three columns.

Kinds of record (every one also carries ``id``, ``domain`` and ``reference``):

- ``sft``: ``{"messages": [{"role", "content"}, ...]}``, with at least one assistant turn
- ``preference``: ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}``
- ``prompt``: ``{"prompt": [...]}`` (evaluation prompts, PPO queries)

``reference`` holds what the gold judge needs (a JSON object string) or is empty: a user's
own record has none, and the gold judge skips it (:func:`has_reference`). A record with a
reference belongs to one of the kit's domains; one without may name any domain.

Validation checks structure and types (what would crash or silently corrupt training);
conversational quality (turn order, leaked template markup) is a curation filter instead.
Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import DataError

KINDS = ("sft", "preference", "prompt")
ROLES = ("system", "user", "assistant")
DOMAIN_NAMES = ("legal", "medical", "code")
KIT_COLUMNS = ("id", "domain", "reference")
KIT_COLUMN_HELP = {
    "id": "a unique string naming the record",
    "domain": f"the record's domain, one of {list(DOMAIN_NAMES)} (or your own, with an empty reference)",
    "reference": "a JSON object string the gold judge reads, or \"\" for none",
}
MESSAGE_FIELD_HELP = {
    "prompt": "the conversation so far, a list of {'role', 'content'} messages",
    "chosen": "the preferred reply, a list holding one assistant message",
    "rejected": "the dispreferred reply, a list holding one assistant message",
}
NEUTRAL_DOMAIN = "general"
"""The domain of a user's record that names none: no gold judge, accepted by every step."""


def detect_kind(record: Mapping[str, Any]) -> str:
    """Which format a record is in, from its fields.

    Raises:
        DataError: when the fields match no known format.
    """
    if "messages" in record:
        return "sft"
    if "chosen" in record or "rejected" in record:
        return "preference"
    if "prompt" in record:
        return "prompt"
    raise DataError(f"no 'messages', 'prompt' or 'chosen'/'rejected' field; found {sorted(record)}")


def has_reference(record: Mapping[str, Any]) -> bool:
    """Whether the gold judge can score replies to ``record``: it carries a reference (so a kit domain)."""
    return bool(record.get("reference"))


def _messages(value: Any, field: str, roles: tuple[str, ...], where: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise DataError(f"expected a list of messages, got {type(value).__name__}", field=field, **where)
    if not value:
        raise DataError("the list of messages is empty; expected at least one {'role', 'content'} message",
                        field=field, **where)
    for i, message in enumerate(value):
        path = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"expected an object with 'role' and 'content', got {type(message).__name__}",
                            field=path, **where)
        missing = [k for k in ("role", "content") if k not in message]
        if missing:
            raise DataError(f"missing {missing}", field=path, **where)
        role, content = message["role"], message["content"]
        if role not in roles:
            raise DataError(f"unknown role {role!r}; expected one of {list(roles)}", field=f"{path}.role", **where)
        if not isinstance(content, str):
            raise DataError(f"expected a string, got {type(content).__name__}", field=f"{path}.content", **where)
        if not content.strip():
            raise DataError("empty content", field=f"{path}.content", **where)


def validate_record(record: Any, kind: str | None = None, *, kit_columns: bool = True,
                    file: str | None = None, line: int | None = None) -> str:
    """Check one record; raise a :class:`DataError` naming the file, line and field if it is bad.

    Args:
        record: the parsed record.
        kind: expected kind (``sft``, ``preference``, ``prompt``); detected when None.
        kit_columns: require the kit's ``id``, ``domain`` and ``reference`` columns (``reference``
            may be empty: no gold judge for this record).
        file: the file the record came from (for the error message).
        line: its 1-based line (JSONL) or row (Parquet, hub) number.

    Returns:
        The record's kind.
    """
    where = {"file": file, "line": line}
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", **where)
    try:
        found = detect_kind(record)
    except DataError as err:
        raise DataError(str(err), **where) from None
    if kind is not None and found != kind:
        raise DataError(f"expected a {kind} record, found a {found} record (fields {sorted(record)})", **where)
    if kit_columns:
        for name in KIT_COLUMNS:
            if name not in record:
                raise DataError(f"missing field; expected {KIT_COLUMN_HELP[name]}", field=name, **where)
            value = record[name]
            if not isinstance(value, str) or (not value and name != "reference"):
                expected = "a string (empty: no reference)" if name == "reference" else "a non-empty string"
                raise DataError(f"expected {expected}, got {value!r:.60}", field=name, **where)
        if record["reference"]:
            if record["domain"] not in DOMAIN_NAMES:
                raise DataError(f"unknown domain {record['domain']!r} for a record with a reference; the gold judge "
                                f"knows {list(DOMAIN_NAMES)} (leave 'reference' empty for other domains)",
                                field="domain", **where)
            try:
                parsed = json.loads(record["reference"])
            except json.JSONDecodeError as err:
                raise DataError(f"expected a JSON object string: {err.msg}", field="reference", **where) from None
            if not isinstance(parsed, dict):
                raise DataError(f"expected a JSON object string, got a {type(parsed).__name__}", field="reference",
                                **where)
    if found == "sft":
        _messages(record["messages"], "messages", ROLES, where)
        if not any(m["role"] == "assistant" for m in record["messages"]):
            raise DataError("no assistant turn: an SFT conversation needs at least one assistant reply to learn from",
                            field="messages", **where)
    else:
        for name in ("prompt",) + (("chosen", "rejected") if found == "preference" else ()):
            if name not in record:
                raise DataError(f"missing field; expected {MESSAGE_FIELD_HELP[name]}", field=name, **where)
        _messages(record["prompt"], "prompt", ("system", "user", "assistant"), where)
        if found == "preference":
            for name in ("chosen", "rejected"):
                _messages(record[name], name, ("assistant",), where)
    return found
