"""Exports for PPO at cluster scale: verl's RL Parquet and OpenRLHF's JSONL, with the gold judge as reward.

The kit's own PPO (notebook 04) is one process on one device. To run PPO on many GPUs, verl and
OpenRLHF read prompts (and, for OpenRLHF's reward-model and DPO trainers, preference pairs) in
their own formats. :func:`export_rl` writes a run's curated data in them, and a ``reward.py``
beside that scores replies with the kit's gold judge, so the rule-based reward the kit measures
with is the one they train on. ``docs/scaling.md`` has the commands.

verl, one Parquet row per prompt (the fields of ``examples/data_preprocess/gsm8k.py`` and, for a
reward model instead of a rule, ``full_hh_rlhf.py`` in volcengine/verl; read by ``RLHFDataset`` in
``verl/utils/dataset/rl_dataset.py``)::

    data_source   "course_lib/<domain>"             the reward function's dispatch key
    prompt        [{"role", "content"}, ...]        chat messages; verl applies the chat template
    ability       "<domain>"
    reward_model  {"style": "rule", "ground_truth": <the record's reference JSON>}
                  ({"style": "model", "ground_truth": ""} for a record without a reference)
    extra_info    {"split", "index", "id", "domain"}

verl's reward manager (``verl/workers/reward_manager/naive.py``) calls
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)``: :func:`compute_score`.

OpenRLHF, JSONL (``openrlhf/datasets/prompts_dataset.py``, ``reward_dataset.py``; keys named on
its command line, ``--data.input_key`` etc. since v0.10.2, ``--input_key`` before):

- prompts: ``{"prompt": [messages], "label": "{\\"domain\\", \\"reference\\"}", "datasource", "id"}``,
  read with input_key ``prompt``, label_key ``label`` and apply_chat_template;
- pairs (reward model, DPO): ``{"prompt": [messages], "chosen": [assistant], "rejected":
  [assistant], "id", "domain"}``, read with prompt_key ``prompt``, chosen_key ``chosen``,
  rejected_key ``rejected`` and apply_chat_template (it templates prompt + chosen and cuts the
  prompt off, so the lists must be the TRL conversational ones the kit writes).

OpenRLHF loads ``reward_func(queries, prompts, labels)`` from the file named by
``--reward.remote_url`` (``openrlhf/utils/agent.py``): :func:`reward_func`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from ..atomic import atomic_path, atomic_write_jsonl, atomic_write_text
from ..errors import DataError, MissingArtifactError
from .io import iter_records
from .pipeline import OUTPUT_FILES
from .records import clean_messages
from .schema import has_reference

DATA_SOURCE_PREFIX = "course_lib/"
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")
"""End-of-turn markers of common chat templates: OpenRLHF hands the reward the decoded text with them."""

REWARD_FILE = """\"\"\"The kit's gold judge as a reward for verl and OpenRLHF (written by course_lib.data.rl_export).

verl:      custom_reward_function.path=<this file> custom_reward_function.name=compute_score
OpenRLHF:  --reward.remote_url <this file>    (before v0.10.2: --remote_rm_url <this file>)
course_lib must be installed where the reward runs.
\"\"\"
from course_lib.data.rl_export import compute_score, reward_func

__all__ = ["compute_score", "reward_func"]
"""


def to_verl_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """One prompt or preference record as a row of verl's RL dataset (its prompt only).

    Args:
        record: a validated kit record with a ``prompt``.
        split: ``train`` or ``val``, kept in ``extra_info``.
        index: the row's position, kept in ``extra_info`` (verl reads it as the sample index).
    """
    rule = has_reference(record)  # a user's own record may carry none: a reward model must score it
    return {
        "data_source": DATA_SOURCE_PREFIX + record["domain"],
        "prompt": clean_messages(record["prompt"]),
        "ability": record["domain"],
        "reward_model": {"style": "rule" if rule else "model", "ground_truth": record["reference"]},
        "extra_info": {"split": split, "index": index, "id": record["id"], "domain": record["domain"]},
    }


def to_openrlhf_prompt(record: dict[str, Any]) -> dict[str, Any]:
    """One prompt or preference record as an OpenRLHF PPO prompt, its gold-judge reference in ``label``."""
    return {
        "prompt": clean_messages(record["prompt"]),
        "label": json.dumps({"domain": record["domain"], "reference": record["reference"]}),
        "datasource": DATA_SOURCE_PREFIX + record["domain"],
        "id": record["id"],
    }


def to_openrlhf_pair(record: dict[str, Any]) -> dict[str, Any]:
    """One preference record as an OpenRLHF reward-model / DPO pair."""
    return {
        "prompt": clean_messages(record["prompt"]),
        "chosen": clean_messages(record["chosen"]),
        "rejected": clean_messages(record["rejected"]),
        "id": record["id"],
        "domain": record["domain"],
    }


def _verl_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("id", pa.string()),
                                  ("domain", pa.string())])),
    ])


def write_verl_parquet(records: Iterable[dict[str, Any]], path: str | Path, split: str) -> Path:
    """Write records as verl's RL Parquet (one row per prompt, typed columns), atomically.

    Args:
        records: validated prompt or preference records.
        path: the ``.parquet`` file.
        split: ``train`` or ``val``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [to_verl_row(record, split, index) for index, record in enumerate(records)]
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=_verl_schema()), tmp)
    return Path(path)


def export_rl(data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write a run's curated data for verl and OpenRLHF, with ``reward.py``, as one folder.

    The prompts are those the kit's PPO samples (``prefs_train.jsonl``) and its held-out
    evaluation prompts (``eval_prompts.jsonl``); the pairs are ``prefs_train`` and ``prefs_val``.
    The folder appears whole or not at all (an earlier export there is replaced)::

        verl/train.parquet  verl/val.parquet
        openrlhf/prompts_train.jsonl  openrlhf/prompts_eval.jsonl
        openrlhf/prefs_train.jsonl  openrlhf/prefs_val.jsonl
        reward.py

    Args:
        data_dir: the run's ``data`` folder (what notebook 01 writes).
        out_dir: the folder to write.

    Returns:
        Each written file by its path inside ``out_dir``.

    Raises:
        MissingArtifactError: a curated file is missing.
        DataError: a record is malformed (file, line and field named).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    sources = {name: data_dir / OUTPUT_FILES[name] for name in ("prefs_train", "prefs_val", "eval_prompts")}
    for path in sources.values():
        if not path.is_file():
            raise MissingArtifactError("curated data", path, "notebook 01 (or course_lib.data.ensure_curated_data)")
    prefs_train = list(iter_records(sources["prefs_train"], "preference"))
    prefs_val = list(iter_records(sources["prefs_val"], "preference"))
    eval_prompts = list(iter_records(sources["eval_prompts"], "prompt"))
    with atomic_path(out_dir) as tmp:
        write_verl_parquet(prefs_train, tmp / "verl" / "train.parquet", "train")
        write_verl_parquet(eval_prompts, tmp / "verl" / "val.parquet", "val")
        atomic_write_jsonl(tmp / "openrlhf" / "prompts_train.jsonl", map(to_openrlhf_prompt, prefs_train))
        atomic_write_jsonl(tmp / "openrlhf" / "prompts_eval.jsonl", map(to_openrlhf_prompt, eval_prompts))
        atomic_write_jsonl(tmp / "openrlhf" / "prefs_train.jsonl", map(to_openrlhf_pair, prefs_train))
        atomic_write_jsonl(tmp / "openrlhf" / "prefs_val.jsonl", map(to_openrlhf_pair, prefs_val))
        atomic_write_text(tmp / "reward.py", REWARD_FILE)
        written = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    return {str(name): out_dir / name for name in written}


def _gold(domain: str, reference: str, reply: str) -> float:
    from ..domains import DOMAINS, gold_score

    if domain not in DOMAINS or not reference:
        raise DataError(f"no gold judge for domain {domain!r} with reference {reference!r:.40}: records without a "
                        "reference need a reward model (verl: reward_model.enable=True)", field="reference")
    return gold_score(domain, reference, reply).score


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """verl's custom reward: the gold judge's score in [0, 1] of one decoded reply.

    Args:
        data_source: the row's ``data_source`` (``course_lib/<domain>``).
        solution_str: the reply, decoded without special tokens.
        ground_truth: the row's ``reward_model.ground_truth`` (the record's reference).
        extra_info: the row's ``extra_info`` (unused: the domain is in ``data_source``).
    """
    return _gold(data_source.removeprefix(DATA_SOURCE_PREFIX), ground_truth, solution_str)


def reply_of(query: str, prompt: str) -> str:
    """The reply inside OpenRLHF's decoded ``prompt + reply`` text, up to its first end-of-turn marker.

    Raises:
        DataError: the query does not start with its prompt.
    """
    if not query.startswith(prompt):
        raise DataError(f"the query does not start with its prompt (query begins {query[:60]!r})")
    reply = query[len(prompt):]
    cut = min((reply.find(marker) for marker in END_OF_TURN if marker in reply), default=len(reply))
    return reply[:cut].strip()


def reward_func(queries: list[str], prompts: list[str], labels: list[str]) -> dict[str, Any]:
    """OpenRLHF's custom reward: the gold judge's score of each reply (``rewards`` and ``scores``).

    Args:
        queries: the chat-templated prompt and the reply, decoded with special tokens.
        prompts: the chat-templated prompts.
        labels: each prompt's ``label`` (the domain and reference this module wrote).
    """
    import torch

    scores = []
    for query, prompt, label in zip(queries, prompts, labels):
        target = json.loads(label)
        scores.append(_gold(target["domain"], target["reference"], reply_of(query, prompt)))
    rewards = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"gold_score": rewards.mean().item()}}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.data.rl_export DATA_DIR OUT_DIR``: write the export, print its files."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.data.rl_export", description=main.__doc__)
    parser.add_argument("data_dir", help="the run's data folder, e.g. runs/tiny/data")
    parser.add_argument("out_dir", help="the folder to write, e.g. runs/tiny/rl_export")
    args = parser.parse_args(argv)
    try:
        written = export_rl(args.data_dir, args.out_dir)
    except (DataError, MissingArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
