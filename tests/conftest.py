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


# --- Temporary folders: nothing the suite makes stays in the temp folder. ---
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

KIT_TEMP_PREFIXES = ("course_lib_", "course-lib-", "reward_", "gpu_check_")
"""Names the kit gives its temporary folders (the kit's home, course_lib_home_*, is removed at unconfigure)."""
KIT_CODE = tuple(REPO / name for name in ("course_lib", "tests", "scripts"))


def _made_by_kit(skip: int = 2) -> str | None:
    """``file:line`` of the kit or test code that called tempfile, or None when a library did."""
    frame = sys._getframe(skip)
    while frame is not None and frame.f_code.co_filename == tempfile.__file__:  # TemporaryDirectory -> mkdtemp
        frame = frame.f_back
    source = Path(frame.f_code.co_filename).resolve() if frame is not None else None
    if source is None or not any(source.is_relative_to(folder) for folder in KIT_CODE):
        return None
    return f"{source.relative_to(REPO)}:{frame.f_lineno}"


@pytest.fixture(scope="session", autouse=True)
def temporary_folders_are_removed():
    """Fail the session if kit or test code left something in ``tempfile.gettempdir()``.

    What this process's kit and test code make there through ``tempfile.mkdtemp`` or ``mkstemp``
    (``TemporaryDirectory`` included), whatever its name, must be gone at the end: the failure
    names each leftover and the line that made it. New entries named like the kit's temporary
    folders that a subprocess left (a notebook kernel, a command line) are reported as a warning,
    not a failure: another test session on the same machine makes the same names.
    """
    root = Path(tempfile.gettempdir())
    before = set(os.listdir(root))
    made: dict[str, str] = {}
    real_mkdtemp, real_mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        if (where := _made_by_kit()) and Path(path).parent == root:
            made[path] = where
        return path

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        if (where := _made_by_kit()) and Path(path).parent == root:
            made[path] = where
        return fd, path

    tempfile.mkdtemp, tempfile.mkstemp = mkdtemp, mkstemp
    try:
        yield
    finally:
        tempfile.mkdtemp, tempfile.mkstemp = real_mkdtemp, real_mkstemp
    left = {path: where for path, where in made.items() if os.path.lexists(path)}
    for path in left:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    others = sorted(name for name in set(os.listdir(root)) - before
                    if name.startswith(KIT_TEMP_PREFIXES) and not name.startswith("course_lib_home_")
                    and str(root / name) not in made)
    if others:
        warnings.warn(f"new entries in {root} named like the kit's temporary folders, left by a subprocess of this "
                      f"session or by another session: {', '.join(others)}", stacklevel=1)
    if left:
        pytest.fail("the suite left temporary files or folders behind (now removed): "
                    + "; ".join(f"{path} (made at {where})" for path, where in sorted(left.items())), pytrace=False)


def pytest_unconfigure(config):
    # The private kit home pytest_configure made (a developer's COURSE_LIB_TEST_HOME is kept).
    home = Path(os.environ.get("COURSE_LIB_HOME", ""))
    if not os.environ.get("COURSE_LIB_TEST_HOME") and home.name.startswith("course_lib_home_") \
            and home.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, tiny_base_path):
    """A small curated data folder (24 SFT records and 24 pairs per domain) that pipeline runs copy."""
    from course_lib.data import ensure_curated_data

    run_dir = tmp_path_factory.mktemp("pipeline_data")
    ensure_curated_data(run_dir, seed=0, sizes={"sft_per_domain": 24, "prefs_per_domain": 24, "eval_per_domain": 10})
    return run_dir / "data"
