"""Can the preference stages beat SFT on tiny-cpu? DPO, RLOO and PPO against SFT, over seeds, and DPO's collapse.

For each seed: SFT and the reward model (the kit's stages), then the DPO stage (TRL's
``DPOTrainer`` on the curated pairs, at the stage's settings unless given), TRL's ``RLOOTrainer``
and the kit's own PPO with the kit's reward model as the reward, each from the SFT model. Every model answers the same held-out prompts greedily; the gold judge scores
them, and the paired differences with SFT get a bootstrap 95% CI. A last run trains DPO at a
learning rate ten times too high, the failure notebook 05's break-it lab shows.

Usage::

    python benchmarks/preference_feasibility.py --seeds 0 1 2 --out docs/results/preference_feasibility.json
    python benchmarks/preference_feasibility.py --skip dpo rloo collapse end_of_turn --ppo-set uncertainty_penalty=1.0 --ppo-seed 10

Figures are recorded in ``docs/preference_feasibility.md``. This is a measurement, not a test;
``tests/test_learning_signals.py`` asserts the gains with margins.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def summarize(result: dict, baseline: dict | None, seed: int) -> dict:
    from course_lib.stats import paired_difference
    from course_lib.generation import distinct_2

    out = {"gold": result["gold_score"], "by_domain": result["by_domain"], "parts": result["parts"],
           "distinct_2": distinct_2([r["response"] for r in result["rows"]])}
    if baseline is not None:
        out["gain"] = paired_difference([r["score"] for r in result["rows"]], [r["score"] for r in baseline["rows"]],
                                        seed=seed)
    return out


def main() -> None:
    from course_lib.config import load_profile
    from course_lib.data import ensure_curated_data, load_records
    from course_lib.generation import balanced_sample, gold_evaluate
    from course_lib.models import load_model, load_tokenizer
    from course_lib.rl import end_of_turn_rate
    from course_lib.stages import (
        DPOStageConfig, PPOStageConfig, RewardStageConfig, RunContext, SFTStageConfig, make_dpo_trainer, make_ppo_trainer,
        run_reward, run_sft,
    )
    from course_lib.trials import rloo_trial

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="runs/feasibility")
    parser.add_argument("--out", default="docs/results/preference_feasibility.json")
    parser.add_argument("--eval-prompts", type=int, default=150)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--dpo-steps", type=int, default=None, help="None: the DPO stage's default (the profile's budget)")
    parser.add_argument("--dpo-lr", type=float, default=None, help="None: the DPO stage's default")
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--rloo-steps", type=int, default=60)
    parser.add_argument("--rloo-lr", type=float, default=2.5e-4)
    parser.add_argument("--rloo-beta", type=float, default=0.05)
    parser.add_argument("--ppo-set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="PPOStageConfig fields to change from the stage's defaults, e.g. max_steps=24 kl_coef=0.2 "
                             "uncertainty_penalty=1.0 (JSON values)")
    parser.add_argument("--ppo-seed", type=int, default=None, help="None: the pipeline's seed")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--collapse-lr", type=float, default=5e-3)
    parser.add_argument("--collapse-steps", type=int, default=80)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dpo", "rloo", "ppo", "collapse", "end_of_turn"],
                        help="end_of_turn: the SFT model's end-of-turn rates (360 sampled replies a seed)")
    args = parser.parse_args()
    ppo_set = {}
    for item in args.ppo_set:
        key, sep, value = item.partition("=")
        if not sep or key not in PPOStageConfig.__dataclass_fields__:
            parser.error(f"--ppo-set {item!r}: expected FIELD=VALUE with a PPOStageConfig field")
        try:
            ppo_set[key] = json.loads(value)
        except json.JSONDecodeError:
            ppo_set[key] = value  # a plain string, such as kl_estimator=k3

    profile = load_profile("tiny-cpu")
    results: dict = {"args": vars(args), "seeds": {}}
    for seed in args.seeds:
        started = time.time()
        run = RunContext.create(Path(args.runs_dir) / f"seed{seed}", profile)
        ensure_curated_data(run.run_dir, seed=0)
        run_sft(SFTStageConfig(seed=seed, eval_prompts=0, progress=False), run)
        if not {"rloo", "ppo"} <= set(args.skip):
            run_reward(RewardStageConfig(seed=seed, ensemble_size=2, progress=False), run)  # PPO averages two
        tok = load_tokenizer(profile, str(run.stage_dir("sft") / "merged"))
        evals = balanced_sample(list(load_records(run.data_file("eval_prompts.jsonl"))), args.eval_prompts)
        prompts = [e["prompt"] for e in evals]
        sft_model = load_model(profile, str(run.stage_dir("sft") / "merged"), for_training=False)
        sft = gold_evaluate(sft_model, tok, evals, max_new_tokens=args.max_new_tokens)
        record = {"sft": summarize(sft, None, seed)}
        if "end_of_turn" not in args.skip:
            record["sft_end_of_turn"] = {f"T{t}_max{n}": end_of_turn_rate(sft_model, tok, prompts[:90], temperature=t,
                                                                           max_new_tokens=n)
                                         for t in (0.7, 1.0) for n in (64, 96)}

        def trained(trainer):
            log = [h for h in trainer.state.log_history if "loss" in h]
            return trainer.model, log[-1] if log else {}

        def dpo(name: str, steps: int | None, learning_rate: float | None):
            """The DPO stage's trainer, trained, in a variant of the run (its folder stays apart)."""
            cfg = DPOStageConfig(seed=seed, max_steps=steps, learning_rate=learning_rate, beta=args.dpo_beta,
                                 eval_prompts=0, progress=False)
            trainer = make_dpo_trainer(cfg, run.variant(name))
            trainer.train()
            return trainer

        if "dpo" not in args.skip:
            t = time.time()
            model, last = trained(dpo("dpo", args.dpo_steps, args.dpo_lr))
            record["dpo"] = {**summarize(gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens), sft, seed),
                             "seconds": time.time() - t, "last_log": last}
        if "rloo" not in args.skip:
            t = time.time()
            model, last = trained(rloo_trial(run, seed=seed, steps=args.rloo_steps, learning_rate=args.rloo_lr,
                                             beta=args.rloo_beta, temperature=args.temperature,
                                             max_new_tokens=args.max_new_tokens, out_dir=run.run_dir / "rloo"))
            record["rloo"] = {**summarize(gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens), sft, seed),
                              "seconds": time.time() - t, "last_log": last}
        if "ppo" not in args.skip:
            t = time.time()
            ppo_seed = seed if args.ppo_seed is None else args.ppo_seed
            trainer = make_ppo_trainer(PPOStageConfig(seed=ppo_seed, progress=False, max_new_tokens=args.max_new_tokens,
                                                      temperature=args.temperature, **ppo_set), run)
            history = trainer.train()
            train_seconds = time.time() - t
            record["ppo"] = {**summarize(gold_evaluate(trainer.policy, tok, evals, max_new_tokens=args.max_new_tokens),
                                         sft, seed),
                             "seconds": train_seconds, "steps": trainer.step,
                             "trajectory": {k: [round(h[k], 4) for h in history]
                                            for k in ("reward", "gold", "kl", "eos_rate", "response_length")}}
        if "collapse" not in args.skip and seed == args.seeds[0]:
            t = time.time()
            model, _ = trained(dpo("dpo_collapse", args.collapse_steps, args.collapse_lr))
            collapsed = gold_evaluate(model, tok, evals, max_new_tokens=args.max_new_tokens)
            record["collapse"] = {**summarize(collapsed, sft, seed), "seconds": time.time() - t,
                                  "end_of_turn": end_of_turn_rate(model, tok, prompts[:90], temperature=args.temperature,
                                                                  max_new_tokens=args.max_new_tokens),
                                  "samples": [r["response"][:200] for r in collapsed["rows"][:6]]}
        record["seconds"] = time.time() - started
        results["seeds"][seed] = record
        print(json.dumps({seed: {k: (v.get("gold"), v.get("gain")) if isinstance(v, dict) and "gold" in v else v
                                 for k, v in record.items()}}, default=str), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
