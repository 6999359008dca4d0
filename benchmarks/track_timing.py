"""Where a track run's time went: per notebook, the total and the part spent in exercise solutions.

Reads the executed notebooks of a run (papermill records each cell's duration), so one run with
solutions gives both figures: the track as a learner runs it, and what ``RUN_SOLUTIONS`` adds.

Usage::

    python benchmarks/track_timing.py runs/tiny
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat

from course_lib.exercises import SOLUTION_TAG


def notebook_timing(path: Path) -> dict[str, float]:
    """Seconds spent in all code cells of one executed notebook, and in its solution cells."""
    nb = nbformat.read(path, as_version=4)
    total = solutions = 0.0
    for cell in nb.cells:
        seconds = (cell.metadata.get("papermill") or {}).get("duration") or 0.0
        total += seconds
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            solutions += seconds
    return {"total_s": round(total, 1), "solutions_s": round(solutions, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    rows = {p.stem: notebook_timing(p) for p in sorted((args.run_dir / "notebooks").glob("*.ipynb"))}
    rows["track"] = {k: round(sum(r[k] for r in rows.values()), 1) for k in ("total_s", "solutions_s")}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
