"""Reference-based and task metrics: BLEU, ROUGE-L, classification scores, pass@k, diversity and length.

Each metric returns one value per item beside the aggregate where it has one, so two
variants can be compared item by item with the paired tests of :mod:`course_lib.stats`.
Introduced in ``07_evaluation``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

NO_LABEL = "none"
"""What a reply with no recognisable label is scored as: a class of its own, always wrong."""


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> dict[str, Any]:
    """Corpus BLEU and per-item sentence BLEU with sacrebleu, on a 0-100 scale.

    The default ``13a`` tokenizer (sacrebleu's, the WMT standard) splits punctuation off
    words; for code that separates ``(``, ``)``, ``:`` and ``=`` from names, so a reply that
    differs in one argument loses only a few n-grams. ``tokenize="none"`` would keep
    ``foo(x):`` as one token and score such replies near zero. Sentence BLEU uses effective
    order (n-gram orders longer than the sentence are left out), as sacrebleu recommends
    for single sentences.

    Args:
        hypotheses: one reply per item.
        references: one reference per item.
        tokenize: a sacrebleu tokenizer name.

    Returns:
        ``{"score", "per_item"}``: corpus BLEU (not the mean of the per-item scores) and the
        sentence BLEU of each item.
    """
    from sacrebleu.metrics import BLEU

    _check_same_length(hypotheses, references)
    corpus = BLEU(tokenize=tokenize).corpus_score(list(hypotheses), [list(references)])
    sentence = BLEU(tokenize=tokenize, effective_order=True)
    per_item = [sentence.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)]
    return {"score": float(corpus.score), "per_item": [float(s) for s in per_item]}


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """ROUGE-L F-measure (longest common subsequence of words) with ``rouge_score``, per item and mean.

    rouge_score lower-cases and keeps only letters and digits as tokens; no stemming.

    Args:
        hypotheses: one reply per item.
        references: one reference per item.

    Returns:
        ``{"score", "per_item"}``: the mean F-measure in [0, 1] and each item's.
    """
    from rouge_score.rouge_scorer import RougeScorer

    _check_same_length(hypotheses, references)
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    per_item = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]
    return {"score": float(np.mean(per_item)), "per_item": [float(s) for s in per_item]}


def classification_report(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str],
                          positive: str | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class sensitivity and specificity, and the confusion matrix.

    A prediction of ``None`` (no label found in the reply) becomes :data:`NO_LABEL`, which
    matches no true label: it counts as wrong, lowers the true class's sensitivity and
    is the confusion matrix's last column. For triage levels (emergency/urgent/self-care)
    or clause types; sensitivity of a class is its recall (share of its items found),
    specificity the share of the other items not put in it.

    Args:
        y_true: the gold label per item.
        y_pred: the label read from each reply, or None.
        labels: the classes, in the order of the report and the matrix.
        positive: a class whose sensitivity and specificity are also given at the top
            level (e.g. ``"emergency"``: missing one is the costly error).

    Returns:
        ``{"accuracy", "macro_f1", "per_class", "confusion_matrix", "matrix_labels"}`` plus
        ``"sensitivity"`` and ``"specificity"`` when ``positive`` is given. ``per_class``
        maps each label to ``{"sensitivity", "specificity", "support"}`` (NaN where a rate
        has no items); ``confusion_matrix`` has rows = true, columns = predicted, in the
        order of ``matrix_labels`` (``labels`` then :data:`NO_LABEL`).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, multilabel_confusion_matrix

    labels = list(labels)
    if NO_LABEL in labels:
        raise ValueError(f"{NO_LABEL!r} is reserved for replies without a label; rename that class")
    if positive is not None and positive not in labels:
        raise ValueError(f"positive class {positive!r} is not among the labels {labels}")
    _check_same_length(y_true, y_pred)
    y_true = list(y_true)
    y_pred = [NO_LABEL if p is None else p for p in y_pred]
    # Macro-F1 averages over the real classes only; NO_LABEL predictions still cost their true class recall.
    macro_f1 = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    per_class = {}
    for label, ((tn, fp), (fn, tp)) in zip(labels, multilabel_confusion_matrix(y_true, y_pred, labels=labels)):
        per_class[label] = {"sensitivity": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp),
                            "support": int(tp + fn)}
    matrix_labels = [*labels, NO_LABEL]
    report = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(macro_f1),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=matrix_labels).tolist(),
        "matrix_labels": matrix_labels,
    }
    if positive is not None:
        report.update(sensitivity=per_class[positive]["sensitivity"], specificity=per_class[positive]["specificity"])
    return report


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021).

    The chance that ``k`` samples drawn without replacement from the ``n`` include a passing
    one: ``1 - C(n - c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``
    so that large ``n`` does not overflow the binomials.

    Args:
        n: samples generated for the task.
        c: how many of them passed the tests.
        k: the budget of attempts.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every draw of k samples includes a passing one
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_table(per_task_correct_counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over tasks for several k, each task with ``n`` samples.

    Args:
        per_task_correct_counts: passing samples per task.
        n: samples per task.
        ks: the budgets to report.

    Returns:
        ``{"pass@1": ..., "pass@10": ...}`` in the order of ``ks``.
    """
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for c in per_task_correct_counts])) for k in ks}


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all word n-grams of the replies (0 to 1; 0 for no n-grams).

    Low when a policy repeats itself across or within replies (mode collapse). Words are
    whitespace-separated; n-grams do not cross reply boundaries.

    Args:
        replies: the replies.
        n: the n-gram order (2: distinct bigrams, as ``course_lib.generation.distinct_2``).
    """
    grams = [tuple(words[i : i + n]) for words in (r.split() for r in replies) for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def response_lengths(replies: Sequence[str]) -> dict[str, Any]:
    """Words per reply (whitespace-separated), with their mean and median.

    Args:
        replies: the replies (at least one).

    Returns:
        ``{"lengths", "mean", "median"}``.
    """
    if not replies:
        raise ValueError("response_lengths needs at least one reply")
    lengths = [len(reply.split()) for reply in replies]
    return {"lengths": lengths, "mean": float(np.mean(lengths)), "median": float(np.median(lengths))}


def _rate(hits: int, total: int) -> float:
    return float(hits / total) if total else float("nan")


def _check_same_length(first: Sequence[Any], second: Sequence[Any]) -> None:
    if len(first) != len(second):
        raise ValueError(f"expected one entry per item in both sequences, got {len(first)} and {len(second)}")
