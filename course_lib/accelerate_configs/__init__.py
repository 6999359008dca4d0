"""``accelerate launch`` configs for more than one process, shipped with the package.

- ``multi_gpu``: data parallel (DDP), a whole model per GPU.
- ``fsdp``: PyTorch FSDP2, parameters, gradients and optimizer states sharded per decoder layer.
- ``deepspeed_zero2`` / ``deepspeed_zero3``: DeepSpeed ZeRO stage 2 (optimizer states and
  gradients sharded) or 3 (parameters too); DeepSpeed itself is not a kit dependency.
- ``cpu_gloo``: two CPU processes over gloo, the multi-process path on a machine without a GPU.

``python -m course_lib.accelerate_configs fsdp`` prints the file's path, for
``accelerate launch --config_file "$(python -m course_lib.accelerate_configs fsdp)" ...``.
Which one to pick, and what to change in a profile, is in ``docs/scaling.md``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

CONFIGS_DIR = Path(__file__).resolve().parent


def config_names() -> list[str]:
    """The shipped configs, by name (the file name without ``.yaml``)."""
    return sorted(path.stem for path in CONFIGS_DIR.glob("*.yaml"))


def config_path(name: str) -> Path:
    """The path of the shipped config ``name`` (e.g. ``"fsdp"``), to pass to ``accelerate launch --config_file``.

    Raises:
        ConfigError: no shipped config has that name.
    """
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no shipped accelerate config named {name!r}; expected one of {config_names()}")
    return path
