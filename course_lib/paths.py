"""Where the kit keeps its caches and runs; one environment variable moves each."""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "COURSE_LIB_HOME"
"""Environment variable naming the kit's home folder (cache of built models)."""

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def kit_home() -> Path:
    """The kit's home folder: ``$COURSE_LIB_HOME`` or ``~/.cache/course_lib``."""
    home = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "course_lib"
    path = Path(home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def notebooks_dir() -> Path:
    """The folder holding the track's notebooks (in a source checkout)."""
    return REPO_DIR / "notebooks"
