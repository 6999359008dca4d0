"""Loading and saving records: local JSONL and Parquet, and hub dataset ids, all validated.

Every record is checked as it streams in (:func:`course_lib.data.schema.validate_record`);
the first bad one stops the load with a :class:`~course_lib.errors.DataError` that names
the file, the line and the field. Loads land in an on-disk, memory-mapped Arrow dataset,
so files larger than memory work. Writes are atomic: a reader sees the old file or the
whole new one. Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..atomic import atomic_path, atomic_write_jsonl
from ..errors import DataError
from ..paths import kit_home
from .schema import validate_record

LOCAL_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def _is_hub_id(source: str) -> bool:
    """``owner/name`` with no file suffix and no such local path."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists() and Path(source).suffix == ""


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object)`` for each non-blank line; bad bytes or JSON raise ``DataError``."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"not valid UTF-8 (byte {err.start} of the line: {raw[err.start:err.start + 4]!r})",
                                file=path, line=number) from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"bad JSON: {err.msg} at column {err.colno}", file=path, line=number) from None


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(f"not a readable Parquet file: {err}", file=path) from None
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _iter_hub(dataset_id: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split, streaming=True)
    except Exception as err:  # network, auth, missing split: all reported the same way
        raise DataError(f"could not load hub dataset split {split!r}: {err}", file=dataset_id) from None
    for number, row in enumerate(dataset, start=1):
        yield number, row


def iter_records(source: str | Path, kind: str | None = None, *, kit_columns: bool = True,
                 split: str = "train") -> Iterator[dict[str, Any]]:
    """Stream validated records from a JSONL or Parquet file or a hub dataset id.

    Args:
        source: a ``.jsonl``/``.json`` (one object per line) or ``.parquet`` path, or a hub id.
        kind: expected record kind (``sft``, ``preference``, ``prompt``); detected when None,
            and then every record must have the first record's kind.
        kit_columns: require the kit's ``id``, ``domain`` and ``reference`` columns.
        split: split to read from a hub dataset.

    Raises:
        DataError: on the first malformed record, naming the file, line and field.
    """
    name = str(source)
    if _is_hub_id(name):
        rows = _iter_hub(name, split)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError("no such file (and not an 'owner/name' hub id)", file=path)
        fmt = LOCAL_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"unknown file type {path.suffix!r}; expected one of {sorted(LOCAL_SUFFIXES)}", file=path)
        rows = iter_jsonl(path) if fmt == "jsonl" else _iter_parquet(path)
    seen_ids: set[str] = set()
    for number, record in rows:
        kind = validate_record(record, kind, kit_columns=kit_columns, file=name, line=number)
        if kit_columns:
            if record["id"] in seen_ids:
                raise DataError(f"duplicate id {record['id']!r}", file=name, line=number, field="id")
            seen_ids.add(record["id"])
        yield record


def _generate(source: str, kind: str | None, kit_columns: bool, split: str, stamp: str) -> Iterator[dict[str, Any]]:
    # ``stamp`` only feeds the cache fingerprint, so a changed file is never served stale.
    yield from iter_records(source, kind, kit_columns=kit_columns, split=split)


def load_records(source: str | Path, kind: str | None = None, *, kit_columns: bool = True, split: str = "train",
                 cache_dir: str | Path | None = None):
    """Load validated records into an on-disk Arrow :class:`datasets.Dataset`.

    Args:
        source: a ``.jsonl``/``.json`` or ``.parquet`` path, or a hub dataset id (``owner/name``).
        kind: expected record kind; detected from the first record when None.
        kit_columns: require the kit's ``id``, ``domain`` and ``reference`` columns.
        split: split to read from a hub dataset.
        cache_dir: where the Arrow files go (default: ``<kit home>/datasets``).

    Returns:
        A memory-mapped ``datasets.Dataset``.

    Raises:
        DataError: naming the file, line and field of the first malformed record; an empty
            source is an error too.
    """
    import datasets

    path = Path(source)
    stamp = f"{path.stat().st_mtime_ns}-{path.stat().st_size}" if path.exists() else "hub"
    # Validate before Arrow sees the data, so errors are ours (file, line, field), not pyarrow's.
    count = sum(1 for _ in iter_records(source, kind, kit_columns=kit_columns, split=split))
    if count == 0:
        raise DataError("no records", file=source)
    cache = Path(cache_dir) if cache_dir is not None else kit_home() / "datasets"
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return datasets.Dataset.from_generator(
            _generate,
            gen_kwargs={"source": str(source), "kind": kind, "kit_columns": kit_columns, "split": split,
                        "stamp": stamp},
            cache_dir=str(cache),
        )
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def save_records(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write records atomically as JSONL (``.jsonl``) or Parquet (``.parquet``).

    Args:
        records: dicts, or a ``datasets.Dataset``.
        path: the output file; its suffix picks the format.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        import datasets

        dataset = records if isinstance(records, datasets.Dataset) else datasets.Dataset.from_list(list(records))
        with atomic_path(path, suffix=".parquet") as tmp:
            dataset.to_parquet(str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        return path
    if path.suffix != ".jsonl":
        raise DataError(f"unknown output type {path.suffix!r}; expected .jsonl or .parquet", file=path)
    return atomic_write_jsonl(path, records)
