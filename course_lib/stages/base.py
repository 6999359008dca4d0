"""What every stage shares: the run context, the stage folder and its completion marker,
the compute ledger, and the result a stage returns.

A stage folder ``runs/<name>/<stage>/`` holds ``config.yaml``, ``metrics.json``,
``stage_info.json`` (tokenizer fingerprint, ledger) and ``COMPLETE`` (a hash of the stage
config, the input artifacts and the code version). Introduced in ``02_sft``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text, atomic_write_yaml
from ..config import Profile, load_profile
from ..errors import DataError, MissingArtifactError

MARKER = "COMPLETE"
PRODUCERS = {"prefs_labeled.jsonl": "the workshop's labels: notebooks/labeling/label_preferences.ipynb"}
"""Data files that come from somewhere other than notebook 01, and who writes them."""


@dataclass
class RunContext:
    """The run a stage belongs to: its directory and its profile.

    Attributes:
        run_dir: ``runs/<name>``; every stage reads its inputs from here and writes its folder here.
        profile: the validated profile (model, precision, LoRA, budgets).
    """

    run_dir: Path
    profile: Profile

    @classmethod
    def create(cls, run_dir: str | Path, profile: str | Path | Profile = "tiny-cpu") -> "RunContext":
        """Build a context from a run directory and a profile name, path or object."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return cls(run_dir=path, profile=prof)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def has_stage(self, stage: str) -> bool:
        """True when ``stage`` completed in this run (whatever its config was)."""
        return (self.stage_dir(stage) / MARKER).is_file()

    def data_file(self, name: str) -> Path:
        """A curated data file, or a clear error naming the notebook that writes it."""
        path = self.run_dir / "data" / name
        producer = PRODUCERS.get(name, "notebook 01_data_curation (or course_lib.data.ensure_curated_data)")
        if not path.is_file():
            raise MissingArtifactError(f"curated data file '{name}'", path, producer)
        with open(path, "rb") as f:
            if not any(line.strip() for line in f):
                raise DataError(f"the data file is empty; it is produced by {producer}", file=path)
        return path

    def artifact(self, stage: str, name: str, produced_by: str) -> Path:
        """A completed stage's artifact, or a clear error naming who produces it."""
        folder = self.stage_dir(stage)
        path = folder / name
        if not (folder / MARKER).is_file() or not path.exists():
            raise MissingArtifactError(f"the {stage} stage's {name}", path, produced_by)
        return path


@dataclass
class StageResult:
    """What a stage returns (and writes to ``metrics.json``).

    Attributes:
        stage: the stage's name.
        output_dir: the stage folder.
        metrics: the stage's metrics (evaluation, ledger).
        skipped: True when the marker matched and the stage did not run again.
    """

    stage: str
    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def code_version() -> str:
    """The kit's version plus a hash of its stage code, so edited code re-runs stages."""
    h = hashlib.sha256(metadata.version("course-lib").encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """Hash of a file, or of every file under a folder (names and bytes)."""
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def stage_hash(config: Any, profile: Profile, inputs: dict[str, Path]) -> str:
    """The completion hash: stage config, profile, input artifacts and code version."""
    payload = {
        "config": dataclasses.asdict(config),
        "profile": {k: v for k, v in profile.to_dict().items() if k != "source"},
        "inputs": {name: file_digest(p) for name, p in sorted(inputs.items())},
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def completed(stage_dir: Path, digest: str) -> bool:
    """True when the stage folder carries a marker with this hash."""
    marker = stage_dir / MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def finish_stage(stage_dir: Path, digest: str, config: Any, metrics: dict[str, Any], info: dict[str, Any]) -> None:
    """Write config, metrics and info, then the marker last: a stage without it is incomplete."""
    atomic_write_yaml(stage_dir / "config.yaml", dataclasses.asdict(config))
    atomic_write_json(stage_dir / "metrics.json", metrics)
    atomic_write_json(stage_dir / "stage_info.json", info)
    atomic_write_text(stage_dir / MARKER, digest + "\n")


def load_stage_metrics(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / "metrics.json").read_text())


class ComputeLedger:
    """Wall time, tokens, peak memory and estimated FLOPs of one stage.

    Peak memory is ``torch.cuda.max_memory_allocated`` on GPU and the process's peak
    resident set (sampled) on CPU. FLOPs follow the usual estimate for a transformer:
    2 x parameters per token forward, the same again for the activation gradients, and
    2 x trainable parameters per token for the weight gradients (LoRA keeps that small).

    Usage::

        with ComputeLedger(model) as ledger:
            ...train...
            ledger.add_tokens(n)
        ledger.summary()
    """

    def __init__(self, model=None, device: str = "cpu"):
        self.device = device
        self.params = sum(p.numel() for p in model.parameters()) if model is not None else 0
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if model is not None else 0
        self.tokens = 0
        self.seconds = 0.0
        self._peak_rss = 0
        self._stop = threading.Event()

    def add_tokens(self, n: int) -> None:
        self.tokens += int(n)

    def _sample_rss(self) -> None:
        import psutil

        proc = psutil.Process(os.getpid())
        while not self._stop.wait(0.2):
            self._peak_rss = max(self._peak_rss, proc.memory_info().rss)

    def __enter__(self) -> "ComputeLedger":
        import psutil
        import torch

        self._peak_rss = psutil.Process(os.getpid()).memory_info().rss
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample_rss, daemon=True)
        self._thread.start()
        self._started = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.time() - self._started
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        import torch

        peak = torch.cuda.max_memory_allocated() if self.device == "cuda" else self._peak_rss
        flops = (4 * self.params + 2 * self.trainable) * self.tokens
        return {
            "wall_seconds": round(self.seconds, 2),
            "tokens": self.tokens,
            "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else None,
            "peak_memory_mb": round(peak / 2**20, 1),
            "peak_memory_kind": "cuda_allocated" if self.device == "cuda" else "cpu_rss",
            "estimated_flops": float(flops),
            "parameters": self.params,
            "trainable_parameters": self.trainable,
        }


def common_training_args(profile: Profile, *, output_dir: Path, max_steps: int, learning_rate: float | None,
                         batch_size: int | None, seed: int, report_to: str | None, logging_steps: int = 10,
                         save_steps: int | None = None) -> dict[str, Any]:
    """Trainer arguments every TRL stage shares, derived from the profile.

    Args:
        profile: supplies precision, optimizer, gradient checkpointing, batch and LR defaults.
        output_dir: where checkpoints go.
        max_steps: optimizer steps.
        learning_rate: peak LR, or None for the profile's.
        batch_size: per-device batch, or None for the profile's.
        seed: seed of initialisation and data order.
        report_to: tracker, or None for the profile's.
        logging_steps: steps between logged losses.
        save_steps: steps between checkpoints; None saves none.
    """
    from ..models import detect_device

    on_gpu = detect_device(profile.device) == "cuda"
    half = profile.quantization.compute_dtype if profile.quantization.load_in_4bit else profile.model.dtype
    return dict(
        output_dir=str(output_dir),
        max_steps=max_steps,
        learning_rate=learning_rate or profile.training.learning_rate,
        per_device_train_batch_size=batch_size or profile.training.per_device_batch_size,
        per_device_eval_batch_size=batch_size or profile.training.per_device_batch_size,
        gradient_accumulation_steps=profile.training.gradient_accumulation_steps,
        activation_checkpointing=profile.training.gradient_checkpointing,
        optim=profile.training.optim,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20),
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        report_to=report_to or profile.training.report_to,
        use_cpu=not on_gpu,
        bf16=on_gpu and half == "bfloat16",
        fp16=on_gpu and half == "float16",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
