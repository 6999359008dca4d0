"""The benchmark suite runs and writes what docs/benchmarks.md needs; the page is generated from its results.

No timing is asserted anywhere: benchmarks are measurements, never timed tests (DESIGN.md).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.errors import ConfigError
from course_lib.stages import SFTStageConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.report import write_page  # noqa: E402

pytestmark = pytest.mark.unit

STAGE_KEYS = {"tokens_per_second", "samples_per_second", "step_seconds", "mfu", "flops_per_token", "ledger"}
LEDGER_KEYS = {"wall_seconds", "tokens", "peak_memory_mb", "estimated_flops", "parameters", "trainable_parameters"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory, tiny_base_path):
    """One ``--quick`` run of the suite (a step or two of everything), with a finished track run to read."""
    folder = tmp_path_factory.mktemp("bench")
    track = folder / "track_run"
    track.mkdir()
    (track / "track_state.json").write_text(json.dumps({"notebooks": {
        "00_setup": {"status": "done", "seconds": 12.5}, "02_sft": {"status": "done", "seconds": 100.0}}}))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--track-run", str(track),
                           "--out", str(folder / "benchmarks.json"), "--docs", str(folder / "benchmarks.md")],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return folder, json.loads((folder / "benchmarks.json").read_text())


@pytest.mark.slow
def test_quick_suite_writes_every_measurement(quick_results):
    folder, results = quick_results
    assert results["quick"] and results["device"] == "cpu" and results["peak"]["flops_per_second"] > 0
    assert {"cpu", "cores", "torch", "transformers", "trl"} <= set(results["machine"])
    assert set(results["stages"]) == {"sft", "reward", "dpo", "ppo"}
    for name, stage in results["stages"].items():
        assert STAGE_KEYS <= set(stage), name
        assert LEDGER_KEYS <= set(stage["ledger"]), name
        assert stage["tokens_per_second"] > 0 and stage["ledger"]["peak_memory_mb"] > 0 and 0 < stage["mfu"], name
    assert 0 < results["stages"]["ppo"]["generation_share"] < 1

    modes = results["sft_batching"]
    assert set(modes) == {"padded_random", "group_by_length", "packed_bfd", "packed_wrapped"}
    assert modes["padded_random"]["ratio_to_padded"] == pytest.approx(1.0)
    # Measured, not declared: bfd keeps conversations apart, wrapped lets attention cross them.
    assert modes["packed_bfd"]["attention_leak"] < 1e-3 and not modes["packed_bfd"]["crosses_examples"]
    assert modes["packed_wrapped"]["attention_leak"] > 1e-2 and modes["packed_wrapped"]["crosses_examples"]
    assert modes["group_by_length"]["attention_leak"] is None

    dpo = results["dpo_reference"]
    for epochs in ("epochs_1", "epochs_3"):
        assert dpo[epochs]["speedup"] > 0
        assert dpo[epochs]["precomputed"]["steps"] == dpo[epochs]["on_the_fly"]["steps"]
    assert dpo["epochs_3"]["on_the_fly"]["steps"] == 3 * dpo["epochs_1"]["on_the_fly"]["steps"]

    memory = results["reference_memory"]
    for setting, checkpointing in (("checkpointing", True), ("no_checkpointing", False)):
        pair = memory[setting]
        assert pair["adapters"]["parameters"] == pair["copy"]["parameters"]
        assert pair["adapters"]["gradient_checkpointing"] is pair["copy"]["gradient_checkpointing"] is checkpointing
        # A separate frozen copy holds the weights twice: it must show in the measured peaks.
        assert pair["model_memory_ratio"] < 0.95
    assert memory["model_memory_ratio"] == memory["checkpointing"]["model_memory_ratio"]

    assert results["ppo_vs_rloo"]["rloo"]["samples_per_second"] > 0
    assert len(results["scaling"]["by_seq_len"]) == len(results["scaling"]["by_width"]) == 2
    assert results["track"]["total_seconds"] == pytest.approx(112.5)

    page = (folder / "benchmarks.md").read_text()
    for heading in ("## The machine", "## Stages", "### SFT batching", "### DPO: reference", "### The reference",
                    "### PPO against", "### Scaling", "## The whole track", "Smoke run"):
        assert heading in page
    assert "| 02_sft | 100 |" in page


def test_committed_page_is_generated_from_committed_results(tmp_path):
    """docs/benchmarks.md is what the generator writes from docs/results/benchmarks.json, nothing edited by hand."""
    results = json.loads((REPO / "docs" / "results" / "benchmarks.json").read_text())
    written = write_page(results, tmp_path / "benchmarks.md", results_name="docs/results/benchmarks.json", charts=False)

    def text(path: Path) -> list[str]:  # the page without its chart lines (not drawn here)
        return [line for line in path.read_text().splitlines() if line and not line.startswith("![")]

    assert text(written) == text(REPO / "docs" / "benchmarks.md")


def test_page_says_whether_each_aim_is_met(tmp_path):
    results = json.loads((REPO / "docs" / "results" / "benchmarks.json").read_text())
    for speedup, verdict in ((1.4, "meets the aim"), (1.05, "misses the aim")):
        changed = copy.deepcopy(results)
        changed["dpo_reference"]["epochs_3"]["speedup"] = speedup
        page = write_page(changed, tmp_path / "page.md", charts=False).read_text()
        assert f"At 3 epochs precomputing is {speedup:.2f}x faster ({verdict} of 1.15x)" in page


def test_page_draws_its_charts(tmp_path):
    pytest.importorskip("matplotlib")
    results = json.loads((REPO / "docs" / "results" / "benchmarks.json").read_text())
    page = write_page(results, tmp_path / "bench.md").read_text()
    for chart in ("stages.svg", "sft_batching.svg", "scaling.svg"):
        assert (tmp_path / "bench" / chart).read_text().lstrip().startswith("<?xml")
        assert f"](bench/{chart})" in page


def test_packing_strategy_is_checked():
    assert SFTStageConfig(packing=True, packing_strategy="wrapped").packing_strategy == "wrapped"
    with pytest.raises(ConfigError, match="packing_strategy"):
        SFTStageConfig(packing=True, packing_strategy="greedy")


def test_the_sandbox_fork_benchmark_measures_both_ways():
    """``benchmarks/sandbox_fork.py``: each run forked by the broker and from this process, both judged the same."""
    from benchmarks.sandbox_fork import measure

    medians = measure(runs=2)
    assert set(medians) == {"broker_ms", "forked_here_ms"} and all(ms > 0 for ms in medians.values())
