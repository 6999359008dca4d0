"""The kit's benchmark suite: every stage's speed and memory, and the side-by-side ratios, in one run.

Measures, on the profile's model (the embedded tiny base on ``tiny-cpu``):

- each stage (SFT, reward model, PPO, DPO): tokens/s and samples/s over the steps after a warm-up,
  peak memory, estimated FLOPs (the stages' :class:`~course_lib.stages.base.ComputeLedger`) and MFU
  against a peak FLOP/s measured here with a large matmul;
- SFT batching: real (non-padding) tokens/s padded in random order, grouped by length, and packed
  (TRL's ``bfd`` and ``wrapped``), and whether attention crosses conversations in each;
- DPO with the reference log-probs precomputed or computed on the fly, at 1 and 3 epochs;
- the reference as the LoRA policy with its adapter off against a separate full copy, peak memory
  on a >=100M-parameter random Llama (each in its own process);
- the kit's PPO: its share of time generating, and samples/s against TRL's ``RLOOTrainer``;
- scaling: training tokens/s against sequence length and model width (tiny random Llamas);
- the whole track's wall time, from a finished run (``--track-run``).

Usage::

    python benchmarks/run.py                      # tiny-cpu, about 10 minutes on 2 cores
    python benchmarks/run.py --profile gpu-qlora  # on a GPU
    python benchmarks/run.py --quick              # 2 steps each: checks the suite runs (tests)
    python benchmarks/run.py --from-json docs/results/benchmarks.json --track-run runs/tiny  # add the track's time

Writes ``docs/results/benchmarks.json`` and ``docs/benchmarks.md`` (with charts under
``docs/benchmarks/``; see :mod:`benchmarks.report`). These are measurements, never timed tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python benchmarks/run.py` finds benchmarks.report
OFFLINE_PROFILES = ("tiny-cpu",)
"""Profiles whose model is built locally: their runs never touch the network (a hub profile downloads its model)."""


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does: the full run's sizes, or ``--quick``'s."""

    warmup: int = 3
    stage_steps: int = 40
    sft_mode_steps: int = 30
    ppo_steps: int = 10
    max_new_tokens: int = 96  # PPO's and RLOO's longest reply (the PPO stage's default)
    dpo_pairs: int = 160
    dpo_batch: int = 16
    reference_layers: int = 14
    reference_steps: int = 2
    scaling_steps: int = 4
    scaling_lengths: tuple[int, ...] = (64, 128, 256, 512)
    scaling_widths: tuple[int, ...] = (64, 128, 256, 512)
    # SFT conversations, pairs, eval prompts per domain; None: the profile's, as the track curates them
    # (batching by length needs the track's number of conversations to find batches of like lengths).
    data: tuple[int, int, int] | None = None


FULL = Sizes()
QUICK = Sizes(warmup=1, stage_steps=2, sft_mode_steps=2, ppo_steps=2, max_new_tokens=12, dpo_pairs=8, dpo_batch=4,
              reference_layers=2, reference_steps=1, scaling_steps=1, scaling_lengths=(32, 64), scaling_widths=(32, 64),
              data=(10, 10, 10))


# --- the machine and its peak ----------------------------------------------------------------

def machine() -> dict[str, Any]:
    """What the numbers ran on: CPU model, cores, torch threads, accelerator, library versions."""
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "platform": platform.platform()}


def measured_peak_flops(device: str, quick: bool) -> dict[str, Any]:
    """The device's peak FLOP/s as this process reaches it: the best of several large square matmuls.

    MFU divides by this number, not by a datasheet's: on a CPU shared with other work the datasheet
    is out of reach, and a measured peak says what a perfect kernel would have got here. On a GPU
    the matmul runs in bfloat16, the precision the GPU profile trains in.
    """
    import torch

    size = 256 if quick else (8192 if device == "cuda" else 1024)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3 if quick else 10):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / 4)
    return {"flops_per_second": 2 * size**3 / best, "how": f"best of repeated {size}x{size} {str(dtype)[6:]} matmuls "
            f"on {device} ({torch.get_num_threads()} threads)"}


# --- timing a trainer's steps --------------------------------------------------------------------

def step_clock():
    """A trainer callback that stamps each optimizer step's end with the time and the tokens seen."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[tuple[float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepClock()


def steady_rates(stamps: list[tuple[float, int]], warmup: int, samples_per_step: int) -> dict[str, float]:
    """Tokens/s, samples/s and seconds per step over the steps after the first ``warmup``.

    Args:
        stamps: ``(time, tokens seen)`` at the end of each step.
        warmup: steps left out (allocator growth, first-call overheads).
        samples_per_step: sequences, pairs or completions one step trains on.
    """
    warmup = min(warmup, len(stamps) - 2) if len(stamps) > 2 else 0
    (t0, n0), (t1, n1) = stamps[warmup], stamps[-1]
    steps = len(stamps) - 1 - warmup
    seconds = max(t1 - t0, 1e-9)
    return {"measured_steps": steps, "step_seconds": seconds / max(steps, 1), "tokens_per_second": (n1 - n0) / seconds,
            "samples_per_second": steps * samples_per_step / seconds}


def with_mfu(rates: dict[str, float], ledger: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add the ledger (whole training) and the achieved FLOP/s and MFU of the steady steps."""
    flops_per_token = 4 * ledger["parameters"] + 2 * ledger["trainable_parameters"]
    achieved = flops_per_token * rates["tokens_per_second"]
    return {**rates, "ledger": ledger, "flops_per_token": flops_per_token, "achieved_flops_per_second": achieved,
            "mfu": achieved / peak}


# --- the run the stages read ---------------------------------------------------------------------

def bench_run(work: Path, profile: str, sizes: Sizes):
    """A run folder with curated data (the same for every measurement) and the profile."""
    from course_lib.data import ensure_curated_data
    from course_lib.stages import RunContext

    run = RunContext.create(work / "run", profile)
    if sizes.data is None:
        data = run.profile.data
    else:
        data = dict(zip(("sft_per_domain", "prefs_per_domain", "eval_per_domain"), sizes.data))
    ensure_curated_data(run.run_dir, seed=0, sizes=data)
    return run


def quiet(**fields) -> dict[str, Any]:
    """Stage settings that keep a benchmark's training alone in the timed part: no progress bar,
    no checkpoints, no evaluation between steps, no gold evaluation."""
    return {"progress": False, "save_steps": 10**6, "eval_prompts": 0, **fields}


def sft_stage(run, sizes: Sizes, peak: float) -> dict[str, Any]:
    """The SFT stage as the track runs it (``run_sft``); its merged model feeds the later stages."""
    from course_lib.stages import SFTStageConfig, run_sft

    clock = step_clock()
    cfg = SFTStageConfig(**quiet(max_steps=sizes.stage_steps, eval_steps=10**6, logging_steps=10**6))
    result = run_sft(cfg, run, callbacks=[clock])
    batch = run.profile.training.per_device_batch_size
    return with_mfu(steady_rates(clock.stamps, sizes.warmup, batch), result.metrics["ledger"], peak)


def reward_stage(run, sizes: Sizes, peak: float) -> dict[str, Any]:
    """The reward stage (``run_reward``, one member): PPO and RLOO score with its model."""
    from course_lib.stages import RewardStageConfig, run_reward

    clock = step_clock()
    cfg = RewardStageConfig(max_steps=sizes.stage_steps, progress=False, save_steps=10**6, length_probe_pairs=0,
                            bootstrap_resamples=100)
    result = run_reward(cfg, run, callbacks=[clock])
    ledger = result.metrics["ledger"]
    ledger = ledger[0] if isinstance(ledger, list) else ledger
    batch = run.profile.training.per_device_batch_size
    return with_mfu(steady_rates(clock.stamps, sizes.warmup, batch), ledger, peak)


def dpo_stage(run, sizes: Sizes, peak: float) -> dict[str, Any]:
    """The DPO stage's trainer (``make_dpo_trainer``) at its defaults, from the SFT model."""
    from course_lib.stages import DPOStageConfig, make_dpo_trainer
    from course_lib.stages.base import ledger_of

    clock = step_clock()
    trainer = make_dpo_trainer(DPOStageConfig(**quiet(max_steps=sizes.stage_steps, logging_steps=10**6)), run,
                               callbacks=[clock])
    trainer.train()
    batch = run.profile.training.per_device_batch_size
    return with_mfu(steady_rates(clock.stamps, sizes.warmup, batch), ledger_of(trainer).summary(), peak)


def ppo_stage(run, sizes: Sizes, peak: float, ppo_epochs: int | None = None) -> dict[str, Any]:
    """The kit's PPO (``make_ppo_trainer``, one reward member): speed, and where an iteration's time goes.

    ``generation_share`` is sampling the replies, ``update_share`` the policy and value updates
    (``trainer.update``, timed here), ``gold_share`` the gold judge's diagnostic score of every reply
    (code runs in the sandbox; RLOO has no such diagnostic), ``scoring_share`` the rest: the log-probs,
    reference, values, reward model and advantages of each rollout.
    """
    from course_lib.stages import PPOStageConfig, make_ppo_trainer

    epochs = {} if ppo_epochs is None else {"ppo_epochs": ppo_epochs}
    cfg = PPOStageConfig(**quiet(max_steps=sizes.ppo_steps, reward_members=1, max_new_tokens=sizes.max_new_tokens,
                                 **epochs))
    trainer = make_ppo_trainer(cfg, run)
    update, update_seconds = trainer.update, []

    def timed_update(batch):
        started = time.perf_counter()
        stats = update(batch)
        update_seconds.append(time.perf_counter() - started)
        return stats

    trainer.update = timed_update
    trainer.train()
    warmup = min(sizes.warmup, len(trainer.history) - 1)
    steady = trainer.history[warmup:]
    seconds = sum(h["seconds"] for h in steady)
    generating = sum(h["generation_seconds"] for h in steady)
    judging = sum(h["gold_seconds"] for h in steady)
    updating = sum(update_seconds[warmup:])
    ledger = trainer.ledger.summary()
    tokens_per_iteration = ledger["tokens"] / max(trainer.step, 1)
    rates = {"measured_steps": len(steady), "step_seconds": seconds / len(steady), "ppo_epochs": cfg.ppo_epochs,
             "tokens_per_second": tokens_per_iteration * len(steady) / seconds,
             "samples_per_second": cfg.batch_size * len(steady) / seconds,
             "samples_per_second_without_gold": cfg.batch_size * len(steady) / (seconds - judging),
             "generation_share": generating / seconds, "update_share": updating / seconds,
             "gold_share": judging / seconds, "scoring_share": 1 - (generating + judging + updating) / seconds,
             "mean_completion_tokens": sum(h["response_length"] for h in steady) / len(steady)}
    return with_mfu(rates, ledger, peak)


# --- ratios ------------------------------------------------------------------------------------

SFT_MODES = {
    "padded_random": {"group_by_length": False},
    "group_by_length": {"group_by_length": True},
    "packed_bfd": {"packing": True, "packing_strategy": "bfd"},
    "packed_wrapped": {"packing": True, "packing_strategy": "wrapped"},
}
"""SFT batching modes, as :class:`~course_lib.stages.SFTStageConfig` settings."""


def attention_leak(trainer, conversations: list[list[dict[str, str]]]) -> float | None:
    """How far a packed conversation's logits move when the conversation before it in its row is removed.

    With ``position_ids`` in the trainer's first batch (``bfd``: they restart at each conversation), a
    conversation of that batch's first row is compared with itself alone. A ``wrapped`` batch carries no
    boundaries, so the row is rebuilt as ``wrapped`` builds it, two conversations back to back under plain
    causal attention. 0 (to rounding) means attention stays inside each conversation; None means a row
    holds one conversation (padded batches).
    """
    import torch

    model, tok = trainer.model, trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    if "position_ids" in batch:
        ids = batch["input_ids"][:1]  # (1, seq)
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        if len(starts) < 3:
            return None
        inputs = {"input_ids": ids, "position_ids": batch["position_ids"][:1]}
    elif trainer.args.packing:
        first, second = (tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"]
                         for c in conversations[:2])
        ids = torch.tensor([first + second])  # (1, seq)
        starts = [0, len(first), ids.shape[1]]
        inputs = {"input_ids": ids}
    else:
        return None
    start, end = starts[1], starts[2]
    model.eval()
    with torch.no_grad():
        in_row = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits[0, start:end]  # (segment, vocab)
        alone = model(input_ids=ids[:, start:end].to(model.device)).logits[0]  # (segment, vocab)
    model.train()
    return float((in_row.float() - alone.float()).abs().max())


def sft_batching(run, sizes: Sizes) -> dict[str, Any]:
    """Real tokens/s of each SFT batching mode on the same data and model, and its attention leak."""
    from course_lib.stages import SFTStageConfig, make_sft_trainer
    from course_lib.stages.base import ledger_of

    from course_lib.data import load_records

    conversations = load_records(run.data_file("sft_train.jsonl"), "sft")["messages"][:2]
    modes = {}
    for name, settings in SFT_MODES.items():
        variant = run.variant(f"sft_{name}", copy_data=False)
        clock = step_clock()
        cfg = SFTStageConfig(**quiet(max_steps=sizes.sft_mode_steps, eval_steps=10**6, logging_steps=10**6, **settings))
        trainer = make_sft_trainer(cfg, variant, callbacks=[clock])
        leak = attention_leak(trainer, conversations)
        trainer.train()
        rates = steady_rates(clock.stamps, sizes.warmup, run.profile.training.per_device_batch_size)
        rates.pop("samples_per_second")  # a packed row holds several conversations: tokens are the fair count
        modes[name] = {**rates, "attention_leak": leak, "crosses_examples": leak is not None and leak > 1e-3,
                       "peak_memory_mb": ledger_of(trainer).summary()["peak_memory_mb"]}
    base = modes["padded_random"]["tokens_per_second"]
    for mode in modes.values():
        mode["ratio_to_padded"] = mode["tokens_per_second"] / base
    return modes


def dpo_reference(run, sizes: Sizes) -> dict[str, Any]:
    """DPO with reference log-probs precomputed (once, when the trainer is built) or on the fly, 1 and 3 epochs.

    Each time covers building the trainer (where TRL precomputes) and training. The seed differs per
    epoch count, so TRL cannot reuse one run's precomputed log-probs in the next.
    """
    from course_lib.stages import DPOStageConfig, make_dpo_trainer

    pairs = run.data_file("prefs_train.jsonl").read_text(encoding="utf-8").splitlines()[:sizes.dpo_pairs]
    (run.run_dir / "data" / "prefs_bench.jsonl").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    steps_per_epoch = -(-len(pairs) // sizes.dpo_batch)
    out: dict[str, Any] = {"pairs": len(pairs), "batch_size": sizes.dpo_batch}
    for epochs in (1, 3):
        row = {}
        for name, precompute in (("on_the_fly", False), ("precomputed", True)):
            cfg = DPOStageConfig(**quiet(max_steps=epochs * steps_per_epoch, batch_size=sizes.dpo_batch, seed=epochs,
                                         precompute_ref_log_probs=precompute, train_file="prefs_bench.jsonl",
                                         logging_steps=10**6))
            started = time.perf_counter()
            trainer = make_dpo_trainer(cfg, run.variant(f"dpo_{name}_{epochs}", copy_data=False))
            built = time.perf_counter()
            trainer.train()
            row[name] = {"build_seconds": built - started, "train_seconds": time.perf_counter() - built,
                         "total_seconds": time.perf_counter() - started, "steps": trainer.state.global_step}
        row["speedup"] = row["on_the_fly"]["total_seconds"] / row["precomputed"]["total_seconds"]
        out[f"epochs_{epochs}"] = row
    return out


def reset_peak_resident() -> None:
    """Start this process's peak resident set afresh from its current size (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_resident_bytes() -> int:
    """This process's peak resident set since it started, or since :func:`reset_peak_resident` (Linux ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


def reference_memory_worker(kind: str, layers: int, steps: int, profile: str, data_file: str,
                            checkpointing: bool) -> dict[str, Any]:
    """In its own process: DPO steps on a random Llama, the reference as adapters-off or as a full copy.

    Peak memory is the process's peak resident set (``VmHWM``, kept by the kernel, exact; ``ru_maxrss``
    would include the parent's, which a child inherits): ``peak_memory_mb`` over the whole process,
    ``train_peak_mb`` while training (the peak restarted once the models are built, so the random
    initialisation's passing buffers are left out), and ``model_mb``, the training peak less the resident
    set after the imports, before any model existed: what the models, their adapters, optimizer state
    and activations take. ``checkpointing`` turns on gradient checkpointing, as the GPU profiles train.
    """
    import copy

    import psutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    from course_lib.config import load_profile
    from course_lib.data import load_records
    from course_lib.models import load_tokenizer, lora_config
    from course_lib.stages.base import common_training_args

    prof = load_profile(profile)
    tok = load_tokenizer(prof)
    pairs = load_records(data_file, "preference").select_columns(["prompt", "chosen", "rejected"])
    before = psutil.Process().memory_info().rss
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048, num_hidden_layers=layers,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    reference = copy.deepcopy(model).eval() if kind == "copy" else None
    with tempfile.TemporaryDirectory(prefix="course_lib_bench_") as out:
        args = DPOConfig(**common_training_args(prof, output_dir=Path(out), max_steps=steps, learning_rate=1e-4,
                                                batch_size=2, seed=0, report_to="none", progress=False)
                         | {"activation_checkpointing": checkpointing},
                         max_length=64, precompute_ref_log_probs=False)
        trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=pairs, processing_class=tok,
                             peft_config=lora_config(prof))
        whole = peak_resident_bytes()
        reset_peak_resident()
        trainer.train()
    peak = peak_resident_bytes()
    whole = max(whole, peak)
    if torch.cuda.is_available() and prof.device != "cpu":
        whole = peak = torch.cuda.max_memory_allocated()
        before = 0
    return {"kind": kind, "parameters": parameters, "gradient_checkpointing": checkpointing,
            "peak_memory_mb": whole / 2**20, "train_peak_mb": peak / 2**20, "model_mb": (peak - before) / 2**20,
            "reference_held_by": "adapter switched off" if kind == "adapters" else "separate frozen copy"}


def reference_memory(run, sizes: Sizes) -> dict[str, Any]:
    """The two ways of holding the reference, with gradient checkpointing (as the GPU profiles train)
    and without, each measured in a fresh process so their peaks do not mix.

    The aim is read with checkpointing on: that is how the kit trains models of this size.
    """
    from benchmarks.memory_planner import LIVE_MEMORY_ENV

    out: dict[str, Any] = {}
    for setting, checkpointing in (("checkpointing", True), ("no_checkpointing", False)):
        pair = {}
        for kind in ("adapters", "copy"):
            command = [sys.executable, __file__, "--reference-worker", kind, "--profile", run.profile.name,
                       "--reference-layers", str(sizes.reference_layers), "--reference-steps",
                       str(sizes.reference_steps), "--reference-data", str(run.data_file("prefs_bench.jsonl"))]
            command += ["--reference-checkpointing"] if checkpointing else []
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env={**os.environ, **LIVE_MEMORY_ENV})
            if done.returncode:
                raise RuntimeError(f"the reference-memory worker ({kind}, {setting}) failed:\n{done.stderr[-3000:]}")
            pair[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        pair["peak_ratio"] = pair["adapters"]["train_peak_mb"] / pair["copy"]["train_peak_mb"]
        pair["model_memory_ratio"] = pair["adapters"]["model_mb"] / pair["copy"]["model_mb"]
        out[setting] = pair
    out["model_memory_ratio"] = out["checkpointing"]["model_memory_ratio"]
    return out


def ppo_against_rloo(run, sizes: Sizes, ppo: dict[str, Any], peak: float) -> dict[str, Any]:
    """TRL's ``RLOOTrainer`` on the same reward (the reward models' mean), prompts, lengths and temperature as the kit's PPO,
    and the kit's PPO with one update epoch (RLOO's one pass) beside its default two."""
    from course_lib.stages import PPOStageConfig
    from course_lib.trials import rloo_trial

    cfg = PPOStageConfig(max_new_tokens=sizes.max_new_tokens)
    batch = cfg.batch_size
    trainer = rloo_trial(run, seed=0, steps=sizes.ppo_steps, learning_rate=5e-4, beta=0.05, temperature=cfg.temperature,
                         max_new_tokens=cfg.max_new_tokens, out_dir=run.run_dir / "rloo", batch_size=batch)
    logged = [h for h in trainer.state.log_history if "elapsed_s" in h and "loss" in h]  # one entry per step
    warmup = min(sizes.warmup, len(logged) - 1)
    since = logged[warmup - 1]["elapsed_s"] if warmup else 0.0
    steady = logged[warmup:]
    seconds = logged[-1]["elapsed_s"] - since
    rloo = {"measured_steps": len(steady), "step_seconds": seconds / len(steady),
            "samples_per_second": batch * len(steady) / seconds,
            "mean_completion_tokens": sum(h.get("completions/mean_length", 0.0) for h in steady) / len(steady)}
    keys = ("samples_per_second", "samples_per_second_without_gold", "step_seconds", "generation_share",
            "scoring_share", "gold_share", "update_share", "mean_completion_tokens", "ppo_epochs")
    one_epoch = ppo_stage(run, sizes, peak, ppo_epochs=1)
    return {"ppo": {k: ppo[k] for k in keys}, "ppo_one_epoch": {k: one_epoch[k] for k in keys},
            "rloo": rloo, "ppo_to_rloo_samples_per_second": ppo["samples_per_second"] / rloo["samples_per_second"],
            "ppo_one_epoch_to_rloo": one_epoch["samples_per_second"] / rloo["samples_per_second"],
            "ppo_without_gold_to_rloo": ppo["samples_per_second_without_gold"] / rloo["samples_per_second"],
            "settings": {"completions_per_step": batch, "rloo_generations_per_prompt": 4, "ppo_epochs": cfg.ppo_epochs,
                         "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}}


def scaling(profile, sizes: Sizes, peak: float) -> dict[str, Any]:
    """Training tokens/s of tiny random Llamas (4 layers, full fine-tuning, AdamW) as length and width grow."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from course_lib.models import detect_device, load_tokenizer

    device = detect_device(profile.device)
    vocab = len(load_tokenizer(profile))

    def point(width: int, length: int) -> dict[str, float]:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=width * 8 // 3, num_hidden_layers=4,
                             num_attention_heads=max(1, width // 32), num_key_value_heads=max(1, width // 32),
                             max_position_embeddings=max(sizes.scaling_lengths))
        model = LlamaForCausalLM(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, vocab, (4, length), device=device)  # (batch, seq)
        times = []
        for _ in range(sizes.warmup + sizes.scaling_steps):
            started = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        seconds = sum(times[sizes.warmup:]) / sizes.scaling_steps
        params = sum(p.numel() for p in model.parameters())
        tokens_per_second = ids.numel() / seconds
        return {"width": width, "seq_len": length, "parameters": params, "step_seconds": seconds,
                "tokens_per_second": tokens_per_second, "mfu": 6 * params * tokens_per_second / peak}

    middle_width, middle_length = sizes.scaling_widths[len(sizes.scaling_widths) // 2], sizes.scaling_lengths[1]
    return {"batch_size": 4, "layers": 4,
            "by_seq_len": [point(middle_width, n) for n in sizes.scaling_lengths],
            "by_width": [point(w, middle_length) for w in sizes.scaling_widths]}


def track_time(run_dir: Path | None) -> dict[str, Any] | None:
    """The whole track's wall time per notebook: the runner's ``track_state.json``, else the executed notebooks.

    The source is recorded from the runs folder down (``runs/tiny/track_state.json``): the page names
    the run, not the machine's paths.
    """
    if run_dir is None:
        return None
    state = run_dir / "track_state.json"
    if state.is_file():
        notebooks = {name: row.get("seconds") for name, row in json.loads(state.read_text())["notebooks"].items()}
        read = state
    else:
        from benchmarks.track_timing import notebook_timing

        notebooks = {p.stem: notebook_timing(p)["total_s"] for p in sorted((run_dir / "notebooks").glob("*.ipynb"))}
        read = run_dir / "notebooks"
    source = "/".join(read.resolve().parts[-3:])
    return {"source": source, "notebooks": notebooks, "total_seconds": sum(v or 0.0 for v in notebooks.values())}


# --- the command -------------------------------------------------------------------------------

def run_suite(profile: str, quick: bool, track_run: Path | None) -> dict[str, Any]:
    """Every measurement, in one process (the reference-memory pair in two more), in a scratch folder."""
    import torch

    from course_lib.config import load_profile
    from course_lib.models import detect_device

    sizes = QUICK if quick else FULL
    prof = load_profile(profile)
    device = detect_device(prof.device)
    torch.manual_seed(0)
    started = time.perf_counter()
    peak = measured_peak_flops(device, quick)
    results: dict[str, Any] = {"machine": machine(), "profile": profile, "device": device, "quick": quick,
                               "warmup_steps": sizes.warmup, "peak": peak,
                               "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(prefix="course_lib_bench_") as work:
        run = bench_run(Path(work), profile, sizes)
        stages = {"sft": sft_stage(run, sizes, peak["flops_per_second"]),
                  "reward": reward_stage(run, sizes, peak["flops_per_second"]),
                  "dpo": dpo_stage(run, sizes, peak["flops_per_second"]),
                  "ppo": ppo_stage(run, sizes, peak["flops_per_second"])}
        results["stages"] = stages
        results["sft_batching"] = sft_batching(run, sizes)
        results["dpo_reference"] = dpo_reference(run, sizes)
        results["reference_memory"] = reference_memory(run, sizes)
        results["ppo_vs_rloo"] = ppo_against_rloo(run, sizes, stages["ppo"], peak["flops_per_second"])
    results["scaling"] = scaling(prof, sizes, peak["flops_per_second"])
    results["track"] = track_time(track_run)
    results["suite_seconds"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny-cpu", help="profile name or YAML path (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a few steps each: checks the suite, measures nothing")
    parser.add_argument("--track-run", type=Path, help="a finished track run (runs/<name>) to read its wall time from")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "benchmarks.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the markdown page to write (charts go beside it, in a folder of its name)")
    parser.add_argument("--from-json", type=Path, help="write the page from results already measured (with --track-run: add the track's time to them first)")
    parser.add_argument("--reference-worker", choices=("adapters", "copy"), help=argparse.SUPPRESS)
    parser.add_argument("--reference-layers", type=int, default=FULL.reference_layers, help=argparse.SUPPRESS)
    parser.add_argument("--reference-steps", type=int, default=FULL.reference_steps, help=argparse.SUPPRESS)
    parser.add_argument("--reference-data", help=argparse.SUPPRESS)
    parser.add_argument("--reference-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile in OFFLINE_PROFILES:  # before any Hugging Face library reads the switches
        for switch in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(switch, "1")
    from course_lib.env import quiet_library_noise

    quiet_library_noise()
    if args.reference_worker:
        print(json.dumps(reference_memory_worker(args.reference_worker, args.reference_layers, args.reference_steps,
                                                 args.profile, args.reference_data, args.reference_checkpointing)))
        return 0
    from benchmarks.report import write_page

    if args.from_json:  # the page again, with the track's time added when a finished run is given
        results = json.loads(args.from_json.read_text())
        if args.track_run:
            results["track"] = track_time(args.track_run)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    else:
        results = run_suite(args.profile, args.quick, args.track_run)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"results: {args.out}")
    out = args.out.resolve()
    shown = out.relative_to(REPO).as_posix() if out.is_relative_to(REPO) else str(out)
    print(f"page: {write_page(results, args.docs, results_name=shown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
