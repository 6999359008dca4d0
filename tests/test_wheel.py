"""The kit as a workshop machine gets it: a built wheel, installed (not editable) in a fresh environment.

The fresh environment reuses the dependencies already installed (a ``.pth`` file points at
them) but not the checkout: ``course_lib`` comes from the wheel alone. From a folder outside
the checkout, notebook 00's first cell installs the wheel the way a Colab or Kaggle user
does, then ``course-track init`` copies the track and ``course-track`` runs notebooks 00 and 01.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.notebooks


def _tracked_copy(dest: Path) -> Path:
    """The checkout's tracked files (what a clean clone holds), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = _tracked_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."], source, os.environ)
    (built,) = out.glob("course_lib-*.whl")
    return built


def test_the_wheel_carries_the_track_the_cards_and_the_base(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for notebook in (REPO / "notebooks").rglob("*.ipynb"):
        assert f"course_lib/_track/notebooks/{notebook.relative_to(REPO / 'notebooks')}" in names
    assert {f"course_lib/_track/data_cards/{p.name}" for p in (REPO / "data_cards").glob("*.md")} <= names
    assert {"course_lib/assets/tiny-base/model.safetensors", "course_lib/assets/tiny-base/tokenizer.json",
            "course_lib/profiles/tiny-cpu.yaml"} <= names


def test_a_fresh_environment_installs_the_wheel_and_runs_notebooks_00_and_01(wheel, tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "reuse_installed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    work = tmp_path / "colab"
    work.mkdir()
    missing = subprocess.run([str(python), "-c", "import course_lib"], cwd=work, env=env, capture_output=True, text=True)
    assert missing.returncode != 0, "the fresh environment must not see the checkout"
    # ipykernel stages the kernel spec in a temporary folder and leaves that folder behind: keep it in tmp_path.
    _run([str(python), "-m", "ipykernel", "install", "--prefix", str(env_dir), "--name", "python3"], work,
         {**env, "TMPDIR": str(tmp_path)})

    # Colab/Kaggle: the notebook alone and the wheel beside it; the first cell installs it.
    shutil.copy2(wheel, work / wheel.name)
    shutil.copy2(REPO / "notebooks" / "00_setup.ipynb", work / "00_setup.ipynb")
    _run([str(python), "-m", "papermill", "00_setup.ipynb", "00_out.ipynb", "-p", "RUN_DIR", str(work / "run"),
          "-p", "PRETRAIN_STEPS", "3", "-k", "python3", "--cwd", str(work)], work, env)
    installed = _run([str(python), "-c", "import course_lib, sys; print(course_lib.__file__)"], work, env).stdout
    assert str(env_dir) in installed and str(REPO) not in installed  # the wheel, not the checkout

    # A workshop machine: course-track init, then the track from the working folder.
    _run([str(env_dir / "bin" / "course-track"), "init", "my-track"], work, env)
    assert (work / "my-track" / "notebooks" / "00_setup.ipynb").is_file()
    assert (work / "my-track" / "data_cards" / "curated_sft.md").is_file()
    _run([str(env_dir / "bin" / "course-track"), "--only", "00,01", "--name", "w", "--no-solutions",
          "--param", "PRETRAIN_STEPS=3", "--set", "data.sft_per_domain=20", "--set", "data.prefs_per_domain=20",
          "--set", "data.eval_per_domain=10"], work / "my-track", env, timeout=1200)
    metrics = work / "my-track" / "runs" / "w" / "metrics"
    assert {p.stem for p in metrics.glob("*.json")} == {"00_setup", "01_data_curation"}
