"""Does a reward model read the question? Probes after training on a run's SFT model with other settings.

Each variant trains one reward model (the stage's ``train_reward_model``) and scores the run's held-out
pairs three ways: the answer-swap probe (a prompt's own good answer against the next prompt's, by domain), the
level check (each medical prompt's good answer against the same answer at each other triage level: only the
symptom tells them apart) and the accuracy on the validation pairs.

Usage (a run whose SFT stage is done, e.g. one of ``benchmarks/preference_feasibility.py``'s)::

    python benchmarks/reward_reading.py runs/feasibility/seed0 adapter:curated:120:5e-3 whole:swaps+near:240:1e-3

A variant is ``adapter|whole:curated|swaps|swaps+near:<steps>:<learning rate>`` (``near``: the near-miss pairs). Figures are recorded in
``docs/preference_feasibility.md`` ("A reward model that reads the question").
"""
from __future__ import annotations

import argparse
import json
import time


def level_pairs(rows: list[dict]) -> list[dict]:
    """Each medical row's good answer against the same answer (the same reason) at each other level."""
    from course_lib.domains.medical import LEVELS, triage_answer, triage_reason

    out = []
    for row in rows:
        if row["domain"] != "medical":
            continue
        ref = json.loads(row["reference"])
        reason = triage_reason(ref)
        for level in LEVELS:
            if level != ref["level"]:
                out.append({**row, "chosen": [{"role": "assistant", "content": triage_answer(ref["level"], reason)}],
                            "rejected": [{"role": "assistant", "content": triage_answer(level, reason)}]})
    return out


def main() -> None:
    from course_lib.config import load_profile
    from course_lib.models import load_tokenizer
    from course_lib.stages import RewardStageConfig, RunContext
    from course_lib.stages.reward import (
        SFT_PRODUCER, answer_swap_probe, pair_margins, preference_rows, train_reward_model,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for variant in args.variants:
        form, pairs, steps, lr = variant.split(":")
        profile = load_profile("tiny-cpu", {"lora.reward": form == "adapter"})
        run = RunContext.create(args.run_dir, profile)
        cfg = RewardStageConfig(max_steps=int(steps), learning_rate=float(lr), swap_pairs=1.0 if "swaps" in pairs else 0.0,
                                near_miss_pairs=1.0 if "near" in pairs else 0.0, progress=False)
        started = time.time()
        model, _, _ = train_reward_model(cfg, run, preference_rows(run, cfg.train_file), seed=args.seed)
        seconds = time.time() - started
        tok = load_tokenizer(profile, str(run.artifact("sft", "merged", SFT_PRODUCER)))
        val, max_length = preference_rows(run, "prefs_val.jsonl"), profile.model.max_seq_length
        probe = answer_swap_probe([model], tok, val, max_length)
        print(json.dumps({"variant": variant, "seconds": round(seconds, 1), "answer_swap": probe,
                          "level_check": float((pair_margins(model, tok, level_pairs(val), max_length) > 0).mean()),
                          "validation_accuracy": float((pair_margins(model, tok, val, max_length) > 0).mean())}), flush=True)


if __name__ == "__main__":
    main()
