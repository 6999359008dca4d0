"""Decontamination: remove training records that overlap any evaluation set.

A training record is contaminated when its user turns either equal an evaluation prompt
(case and spacing aside) or share at least ``threshold`` (and ``min_hits``) of their word
13-grams (GPT-3's choice) with one evaluation prompt. Templated data shares its template text everywhere, so n-grams that
occur in more than ``max_train_doc_freq`` training records count as boilerplate and are
ignored: what is left are the specific facts (names, numbers, docstrings) a leak copies.
The report lists, per evaluation set, which of its prompts leaked and into which records.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from functools import partial
from typing import Any, Iterable, Mapping

from .dedup import shingles
from .records import canonical_text, judge_records, user_text
from .report import StepReport, summarize


class EvalIndex:
    """The n-grams and exact prompts of every evaluation set, mapped back to their records.

    Args:
        eval_sets: name -> evaluation records (any kind with user turns).
        n: words per n-gram.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[dict[str, Any]]], n: int):
        self.n = n
        self.ngram_owner: dict[str, str] = {}
        self.prompt_owner: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        for name, records in eval_sets.items():
            count = 0
            for record in records:
                count += 1
                owner = f"{name}:{record['id']}"
                text = user_text(record)
                self.prompt_owner.setdefault(canonical_text(text), owner)
                for gram in shingles(text, n):
                    self.ngram_owner.setdefault(gram, owner)
            self.sizes[name] = count


def contamination(record: dict[str, Any], index: EvalIndex, boilerplate: frozenset[str], threshold: float,
                  min_hits: int) -> str:
    """Why a training record is contaminated (``"contamination: <set>:<eval id> ..."``), or ``""``."""
    text = user_text(record)
    owner = index.prompt_owner.get(canonical_text(text))
    if owner:
        return f"contamination: {owner} (same prompt)"
    grams = shingles(text, index.n) - boilerplate
    if not grams:
        return ""
    hits = Counter(index.ngram_owner[g] for g in grams if g in index.ngram_owner)
    if not hits:
        return ""
    owner, count = hits.most_common(1)[0]  # a leak copies one evaluation item
    share = count / len(grams)
    if count >= min_hits and share >= threshold:
        return f"contamination: {owner} ({count} of {len(grams)} specific {index.n}-grams)"
    return ""


def boilerplate_ngrams(dataset, n: int, max_train_doc_freq: int) -> frozenset[str]:
    """N-grams found in more than ``max_train_doc_freq`` records: template text, not leaks."""
    doc_freq: Counter[str] = Counter()
    for record in dataset:
        doc_freq.update(shingles(user_text(record), n))
    return frozenset(g for g, c in doc_freq.items() if c > max_train_doc_freq)


def decontaminate_step(dataset, eval_sets: Mapping[str, Iterable[dict[str, Any]]], n: int = 13,
                       threshold: float = 0.5, min_hits: int = 3, max_train_doc_freq: int = 1,
                       num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Remove training records that overlap any evaluation set, and report the leaks.

    Args:
        dataset: a ``datasets.Dataset`` of training records.
        eval_sets: name -> evaluation records, e.g. ``{"eval_prompts": ..., "humaneval": ...}``.
        n: words per n-gram.
        threshold: share of a record's specific (non-boilerplate) n-grams found in one
            evaluation prompt at which it counts as contaminated.
        min_hits: fewest specific n-grams shared with that prompt (a share of tiny sets is noise).
        max_train_doc_freq: n-grams in more training records than this are boilerplate.
        num_proc: worker processes for ``datasets.map``.
    """
    index = EvalIndex(eval_sets, n)
    boilerplate = boilerplate_ngrams(dataset, n, max_train_doc_freq)
    judge = partial(contamination, index=index, boilerplate=boilerplate, threshold=threshold, min_hits=min_hits)
    kept, removed = judge_records(dataset, judge, "decontaminate", num_proc)
    leaked: dict[str, set[str]] = defaultdict(set)
    by_set: Counter[str] = Counter()
    for _, _, reason, _ in removed:
        set_name, eval_id = reason.split(" ")[1].split(":", 1)
        leaked[set_name].add(eval_id)
        by_set[set_name] += 1
    details = {
        "n": n, "threshold": threshold, "min_hits": min_hits, "max_train_doc_freq": max_train_doc_freq,
        "eval_sets": index.sizes,
        "removed_by_eval_set": dict(by_set),
        "leaked_eval_ids": {name: sorted(ids) for name, ids in leaked.items()},
    }
    return kept, summarize("decontaminate", len(dataset), len(kept), removed=removed, details=details)
