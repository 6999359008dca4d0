"""The memory planner's predictions next to measured peaks, on CPU, for tiny Llama models.

Each (model, stage) runs in a fresh Python process: it imports everything, runs the stage once
at a tiny size (batch 1, 32 tokens: what a trainer imports and caches on first use is then in
the baseline), and records its resident memory (the baseline), then resets the kernel's high-water mark of
resident memory (``/proc/self/clear_refs``), loads the model(s) as the stage does, builds the
stage's trainer and takes two optimizer steps (the second step holds weights, adapter,
gradients, optimizer state and activations at once). The measured peak is ``VmHWM`` minus the
baseline: everything the stage added, read exactly by the kernel, not sampled. The sequences are
built to be exactly ``seq_length`` tokens, the planner's worst case, so both count the same thing.

    .venv/bin/python benchmarks/memory_planner.py

writes ``docs/results/memory_planner.json`` and ``docs/memory_planner.md``. Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JSON_OUT = REPO / "docs" / "results" / "memory_planner.json"
MD_OUT = REPO / "docs" / "memory_planner.md"
TOLERANCE = 0.25
STEPS = 2
# glibc serves large blocks from its heap once a few have been freed (its mmap threshold rises to
# 32 MB), and keeps freed heap memory resident: the peak resident set would then count memory the
# process no longer uses. A fixed threshold hands every block over 128 KiB back at once, so on CPU
# the peak follows what is allocated, as a GPU's peak allocation does. (benchmarks/run.py uses it too.)
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}

# name -> (architecture overrides on the tiny base, profile overrides)
CASES = {
    "tiny-base": ({}, {"training.per_device_batch_size": 16, "model.max_seq_length": 256}),
    "wide-21M": (dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8, head_dim=64,
                      intermediate_size=1408), {"training.per_device_batch_size": 4, "model.max_seq_length": 256}),
    "long-gc": ({}, {"training.per_device_batch_size": 4, "model.max_seq_length": 768, "training.gradient_checkpointing": True}),
}
STAGES = ("sft", "reward", "dpo", "ppo")
PPO = dict(batch_size=16, minibatch_size=8, max_new_tokens=64, reward_members=2)


def build_model(name: str, folder: Path) -> Path:
    """The case's model: the shipped tiny base, or a wider one with random weights and the same tokenizer."""
    from course_lib.tiny_base import shipped_base_dir

    arch, _ = CASES[name]
    if not arch:
        return shipped_base_dir()
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(shipped_base_dir())
    for key, value in arch.items():
        setattr(config, key, value)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    for file in shipped_base_dir().iterdir():
        if file.name.startswith(("tokenizer", "chat_template", "generation_config")):
            shutil.copy(file, folder / file.name)
    return folder


def case_profile(name: str, folder: Path):
    from course_lib.config import load_profile

    return load_profile("tiny-cpu", {"model.name": str(folder), **CASES[name][1]})


def _filled(tok, make, tokens: int):
    """``make(words)`` with the most filler words whose chat-templated length is at most ``tokens``."""
    words = 1
    while len(tok.apply_chat_template(make(words + 1), tokenize=True, return_dict=False)) <= tokens:
        words += 1
    return make(words)


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


QUESTION = [{"role": "user", "content": "Say the word many times."}]
WARM_UP = {"training.per_device_batch_size": 1, "model.max_seq_length": 32}
"""The warm-up run's size: the same code paths, next to no memory."""


def run_stage(stage: str, profile, tok, ppo: dict) -> None:
    """Load the stage's model(s) as the stage does, build its trainer and take ``STEPS`` optimizer steps."""
    with tempfile.TemporaryDirectory(prefix="memory_planner_") as output_dir:  # the trainers' output folder, removed
        _train(stage, profile, tok, ppo, Path(output_dir))


def _train(stage: str, profile, tok, ppo: dict, output_dir: Path) -> None:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    from course_lib.models import add_lora, load_model, lora_config
    from course_lib.stages.base import common_training_args
    from course_lib.stages.lm_head import use_full_logits_on_cpu
    from course_lib.stages.ppo import PPOTrainer
    from course_lib.stages.ppo_config import PPOStageConfig
    from course_lib.stages.reward import reward_uses_adapter

    seq, rows = profile.model.max_seq_length, profile.training.per_device_batch_size * (STEPS + 1)
    conv = _filled(tok, lambda n: QUESTION + [{"role": "assistant", "content": " the" * n}], seq)  # exactly seq tokens
    args = common_training_args(profile, output_dir=output_dir, max_steps=STEPS,
                                learning_rate=None, batch_size=None, seed=0, report_to="none", progress=False)
    args.update(warmup_steps=0, logging_steps=100)
    if stage == "sft":
        trainer = SFTTrainer(model=load_model(profile), args=SFTConfig(**args, max_length=seq, assistant_only_loss=True),
                             train_dataset=Dataset.from_list([{"messages": conv}] * rows), processing_class=tok,
                             peft_config=lora_config(profile))
        use_full_logits_on_cpu(trainer.model)
    elif stage in ("reward", "dpo"):
        pairs = Dataset.from_list([{"prompt": QUESTION, "chosen": conv[1:], "rejected": conv[1:]}] * rows)
        if stage == "reward":
            trainer = RewardTrainer(model=load_model(profile, num_labels=1), args=RewardConfig(**args, max_length=seq),
                                    train_dataset=pairs, processing_class=tok,
                                    peft_config=lora_config(profile, task_type="SEQ_CLS") if reward_uses_adapter(profile) else None)
        else:
            trainer = DPOTrainer(model=load_model(profile), args=DPOConfig(**args, max_length=seq), train_dataset=pairs,
                                 processing_class=tok, peft_config=lora_config(profile))
            use_full_logits_on_cpu(trainer.model)
    if stage != "ppo":
        trainer.train()
        return
    torch.manual_seed(0)
    policy = add_lora(load_model(profile), profile)
    def score_model(trainable: bool):  # the value model and the reward members: adapters, or trained whole
        model = load_model(profile, num_labels=1, for_training=trainable)
        return add_lora(model, profile, "SEQ_CLS") if reward_uses_adapter(profile) else model

    value = score_model(trainable=True)
    rewards = [score_model(trainable=False).eval() for _ in range(ppo["reward_members"])]
    cfg = PPOStageConfig(max_steps=STEPS, batch_size=ppo["batch_size"], minibatch_size=ppo["minibatch_size"],
                         max_new_tokens=ppo["max_new_tokens"], reward_members=ppo["reward_members"], progress=False,
                         save_steps=STEPS + 1)
    prompts = [{"prompt": QUESTION, "domain": "general", "reference": None}] * ppo["batch_size"]
    PPOTrainer(cfg, profile, policy, value, rewards, tok, prompts, Path(args["output_dir"])).train()


def measure(name: str, stage: str, folder: Path) -> dict:
    """In this (fresh) process: the stage's peak above the baseline, in bytes.

    A small run of the same stage goes first, so the modules a trainer imports on its first use,
    and the caches it fills once, are in the baseline: the planner counts tensors, not code.
    """
    import gc

    from course_lib.config import load_profile
    from course_lib.models import load_tokenizer

    profile = case_profile(name, folder)
    tok = load_tokenizer(profile)
    warm_up = load_profile("tiny-cpu", {"model.name": str(folder), **CASES[name][1], **WARM_UP})
    run_stage(stage, warm_up, tok, dict(PPO, batch_size=2, minibatch_size=1, max_new_tokens=4))
    gc.collect()
    baseline = _memory_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again at the current RSS
    started = time.time()
    run_stage(stage, profile, tok, PPO)
    peak = _memory_kib("VmHWM")
    prompt_tokens = len(tok.apply_chat_template(QUESTION, tokenize=True, add_generation_prompt=True, return_dict=False))
    return {"measured_bytes": (peak - baseline) * 1024, "baseline_bytes": baseline * 1024,
            "seconds": round(time.time() - started, 1), "ppo_prompt_tokens": prompt_tokens}


def predict(name: str, stage: str, folder: Path, prompt_tokens: int) -> dict:
    """The planner's prediction for the same run, planned for a CPU."""
    from course_lib.memory import MemoryPlanConfig, plan_memory

    profile = case_profile(name, folder)
    if stage == "ppo":
        config = MemoryPlanConfig(stage="ppo", device="cpu", seq_length=prompt_tokens + PPO["max_new_tokens"],
                                  ppo_batch_size=PPO["batch_size"], ppo_minibatch_size=PPO["minibatch_size"],
                                  max_new_tokens=PPO["max_new_tokens"], reward_members=PPO["reward_members"])
    else:
        config = MemoryPlanConfig(stage=stage, device="cpu")
    return plan_memory(profile, model=str(folder), config=config).to_dict()


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"


def write_markdown(results: dict) -> None:
    lines = [
        "# The memory planner against measured peaks",
        "",
        "`course_lib.memory.plan_memory` predicts a stage's peak memory from the model's config and the profile "
        "(weights, LoRA, gradients, optimizer state, activations, and the other models the stage holds). "
        "Here its CPU predictions sit next to the peaks measured on this machine, for tiny Llama models.",
        "",
        f"Reproduce: `{results['command']}` (about {results['wall_seconds'] / 60:.0f} minutes on 2 cores).",
        f"Machine: {results['machine']}.",
        "",
        "What is measured: each (model, stage) runs in a fresh process; after the imports and a small warm-up run of "
        "the same stage (so lazily imported modules and one-time caches are not counted), the process's "
        "resident memory is the baseline and the kernel's high-water mark is reset; the stage then loads its model(s), "
        f"builds its trainer (the kit's builders' settings) and takes {STEPS} optimizer steps. Measured = the high-water "
        "mark (`VmHWM`) minus the baseline, so it counts everything the stage added, tensors and allocator overhead alike. "
        "Sequences are built to be exactly the profile's `max_seq_length` (PPO: its prompt plus `max_new_tokens`), "
        "the planner's worst case, so both count the same thing.",
        "",
        "| model | params | stage | batch x tokens | predicted MiB | measured MiB | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['model']} | {row['parameters'] / 1e6:.1f}M | {row['stage']} | {row['shape']} | "
                     f"{row['predicted_mib']:.0f} | {row['measured_mib']:.0f} | {row['error']:+.0%} |")
    within = sum(abs(r["error"]) <= TOLERANCE for r in results["rows"])
    lines += ["", f"{within} of {len(results['rows'])} predictions are within {TOLERANCE:.0%} of the measured peak.", ""]
    lines += results["discussion"]
    MD_OUT.write_text("\n".join(lines) + "\n")


DISCUSSION = [
    "## Where the planner is off, and why",
    "",
    "- The measured peak includes what is not a tensor (the allocator's overhead, the trainer's own objects). The "
    "warm-up run puts the one-time costs (modules a trainer imports on first use, caches) in the baseline; without it, "
    "an earlier run of this script measured 30-40 MiB more per stage, and the planner fell 29% and 39% short on PPO "
    "with the 2.6M-parameter model, whose peak is small.",
    "- Activations are counted from what autograd keeps for each block, tensor by tensor: tensors that share one "
    "storage are counted twice (the planner then over-predicts) and temporaries inside an operation (a kernel's "
    "workspace, the transient copies of a backward) not at all (it under-predicts). On these runs the two leave "
    "the planner between -9% and +13% of the measurement, over-predicting on the wider model.",
    "- DPO: TRL 1.16 runs the reference's no-grad pass *after* the policy's forward, while the policy's activations "
    "are kept, so the reference adds its transient logits to the peak; `precompute_ref_log_probs` removes that pass "
    "(the planner's `MemoryPlanConfig.precompute_ref_log_probs`).",
    "- PPO: the replies may end before `max_new_tokens` (an end-of-turn token), and the planner assumes they do not, "
    "so its prediction is an upper bound there. The kit's PPO holds 2 + `reward_members` copies of the SFT weights "
    "(policy and reference share one; the value model and each reward member load their own), which the planner "
    "counts; for gpu-qlora's 0.5B model in 4 bits that is about 0.46 GB per frozen reward member and 0.73 GB for the "
    "value model (prepared for training, its embedding in fp32).",
    "- On a GPU the planner swaps the CPU's full logits for TRL's fused LM head (logit tiles) and adds 10% for the "
    "caching allocator's fragmentation and 1 GiB for the CUDA context; those parts are not checked by this CPU run.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="models to run (default: all)")
    parser.add_argument("--stages", nargs="*", default=list(STAGES), help="stages to run (default: all)")
    opts = parser.parse_args(argv)
    if opts.case:  # a worker: one measurement, printed as JSON on the last line
        print(json.dumps(measure(opts.case, opts.stage, Path(opts.folder))))
        return 0
    started, rows = time.time(), []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO), **LIVE_MEMORY_ENV}
    with tempfile.TemporaryDirectory(prefix="memory_planner_") as tmp:
        for name in opts.cases:
            folder = build_model(name, Path(tmp) / name)
            for stage in opts.stages:
                out = subprocess.run([sys.executable, __file__, "--case", name, "--stage", stage, "--folder", str(folder)],
                                     capture_output=True, text=True, env=env, timeout=600)
                if out.returncode != 0:
                    raise SystemExit(f"{name} {stage} failed:\n{out.stderr[-3000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                plan = predict(name, stage, folder, got["ppo_prompt_tokens"])
                profile = case_profile(name, folder)
                seq = profile.model.max_seq_length
                batch = profile.training.per_device_batch_size
                shape = {"sft": f"{batch} x {seq}", "reward": f"{2 * batch} x {seq}", "dpo": f"{2 * batch} x {seq}",
                         "ppo": f"{PPO['batch_size']} x {got['ppo_prompt_tokens'] + PPO['max_new_tokens']}"}[stage]
                row = {"model": name, "stage": stage, "parameters": plan["parameters"], "shape": shape,
                       "gradient_checkpointing": profile.training.gradient_checkpointing,
                       "predicted_mib": plan["total_gib"] * 1024, "measured_mib": got["measured_bytes"] / 2**20,
                       "parts_mib": {k: round(v / 2**20, 1) for k, v in plan["parts"].items()},
                       "seconds": got["seconds"]}
                row["error"] = (row["predicted_mib"] - row["measured_mib"]) / row["measured_mib"]
                rows.append(row)
                print(f"{name:10s} {stage:7s} predicted {row['predicted_mib']:7.0f} MiB  measured {row['measured_mib']:7.0f} MiB"
                      f"  {row['error']:+.0%}  ({got['seconds']} s)", flush=True)
    results = {"command": ".venv/bin/python benchmarks/memory_planner.py",
               "machine": machine(), "wall_seconds": round(time.time() - started, 1), "tolerance": TOLERANCE,
               "rows": rows, "discussion": DISCUSSION}
    if opts.cases == list(CASES) and opts.stages == list(STAGES):
        JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
        JSON_OUT.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
