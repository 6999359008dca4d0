"""Content hashes: the one way the kit fingerprints files, folders and its own source code.

Caches in the kit (the tiny base, the curated data, each stage's completion marker) are
named or validated by a hash of everything they depend on. Those hashes are built here,
so "what counts as a change" has one definition. Introduced in ``02_sft`` (stage markers).
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .paths import PACKAGE_DIR

DIGEST_CHARS = 16
"""Hex characters kept from a SHA-256: short enough for folder names, long enough not to collide."""


def digest_json(payload: Any) -> str:
    """Hash of a JSON-able value (keys sorted, so dict order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def files_digest(path: str | Path) -> str:
    """Hash of a file, or of every file under a folder (relative names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:DIGEST_CHARS]


def _python_files(root: Path, parts: Iterable[str]) -> list[Path]:
    files: set[Path] = set()
    for part in parts:
        target = root / part
        if target.is_dir():
            files.update(target.rglob("*.py"))
        elif target.is_file():
            files.add(target)
        else:
            raise FileNotFoundError(f"no kit module or package {part!r} under {root}")
    return sorted(files)


def source_digest(*parts: str, root: str | Path | None = None) -> str:
    """Hash of the kit's Python source, and of the installed kit version.

    Args:
        parts: modules or subpackages relative to the package (``"domains"``,
            ``"tiny_base.py"``); none means all of ``course_lib``.
        root: the package folder to read (tests point it to an edited copy).

    Returns:
        A short hex digest that changes whenever any of those files changes.
    """
    root = Path(root) if root is not None else PACKAGE_DIR
    h = hashlib.sha256(metadata.version("course-lib").encode())
    for path in _python_files(root, parts or (".",)):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:DIGEST_CHARS]
