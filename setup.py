"""Build hook: the wheel carries the track's notebooks and data cards inside the package.

They live at the repository's top level (``notebooks/``, ``data_cards/``); a wheel copies
them to ``course_lib/_track/``, where ``course-track`` and ``course-track init`` find them
in a non-editable install. Everything else is in ``pyproject.toml``.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
TRACK_FOLDERS = ("notebooks", "data_cards")


class BuildPyWithTrack(build_py):
    """``build_py`` that also copies the track folders into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        target = Path(self.build_lib) / "course_lib" / "_track"
        for folder in TRACK_FOLDERS:
            if (ROOT / folder).is_dir():
                shutil.copytree(ROOT / folder, target / folder, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithTrack})
