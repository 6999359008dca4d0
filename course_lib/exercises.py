"""The exercises that close every notebook, and the worked solutions the headless track runs.

Each exercise is a markdown cell with its tier (warm-up, core, stretch) and goal, a code cell
for the learner to fill in, and a markdown cell holding the worked solution in a collapsed
block::

    <details><summary>Solution</summary>

    ```python
    ...
    ```
    </details>

The solution exists once, in that block. When the track runs a notebook with
``RUN_SOLUTIONS = True`` it executes a copy with each solution's code inserted as a cell
right after its block (tagged ``solution``), so CI proves that every solution still runs
against the notebook's own state. The contributor's guide is ``docs/notebook_pattern.md``.
"""
from __future__ import annotations

import copy
import re

SOLUTION_BLOCK = re.compile(r"<details>\s*<summary>\s*Solution[^<]*</summary>(.*?)</details>", re.S | re.I)
PYTHON_FENCE = re.compile(r"```python\n(.*?)```", re.S)
TIERS = ("warm-up", "core", "stretch")
SOLUTION_TAG = "solution"


def solution_code(markdown: str) -> list[str]:
    """The Python code of every worked-solution block in one markdown cell's source."""
    return ["".join(PYTHON_FENCE.findall(block)).rstrip() + "\n" for block in SOLUTION_BLOCK.findall(markdown)
            if PYTHON_FENCE.search(block)]


def exercise_solutions(nb) -> list[str]:
    """The code of every worked solution in a notebook, in order."""
    return [code for cell in nb.cells if cell.cell_type == "markdown" for code in solution_code(cell.source)]


def with_solutions(nb):
    """A copy of ``nb`` with each worked solution inserted as a code cell after its block.

    Args:
        nb: an ``nbformat`` notebook.

    Returns:
        The new notebook; ``nb`` itself is left alone.
    """
    import nbformat

    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        cells.append(cell)
        if cell.cell_type == "markdown":
            for code in solution_code(cell.source):
                cells.append(nbformat.v4.new_code_cell(code, metadata={"tags": [SOLUTION_TAG]}))
    out.cells = cells
    return out
