"""GPU check: memory and speed of the kit's stages on a real-size model, with 4-bit QLoRA and with bf16 LoRA.

Prepared to run within 10 minutes on one CUDA GPU with no network::

    .venv/bin/python scripts/gpu_check.py                 # writes docs/gpu.md

It builds locally a Llama-architecture model of about 0.57B parameters (random weights, the tiny
base's tokenizer: memory and speed do not depend on what the weights know), then runs short SFT,
reward-model and DPO stages twice, once with the base in 4-bit NF4 (QLoRA) and once in 16 bits with
LoRA, through the kit's own stages and profiles, and records each stage's peak GPU memory and
tokens per second, and the QLoRA-to-LoRA memory ratio. Precision is the profile's ``auto``: bf16 on
GPUs with native bf16, fp16 on older ones.

Without a GPU it says so and exits cleanly. ``--dry-run`` runs the same path on the CPU with a
model of a few layers and a couple of steps per stage (what CI runs, ``tests/test_preflight.py``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 20, "num_attention_heads": 12}
DRY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def build_model(folder: Path, shape: dict[str, int]) -> int:
    """A randomly initialised Llama of ``shape`` with the tiny base's tokenizer, saved to ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from course_lib.tiny_base import shipped_base_dir

    tok = AutoTokenizer.from_pretrained(shipped_base_dir())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), num_key_value_heads=shape["num_attention_heads"],
                                         max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape))
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_stages(model_dir: Path, work: Path, four_bit: bool, steps: int, device: str) -> dict[str, dict]:
    """Short SFT, reward and DPO stages on ``model_dir``; each stage's ledger."""
    from course_lib.config import load_profile
    from course_lib.data import ensure_curated_data
    from course_lib.memory import plan_memory
    from course_lib.stages import (DPOStageConfig, RewardStageConfig, RunContext, SFTStageConfig, run_dpo, run_reward,
                                   run_sft)

    profile = load_profile("gpu-qlora", {
        "model.name": str(model_dir), "device": device, "model.max_seq_length": 512,
        "quantization.load_in_4bit": four_bit, "training.per_device_batch_size": 4,
        "training.gradient_accumulation_steps": 1,
        # paged 8-bit AdamW needs CUDA; the dry run on CPU uses plain AdamW
        **({} if device == "cuda" else {"training.optim": "adamw_torch", "training.gradient_checkpointing": False,
                                        "quantization.compute_dtype": "float32"}),
    })
    run = RunContext.create(work / ("qlora" if four_bit else "lora"), profile)
    ensure_curated_data(run.run_dir, seed=0, sizes={"sft_per_domain": 40, "prefs_per_domain": 40, "eval_per_domain": 10})
    quiet = dict(progress=False, max_steps=steps)
    out = {}
    for name, call in (("sft", lambda: run_sft(SFTStageConfig(eval_prompts=0, save_steps=10_000, eval_steps=10_000, **quiet), run)),
                       ("reward", lambda: run_reward(RewardStageConfig(length_probe_pairs=2, bootstrap_resamples=50, **quiet), run)),
                       ("dpo", lambda: run_dpo(DPOStageConfig(eval_prompts=0, save_steps=10_000, **quiet), run))):
        started = time.time()
        ledger = call().metrics["ledger"]
        ledger = ledger[0] if isinstance(ledger, list) else ledger
        planned = plan_memory(profile, name).total_bytes / 2**20  # the worst case: every sequence max_seq_length long
        out[name] = {**ledger, "stage_seconds": round(time.time() - started, 1), "planned_mb": round(planned, 1)}
    return out


def write_markdown(path: Path, gpu: str, parameters: int, precision: dict, results: dict[str, dict], dry: bool) -> None:
    lines = ["# GPU check", "",
             ("**Dry run on CPU** (a model of a few layers, the plumbing only; no GPU figures)." if dry else
              f"Measured by `scripts/gpu_check.py` on **{gpu}**, {time.strftime('%Y-%m-%d')}."),
             "", f"Model: a Llama of {parameters / 1e6:.0f}M parameters, random weights; precision {precision['dtype']} "
             f"({precision['reason']}). Peak memory is `torch.cuda.max_memory_allocated` on GPU, the process's RSS on CPU.", "",
             "| stage | QLoRA peak MB | LoRA peak MB | QLoRA / LoRA memory | QLoRA tokens/s | LoRA tokens/s "
             "| QLoRA planned MB | LoRA planned MB |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in ("sft", "reward", "dpo"):
        q, lo = results["qlora"][stage], results["lora"][stage]
        ratio = q["peak_memory_mb"] / lo["peak_memory_mb"] if lo["peak_memory_mb"] else float("nan")
        lines.append(f"| {stage} | {q['peak_memory_mb']:.0f} | {lo['peak_memory_mb']:.0f} | {ratio:.2f} | "
                     f"{q['tokens_per_second'] or 0:.0f} | {lo['tokens_per_second'] or 0:.0f} | "
                     f"{q['planned_mb']:.0f} | {lo['planned_mb']:.0f} |")
    lines += ["", "Planned: `course_lib.memory.plan_memory` for the same profile, the tensors' peak with every sequence at "
              "`max_seq_length` (the curated data's are shorter, so the plan is an upper bound here). "
              "[`memory_planner.md`](memory_planner.md) checks the planner on CPU with sequences of exactly that length.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same path on CPU with a tiny model (no GPU figures)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per stage (default 20; dry run 2)")
    parser.add_argument("--out", default=str(REPO / "docs" / "gpu.md"), help="where the results go")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from course_lib.config import load_profile
    from course_lib.preflight import resolved_precision

    if not args.dry_run and not torch.cuda.is_available():
        print("No CUDA GPU is visible: nothing to measure here (docs/gpu.md is left as it is). "
              "Run with --dry-run to check the script's path on this CPU.")
        return 0
    device = "cpu" if args.dry_run else "cuda"
    steps = args.steps or (2 if args.dry_run else 20)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        parameters = build_model(work / "model", DRY if args.dry_run else REAL)
        print(f"model: {parameters / 1e6:.0f}M parameters; {steps} steps per stage on {device}", flush=True)
        results = {}
        for name, four_bit in (("qlora", True), ("lora", False)):
            results[name] = run_stages(work / "model", work / "runs", four_bit, steps, device)
            print(name, {stage: (r["peak_memory_mb"], r["tokens_per_second"]) for stage, r in results[name].items()},
                  flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
        profile = dataclasses.replace(load_profile("gpu-qlora"), device=device)
        gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
        write_markdown(Path(args.out), gpu, parameters, resolved_precision(profile), results, args.dry_run)
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
