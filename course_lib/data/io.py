"""Loading and saving records: local JSONL and Parquet files, ``datasets`` folders and hub ids, all validated.

Every record is checked as it streams in (:func:`course_lib.data.schema.validate_record`);
the first bad one stops the load with a :class:`~course_lib.errors.DataError` that names
the file, the line and the field. A user's own records may leave out the kit's columns
(``default_domain``, :mod:`course_lib.data.user`). Loads land in an on-disk, memory-mapped
Arrow dataset, so files larger than memory work. Writes are atomic: a reader sees the old
file or the whole new one. Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..atomic import atomic_path, atomic_write_jsonl
from ..errors import DataError
from ..paths import kit_home
from .schema import validate_record
from .user import as_kit_record, derived_id

LOCAL_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
SAVED_DATASET_MARKERS = ("state.json", "dataset_dict.json")
"""Files ``save_to_disk`` writes into a ``Dataset`` folder and a ``DatasetDict`` folder."""


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
                utf16 = number == 1 and raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
                what = "UTF-16 (it starts with a UTF-16 byte-order mark)" if utf16 else \
                    f"not valid UTF-8 (byte {err.start} of the line: {raw[err.start:err.start + 4]!r})"
                raise DataError(f"{what}; expected UTF-8 text: save the file as UTF-8", file=path, line=number) from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                hint = ("; expected one JSON object per line (JSON Lines), not a JSON array or a pretty-printed object"
                        if number == 1 and text.strip() in ("[", "{") else "")
                raise DataError(f"bad JSON: {err.msg} (column {err.colno}){hint}", file=path, line=number) from None


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


def _iter_saved(path: Path, split: str) -> Iterator[tuple[int, Any]]:
    """Rows of a folder written by ``Dataset.save_to_disk`` (or a ``DatasetDict``'s, one split)."""
    import datasets

    if not any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS):
        raise DataError("a folder, not a data file: expected a .jsonl or .parquet file, or a folder written by "
                        "datasets' save_to_disk", file=path)
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:  # a damaged folder fails in several ways inside datasets and pyarrow
        raise DataError(f"not a readable datasets folder: {err}", file=path) from None
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataError(f"no split {split!r}; the folder holds {sorted(saved)}", file=path)
        saved = saved[split]
    for number, row in enumerate(saved, start=1):
        yield number, row


def _iter_hub(dataset_id: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split, streaming=True)
    except Exception as err:  # network, auth, missing split: all reported the same way
        raise DataError(f"could not load hub dataset split {split!r}: {err}", file=dataset_id) from None
    for number, row in enumerate(dataset, start=1):
        yield number, row


def raw_rows(source: str | Path, split: str = "train") -> Iterator[tuple[int, Any]]:
    """``(line or row number, parsed object)`` of any source, unvalidated (:func:`iter_records` validates)."""
    name = str(source)
    if _is_hub_id(name):
        return _iter_hub(name, split)
    path = Path(source)
    if not path.exists():
        raise DataError("no such file (and not an 'owner/name' hub id)", file=path)
    if path.is_dir():
        return _iter_saved(path, split)
    fmt = LOCAL_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unknown file type {path.suffix!r}; expected one of {sorted(LOCAL_SUFFIXES)} "
                        "or a datasets folder", file=path)
    return iter_jsonl(path) if fmt == "jsonl" else _iter_parquet(path)


def iter_records(source: str | Path, kind: str | None = None, *, kit_columns: bool = True,
                 default_domain: str | None = None, split: str = "train") -> Iterator[dict[str, Any]]:
    """Stream validated records from a JSONL or Parquet file, a ``datasets`` folder or a hub dataset id.

    Args:
        source: a ``.jsonl``/``.json`` (one object per line) or ``.parquet`` path, a folder written
            by ``save_to_disk``, or a hub id.
        kind: expected record kind (``sft``, ``preference``, ``prompt``); detected when None,
            and then every record must have the first record's kind.
        kit_columns: require the kit's ``id``, ``domain`` and ``reference`` columns.
        default_domain: read a user's own records (:mod:`course_lib.data.user`): any of TRL's
            conversational formats, the kit's columns filled where missing (a hashed ``id``,
            this ``domain``, no ``reference``) and then checked like the kit's own.
        split: split to read from a hub dataset or a saved ``DatasetDict``.

    Raises:
        DataError: on the first malformed record, naming the file, line and field.
    """
    name = str(source)
    kit_columns = kit_columns or default_domain is not None
    seen_ids: set[str] = set()
    for number, record in raw_rows(source, split):
        if default_domain is not None:
            record = as_kit_record(record, default_domain)
            if isinstance(record, dict) and "id" not in record:
                # Records with the same messages share a hash; later ones get a suffix (exact dedup removes them).
                base = rid = derived_id(record)
                copy = 1
                while rid in seen_ids:
                    copy += 1
                    rid = f"{base}-{copy}"
                record["id"] = rid
        kind = validate_record(record, kind, kit_columns=kit_columns, file=name, line=number)
        if kit_columns:
            if record["id"] in seen_ids:
                raise DataError(f"duplicate id {record['id']!r}", file=name, line=number, field="id")
            seen_ids.add(record["id"])
        yield record


def _generate(source: str, kind: str | None, kit_columns: bool, default_domain: str | None, split: str,
              stamp: str) -> Iterator[dict[str, Any]]:
    # ``stamp`` only feeds the cache fingerprint, so a changed file is never served stale.
    yield from iter_records(source, kind, kit_columns=kit_columns, default_domain=default_domain, split=split)


def _stamp(path: Path) -> str:
    """Names, sizes and modification times of a file or of every file in a folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return ";".join(f"{p.relative_to(path.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def load_records(source: str | Path, kind: str | None = None, *, kit_columns: bool = True,
                 default_domain: str | None = None, split: str = "train", cache_dir: str | Path | None = None):
    """Load validated records into an on-disk Arrow :class:`datasets.Dataset`.

    Args:
        source: a ``.jsonl``/``.json`` or ``.parquet`` path, a ``save_to_disk`` folder, or a hub
            dataset id (``owner/name``).
        kind: expected record kind; detected from the first record when None.
        kit_columns: require the kit's ``id``, ``domain`` and ``reference`` columns.
        default_domain: read a user's own records, the kit's columns filled where missing (see
            :func:`iter_records`).
        split: split to read from a hub dataset or a saved ``DatasetDict``.
        cache_dir: where the Arrow files go (default: ``<kit home>/datasets``).

    Returns:
        A memory-mapped ``datasets.Dataset``.

    Raises:
        DataError: naming the file, line and field of the first malformed record; an empty
            source is an error too.
    """
    import datasets

    path = Path(source)
    stamp = _stamp(path) if path.exists() else "hub"
    # Validate before Arrow sees the data, so errors are ours (file, line, field), not pyarrow's.
    count = sum(1 for _ in iter_records(source, kind, kit_columns=kit_columns, default_domain=default_domain,
                                        split=split))
    if count == 0:
        raise DataError("no records (an empty file, or only blank lines); expected one record per line", file=source)
    cache = Path(cache_dir) if cache_dir is not None else kit_home() / "datasets"
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return datasets.Dataset.from_generator(
            _generate,
            gen_kwargs={"source": str(source), "kind": kind, "kit_columns": kit_columns,
                        "default_domain": default_domain, "split": split, "stamp": stamp},
            cache_dir=str(cache),
        )
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def writable_file(path: str | Path) -> Path:
    """``path`` as a file to write; a folder there is a :class:`DataError`, not a raw ``IsADirectoryError``."""
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder; expected the path of a file to write", file=path)
    return path


def save_records(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write records atomically as JSONL (``.jsonl``) or Parquet (``.parquet``).

    Args:
        records: dicts, or a ``datasets.Dataset``.
        path: the output file; its suffix picks the format.

    Returns:
        The path written.
    """
    path = writable_file(path)
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
