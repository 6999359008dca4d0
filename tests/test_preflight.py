"""Preflight verdicts and the precision choice, on faked machines: a T4, an A100, a CPU, no bitsandbytes."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from course_lib.config import load_profile
from course_lib.preflight import GPUFacts, MachineFacts, choose_precision, format_report, verdict

pytestmark = pytest.mark.unit
PACKAGES = {"torch": "2.13.0", "transformers": "5.24.0", "trl": "1.16.0", "peft": "0.21.2", "bitsandbytes": "0.49.0"}


def machine(*gpus: GPUFacts, bnb: bool = True, torch_cuda: str | None = "12.8", **kw) -> MachineFacts:
    return MachineFacts(python="3.11.9", packages=PACKAGES, torch_cuda=torch_cuda, gpus=list(gpus), bnb_4bit=bnb,
                        bnb_4bit_error=None if bnb else "bitsandbytes is not installed", ram_gb=32, free_disk_gb=100,
                        hub="reachable", **kw)


T4 = GPUFacts("Tesla T4", (7, 5), 15.0, 14.6)
A100 = GPUFacts("NVIDIA A100-SXM4-80GB", (8, 0), 80.0, 79.2)
SMALL = GPUFacts("NVIDIA GeForce GT 1030", (6, 1), 2.0, 1.6)
CPU = machine(torch_cuda=None)


def test_bf16_on_an_a100_fp16_with_loss_scaling_on_a_t4_fp32_on_a_cpu():
    gpu = load_profile("gpu-qlora")
    on_a100, on_t4 = choose_precision(gpu, machine(A100)), choose_precision(gpu, machine(T4))
    assert (on_a100["dtype"], on_a100["compute_dtype"]) == ("bfloat16", "bfloat16") and "native bf16" in on_a100["reason"]
    assert (on_t4["dtype"], on_t4["compute_dtype"]) == ("float16", "float16") and "loss scaling" in on_t4["reason"]
    assert "7.5 < 8.0" in on_t4["reason"]
    assert choose_precision(load_profile("tiny-cpu"), CPU)["dtype"] == "float32"
    # A dtype the user pins is kept, and said to be pinned.
    pinned = dataclasses.replace(gpu, model=dataclasses.replace(gpu.model, dtype="float32"))
    choice = choose_precision(pinned, machine(T4))
    assert choice["dtype"] == "float32" and choice["compute_dtype"] == "float16" and "pinned" in choice["reason"]


def test_the_trainer_gets_bf16_or_fp16_from_the_choice(monkeypatch):
    from course_lib.stages import base

    gpu = load_profile("gpu-qlora")
    monkeypatch.setattr("course_lib.models.detect_device", lambda requested="auto": "cuda")
    for facts, flags in ((machine(A100), (True, False)), (machine(T4), (False, True))):
        monkeypatch.setattr("course_lib.preflight.resolved_precision", lambda profile, facts=facts: choose_precision(profile, facts))
        args = base.common_training_args(gpu, output_dir="out", max_steps=1, learning_rate=None, batch_size=None, seed=0,
                                         report_to="none")
        assert (args["bf16"], args["fp16"]) == flags and args["use_cpu"] is False


@pytest.mark.parametrize("facts, profile, expected, says", [
    (machine(A100), "gpu-qlora", "fits", []),
    (machine(T4), "gpu-qlora", "fits", []),
    (machine(T4, bnb=False), "gpu-qlora", "fits with changes", ["load_in_4bit: false"]),
    (CPU, "gpu-qlora", "does not fit", ["needs a CUDA GPU", "CPU build"]),
    (machine(SMALL), "gpu-qlora", "does not fit", ["GB of GPU memory needed"]),
    (CPU, "tiny-cpu", "fits", []),
    (machine(T4), "tiny-cpu", "fits", []),
    (dataclasses.replace(CPU, ram_gb=2.0), "tiny-cpu", "does not fit", ["RAM"]),
])
def test_verdicts_on_faked_machines(facts, profile, expected, says):
    result = verdict(load_profile(profile), facts)
    assert result["verdict"] == expected, result
    text = " ".join(result["reasons"] + result["changes"])
    assert all(phrase in text for phrase in says), text


def test_a_t4_with_a_pinned_bf16_profile_is_told_to_use_auto():
    gpu = load_profile("gpu-qlora")
    pinned = dataclasses.replace(gpu, quantization=dataclasses.replace(gpu.quantization, compute_dtype="bfloat16"))
    result = verdict(pinned, machine(T4))
    assert result["verdict"] == "fits with changes" and "quantization.compute_dtype: auto" in result["changes"][0]
    assert verdict(pinned, machine(A100))["verdict"] == "fits"


def test_offline_with_a_hub_model_is_a_warning_not_a_block():
    result = verdict(load_profile("gpu-qlora"), dataclasses.replace(machine(A100), hub="offline (HF_HUB_OFFLINE=1)"))
    assert result["verdict"] == "fits" and "local cache" in result["reasons"][0]


def test_the_report_lists_facts_and_verdicts():
    text = format_report(machine(T4), [verdict(load_profile("gpu-qlora"), machine(T4))])
    assert "Tesla T4, compute capability 7.5" in text and "bf16 not native" in text
    assert "gpu-qlora: FITS" in text and "float16" in text


def test_course_track_doctor_runs_on_this_machine():
    out = subprocess.run([sys.executable, "-m", "course_lib.track", "doctor"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tiny-cpu: FITS" in out.stdout and "gpu-qlora:" in out.stdout and "bitsandbytes 4-bit:" in out.stdout
    assert "hub: offline (HF_HUB_OFFLINE=1)" in out.stdout  # the tests run offline: no network check


def test_the_constraints_pin_what_the_suite_runs_with_and_leave_torch_to_the_machine():
    from pathlib import Path

    from course_lib.env import DRIFT_WATCHED, package_versions, verified_versions

    repo = Path(__file__).resolve().parents[1]
    pins = dict(line.split("==") for line in (repo / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert not any(name.lower().startswith(("torch", "nvidia-", "triton")) for name in pins)
    installed, verified = package_versions(DRIFT_WATCHED), verified_versions()
    assert all(pins[name] == verified[name] == installed[name] for name in DRIFT_WATCHED), (pins, verified, installed)
    assert "-c constraints.txt" in (repo / "scripts" / "setup_env.sh").read_text()


@pytest.mark.slow
def test_the_gpu_check_script_dry_run_and_its_message_without_a_gpu(tmp_path):
    """The dry run takes the GPU script's whole path on CPU (4-bit QLoRA and LoRA; SFT, reward, DPO)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path / "gpu.md")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "gpu.md").read_text()
    assert "Dry run on CPU" in table and all(f"| {stage} |" in table for stage in ("sft", "reward", "dpo"))
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0 and "No CUDA GPU is visible" in bare.stdout
