"""Where the kit keeps its caches, runs and track files; one environment variable moves the home."""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "COURSE_LIB_HOME"
"""Environment variable naming the kit's home folder (cache of built models)."""

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
TRACK_FOLDERS = ("notebooks", "data_cards")
"""What a working copy of the track holds; the wheel ships them under ``course_lib/_track/``."""


def kit_home() -> Path:
    """The kit's home folder: ``$COURSE_LIB_HOME`` or ``~/.cache/course_lib``."""
    home = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "course_lib"
    path = Path(home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def track_source_dir() -> Path:
    """The folder holding the kit's own ``notebooks/`` and ``data_cards/``.

    The source checkout when the kit runs from one (an editable install), else the copy
    the wheel carries inside the package.
    """
    checkout = REPO_DIR / "notebooks"
    if checkout.is_dir() and (REPO_DIR / "pyproject.toml").is_file():
        return REPO_DIR
    return PACKAGE_DIR / "_track"


def notebooks_dir() -> Path:
    """The kit's own track notebooks (see :func:`track_source_dir`)."""
    return track_source_dir() / "notebooks"
