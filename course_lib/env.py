"""What the kit runs on: versions of the key packages, the Python, the device.

Introduced in ``00_setup``; the report of every run includes it.
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import warnings
from importlib import metadata

KEY_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets",
    "tokenizers", "papermill", "ipywidgets", "plotly", "jupyterlab",
)


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, ``None`` for those not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


DRIFT_WATCHED = ("trl", "transformers", "peft")
"""The packages whose APIs the kit calls most, and rename most often (TRL renamed `tokenizer`, removed PPO)."""


def verified_versions() -> dict[str, str]:
    """The versions the kit's test suite passed with (``scripts/lock_versions.py`` writes them)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "assets" / "verified_versions.json"
    return json.loads(path.read_text())["packages"] if path.is_file() else {}


def version_drift(names: tuple[str, ...] = DRIFT_WATCHED) -> list[dict[str, str | None]]:
    """Packages installed at another version than the verified one: ``[{"package", "installed", "verified"}]``."""
    verified, installed = verified_versions(), package_versions(names)
    return [{"package": name, "installed": installed[name], "verified": verified[name]}
            for name in names if name in verified and installed[name] != verified[name]]


def environment_report() -> dict[str, object]:
    """Python, platform, cores, accelerator and package versions, as a flat-ish dict."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0"),
        "packages": package_versions(),
    }


def quiet_library_noise() -> None:
    """Silence the libraries' messages a learner cannot act on; every other warning still shows.

    - bitsandbytes, on CPUs with AVX512-BF16, tries to fetch an optional faster 4-bit kernel
      from the Hugging Face hub at import and warns when it cannot (always, offline); its
      built-in kernel is used instead.
    - peft and TRL still call ``model.is_gradient_checkpointing`` and
      ``gradient_checkpointing_enable/disable``, which transformers 5 renamed to
      ``activation_checkpointing``: a ``FutureWarning`` about their code, not the kit's
      (the kit itself uses the new names).
    - transformers checks every model against a tensor-parallel plan and warns that a reward
      head and the norms have no sharding rule; the kit never shards a model.

    Called when ``course_lib`` is imported.
    """
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("transformers.distributed.tensor_parallel").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning)
