"""Which tiny base? Each candidate size and pretraining budget, then SFT, then a DPO trial, on tiny-cpu.

For one candidate recipe: build the base (``course_lib.tiny_base``, cached), run the kit's SFT
stage on the default curated data, score greedy replies to held-out prompts with the gold
judge part by part, measure how often sampled replies end, then train TRL's ``DPOTrainer``
from the SFT adapter on the curated pairs and measure the gold score's paired change, and
last the kit's reward stage (two models, as PPO uses) with its accuracy against gold and its
answer-swap probe: does a reward model on this base read the question? One
JSON line per candidate is appended to the output file; ``docs/tiny_base.md`` holds the table.

Usage::

    python benchmarks/tiny_base_sizes.py --name e2000 --shipped
    python benchmarks/tiny_base_sizes.py --name S-3000 --recipe '{"max_steps": 3000, "warmup_steps": 100}'
    python benchmarks/tiny_base_sizes.py --name M-1200 --recipe '{"max_steps": 1200, "hidden_size": 256, \\
        "num_hidden_layers": 6, "intermediate_size": 768, "learning_rate": 0.004, "warmup_steps": 60}'
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from preference_feasibility import summarize


def main() -> None:
    from course_lib.config import load_profile
    from course_lib.data import ensure_curated_data, load_records
    from course_lib.generation import balanced_sample, gold_evaluate
    from course_lib.models import load_model, load_tokenizer
    from course_lib.rl import end_of_turn_rate
    from course_lib.stages import (DPOStageConfig, RewardStageConfig, RunContext, SFTStageConfig, make_dpo_trainer,
                                   run_reward, run_sft)
    from course_lib.tiny_base import TinyBaseConfig, build_tiny_base, shipped_base_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the candidate's name in the table")
    parser.add_argument("--recipe", default="{}", help="TinyBaseConfig fields as JSON (the rest are the defaults)")
    parser.add_argument("--shipped", action="store_true", help="measure the base shipped in the package (no build)")
    parser.add_argument("--runs-dir", default="runs/base_sizes")
    parser.add_argument("--out", default="docs/results/tiny_base_sizes.jsonl")
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--dpo-steps", type=int, default=40)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--eval-prompts", type=int, default=150)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    started = time.time()
    base = shipped_base_dir() if args.shipped else build_tiny_base(TinyBaseConfig(**json.loads(args.recipe)), progress=False)
    info = json.loads((base / "build_info.json").read_text())
    profile = load_profile("tiny-cpu", {"model.name": str(base)})
    run = RunContext.create(Path(args.runs_dir) / args.name, profile)
    ensure_curated_data(run.run_dir, seed=0)
    t = time.time()
    sft_metrics = run_sft(SFTStageConfig(max_steps=args.sft_steps, eval_prompts=0, progress=False), run).metrics
    sft_seconds = time.time() - t
    tok = load_tokenizer(profile, str(run.stage_dir("sft") / "merged"))
    evals = balanced_sample(list(load_records(run.data_file("eval_prompts.jsonl"))), args.eval_prompts)
    sft_model = load_model(profile, str(run.stage_dir("sft") / "merged"), for_training=False)
    sft = gold_evaluate(sft_model, tok, evals, max_new_tokens=args.max_new_tokens)
    t = time.time()
    dpo = make_dpo_trainer(DPOStageConfig(max_steps=args.dpo_steps, learning_rate=args.dpo_lr, beta=0.1, eval_prompts=0,
                                          progress=False), run.variant("dpo"))
    dpo.train()
    model = dpo.model
    dpo_seconds = time.time() - t
    t = time.time()
    reward = run_reward(RewardStageConfig(seed=0, ensemble_size=2, progress=False), run).metrics
    reward_seconds = time.time() - t
    result = {
        "name": args.name, "recipe": info["config"], "parameters": info["parameters"],
        "pretrain_seconds": info["build_seconds"], "pretrain_final_loss": info["loss_history"][-1]["loss"],
        "sft_seconds": sft_seconds, "sft_eval_loss": sft_metrics["eval_loss"],
        "sft": summarize(sft, None, 0),
        "sft_end_of_turn": {str(temp): end_of_turn_rate(sft_model, tok, [e["prompt"] for e in evals[:90]],
                                                        temperature=temp, max_new_tokens=args.max_new_tokens)
                            for temp in (0.7, 1.0)},
        "dpo": {**summarize(gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens), sft, 0),
                "seconds": dpo_seconds},
        "reward": {"accuracy": reward["accuracy"], "answer_swap": reward["answer_swap"], "seconds": reward_seconds},
        "total_seconds": time.time() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
