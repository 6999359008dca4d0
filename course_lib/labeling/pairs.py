"""Pair records, the unit a person (or a simulated annotator) labels.

A pair is ``{"id", "domain", "reference", "prompt", "response_a", "response_b"}``: the
prompt is a list of chat messages and each response a list holding one assistant
message (TRL's conversational format). Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Mapping

from ..data.io import iter_jsonl
from ..errors import DataError

PAIR_FIELDS = ("id", "domain", "reference", "prompt", "response_a", "response_b")


def _check_messages(value: Any, field: str, where: dict[str, Any], *, single_assistant: bool) -> None:
    if not isinstance(value, list) or not value:
        raise DataError("expected a non-empty list of {'role', 'content'} messages", field=field, **where)
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise DataError("expected a message with a string 'content'", field=f"{field}[{i}]", **where)
        if message.get("role") not in ("system", "user", "assistant"):
            raise DataError(
                f"role is {message.get('role')!r}; expected 'system', 'user' or 'assistant'",
                field=f"{field}[{i}].role",
                **where,
            )
    if single_assistant and (len(value) != 1 or value[0]["role"] != "assistant"):
        raise DataError("expected exactly one assistant message", field=field, **where)


def validate_pair(pair: Any, *, file: str | Path | None = None, line: int | None = None) -> dict[str, Any]:
    """Check that ``pair`` is a well-formed pair record and return it.

    Args:
        pair: the candidate record.
        file: the file it came from, for the error message.
        line: its 1-based line (or record index), for the error message.

    Raises:
        DataError: naming the file, line and field that is wrong.
    """
    where = {"file": file, "line": line}
    if not isinstance(pair, Mapping):
        raise DataError(f"expected a JSON object with fields {', '.join(PAIR_FIELDS)}", **where)
    for field in PAIR_FIELDS:
        if field not in pair:
            raise DataError("missing field", field=field, **where)
    for field in ("id", "domain", "reference"):
        if not isinstance(pair[field], str):
            raise DataError(f"expected a string, got {type(pair[field]).__name__}", field=field, **where)
    _check_messages(pair["prompt"], "prompt", where, single_assistant=False)
    _check_messages(pair["response_a"], "response_a", where, single_assistant=True)
    _check_messages(pair["response_b"], "response_b", where, single_assistant=True)
    return dict(pair)


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a JSONL file of pair records; pair ids must be unique.

    Args:
        path: the JSONL file.

    Raises:
        DataError: on a line that is not JSON, a malformed record, or a repeated id.
    """
    path = Path(path)
    pairs: list[dict[str, Any]] = []
    first_line_of: dict[str, int] = {}
    for line_no, record in iter_jsonl(path):
        pair = validate_pair(record, file=path, line=line_no)
        if pair["id"] in first_line_of:
            raise DataError(
                f"id {pair['id']!r} already used on line {first_line_of[pair['id']]}; ids must be unique",
                file=path,
                line=line_no,
                field="id",
            )
        first_line_of[pair["id"]] = line_no
        pairs.append(pair)
    return pairs


def response_text(pair: Mapping[str, Any], side: str) -> str:
    """The text of response ``"A"`` or ``"B"`` of a pair."""
    return pair[f"response_{side.lower()}"][0]["content"]


def sample_pairs(n: int, seed: int = 0, domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Pairs to label built from the domain generators, for a labeling session without a model.

    Each pair sets a task's good response against one of its flawed ones (wrong, unsafe,
    verbose, malformed or terse), on a random side; domains take turns.

    Args:
        n: how many pairs.
        seed: seed of the tasks, the flaws and the sides.
        domains: which domains to draw from; all of ``course_lib.domains.DOMAINS`` by default.
    """
    from ..domains import DOMAINS, domain_module

    domains = domains or DOMAINS
    rng = random.Random(f"labeling-pairs-{seed}")
    pairs = []
    for i in range(n):
        domain = domains[i % len(domains)]
        task = domain_module(domain).sample_task(rng)
        flawed = task.flawed[rng.choice(sorted(task.flawed))]
        first, second = (task.good, flawed) if rng.random() < 0.5 else (flawed, task.good)
        pairs.append(
            {
                "id": f"{domain}-{seed}-{i:04d}",
                "domain": domain,
                "reference": json.dumps(task.reference, sort_keys=True),
                "prompt": [dict(message) for message in task.prompt],
                "response_a": [{"role": "assistant", "content": first}],
                "response_b": [{"role": "assistant", "content": second}],
            }
        )
    return pairs


def preferences_to_pairs(rows: list[Mapping[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Turn preference rows into unlabeled pairs, each side placed at random as A or B.

    Hiding which reply was ``chosen`` lets (simulated) annotators label curated pairs
    afresh, e.g. for an active-learning pool. Introduced in ``03_reward_model``.
    """
    rng = random.Random(seed)
    pairs = []
    for row in rows:
        a, b = (row["chosen"], row["rejected"]) if rng.random() < 0.5 else (row["rejected"], row["chosen"])
        pairs.append({"id": row["id"], "domain": row["domain"], "reference": row["reference"],
                      "prompt": row["prompt"], "response_a": a, "response_b": b})
    return pairs
