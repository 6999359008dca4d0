"""Batched generation from chat prompts, and gold-judge evaluation of what a model says.

Introduced in ``02_sft`` (before/after generations and the gold score).
"""
from __future__ import annotations

from typing import Any, Sequence

from .data import has_reference
from .domains import JudgeResult, gold_scores


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    progress: bool = False,
) -> list[str]:
    """Generate one assistant reply per conversational prompt.

    Prompts are rendered with the chat template (generation prompt added), padded on
    the left so every row ends where generation starts, and decoded without the prompt.

    Args:
        model: a causal LM (plain or peft).
        tokenizer: its tokenizer, with a chat template.
        prompts: lists of ``{"role", "content"}`` messages, each ending with a user turn.
        max_new_tokens: longest reply.
        batch_size: prompts per ``generate`` call.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (with ``do_sample``).
        progress: show a progress bar.

    Returns:
        The replies, in the order of ``prompts``.
    """
    import torch
    from tqdm.auto import tqdm

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    replies: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="generating", disable=not progress):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                    temperature=temperature if do_sample else None, top_p=None, top_k=None,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )  # (batch, prompt_len + new)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [r.strip() for r in replies]


def balanced_sample(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` records taken round-robin across domains, so every domain is represented."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_domain.setdefault(record["domain"], []).append(record)
    queues = [list(v) for _, v in sorted(by_domain.items())]
    out: list[dict[str, Any]] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def judge_replies(records: Sequence[dict[str, Any]], replies: Sequence[str]) -> list[JudgeResult | None]:
    """The gold judge's verdict on each record's reply (:func:`course_lib.domains.gold_scores`, two at a time);
    None for a record without a reference (a user's own prompt: no gold judge)."""
    judged = iter(gold_scores([(r["domain"], r["reference"], reply) for r, reply in zip(records, replies)
                               if has_reference(r)]))
    return [next(judged) if has_reference(r) else None for r in records]


def gold_evaluate(model, tokenizer, records: Sequence[dict[str, Any]], *, max_new_tokens: int = 64, batch_size: int = 16) -> dict[str, Any]:
    """Generate for evaluation prompts and score each reply with the domain's gold judge.

    Every prompt gets a reply, and length and distinct-2 cover them all; the gold judge
    scores only the prompts that carry a reference (:func:`course_lib.data.has_reference`),
    since a user's own prompts may have none.

    Args:
        model: the model to evaluate.
        tokenizer: its tokenizer.
        records: evaluation records ``{"id", "domain", "reference", "prompt"}``.

    Returns:
        ``{"gold_score": mean, "gold_skipped_prompts", "by_domain": {domain: mean}, "parts": {domain:
        {part: mean}}, "distinct_2", "mean_words", "rows": [{"id", "domain", "response", "score", "parts"}]}``:
        the gold values cover the judged prompts (``gold_score`` is None when no prompt has a reference;
        a row without one has ``score`` and ``parts`` None) and ``gold_skipped_prompts`` counts the
        rest; ``parts`` shows which rubric dimension (correctness, safety, format, concision, tests
        passed) a stage moved; ``distinct_2`` (:func:`distinct_2`) falls when a policy collapses
        into repeating itself.
    """
    replies = generate_responses(model, tokenizer, [r["prompt"] for r in records], max_new_tokens=max_new_tokens, batch_size=batch_size)
    rows = []
    for record, reply, judged in zip(records, replies, judge_replies(records, replies)):
        row = {"id": record["id"], "domain": record["domain"], "response": reply, "score": None, "parts": None}
        if judged is not None:
            row.update(score=judged.score, parts=judged.parts)
        rows.append(row)
    scored = [row for row in rows if row["score"] is not None]
    by_domain: dict[str, list[float]] = {}
    parts: dict[str, dict[str, list[float]]] = {}
    for row in scored:
        by_domain.setdefault(row["domain"], []).append(row["score"])
        for name, value in row["parts"].items():
            parts.setdefault(row["domain"], {}).setdefault(name, []).append(value)
    return {
        "gold_score": sum(r["score"] for r in scored) / len(scored) if scored else None,
        "gold_skipped_prompts": len(rows) - len(scored),
        "distinct_2": distinct_2(replies),
        "mean_words": sum(len(r.split()) for r in replies) / max(1, len(replies)),
        "by_domain": {d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
        "parts": {d: {name: sum(v) / len(v) for name, v in p.items()} for d, p in sorted(parts.items())},
        "rows": rows,
    }


def distinct_2(replies: Sequence[str]) -> float:
    """Distinct word bigrams over all bigrams of the replies: low when a policy repeats itself (collapse)."""
    from .evaluation.metrics import distinct_n

    return distinct_n(replies, 2)
