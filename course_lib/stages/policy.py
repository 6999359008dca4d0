"""What every preference stage does after training a policy adapter: measure it against its
starting model and save it for the stages after it (PPO, DPO, GRPO)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from ..data import has_reference, load_records
from ..generation import balanced_sample, gold_evaluate
from ..stats import paired_difference

EVAL_BATCH = 64
"""Held-out prompts per generate call in :func:`before_and_after` (the stages default to 60 prompts): one call,
not four of 16, took each greedy evaluation of 60 from 3.4-4.1 s to 2.4 s on 2 cores (the same replies, 60 of 60)
and halved the KL's sampling."""


def gold_prompts(path: Path, n: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``n`` held-out prompts the gold judge can score, balanced across domains.

    A user's own prompts may carry no reference; the judge skips them (SFT and every policy
    stage record how many as ``gold_skipped_prompts``).

    Args:
        path: the held-out prompts (``eval_prompts.jsonl``).
        n: how many to take.

    Returns:
        ``(records, skipped)``: the sampled records with a reference, and how many in the file have none.
    """
    records = [dict(r) for r in load_records(path)]
    judged = [r for r in records if has_reference(r)]
    return balanced_sample(judged, n), len(records) - len(judged)


def before_and_after(policy, tokenizer, records: Sequence[dict[str, Any]], *, max_new_tokens: int, seed: int,
                     kl_temperature: float | None = None) -> dict[str, Any]:
    """The gold judge on greedy replies before (the adapter off: the starting model) and after.

    Args:
        policy: a ``peft`` model whose adapter-off state is the starting model.
        tokenizer: its tokenizer.
        records: held-out prompts with their references (none: every value is None).
        max_new_tokens: the longest reply.
        seed: seed of the bootstrap and of the KL's sampling.
        kl_temperature: also measure the KL to the starting model on replies sampled at this temperature.

    Returns:
        The metrics the stages record: ``gold_score_before``/``_after``, ``gold_gain`` (paired
        difference with a bootstrap CI), by domain, by rubric part, ``distinct_2`` before and after,
        ``mean_words_after``, ``kl``, ``eos_rate``; and ``samples`` (the first replies of each).
    """
    from ..rl import kl_to_reference

    keys = ("gold_score_before", "gold_score_after", "gold_gain", "gold_by_domain_before", "gold_by_domain_after",
            "gold_parts_before", "gold_parts_after", "distinct_2_before", "distinct_2_after", "mean_words_after",
            "kl", "eos_rate")
    if not records:
        return {**dict.fromkeys(keys), "samples": {}}
    with policy.disable_adapter():
        before = gold_evaluate(policy, tokenizer, records, max_new_tokens=max_new_tokens, batch_size=EVAL_BATCH)
    after = gold_evaluate(policy, tokenizer, records, max_new_tokens=max_new_tokens, batch_size=EVAL_BATCH)
    kl = (kl_to_reference(policy, tokenizer, records, temperature=kl_temperature, max_new_tokens=max_new_tokens, seed=seed,
                          batch_size=EVAL_BATCH) if kl_temperature else {"mean": None, "eos_rate": None})
    return {
        "gold_score_before": before["gold_score"], "gold_score_after": after["gold_score"],
        "gold_gain": paired_difference([r["score"] for r in after["rows"]], [r["score"] for r in before["rows"]], seed=seed),
        "gold_by_domain_before": before["by_domain"], "gold_by_domain_after": after["by_domain"],
        "gold_parts_before": before["parts"], "gold_parts_after": after["parts"],
        "distinct_2_before": before["distinct_2"], "distinct_2_after": after["distinct_2"],
        "mean_words_after": after["mean_words"], "kl": kl["mean"], "eos_rate": kl["eos_rate"],
        "samples": {"before": before["rows"][:12], "after": after["rows"][:12]},
    }


def save_policy(policy, tokenizer, out: Path, profile, start: Path) -> None:
    """Save the adapter (``out/adapter``) and the merged policy (``out/merged``, what later stages start from).

    Args:
        policy: the trained ``peft`` model.
        tokenizer: its tokenizer.
        out: the stage folder.
        profile: the run's profile.
        start: the merged model the adapter was trained on. With a 4-bit profile the adapter is
            merged into a 16-bit copy of it (as after SFT), not into the 4-bit weights, which would
            round the merged policy.
    """
    from ..atomic import atomic_path
    from .sft import merge_adapter

    policy.save_pretrained(out / "adapter", safe_serialization=True)
    tokenizer.save_pretrained(out / "adapter")
    if profile.quantization.load_in_4bit:
        merge_adapter(profile, out / "adapter", out / "merged", base=start)
        return
    with atomic_path(out / "merged") as tmp:
        copy.deepcopy(policy).merge_and_unload().save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
