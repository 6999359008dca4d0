"""An append-only label store that never loses a label it has acknowledged.

Every label is one JSON line appended to the store file, flushed and fsynced before
the call returns, so a label that was clicked survives a kernel ``kill -9`` or a power
cut. The file is never rewritten:

- a label record is ``{"action": "label", "pair_id", "annotator", "choice",
  "rationale", "timestamp"}``, with ``choice`` one of ``A``, ``B``, ``tie``, ``skip``;
- an undo record ``{"action": "undo", "pair_id", "annotator", "timestamp"}`` withdraws
  that annotator's most recent label that is still in force (``pair_id`` names it);
- labelling a pair again replaces the earlier label (the latest one counts), and an
  undo of the newer one brings the earlier one back.

Several annotators (processes, kernels, machines sharing a folder) may append to one
store: each append holds a lock file (``<store>.lock``, via ``filelock``). A line torn
by a crash mid-write is reported (a :class:`~course_lib.errors.DataError` in
:attr:`LabelStore.problems` and a :class:`TornLineWarning`) and skipped; every complete
line is kept, and the next append starts on a fresh line. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from filelock import FileLock

from ..errors import DataError

CHOICES = ("A", "B", "tie", "skip")
"""The answers an annotator can give: A better, B better, equally good, or no judgement."""

LABEL_FIELDS = ("pair_id", "annotator", "choice", "rationale", "timestamp")


class TornLineWarning(UserWarning):
    """A store line was cut short by a crash; it is skipped and every other line is kept."""


@dataclass
class StoreContents:
    """What a read of the store found.

    Attributes:
        records: every complete record, in file order.
        problems: one DataError per torn (unparseable) line.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)


def timestamp_now() -> str:
    """The current UTC time as an ISO-8601 string with milliseconds (the store's timestamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _check_record(record: Any, path: Path, line_no: int) -> dict[str, Any]:
    """Validate a parsed line; a complete line with a wrong shape is bad data, not a crash."""
    if not isinstance(record, dict):
        raise DataError("expected a JSON object", file=path, line=line_no)
    action = record.get("action", "label")
    if action not in ("label", "undo"):
        raise DataError(f"action is {action!r}; expected 'label' or 'undo'", file=path, line=line_no, field="action")
    for name in LABEL_FIELDS if action == "label" else ("pair_id", "annotator"):
        if not isinstance(record.get(name), str):
            raise DataError("missing or not a string", file=path, line=line_no, field=name)
    if action == "label" and record["choice"] not in CHOICES:
        raise DataError(
            f"choice is {record['choice']!r}; expected one of {', '.join(CHOICES)}",
            file=path,
            line=line_no,
            field="choice",
        )
    return {**record, "action": action}


def parse_store(path: str | Path) -> StoreContents:
    """Read a store file without taking its lock (see :meth:`LabelStore.read`).

    Args:
        path: the JSONL store; a missing file reads as empty.

    Raises:
        DataError: if a complete line holds a record of the wrong shape.
    """
    path = Path(path)
    contents = StoreContents()
    if not path.exists():
        return contents
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            is_last = line_no == len(lines)
            where = "the last line ends" if is_last else "the line ends"
            contents.problems.append(
                DataError(
                    f"torn line ({len(raw)} bytes): {where} mid-record, as after a crash during a write; "
                    "it is skipped and every complete line is kept",
                    file=path,
                    line=line_no,
                )
            )
            continue
        contents.records.append(_check_record(record, path, line_no))
    return contents


def _label_stacks(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Each annotator's labels still in force, as a stack of (file position, record)."""
    stacks: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for position, record in enumerate(records):
        stack = stacks.setdefault(record["annotator"], [])
        if record.get("action", "label") == "label":
            stack.append((position, dict(record)))
        elif stack and stack[-1][1]["pair_id"] == record["pair_id"]:
            stack.pop()
        else:
            raise DataError(
                f"undo by {record['annotator']!r} names pair {record['pair_id']!r}, which is not that "
                "annotator's latest label in force",
                line=position + 1,
                field="pair_id",
            )
    return stacks


def active_labels(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replay label and undo records into the labels in force, one per (annotator, pair).

    Args:
        records: store records in file order.

    Returns:
        The labels in force (the newest per annotator and pair), in the order they were given.

    Raises:
        DataError: if an undo names a pair other than the label it would withdraw.
    """
    newest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for annotator, stack in _label_stacks(records).items():
        for position, label in stack:
            newest[(annotator, label["pair_id"])] = (position, label)
    return [label for _, label in sorted(newest.values(), key=lambda item: item[0])]


class LabelStore:
    """A JSONL file of labels, safe against crashes and concurrent annotators.

    Args:
        path: the store file (created with its folder on the first label).
        lock_timeout: seconds to wait for another writer before giving up.

    Example:
        >>> store = LabelStore("runs/workshop/labels/labels.jsonl")  # doctest: +SKIP
        >>> store.add("legal-0-0003", "ana", "A", "names the clause")  # doctest: +SKIP
        >>> store.undo("ana")  # withdraws that label by appending an undo record  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 30.0):
        self.path = Path(path)
        self.lock = FileLock(f"{self.path}.lock", timeout=lock_timeout)
        self.problems: list[DataError] = []
        self._warned_lines: set[int] = set()

    def read(self) -> StoreContents:
        """Read every complete record under the lock; torn lines are warned about once."""
        if not self.path.exists():
            return StoreContents()
        with self.lock:
            contents = parse_store(self.path)
        self.problems = contents.problems
        for problem in contents.problems:
            if problem.line not in self._warned_lines:
                self._warned_lines.add(problem.line)
                warnings.warn(str(problem), TornLineWarning, stacklevel=2)
        return contents

    def labels(self, annotator: str | None = None) -> list[dict[str, Any]]:
        """The labels in force (after undos), oldest first, optionally of one annotator."""
        labels = active_labels(self.read().records)
        return [label for label in labels if annotator is None or label["annotator"] == annotator]

    def first_unlabeled(self, pairs: Iterable[Mapping[str, Any]], annotator: str) -> int | None:
        """Index of the first pair ``annotator`` has not labeled (a skip counts as labeled), or None."""
        done = {label["pair_id"] for label in self.labels(annotator)}
        return next((i for i, pair in enumerate(pairs) if pair["id"] not in done), None)

    def add(self, pair_id: str, annotator: str, choice: str, rationale: str = "", **extra: Any) -> dict[str, Any]:
        """Append one label and make it durable before returning.

        Args:
            pair_id: the labeled pair's ``id``.
            annotator: who labeled it (a person's id or a simulated annotator's name).
            choice: ``"A"``, ``"B"``, ``"tie"`` or ``"skip"``.
            rationale: optional free text saying why.
            **extra: further JSON-able fields kept with the label (e.g. ``source="simulated"``).

        Returns:
            The record written.

        Raises:
            ValueError: on an unknown choice or an empty annotator id.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice is {choice!r}; expected one of {', '.join(CHOICES)}")
        if not annotator or not annotator.strip():
            raise ValueError("annotator id is empty; enter who is labeling")
        record = {
            "action": "label",
            "pair_id": pair_id,
            "annotator": annotator,
            "choice": choice,
            "rationale": rationale,
            "timestamp": timestamp_now(),
            **extra,
        }
        with self.lock:
            self._append(record)
        return record

    def undo(self, annotator: str) -> dict[str, Any] | None:
        """Withdraw ``annotator``'s most recent label in force by appending an undo record.

        Returns:
            The label withdrawn, or None if that annotator has no label in force.
        """
        with self.lock:
            stack = _label_stacks(parse_store(self.path).records).get(annotator)
            if not stack:
                return None
            _, last = stack[-1]
            undo = {"action": "undo", "pair_id": last["pair_id"], "annotator": annotator, "timestamp": timestamp_now()}
            self._append(undo)
        return last

    def _append(self, record: dict[str, Any]) -> None:
        """Append one line and fsync; the caller holds the lock."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.path.exists()
        with open(self.path, "ab") as f:
            # After a torn write the file ends mid-line: start on a fresh line so the
            # new record stays whole and only the torn fragment is lost.
            if f.tell() > 0 and not self._ends_with_newline():
                line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if is_new:
            # Make the new file's directory entry durable too.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
