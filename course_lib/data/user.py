"""Your own data in TRL's formats, made ready for the kit: ids, domains and references filled in.

A user's records rarely carry the kit's columns. :func:`as_kit_record` turns a record in any of
TRL's conversational formats into the kit's shape:

- ``{"messages": [...]}`` (SFT) stays as it is; ``{"prompt": [...], "completion": [...]}``
  becomes ``{"messages": prompt + completion}``;
- ``{"prompt", "chosen", "rejected"}`` stays as it is; the implicit-prompt form
  ``{"chosen": [...], "rejected": [...]}`` (two whole conversations) is split where the two
  first differ, as TRL's ``extract_prompt`` does;
- ``{"prompt": [...]}`` (evaluation prompts) stays as it is.

A missing ``id`` is derived from a hash of the messages (:func:`derived_id`), a missing
``domain`` is the one the user names (:data:`~course_lib.data.schema.NEUTRAL_DOMAIN` unless
told otherwise), and a missing ``reference`` is empty: the gold judge skips that record.
Other columns are dropped. Introduced in ``01_data_curation``; ``docs/data.md`` ("Bring your
own data") shows the whole path.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .records import MESSAGE_FIELDS
from .schema import KIT_COLUMNS


def derived_id(record: dict[str, Any]) -> str:
    """A stable id from the record's messages: ``u-`` and 12 hex digits of their SHA-256."""
    content = {name: record[name] for name in MESSAGE_FIELDS if name in record}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
    return "u-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _split_implicit_prompt(chosen: list[Any], rejected: list[Any]) -> dict[str, list[Any]]:
    """Shared leading turns become the prompt; the rest of each conversation is its reply."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def as_kit_record(record: Any, domain: str) -> Any:
    """One user record in the kit's shape (see the module docstring); a non-object is returned as is.

    ``id`` is left out when missing: the loader derives it, so that records with the same
    messages get distinct ids (:func:`course_lib.data.iter_records`).

    Args:
        record: the parsed record.
        domain: the domain of a record that names none.
    """
    if not isinstance(record, dict):
        return record
    record = dict(record)
    if "messages" not in record and isinstance(record.get("completion"), list) and isinstance(record.get("prompt"), list):
        record["messages"] = record.pop("prompt") + record.pop("completion")
    if "prompt" not in record and isinstance(record.get("chosen"), list) and isinstance(record.get("rejected"), list):
        record.update(_split_implicit_prompt(record["chosen"], record["rejected"]))
    out = {name: record[name] for name in (*MESSAGE_FIELDS, *KIT_COLUMNS) if record.get(name) not in (None, "")}
    if isinstance(out.get("id"), int) and not isinstance(out["id"], bool):
        out["id"] = str(out["id"])  # numeric ids are common in tables
    if isinstance(out.get("reference"), dict):
        out["reference"] = json.dumps(out["reference"], sort_keys=True)
    out.setdefault("domain", domain)
    out.setdefault("reference", "")
    return out
