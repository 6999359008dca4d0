"""A small folder of a user's own data in TRL's formats, as the curation and user-data tests bring it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import datasets

SEED_SIZES = {"sft_per_domain": 10, "prefs_per_domain": 10, "eval_per_domain": 10, "stdlib_functions": 0, "humaneval": 5}
"""The smallest seed build: only HumanEval (decontamination) is used when every set is the user's."""


def write_user_folder(folder: Path, extra_sft: Sequence[dict] = ()) -> dict[str, Path]:
    """A user's folder: SFT as JSONL, pairs as Parquet, prompts as a ``save_to_disk`` folder; no kit columns.

    Planted: one repeated conversation, one pair whose replies are the same, and one prompt (of
    two) that carries a medical reference, so the gold judge applies to it alone.

    Returns:
        ``CurationConfig.user_data`` for the folder.
    """
    folder.mkdir(exist_ok=True)
    qa = [("How do I reset my home router?", "Unplug it for thirty seconds, then plug it back in and wait."),
          ("Why is my laptop fan so loud?", "Dust or a busy process; clean the vents and check the task manager."),
          ("Can I reuse an old phone charger?", "Yes, if the plug fits and the output voltage matches the phone."),
          ("How often should I back up photos?", "Weekly is a good habit, with one copy kept off site."),
          ("What does a VPN actually hide?", "Your traffic from the local network, not your identity from the sites."),
          ("Is it safe to delete temp files?", "Yes, the system recreates the ones it still needs.")]
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in qa]
    sft_rows = [{"messages": c} for c in conversations] + [{"messages": conversations[0]}, *extra_sft]
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    pairs = [{"prompt": c[:1], "chosen": c[1:], "rejected": [{"role": "assistant", "content": "No idea, sorry."}]}
             for c in conversations]
    pairs.append({**pairs[0], "rejected": pairs[0]["chosen"]})  # the trial's bad pair: both replies the same
    datasets.Dataset.from_list(pairs).to_parquet(str(folder / "prefs.parquet"))
    # from_list takes its columns from the first row: the prompt with a reference comes first
    prompts = [{"prompt": [{"role": "user", "content": "A 30-year-old has had a mild headache for a day. How urgent?"}],
                "domain": "medical", "reference": json.dumps({"level": "self-care"})},
               {"prompt": [{"role": "user", "content": "How do I free up disk space?"}]}]
    datasets.Dataset.from_list(prompts).save_to_disk(str(folder / "eval_prompts"))
    return {"sft": folder / "sft.jsonl", "prefs": folder / "prefs.parquet", "eval_prompts": folder / "eval_prompts"}
