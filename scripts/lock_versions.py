"""Write the versions the test suite passed with: ``constraints.txt`` and the kit's verified versions.

Run it in the environment that just passed ``make test``::

    .venv/bin/python scripts/lock_versions.py

It writes

- ``constraints.txt``: every installed distribution at its exact version, which
  ``scripts/setup_env.sh`` installs with by default (``LATEST=1`` ignores it). PyTorch and its CUDA
  libraries are left out on purpose: a GPU machine keeps the CUDA build it has, a CPU machine gets
  the CPU build ``setup_env.sh`` installs first, and neither is forced onto the other's wheel;
- ``course_lib/assets/verified_versions.json``: the versions of the packages whose APIs the kit
  calls most (TRL, transformers, peft, ...), which notebook 00 compares with what is installed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNPINNED = ("torch", "triton", "nvidia-", "sympy", "mpmath", "networkx", "setuptools", "pip", "wheel", "course-lib",
            "course_lib")
"""Left to the machine: the PyTorch build (CPU or CUDA) with the packages it pins itself, pip's own tools,
and the kit."""


def main() -> None:
    sys.path.insert(0, str(REPO))
    from course_lib.env import KEY_PACKAGES, package_versions

    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line and not line.lower().startswith(UNPINNED)), key=str.lower)
    header = [f"# Exact versions the test suite passed with on {date.today().isoformat()}, Python "
              f"{sys.version.split()[0]} (scripts/lock_versions.py writes this file).",
              "# scripts/setup_env.sh installs with it; `make setup LATEST=1` takes the newest releases the ranges allow.",
              "# torch is not pinned here: the machine keeps its CPU or CUDA build."]
    (REPO / "constraints.txt").write_text("\n".join(header + pins) + "\n")
    verified = {name: version for name, version in package_versions(KEY_PACKAGES).items() if version}
    target = REPO / "course_lib" / "assets" / "verified_versions.json"
    target.write_text(json.dumps({"python": sys.version.split()[0], "packages": verified}, indent=1) + "\n")
    print(f"{len(pins)} pins -> constraints.txt; verified versions -> {target.relative_to(REPO)}")


if __name__ == "__main__":
    main()
