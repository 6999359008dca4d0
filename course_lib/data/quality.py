"""Quality filters: answers too short or too long, degenerate repetition, malformed chat turns,
preference pairs whose two replies are the same.

Schema validation (at load) rejects what is *structurally* broken; these filters drop
records that are well-typed but bad to train on. Each dropped record gets one reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .records import canonical_text, filter_with_reasons
from .report import StepReport

TEMPLATE_MARKUP = re.compile(r"<\|(?:im_start|im_end|eot_id|start_header_id|end_header_id|endoftext)\|>|\[/?INST\]")
"""Chat-template tokens that must never appear inside a message's text."""
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the quality filters.

    Attributes:
        min_answer_words: fewest words an assistant answer may have.
        max_answer_words: most words an assistant answer may have.
        max_repeated_ngram_share: largest share of an answer's word 3-grams that repeat an earlier one.
    """

    min_answer_words: int = field(default=2, metadata={"help": "fewest words per assistant answer"})
    max_answer_words: int = field(default=200, metadata={"help": "most words per assistant answer"})
    max_repeated_ngram_share: float = field(default=0.5, metadata={"help": "largest repeated 3-gram share"})

    def __post_init__(self) -> None:
        if not 0 <= self.min_answer_words < self.max_answer_words:
            raise ValueError(f"need 0 <= min_answer_words < max_answer_words, got "
                             f"{self.min_answer_words} and {self.max_answer_words}")
        if not 0 < self.max_repeated_ngram_share <= 1:
            raise ValueError(f"max_repeated_ngram_share must be in (0, 1], got {self.max_repeated_ngram_share}")


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams of ``text`` that already occurred earlier in it."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def turn_problem(messages: list[dict[str, str]], must_end_with_assistant: bool) -> str:
    """Why a conversation's turns are malformed, or ``""`` if they are fine.

    Fine: an optional leading system turn, then user and assistant alternating, starting
    with the user (and ending with the assistant where an answer is expected).
    """
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        return "malformed turns: system turn after the start"
    body = roles[1:] if roles and roles[0] == "system" else roles
    if not body or body[0] != "user":
        return "malformed turns: does not start with the user"
    for prev, cur in zip(body, body[1:]):
        if prev == cur:
            return f"malformed turns: two {cur} turns in a row"
    if must_end_with_assistant and body[-1] != "assistant":
        return "malformed turns: no final assistant answer"
    for m in messages:
        if TEMPLATE_MARKUP.search(m["content"]):
            return "malformed turns: chat-template markup inside a message"
    return ""


def _same_reply(chosen: list[dict[str, str]], rejected: list[dict[str, str]]) -> bool:
    """Whether two replies say the same, case and spacing aside."""
    def text(reply: list[dict[str, str]]) -> str:
        return canonical_text("\n".join(m["content"] for m in reply))

    return text(chosen) == text(rejected)


def quality_problem(record: dict[str, Any], rules: QualityRules) -> str:
    """Why a record fails the quality filters, or ``""``."""
    if "messages" in record:
        problem = turn_problem(record["messages"], must_end_with_assistant=True)
        answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    else:
        problem = turn_problem(record["prompt"], must_end_with_assistant=False)
        if not problem and record["prompt"][-1]["role"] != "user":
            problem = "malformed turns: the prompt does not end with the user"
        # A rejected reply may be short or repetitive: that is what the pair teaches.
        # Only the chosen reply must meet the length and repetition rules.
        answers = [m["content"] for m in record.get("chosen") or []]
        both = answers + [m["content"] for m in record.get("rejected") or []]
        if not problem and any(TEMPLATE_MARKUP.search(a) for a in both):
            problem = "malformed turns: chat-template markup inside a message"
        if not problem and record.get("chosen") and _same_reply(record["chosen"], record["rejected"]):
            problem = "identical pair: chosen equals rejected, so it teaches no preference"
    if problem:
        return problem
    for answer in answers:
        words = len(answer.split())
        if words < rules.min_answer_words:
            return f"too short: {words} words"
        if words > rules.max_answer_words:
            return f"too long: {words} words"
        share = repeated_ngram_share(answer)
        if share > rules.max_repeated_ngram_share:
            return f"repetition: {share:.0%} of 3-grams repeat"
    return ""


def quality_step(dataset, rules: QualityRules | None = None, num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Drop records that fail :func:`quality_problem`.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        rules: the thresholds (defaults when None).
        num_proc: worker processes for ``datasets.map``.
    """
    rules = rules or QualityRules()
    return filter_with_reasons(dataset, partial(quality_problem, rules=rules), "quality", num_proc)
