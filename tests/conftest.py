"""Shared fixtures. Every test runs offline, with the kit's home in a temporary folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def pytest_configure(config):
    # Before any course_lib import reads them: no hub, and a private kit home.
    # COURSE_LIB_TEST_HOME lets a developer reuse one built tiny base across runs.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    home = os.environ.get("COURSE_LIB_TEST_HOME") or tempfile.mkdtemp(prefix="course_lib_home_")
    os.environ["COURSE_LIB_HOME"] = home


@pytest.fixture(scope="session")
def notebooks() -> dict[str, Path]:
    """Short names (``setup``, ``data_curation``, ...) and numbers (``00``, ``03b``) -> notebook paths."""
    from course_lib.track import track_notebooks

    out: dict[str, Path] = {}
    for path in track_notebooks(NOTEBOOKS):
        number, short = path.stem.split("_", 1)
        out[short] = out[number] = path
    return out


@pytest.fixture(scope="session")
def tiny_base_path() -> Path:
    """The embedded tiny base the package ships."""
    from course_lib.tiny_base import shipped_base_dir

    return shipped_base_dir()


@pytest.fixture(scope="session")
def tiny_profile(tiny_base_path):
    """The tiny-cpu profile (its base already built)."""
    from course_lib.config import load_profile

    return load_profile("tiny-cpu")
