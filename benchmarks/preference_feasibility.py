"""Can the preference stages beat SFT on tiny-cpu? DPO and RLOO against SFT, over seeds, and DPO's collapse.

For each seed: SFT and the reward model (the kit's stages), then TRL's ``DPOTrainer`` on the
curated pairs and TRL's ``RLOOTrainer`` with the kit's reward model as the reward, each from
the SFT model. Every model answers the same held-out prompts greedily; the gold judge scores
them, and the paired differences with SFT get a bootstrap 95% CI. A last run trains DPO at a
learning rate ten times too high, the failure notebook 05's break-it lab shows.

Usage::

    python benchmarks/preference_feasibility.py --seeds 0 1 2 --out docs/results/preference_feasibility.json

Figures are recorded in ``docs/preference_feasibility.md``. This is a measurement, not a test;
``tests/test_learning_signals.py`` asserts the gains with margins.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def sampled_eos_rate(model, tok, prompts, temperature: float, max_new_tokens: int, top_p: float = 1.0) -> float:
    """Share of sampled replies that end with the end-of-turn token within ``max_new_tokens``."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side, tok.padding_side = tok.padding_side, "left"
    ended = 0
    try:
        for start in range(0, len(texts), 32):
            batch = tok(texts[start:start + 32], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_p=top_p, top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            ended += int((out[:, batch["input_ids"].shape[1]:] == tok.eos_token_id).any(dim=1).sum())
    finally:
        tok.padding_side = side
    return ended / len(texts)


def distinct_2(replies: list[str]) -> float:
    """Share of distinct word bigrams among all bigrams of the replies (low: repetition, collapse)."""
    grams = [tuple(r.split()[i:i + 2]) for r in replies for i in range(max(0, len(r.split()) - 1))]
    return len(set(grams)) / max(1, len(grams))


def summarize(result: dict, baseline: dict | None, seed: int) -> dict:
    from course_lib.stats import bootstrap_ci

    out = {"gold": result["gold_score"], "by_domain": result["by_domain"], "parts": result["parts"],
           "distinct_2": distinct_2([r["response"] for r in result["rows"]])}
    if baseline is not None:
        diff = np.array([a["score"] - b["score"] for a, b in zip(result["rows"], baseline["rows"])])
        est, low, high = bootstrap_ci(diff, n_resamples=2000, seed=seed)
        out["gain"] = {"mean": est, "ci_low": low, "ci_high": high}
    return out


def dpo(run, tok, rows, seed: int, steps: int, learning_rate: float, beta: float, out_dir: Path):
    """TRL's DPOTrainer from the SFT adapter; TRL copies it into a frozen reference adapter."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    from course_lib.models import load_model
    from course_lib.stages.lm_head import use_full_logits_on_cpu

    policy = PeftModel.from_pretrained(load_model(run.profile), str(run.stage_dir("sft") / "adapter"), is_trainable=True)
    # TRL's configs default to bf16, which on this CPU runs about 20x slower than float32: say so.
    args = DPOConfig(output_dir=str(out_dir), max_steps=steps, learning_rate=learning_rate, beta=beta,
                     per_device_train_batch_size=16, max_length=run.profile.model.max_seq_length, report_to="none",
                     use_cpu=True, bf16=False, logging_steps=5, save_strategy="no", lr_scheduler_type="cosine", warmup_steps=2,
                     seed=seed, disable_tqdm=True)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    use_full_logits_on_cpu(trainer.model)
    trainer.train()
    return trainer.model, trainer.state.log_history


def rloo(run, tok, reward_model, prompts, seed: int, steps: int, learning_rate: float, beta: float,
         temperature: float, max_new_tokens: int, out_dir: Path):
    """TRL's RLOOTrainer on the merged SFT model with a fresh LoRA; the reward is the kit's reward model.

    The fresh adapter switched off is the SFT model, so the KL penalty measures the distance
    from SFT, not from the bare base (DESIGN.md, "The reference model").
    """
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from course_lib.models import load_model, lora_config
    from course_lib.stages.lm_head import use_full_logits_on_cpu
    from course_lib.stages.reward import score_conversations

    max_length = run.profile.model.max_seq_length

    def reward(prompts, completions, **kwargs):
        return score_conversations(reward_model, tok, [p + c for p, c in zip(prompts, completions)], max_length).tolist()

    merged = load_model(run.profile, str(run.stage_dir("sft") / "merged"))
    args = RLOOConfig(output_dir=str(out_dir), max_steps=steps, learning_rate=learning_rate, beta=beta,
                      num_generations=4, per_device_train_batch_size=16, max_completion_length=max_new_tokens,
                      temperature=temperature, top_p=1.0, report_to="none", use_cpu=True, bf16=False, logging_steps=5,
                      save_strategy="no", seed=seed, disable_tqdm=True, lr_scheduler_type="constant")
    trainer = RLOOTrainer(model=merged, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(prompts),
                          processing_class=tok, peft_config=lora_config(run.profile))
    use_full_logits_on_cpu(trainer.model, temperature=temperature)
    trainer.train()
    return trainer.model, trainer.state.log_history


def main() -> None:
    from course_lib.config import load_profile
    from course_lib.data import ensure_curated_data, load_records
    from course_lib.generation import balanced_sample, gold_evaluate
    from course_lib.models import load_model, load_tokenizer
    from course_lib.stages import RewardStageConfig, RunContext, SFTStageConfig, load_reward_model, run_reward, run_sft

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="runs/feasibility")
    parser.add_argument("--out", default="docs/results/preference_feasibility.json")
    parser.add_argument("--eval-prompts", type=int, default=150)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--dpo-steps", type=int, default=40)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--rloo-steps", type=int, default=30)
    parser.add_argument("--rloo-lr", type=float, default=5e-4)
    parser.add_argument("--rloo-beta", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--collapse-lr", type=float, default=5e-3)
    parser.add_argument("--collapse-steps", type=int, default=80)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dpo", "rloo", "collapse"])
    args = parser.parse_args()

    profile = load_profile("tiny-cpu")
    results: dict = {"args": vars(args), "seeds": {}}
    for seed in args.seeds:
        started = time.time()
        run = RunContext.create(Path(args.runs_dir) / f"seed{seed}", profile)
        ensure_curated_data(run.run_dir, seed=0)
        run_sft(SFTStageConfig(seed=seed, eval_prompts=0, progress=False), run)
        run_reward(RewardStageConfig(seed=seed, progress=False), run)
        tok = load_tokenizer(profile, str(run.stage_dir("sft") / "merged"))
        evals = balanced_sample(list(load_records(run.data_file("eval_prompts.jsonl"))), args.eval_prompts)
        prompts = [e["prompt"] for e in evals]
        sft_model = load_model(profile, str(run.stage_dir("sft") / "merged"), for_training=False)
        sft = gold_evaluate(sft_model, tok, evals, max_new_tokens=args.max_new_tokens)
        record = {"sft": summarize(sft, None, seed),
                  "sft_eos": {str(t): sampled_eos_rate(sft_model, tok, prompts[:90], t, args.max_new_tokens)
                              for t in (0.7, 1.0)}}
        rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in load_records(run.data_file("prefs_train.jsonl"))]
        if "dpo" not in args.skip:
            t = time.time()
            model, log = dpo(run, tok, rows, seed, args.dpo_steps, args.dpo_lr, args.dpo_beta, run.run_dir / "dpo")
            record["dpo"] = {**summarize(gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens), sft, seed),
                             "seconds": time.time() - t, "last_log": [h for h in log if "loss" in h][-1]}
        if "rloo" not in args.skip:
            t = time.time()
            train_prompts = [{"prompt": r["prompt"]} for r in rows]
            model, log = rloo(run, tok, load_reward_model(run), train_prompts, seed, args.rloo_steps, args.rloo_lr,
                              args.rloo_beta, args.temperature, args.max_new_tokens, run.run_dir / "rloo")
            record["rloo"] = {**summarize(gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens), sft, seed),
                              "seconds": time.time() - t, "last_log": [h for h in log if "loss" in h][-1]}
        if "collapse" not in args.skip and seed == args.seeds[0]:
            t = time.time()
            model, log = dpo(run, tok, rows, seed, args.collapse_steps, args.collapse_lr, args.dpo_beta,
                             run.run_dir / "dpo_collapse")
            collapsed = gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens)
            record["collapse"] = {**summarize(collapsed, sft, seed), "seconds": time.time() - t,
                                  "eos_greedy": float(np.mean([len(r["response"].split()) < args.max_new_tokens * 0.6
                                                               for r in collapsed["rows"]])),
                                  "samples": [r["response"][:200] for r in collapsed["rows"][:6]]}
        record["seconds"] = time.time() - started
        results["seeds"][seed] = record
        print(json.dumps({seed: {k: (v.get("gold"), v.get("gain")) if isinstance(v, dict) and "gold" in v else v
                                 for k, v in record.items()}}, default=str), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
