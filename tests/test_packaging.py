"""The kit installs the same way everywhere: pyproject, environment.yml, README, CI agree."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(project["dependencies"]) == sorted(pip_block)
    required = {"jupyterlab", "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "ipywidgets", "plotly", "papermill"}
    assert required <= {_name(d) for d in project["dependencies"]}
    assert any(d.startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))


def test_torch_is_a_range_not_a_pin():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_spec = next(d for d in deps if _name(d) == "torch")
    assert "==" not in torch_spec


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = re.findall(r"^make \w+$", ci, flags=re.M)
    assert commands == ["make test"]
    assert "\nmake test\n" in readme and "\nmake track\n" in readme


def test_profiles_ship_inside_the_package():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["course_lib"]
    assert "profiles/*.yaml" in data and "corpus/*.txt" in data
