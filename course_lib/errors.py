"""Errors the kit raises on bad input: each says where, what and what was expected."""
from __future__ import annotations

from pathlib import Path


class CourseLibError(Exception):
    """Base class of every error the kit raises on purpose."""


class ConfigError(CourseLibError, ValueError):
    """A profile or stage config is invalid.

    Args:
        message: what is wrong and what was expected.
        file: the YAML file the value came from, if any.
        key: the dotted key of the offending value, if any.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        where = []
        if self.file:
            where.append(self.file)
        if key:
            where.append(f"key '{key}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class DataError(CourseLibError, ValueError):
    """A data file or record is malformed.

    Args:
        message: what is wrong and what was expected.
        file: the file holding the record.
        line: 1-based line number (JSONL) or record index.
        field: the offending field, as a path like ``messages[2].role``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = []
        if self.file:
            where.append(self.file if line is None else f"{self.file}:{line}")
        elif line is not None:
            where.append(f"record {line}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class MissingArtifactError(CourseLibError, FileNotFoundError):
    """A stage needs an artifact that an earlier notebook or stage produces.

    Args:
        what: the artifact that is missing.
        path: where it was looked for.
        produced_by: the notebook or stage that produces it.
    """

    def __init__(self, what: str, path: str | Path, produced_by: str):
        self.what, self.path, self.produced_by = what, str(path), produced_by
        super().__init__(f"{what} not found at {path}; it is produced by {produced_by}. Run that first.")
