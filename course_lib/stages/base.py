"""What every stage shares: the run context, the stage folder and its completion marker,
the compute ledger, and the result a stage returns.

A stage folder ``runs/<name>/<stage>/`` holds ``config.yaml``, ``metrics.json``,
``stage_info.json`` (tokenizer fingerprint, ledger) and ``COMPLETE`` (a hash of the stage
config, the input artifacts and the code version). Introduced in ``02_sft``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text, atomic_write_yaml
from ..config import Profile, load_profile
from ..errors import DataError, MissingArtifactError
from ..fingerprint import digest_json, files_digest, source_digest

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
    parent: "RunContext | None" = None

    @classmethod
    def create(cls, run_dir: str | Path, profile: str | Path | Profile = "tiny-cpu") -> "RunContext":
        """Build a context from a run directory and a profile name, path or object."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return cls(run_dir=path, profile=prof)

    def variant(self, name: str, copy_data: bool = True) -> "RunContext":
        """A run beside this one for an experiment (an exercise, an ablation): ``<run>/variants/<name>``.

        It reads this run's finished stages until it has run them itself, and nothing it does
        touches this run's files. With ``copy_data`` it starts with a copy of this run's curated
        data, so it may change its own copy; without, it reads this run's data (the pipeline's
        ablations, which must all see the same data).
        """
        import shutil

        path = self.run_dir / "variants" / name
        data = path / "data"
        if copy_data and not data.is_dir() and (self.run_dir / "data").is_dir():
            shutil.copytree(self.run_dir / "data", data, ignore=shutil.ignore_patterns(".*", "raw"))
        path.mkdir(parents=True, exist_ok=True)
        return RunContext(run_dir=path, profile=self.profile, parent=self)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def has_stage(self, stage: str) -> bool:
        """True when ``stage`` completed in this run, or in the run it is a variant of."""
        return (self.stage_dir(stage) / MARKER).is_file() or (self.parent is not None and self.parent.has_stage(stage))

    def data_file(self, name: str) -> Path:
        """A curated data file, or a clear error naming the notebook that writes it."""
        path = self.run_dir / "data" / name
        if not path.is_file() and self.parent is not None and not (self.run_dir / "data").is_dir():
            return self.parent.data_file(name)
        producer = PRODUCERS.get(name, "notebook 01_data_curation (or course_lib.data.ensure_curated_data)")
        if not path.is_file():
            raise MissingArtifactError(f"curated data file '{name}'", path, producer)
        with open(path, "rb") as f:
            if not any(line.strip() for line in f):
                raise DataError(f"the data file is empty; it is produced by {producer}", file=path)
        return path

    def artifact(self, stage: str, name: str, produced_by: str) -> Path:
        """A completed stage's artifact (this run's, else its parent's), or a clear error naming who produces it."""
        folder = self.stage_dir(stage)
        path = folder / name
        if (folder / MARKER).is_file() and path.exists():
            return path
        if self.parent is not None and self.parent.has_stage(stage):
            return self.parent.artifact(stage, name, produced_by)
        raise MissingArtifactError(f"the {stage} stage's {name}", path, produced_by)


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
    """The kit's version and all of its Python source: edited kit code re-runs stages.

    A stage runs far more than its own module (model loading, generation, the gold judge),
    so the whole package counts, not only ``stages/``.
    """
    return source_digest()


def model_identity(profile: Profile) -> str:
    """What the profile's base model is: a hash of a local folder's files, else the hub id."""
    from ..config import TINY_BASE
    from ..tiny_base import shipped_base_dir

    name = profile.model.name
    local = shipped_base_dir() if name == TINY_BASE else Path(name).expanduser()
    return files_digest(local) if local.is_dir() else name


DISPLAY_ONLY = ("progress",)
"""Config fields that change what a learner sees, not what a stage computes: left out of its hash."""


def stage_hash(config: Any, profile: Profile, inputs: dict[str, Path]) -> str:
    """The completion hash: stage config, profile, base model, input artifacts and code version."""
    return digest_json({
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in DISPLAY_ONLY},
        "profile": {k: v for k, v in profile.to_dict().items() if k != "source"},
        "model": model_identity(profile),
        "inputs": {name: files_digest(p) for name, p in sorted(inputs.items())},
        "code": code_version(),
    })


def completed(stage_dir: Path, digest: str) -> bool:
    """True when the stage folder carries a marker with this hash."""
    marker = stage_dir / MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def finish_stage(stage_dir: Path, digest: str, config: Any, metrics: dict[str, Any], info: dict[str, Any],
                 inputs: dict[str, Path]) -> None:
    """Write config, metrics and info, then the marker last: a stage without it is incomplete.

    ``stage_info.json`` also records each input's path and content hash, so what a stage
    trained on can be checked afterwards.
    """
    info = {**info, "inputs": {name: {"path": str(p), "digest": files_digest(p)} for name, p in sorted(inputs.items())}}
    atomic_write_yaml(stage_dir / "config.yaml", dataclasses.asdict(config))
    atomic_write_json(stage_dir / "metrics.json", metrics)
    atomic_write_json(stage_dir / "stage_info.json", info)
    atomic_write_text(stage_dir / MARKER, digest + "\n")


WAIT_TIMEOUT_SECONDS = 2 * 3600
"""How long the other processes of a launch wait for the main process's evaluations and saves."""


def world_size() -> int:
    """How many processes the launcher (``accelerate launch``, ``torchrun``) started: 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in a single process and in the launch's first process, the one that writes the stage folders."""
    return int(os.environ.get("RANK", "0")) == 0


def join_processes(profile: Profile) -> None:
    """Form the process group of a multi-process launch the way the stages' trainers form it.

    Gloo on a CPU profile (``TrainingArguments(use_cpu=True)`` asks for it; accelerate's launcher
    does not pass ``use_cpu`` on), the GPU's backend otherwise. The trainers then reuse this group,
    and :func:`wait_for_everyone` can be called before a trainer exists. Nothing in one process.
    """
    if world_size() > 1:
        from datetime import timedelta

        from accelerate import PartialState

        from ..models import detect_device

        PartialState(cpu=detect_device(profile.device) != "cuda", timeout=timedelta(seconds=WAIT_TIMEOUT_SECONDS))


def wait_for_everyone() -> None:
    """Under a multi-process launch, return once every process has called it; at once in one process.

    The stages train in every process and write on the main process only: the other processes wait
    here for it, then read what it wrote. The group must exist (:func:`join_processes` or a trainer).
    """
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def leave_processes() -> None:
    """End a multi-process launch's group together, before the processes exit; nothing in one process.

    A process that exits while the group is up can take down one still finishing a collective
    (gloo aborts it with "terminate called without an active exception"): all meet, then the group
    is destroyed in each process.
    """
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def result_of_main_process(stage: str, stage_dir: Path) -> StageResult:
    """On a process other than the main one: wait until the main process has finished the stage
    folder (it calls :func:`wait_for_everyone` after :func:`finish_stage`), then read its metrics."""
    wait_for_everyone()
    return StageResult(stage, stage_dir, load_stage_metrics(stage_dir))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest *complete* ``checkpoint-<step>`` folder under ``folder``, or None.

    transformers writes a checkpoint in place and its ``trainer_state.json`` last; a process killed
    while writing leaves a folder without it, which resuming from would fail on. Such a folder is
    passed over for the one before it. (The kit's PPO writes its checkpoints whole, with
    ``trainer_state.pt``, by renaming a finished temporary folder.)
    """
    import re

    if not folder.is_dir():
        return None
    steps = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    return next((p for _, p in steps if (p / "trainer_state.json").is_file() or (p / "trainer_state.pt").is_file()), None)


CHECKPOINT_OWNER = "stage_hash.txt"
"""In a stage's checkpoint folder: the completion hash of the run that wrote those checkpoints."""


def resumable_checkpoint(folder: Path, digest: str, resume: bool = True) -> Path | None:
    """The checkpoint to continue from, only if it was written for this exact stage hash.

    A run killed under one config, input or code version and started again under another must
    not continue the old run's optimisation under the new name. So checkpoints carry the hash
    they were written for; checkpoints of any other hash (or of none) are removed, the folder
    is claimed for ``digest``, and training starts from scratch. Under several processes the main
    process does that and every process returns the same checkpoint. Introduced in ``06_unified_pipeline``.

    Args:
        folder: the stage's ``checkpoints`` folder.
        digest: the stage's completion hash (:func:`stage_hash`).
        resume: False starts from scratch whatever is there.

    Returns:
        The newest complete checkpoint of this hash (:func:`last_checkpoint`), or None.
    """
    import shutil

    if is_main_process():  # under several processes, the main one removes and claims; the others wait
        owner = folder / CHECKPOINT_OWNER
        mine = owner.is_file() and owner.read_text().strip() == digest
        if folder.is_dir() and not (mine and resume):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(owner, digest + "\n")
    wait_for_everyone()
    return last_checkpoint(folder)


def reopen_stage(stage_dir: Path, checkpoints: Path, digest: str, resume: bool, profile: Profile) -> Path | None:
    """Start a stage that is not complete for ``digest``: remove its old marker, claim its checkpoints.

    Returns:
        The checkpoint to continue from (:func:`resumable_checkpoint`), the same in every process.
    """
    join_processes(profile)
    wait_for_everyone()  # every process has read the old marker before the main process removes it
    if is_main_process():
        (stage_dir / MARKER).unlink(missing_ok=True)
    return resumable_checkpoint(checkpoints, digest, resume)


def checkpoint_step(checkpoint: Path | None) -> int | None:
    """The optimizer step of a ``checkpoint-<step>`` folder (None for no checkpoint)."""
    return int(checkpoint.name.split("-")[-1]) if checkpoint is not None else None


def load_stage_metrics(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / "metrics.json").read_text())


def stage_ledger(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """A stage's compute ledger from its metrics; the reward stage keeps one per ensemble member, summed here."""
    ledger = metrics.get("ledger")
    if isinstance(ledger, list):
        return {"wall_seconds": round(sum(m["wall_seconds"] for m in ledger), 2), "tokens": sum(m["tokens"] for m in ledger),
                "peak_memory_mb": max(m["peak_memory_mb"] for m in ledger),
                "estimated_flops": sum(m["estimated_flops"] for m in ledger)}
    return ledger


def run_cached_trl_stage(stage: str, cfg: Any, run: "RunContext", inputs: dict[str, Path], make, finish,
                         callbacks: list | None = None) -> StageResult:
    """A TRL-trainer stage with its cache: skip when done with the same inputs, resume when interrupted.

    Under ``accelerate launch`` every process calls it and trains (the trainer's data parallelism);
    ``finish`` measures and writes on the main process only and hands every process the same result.

    Args:
        stage: the stage folder's name.
        cfg: the stage's config (its ``resume`` says whether to continue from a checkpoint).
        run: the run.
        inputs: what the stage reads (its completion hash covers them).
        make: ``make(cfg, run, callbacks) -> trainer``.
        finish: ``finish(trainer, cfg, run, resumed_from_step=...) -> StageResult``.
        callbacks: extra ``transformers`` trainer callbacks.
    """
    out = run.stage_dir(stage)
    digest = stage_hash(cfg, run.profile, inputs)
    if completed(out, digest):
        return StageResult(stage, out, load_stage_metrics(out), skipped=True)
    checkpoint = reopen_stage(out, out / "checkpoints", digest, cfg.resume, run.profile)
    trainer = make(cfg, run, callbacks)
    trainer.train(resume_from_checkpoint=checkpoint)
    return finish(trainer, cfg, run, resumed_from_step=checkpoint_step(checkpoint))


class ComputeLedger:
    """Wall time, tokens, peak memory and estimated FLOPs of one stage.

    Peak memory is ``torch.cuda.max_memory_allocated`` on GPU and the process's peak
    resident set (sampled) on CPU. FLOPs follow the usual estimate for a transformer:
    2 x parameters per token forward, the same again for the activation gradients, and
    2 x trainable parameters per token for the weight gradients (LoRA keeps that small).

    Usage, around the kit's own loops::

        with ComputeLedger(model) as ledger:
            ...train...
            ledger.add_tokens(n)
        ledger.summary()

    and inside a ``transformers`` trainer through :meth:`callback`, which the stage
    builders attach, so ``trainer.train()`` is measured however it is called.
    """

    def __init__(self, model=None, device: str = "cpu"):
        self.device = device
        self.params = self.trainable = 0
        if model is not None:
            self.count(model)
        self.tokens = 0
        self.seconds = 0.0
        self._peak_rss = 0

    def count(self, model) -> None:
        """Take the parameter counts (all and trainable) from ``model``."""
        self.params = sum(p.numel() for p in model.parameters())
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

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

        self._peak_rss = max(self._peak_rss, psutil.Process(os.getpid()).memory_info().rss)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_rss, daemon=True)
        self._thread.start()
        self._started = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.time() - self._started
        self._stop.set()
        self._thread.join()

    def callback(self):
        """A ``TrainerCallback`` that measures each ``trainer.train()`` into this ledger."""
        from transformers import TrainerCallback

        class LedgerCallback(TrainerCallback):
            def __init__(self, ledger: ComputeLedger):
                self.ledger = ledger

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if model is not None:
                    self.ledger.count(model)
                self.tokens_at_start = state.num_input_tokens_seen
                self.ledger.__enter__()

            def on_train_end(self, args, state, control, **kwargs):
                self.ledger.add_tokens(state.num_input_tokens_seen - self.tokens_at_start)
                self.ledger.__exit__()

        return LedgerCallback(self)

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
            "processes": world_size(),  # tokens and FLOPs count every process; time and memory are this one's
        }


def ledger_of(trainer) -> ComputeLedger:
    """The :class:`ComputeLedger` a stage builder attached to ``trainer``."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(getattr(callback, "ledger", None), ComputeLedger):
            return callback.ledger
    raise ValueError("this trainer was not built by a course_lib stage builder (no compute ledger attached)")


def common_training_args(profile: Profile, *, output_dir: Path, max_steps: int, learning_rate: float | None,
                         batch_size: int | None, seed: int, report_to: str | None, logging_steps: int = 10,
                         save_steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Trainer arguments every TRL stage shares, derived from the profile.

    Args:
        profile: supplies precision, optimizer, gradient checkpointing, batch and LR defaults.
        output_dir: where checkpoints go.
        max_steps: optimizer steps.
        learning_rate: peak LR, or None for the profile's.
        batch_size: per-device batch, or None for the profile's.
        seed: seed of initialisation and data order. The process is seeded with it here, as the Trainer will
            seed it: a reward head, or the LoRA adapter TRL adds, is drawn when the model is built, before the
            Trainer exists, and torch starts every process from a random seed.
        report_to: tracker, or None for the profile's.
        logging_steps: steps between logged losses.
        save_steps: steps between checkpoints; None saves none.
        progress: show the trainer's live progress (a bar with the running loss in Jupyter);
            off for the many small trainings an experiment runs, which show one bar of their own.
    """
    from transformers import set_seed

    from ..models import detect_device
    from ..preflight import resolved_precision

    set_seed(seed)

    on_gpu = detect_device(profile.device) == "cuda"
    precision = resolved_precision(profile)  # fp16 (with the trainer's loss scaling) where bf16 is not native
    half = precision["compute_dtype"] if profile.quantization.load_in_4bit else precision["dtype"]
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
        disable_tqdm=not progress,
    )


@functools.cache
def length_grouped(trainer_class):
    """``trainer_class``, a TRL preference trainer, able to batch pairs of similar length.

    ``train_sampling_strategy="group_by_length"`` looks for one ``input_ids`` column; a pair has
    ``chosen_ids`` and ``rejected_ids`` (and DPO a separate ``prompt_ids``), so the subclass hands
    transformers' own ``LengthGroupedSampler`` each pair's longest sequence, for training and for
    evaluation. Random batches of the curated pairs are about half padding, length-grouped ones
    under a fifth.
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    def pair_lengths(dataset) -> list[int]:
        prompts = dataset["prompt_ids"] if "prompt_ids" in dataset.column_names else None
        return [max(len(c), len(r)) + (len(prompts[i]) if prompts is not None else 0)
                for i, (c, r) in enumerate(zip(dataset["chosen_ids"], dataset["rejected_ids"]))]

    class LengthGrouped(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(dataset)
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=pair_lengths(dataset))

        def _get_eval_sampler(self, eval_dataset):
            if self.args.train_sampling_strategy != "group_by_length" or eval_dataset is None:
                return super()._get_eval_sampler(eval_dataset)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return LengthGroupedSampler(self.args.eval_batch_size, lengths=pair_lengths(eval_dataset),
                                        generator=torch.Generator().manual_seed(seed))

    LengthGrouped.__name__ = LengthGrouped.__qualname__ = f"LengthGrouped{trainer_class.__name__}"
    return LengthGrouped


def attach_kit_callbacks(trainer, ledger: ComputeLedger, progress: bool):
    """Give a stage's trainer its compute ledger, and silence it when it shows no progress.

    Without a progress bar, ``transformers`` prints every logging step as a raw dict; a quiet
    training keeps its logs in ``trainer.state.log_history`` instead.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnBar(ProgressCallback):
        """The console progress bar, with the running loss on it instead of a dict printed per log."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

    trainer.add_callback(ledger.callback())
    if not progress:
        trainer.remove_callback(PrinterCallback)
    elif trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossOnBar())
    return trainer
