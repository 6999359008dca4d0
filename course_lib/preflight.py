"""Preflight: what this machine has, and whether each profile fits on it.

The facts (:class:`MachineFacts`) are gathered once by :func:`machine_facts`; the verdicts
(:func:`verdict`) and the precision choice (:func:`choose_precision`) are pure functions of the
facts, so they are tested with faked machines (a T4, an A100, a CPU, no bitsandbytes).
Shown as the first section of ``00_setup`` and by ``course-track doctor``.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Profile, available_profiles, load_profile
from .env import package_versions

CHECKED_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets")
NATIVE_BF16_CAPABILITY = (8, 0)
"""bf16 runs natively from Ampere (compute capability 8.0) on; ``torch.cuda.is_bf16_supported()``
can say True below that by emulating it, slowly."""
HUB_URL = "https://huggingface.co"


@dataclass
class GPUFacts:
    """One CUDA device."""

    name: str
    capability: tuple[int, int]
    total_gb: float
    free_gb: float

    @property
    def native_bf16(self) -> bool:
        return tuple(self.capability) >= NATIVE_BF16_CAPABILITY


@dataclass
class MachineFacts:
    """What the kit needs to know about a machine to say whether a profile fits."""

    python: str
    packages: dict[str, str | None]
    torch_cuda: str | None  # the CUDA version the torch build targets; None: a CPU build
    gpus: list[GPUFacts] = field(default_factory=list)
    bnb_4bit: bool = False
    bnb_4bit_error: str | None = None
    ram_gb: float = 0.0
    free_disk_gb: float = 0.0
    hub: str = "not checked"  # "reachable", "unreachable", "offline (HF_HUB_OFFLINE=1)", "not checked"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bnb_4bit_works(device: str) -> tuple[bool, str | None]:
    """Whether bitsandbytes imports and quantizes a tensor to 4 bits on ``device``."""
    try:
        import bitsandbytes.functional as bnbf
        import torch

        weights = torch.randn(64, 64, device=device, dtype=torch.float32)
        packed, state = bnbf.quantize_4bit(weights, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state)
        if not torch.isfinite(restored).all():
            return False, "4-bit round trip gave non-finite values"
        return True, None
    except Exception as exc:  # any failure means "4-bit will not work here"; its message says why
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def _hub_status(check: bool) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return "offline (HF_HUB_OFFLINE=1)"
    if not check:
        return "not checked"
    import urllib.request

    try:
        urllib.request.urlopen(HUB_URL, timeout=3)
        return "reachable"
    except OSError:
        return "unreachable"


def _gpus() -> list[GPUFacts]:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            props = torch.cuda.get_device_properties(i)
            gpus.append(GPUFacts(props.name, (props.major, props.minor), round(total / 2**30, 1), round(free / 2**30, 1)))
    return gpus


def resolved_precision(profile: Profile) -> dict[str, str]:
    """:func:`choose_precision` for this machine's first GPU: what the model loaders and trainers use."""
    return choose_precision(profile, MachineFacts(python="", packages={}, torch_cuda=None, gpus=_first_gpu()))


@functools.lru_cache(maxsize=1)
def _first_gpu() -> list[GPUFacts]:
    """The first CUDA device's name and compute capability (the precision choice needs no more), looked up once."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [GPUFacts(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), 0.0, 0.0)]


def machine_facts(run_dir: str = ".", check_hub: bool = True) -> MachineFacts:
    """Gather this machine's facts.

    Args:
        run_dir: where runs are written (its disk's free space counts).
        check_hub: try to reach the Hugging Face hub, 3 seconds at most (skipped when ``HF_HUB_OFFLINE=1``).
    """
    import psutil
    import torch

    gpus = _gpus()
    ok, error = _bnb_4bit_works("cuda" if gpus else "cpu") if package_versions(("bitsandbytes",))["bitsandbytes"] \
        else (False, "bitsandbytes is not installed")
    disk = shutil.disk_usage(run_dir if os.path.isdir(run_dir) else ".")
    return MachineFacts(
        python=sys.version.split()[0], packages=package_versions(CHECKED_PACKAGES), torch_cuda=torch.version.cuda,
        gpus=gpus, bnb_4bit=ok, bnb_4bit_error=error, ram_gb=round(psutil.virtual_memory().total / 2**30, 1),
        free_disk_gb=round(disk.free / 2**30, 1), hub=_hub_status(check_hub),
    )


def choose_precision(profile: Profile, facts: MachineFacts) -> dict[str, str]:
    """The dtypes a profile trains in on this machine, and why.

    ``auto`` (a profile's ``model.dtype`` or ``quantization.compute_dtype``) becomes bfloat16 on a
    GPU with native bf16, float16 on an older GPU (the trainer then scales the loss, so small
    gradients do not underflow), and float32 on a CPU. A dtype the profile names is kept.

    Returns:
        ``{"dtype": weights dtype, "compute_dtype": 4-bit compute dtype, "reason": one line}``.
    """
    on_gpu = profile.device != "cpu" and bool(facts.gpus)
    if not on_gpu:
        auto, why = "float32", "CPU: float32 (half precision is slow or unsupported on CPUs)"
    elif facts.gpus[0].native_bf16:
        auto, why = "bfloat16", f"{facts.gpus[0].name} has native bf16 (compute capability {_cc(facts.gpus[0])})"
    else:
        auto, why = "float16", (f"{facts.gpus[0].name} has no native bf16 (compute capability {_cc(facts.gpus[0])} < 8.0): "
                                "float16 with loss scaling")
    pinned = [f"{key} {value} (pinned by the profile)" for key, value in
              (("dtype", profile.model.dtype), ("compute_dtype", profile.quantization.compute_dtype))
              if value not in ("auto", auto) and (key == "dtype" or profile.quantization.load_in_4bit)]
    return {"dtype": auto if profile.model.dtype == "auto" else profile.model.dtype,
            "compute_dtype": auto if profile.quantization.compute_dtype == "auto" else profile.quantization.compute_dtype,
            "reason": "; ".join([why] + pinned)}


def _cc(gpu: GPUFacts) -> str:
    return f"{gpu.capability[0]}.{gpu.capability[1]}"


def most_demanding_stage(profile: Profile) -> tuple[float, str] | None:
    """The GPU memory the profile's most demanding stage needs, by the memory planner, with its safety margin.

    Returns:
        ``(GiB, stage)``, or None when the planner cannot size the model offline (a hub id neither
        known nor cached).
    """
    from .errors import ConfigError
    from .memory import STAGES, MemoryPlanConfig, plan_memory

    try:
        plans = [plan_memory(profile, config=MemoryPlanConfig(stage=stage, device="cuda")) for stage in STAGES]
    except ConfigError:
        return None
    largest = max(plans, key=lambda plan: plan.needed_gib())
    return round(largest.needed_gib(), 1), largest.stage


def verdict(profile: Profile, facts: MachineFacts) -> dict[str, Any]:
    """Whether ``profile`` runs on the machine ``facts`` describes.

    Args:
        profile: the profile.
        facts: the machine.

    Returns:
        ``{"profile", "verdict": "fits" | "fits with changes" | "does not fit", "reasons": [...],
        "changes": [...], "precision": {...}}``.
    """
    reasons, changes, blocked = [], [], False
    if facts.ram_gb and facts.ram_gb < 4:
        blocked = True
        reasons.append(f"{facts.ram_gb} GB of RAM; the kit needs at least 4")
    if facts.free_disk_gb and facts.free_disk_gb < 2:
        blocked = True
        reasons.append(f"{facts.free_disk_gb} GB of free disk; runs need at least 2")
    local = profile.model.name == "tiny-base" or os.path.isdir(os.path.expanduser(profile.model.name))
    if not local and facts.hub in ("unreachable", "offline (HF_HUB_OFFLINE=1)"):
        reasons.append(f"the model {profile.model.name} comes from the hub, which is {facts.hub}: "
                       "it must already be in the local cache")
    wants_gpu = profile.device == "cuda" or (profile.device == "auto" and profile.quantization.load_in_4bit)
    if wants_gpu and not facts.gpus:
        blocked = True
        reasons.append("the profile needs a CUDA GPU and none is visible"
                       + ("" if facts.torch_cuda else " (this torch is a CPU build)"))
    if facts.gpus and wants_gpu:
        gpu = facts.gpus[0]
        if profile.quantization.load_in_4bit and not facts.bnb_4bit:
            changes.append(f"quantization.load_in_4bit: false (bitsandbytes 4-bit does not work here: {facts.bnb_4bit_error})")
        need = most_demanding_stage(profile)
        if need is not None and need[0] > gpu.free_gb:
            gib, stage = need
            blocked = True
            reasons.append(f"about {gib} GB of GPU memory needed (its {stage} stage, by the memory planner), "
                           f"{gpu.free_gb} GB free on {gpu.name}")
        for key in ("dtype", "compute_dtype"):
            pinned = profile.model.dtype if key == "dtype" else profile.quantization.compute_dtype
            if pinned == "bfloat16" and not gpu.native_bf16:
                changes.append(f"{'model' if key == 'dtype' else 'quantization'}.{key}: auto (this GPU has no native "
                               f"bf16; auto takes float16)")
    status = "does not fit" if blocked else "fits with changes" if changes else "fits"
    return {"profile": profile.name, "verdict": status, "reasons": reasons, "changes": changes,
            "four_bit": profile.quantization.load_in_4bit, "precision": choose_precision(profile, facts)}


def doctor(facts: MachineFacts, profiles: list[str] | None = None) -> list[dict[str, Any]]:
    """The verdict for each profile (the shipped ones by default)."""
    return [verdict(load_profile(name), facts) for name in (profiles or available_profiles())]


def format_report(facts: MachineFacts, verdicts: list[dict[str, Any]]) -> str:
    """The preflight as text: the facts, then one verdict per profile."""
    from .env import DRIFT_WATCHED, verified_versions

    verified = verified_versions()
    lines = [f"python {facts.python}; torch build: " + (f"CUDA {facts.torch_cuda}" if facts.torch_cuda else "CPU")]
    for name, version in facts.packages.items():
        differs = name in DRIFT_WATCHED and name in verified and version != verified[name]
        lines.append(f"  {name}: {version or 'not installed'}"
                     + (f"   <- the kit was verified with {verified[name]}" if differs else ""))
    for i, gpu in enumerate(facts.gpus):
        lines.append(f"GPU {i}: {gpu.name}, compute capability {_cc(gpu)}, {gpu.free_gb} of {gpu.total_gb} GB free, "
                     f"bf16 {'native' if gpu.native_bf16 else 'not native'}")
    if not facts.gpus:
        lines.append("GPU: none visible")
    lines.append("bitsandbytes 4-bit: " + ("works" if facts.bnb_4bit else f"does not work ({facts.bnb_4bit_error})"))
    lines.append(f"RAM {facts.ram_gb} GB; free disk {facts.free_disk_gb} GB; hub: {facts.hub}")
    lines.append("")
    for v in verdicts:
        p = v["precision"]
        compute = f" (4-bit compute {p['compute_dtype']})" if v["four_bit"] else ""
        lines.append(f"{v['profile']}: {v['verdict'].upper()}   precision: {p['dtype']}{compute}: {p['reason']}")
        lines += [f"    why: {r}" for r in v["reasons"]] + [f"    change: {c}" for c in v["changes"]]
    return "\n".join(lines)
