"""The synthetic world: three domains, their seed data, and a gold judge for each.

``gold_score(domain, reference, response)`` is the ground truth of the kit: simulated
annotators label pairs from it, the learned reward model is compared with it, and every
stage is evaluated on it. Introduced in ``01_data_curation``; the rubric is documented
in ``docs/data.md``.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from . import code, legal, medical
from .base import FLAW_KINDS, Task
from .judge import GOLD_TIE_MARGIN, JudgeResult, parse_reference, preference
from .seeds import SeedSets, build_seed_sets

DOMAINS = ("legal", "medical", "code")
"""The kit's domains, in the order every report lists them."""

_MODULES = {"legal": legal, "medical": medical, "code": code}


def domain_module(domain: str):
    """The module implementing ``domain`` (its generator and its rubric)."""
    try:
        return _MODULES[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}") from None


def gold_score(domain: str, reference: str | Mapping[str, Any], response: str) -> JudgeResult:
    """Score one response with the domain's gold judge.

    Args:
        domain: ``"legal"``, ``"medical"`` or ``"code"``.
        reference: the record's ``reference`` (a JSON string, or the parsed dict).
        response: the assistant's text.

    Returns:
        A :class:`JudgeResult` with ``score`` in [0, 1] and its ``parts``.
    """
    return domain_module(domain).gold_score(reference, response)


def gold_scores(items: Sequence[tuple[str, str | Mapping[str, Any], str]]) -> list[JudgeResult]:
    """Score many ``(domain, reference, response)`` triples with :func:`gold_score`, two at a time.

    The code judge mostly waits for its sandboxed run; from two threads, two runs go at once, one per
    core (the sandbox keeps a broker for each). The scores are those of :func:`gold_score`, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda item: gold_score(*item), items))


def gold_preference(domain: str, reference: str | Mapping[str, Any], first: str, second: str,
                    tie_margin: float = GOLD_TIE_MARGIN) -> int:
    """Which of two replies the gold judge prefers: +1 the first, -1 the second, 0 a tie.

    The one definition of a gold preference: simulated annotators, the reward model's
    accuracy and every win rate use it.
    """
    return preference(gold_score(domain, reference, first).score, gold_score(domain, reference, second).score, tie_margin)


def near_miss(domain: str, reference: str | Mapping[str, Any], good: str, other_reference: str | Mapping[str, Any],
              rng: random.Random) -> str | None:
    """A reply in the good answer's form that gets wrong what only the question decides, or None.

    Medical: the same answer at another triage level (the curated ``wrong`` flaw only ever under-triages);
    code: the same function under another prompt's name. Legal has none beyond its curated ``wrong``
    flaw (a confusable clause type). The reward stage sets them against the good answer
    (``RewardStageConfig.near_miss_pairs``).

    Args:
        domain: the prompt's domain.
        reference: its reference (a JSON string or the parsed dict).
        good: its good answer.
        other_reference: the reference of another prompt of the same domain.
        rng: the source of randomness.
    """
    make = getattr(domain_module(domain), "near_miss", None)
    if make is None:
        return None
    return make(parse_reference(reference), good, parse_reference(other_reference), rng)


def form_slip(domain: str, reference: str | Mapping[str, Any], good: str) -> str | None:
    """The good answer without the habit its domain's demonstrations most often lack, or None.

    Medical: without the disclaimer; code: without the code block; legal has none. Set against a near
    miss (:func:`near_miss`), it asks the order the gold judge keeps: a wrong fact costs more than a
    missing habit (the reward stage's ``fact_over_form`` probe).

    Args:
        domain: the prompt's domain.
        reference: its reference (a JSON string or the parsed dict).
        good: its good answer.
    """
    make = getattr(domain_module(domain), "form_slip", None)
    return None if make is None else make(parse_reference(reference), good)


def without_form(domain: str, answer: str) -> str | None:
    """Any answer less its domain's habit (the disclaimer, the code block), or None when it has none.

    Where :func:`form_slip` takes a good answer's habit away, this takes a near miss's: the reward stage
    sets the near miss above it, so that the habit keeps its value where the fact is wrong
    (``RewardStageConfig.fact_over_form_pairs``).

    Args:
        domain: the answer's domain (legal has no such habit: always None).
        answer: the answer.
    """
    strip = getattr(domain_module(domain), "without_form", None)
    return None if strip is None else strip(answer)


def domain_corpus_text(seed: int = 0, chars_per_domain: int = 100_000) -> str:
    """Prompt-side domain text for the tiny model's tokenizer and pretraining corpus.

    Instructions, system prompts, clause texts, symptom descriptions, task statements and
    standard-library signatures with docstrings; never the gold answers. Deterministic.

    Args:
        seed: seed of the generators.
        chars_per_domain: about how many characters each domain contributes.
    """
    rng = random.Random(f"corpus-{seed}")
    chunks: list[str] = []
    for name in DOMAINS:
        module = _MODULES[name]
        chunks.extend(module.SYSTEM_PROMPTS)
        size = 0
        while size < chars_per_domain:
            text = module.sample_task(rng).prompt[-1]["content"]
            chunks.append(text)
            size += len(text) + 2
    chunks.extend(f["prompt_code"] for f in code.stdlib_functions())
    return "\n\n".join(chunks) + "\n"


def domain_knowledge_text(seed: int = 0, chars_per_domain: int = 150_000) -> str:
    """What a base model would have read about the domains: textbook prose and documented code.

    Clause types explained with an example, symptoms with their triage level and the action
    it needs, small documented Python functions. Drawn from the domains' generators with
    their own seed, in prose rather than the assistant's answer format; part of the tiny
    base's pretraining corpus, so that SFT teaches the assistant's behaviour, not the world.

    Args:
        seed: seed of the generators.
        chars_per_domain: about how many characters each domain contributes.
    """
    rng = random.Random(f"knowledge-{seed}")
    chunks: list[str] = []
    for name in DOMAINS:
        size = 0
        while size < chars_per_domain:
            text = _MODULES[name].knowledge_document(rng)
            chunks.append(text)
            size += len(text) + 2
    return "\n\n".join(chunks) + "\n"


__all__ = [
    "DOMAINS", "FLAW_KINDS", "GOLD_TIE_MARGIN", "JudgeResult", "SeedSets", "Task", "build_seed_sets",
    "domain_corpus_text", "domain_knowledge_text", "domain_module", "form_slip", "gold_preference", "gold_score",
    "gold_scores",
    "near_miss", "preference", "without_form",
]
