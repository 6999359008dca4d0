"""Every pipeline variant scored the way the paper asks: task metrics, rubric dimensions, paired tests.

The unified pipeline (:mod:`course_lib.pipeline`) keeps, for each variant, one row per
held-out prompt: the reply, its gold score and the score's parts, and the reward models'
score. This module turns those rows into what notebook ``07_evaluation`` reports:

- :func:`task_metrics`: the domains' own measures: triage level and clause type as
  classification (macro-F1, emergency sensitivity and specificity), ROUGE-L of the
  plain-words explanation, BLEU of the code against the reference solution, tests passed,
  reply length and distinct-2;
- :func:`dimension_table`: the gold judge's parts (correctness, safety, format, concision,
  tests passed) per domain and variant, and each one's change from the baseline: which
  dimension a stage moved and which it traded away;
- :func:`paired_scores`: the per-prompt arrays the paired tests in :mod:`course_lib.stats`
  take, aligned by prompt id.

The domain measures need the prompt's reference: prompts without one (a user's own data)
count only towards reply length and distinct-2, and have no gold score to pair.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..data import has_reference
from ..domains import DOMAINS
from ..domains.code import extract_code
from ..domains.judge import parse_reference
from ..domains.legal import CLAUSE_TYPES, plain_explanation, predicted_clause_type
from ..domains.medical import LEVELS, predicted_level
from ..errors import DataError
from .metrics import bleu, classification_report, distinct_n, response_lengths, rouge_l

Rows = Sequence[Mapping[str, Any]]


def predicted_label(domain: str, reply: str) -> str | None:
    """The label a reply gives in a classification domain (triage level, clause type); None elsewhere."""
    return predicted_level(reply) if domain == "medical" else predicted_clause_type(reply) if domain == "legal" else None


def true_label(domain: str, reference: str | Mapping[str, Any]) -> str | None:
    """The gold label of a classification record (its triage level or clause type); None elsewhere."""
    ref = parse_reference(reference)
    return ref["level"] if domain == "medical" else ref["clause_type"] if domain == "legal" else None


def task_metrics(records: Mapping[str, Mapping[str, Any]], rows: Rows) -> dict[str, Any]:
    """The domains' own metrics of one variant's replies.

    Args:
        records: prompt id -> its evaluation record (``domain`` and ``reference``).
        rows: the variant's rows ``{"id", "domain", "response", "parts", ...}``.

    Returns:
        ``{"medical": {"macro_f1", "accuracy", "emergency_sensitivity", "emergency_specificity",
        "confusion_matrix", "matrix_labels"}, "legal": {"macro_f1", "accuracy", "rouge_l"},
        "code": {"bleu", "tests_passed"}, "mean_words", "distinct_2", "gold_skipped_prompts"}``:
        the domains' measures cover the prompts with a reference (a domain without any is left
        out), ``gold_skipped_prompts`` counts the others, and ``mean_words`` and ``distinct_2``
        cover every reply.
    """
    by_domain: dict[str, list[Mapping[str, Any]]] = {}
    judged = [row for row in rows if has_reference(records[row["id"]])]
    for row in judged:
        by_domain.setdefault(row["domain"], []).append(row)
    out: dict[str, Any] = {}
    for domain, labels, positive in (("medical", LEVELS, "emergency"), ("legal", CLAUSE_TYPES, None)):
        group = by_domain.get(domain, [])
        if not group:
            continue
        truth = [true_label(domain, records[r["id"]]["reference"]) for r in group]
        said = [predicted_label(domain, r["response"]) for r in group]
        # Classes neither true nor predicted on these prompts would add an F1 of 0 to the macro mean.
        seen = [label for label in labels if label in truth or label in said or label == positive]
        report = classification_report(truth, said, seen, positive)
        out[domain] = {"macro_f1": report["macro_f1"], "accuracy": report["accuracy"]}
        if positive:
            out[domain].update(emergency_sensitivity=report["sensitivity"], emergency_specificity=report["specificity"],
                               confusion_matrix=report["confusion_matrix"], matrix_labels=report["matrix_labels"])
    legal = [r for r in by_domain.get("legal", []) if "explanation" in parse_reference(records[r["id"]]["reference"])]
    if legal:
        out["legal"]["rouge_l"] = rouge_l([plain_explanation(r["response"]) for r in legal],
                                          [parse_reference(records[r["id"]]["reference"])["explanation"] for r in legal])["score"]
    code = by_domain.get("code", [])
    if code:
        out["code"] = {"bleu": bleu([extract_code(r["response"])[0] for r in code],
                                    [parse_reference(records[r["id"]]["reference"])["solution"] for r in code])["score"]}
        with_tests = [r["parts"]["tests_passed"] for r in code if "tests_passed" in r["parts"]]
        out["code"]["tests_passed"] = float(np.mean(with_tests)) if with_tests else None
    replies = [r["response"] for r in rows]
    out["mean_words"] = response_lengths(replies)["mean"]
    out["distinct_2"] = distinct_n(replies, 2)
    out["gold_skipped_prompts"] = len(rows) - len(judged)
    return out


def label_correct(records: Mapping[str, Mapping[str, Any]], rows: Rows) -> dict[str, int]:
    """1 where a classification reply names the right label, 0 where not, by prompt id (McNemar's input).

    Only classification prompts with a reference (the true label) are included.
    """
    return {r["id"]: int(predicted_label(r["domain"], r["response"]) == true_label(r["domain"], records[r["id"]]["reference"]))
            for r in rows if r["domain"] in ("medical", "legal") and has_reference(records[r["id"]])}


def paired_scores(rows_by_variant: Mapping[str, Rows], key: str = "score") -> dict[str, np.ndarray]:
    """Each variant's per-prompt ``key`` (``"score"``, ``"reward"``), aligned on the prompts all variants share.

    A prompt without a value in some variant is left out: a prompt with no reference has no
    gold ``score``, and no prompt has a ``reward`` when the pipeline had no reward stage.

    Raises:
        ValueError: when the variants were scored on different prompts (nothing to pair).
        DataError: when no prompt has a value in every variant.
    """
    ids = [r["id"] for r in next(iter(rows_by_variant.values()))]
    for name, rows in rows_by_variant.items():
        if [r["id"] for r in rows] != ids:
            raise ValueError(f"variant {name!r} was scored on other prompts than the first variant; "
                             "evaluate every variant on the same prompts (one pipeline run)")
    kept = [i for i in range(len(ids)) if all(rows[i][key] is not None for rows in rows_by_variant.values())]
    if not kept:
        raise DataError(f"none of the {len(ids)} prompts has a {key!r} in every variant: a gold 'score' needs a "
                        "prompt with a reference, a 'reward' needs a reward stage in the pipeline", field=key)
    return {name: np.array([rows[i][key] for i in kept], dtype=float) for name, rows in rows_by_variant.items()}


def dimension_table(results: Mapping[str, Mapping[str, Any]], baseline: str = "sft"):
    """The gold judge's parts per domain and variant, and each part's change from ``baseline``.

    Args:
        results: variant -> its pipeline evaluation (``"parts": {domain: {part: mean}}``).
        baseline: the variant the changes are measured from.

    Returns:
        A long ``pandas.DataFrame`` with columns ``variant, domain, dimension, score, change``.
    """
    import pandas as pd

    rows = []
    base = results[baseline]["parts"]
    for name, result in results.items():
        for domain in DOMAINS:
            for part, value in result["parts"].get(domain, {}).items():
                rows.append({"variant": name, "domain": domain, "dimension": part, "score": value,
                             "change": value - base[domain][part]})
    return pd.DataFrame(rows)
