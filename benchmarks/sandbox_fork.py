"""What a sandboxed run costs when the kit's process holds a model: forked from it, or by the broker.

Times ``run_tests`` (a three-line solution, two tests, every run a new solution so the gold
judge's cache plays no part) in this process, first as it starts, then holding a torch tensor
the size of a loaded model (its pages touched, as a model's are). Each run is
forked once by the broker (the kit's way) and once from this process (``_execute_here``,
the way before the broker), interleaved. Prints the medians and writes them to
``docs/results/sandbox_fork.json``; ``docs/sandbox.md`` ("Cost") reports them.

Usage::

    python benchmarks/sandbox_fork.py
    python benchmarks/sandbox_fork.py --runs 20 --hold-gib 0.5 --no-write
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from course_lib import sandbox

REPO = Path(__file__).resolve().parents[1]
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]


def _timed(run, i: int) -> float:
    started = time.perf_counter()
    outcome = run(f"def add(a, b):\n    return a + b  # {i}", TESTS)
    elapsed = time.perf_counter() - started
    assert outcome["passed"] == [True, True], outcome
    return elapsed * 1000


def _forked_here(solution: str, tests: list[str]) -> dict:
    """``run_tests`` with the broker bypassed: the sandbox is forked from this process."""
    original = sandbox._execute
    sandbox._execute = lambda program, limits, plan: sandbox._execute_here(program, limits, plan, sandbox._GUARD)
    try:
        return sandbox.run_tests(solution, tests)
    finally:
        sandbox._execute = original


def measure(runs: int) -> dict[str, float]:
    """Median milliseconds per run, by the broker and forked from this process."""
    by_broker, here = [], []
    for i in range(runs):
        by_broker.append(_timed(sandbox.run_tests, 2 * i))
        here.append(_timed(_forked_here, 2 * i + 1))
    return {"broker_ms": round(statistics.median(by_broker), 1), "forked_here_ms": round(statistics.median(here), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="runs of each kind per setting")
    parser.add_argument("--hold-gib", type=float, default=1.0, help="memory held in the second setting (GiB)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sandbox.run_tests("def f():\n    return 1", ["assert f() == 1"])  # the probe and the broker's start
    results = {"runs": args.runs, "isolation": list(sandbox.isolation()), "small_process": measure(args.runs)}
    # A torch tensor, as a model's weights are (numpy asks for huge pages, whose page tables are small to copy).
    held = torch.ones(int(args.hold_gib * 2 ** 30) // 4)  # float32; ones writes every page: all of it resident
    results[f"holding_{args.hold_gib:g}_gib"] = measure(args.runs)
    del held
    print(json.dumps(results, indent=1))
    if not args.no_write:
        (REPO / "docs" / "results" / "sandbox_fork.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
