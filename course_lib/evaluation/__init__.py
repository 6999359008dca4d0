"""Evaluation of trained variants: reference metrics, task metrics and judged win rates.

- :mod:`~course_lib.evaluation.metrics`: BLEU and ROUGE-L against references, accuracy,
  macro-F1, sensitivity and specificity for labels (triage levels, clause types), pass@k
  for code, distinct-n and reply lengths;
- :mod:`~course_lib.evaluation.winrate`: the win rate of one variant over another judged by
  the gold rubric, a reward model or human labels, in both orders (position flips), and
  its length-controlled version;
- :mod:`~course_lib.evaluation.humaneval`: pass@k on HumanEval (or any code prompts with
  tests) in the sandbox, after the harness has checked itself;
- :mod:`~course_lib.evaluation.variants`: the pipeline variants' cached replies turned into
  per-domain task metrics, rubric dimensions and paired score arrays.

The paired tests that say whether a difference is real live in :mod:`course_lib.stats`.
Introduced in ``07_evaluation``.
"""
from __future__ import annotations

from .metrics import (
    NO_LABEL,
    bleu,
    classification_report,
    distinct_n,
    pass_at_k,
    pass_at_k_table,
    response_lengths,
    rouge_l,
)
from .winrate import (
    Judge,
    ScoreJudge,
    gold_judge,
    labels_judge,
    length_controlled_win_rate,
    position_biased_judge,
    score_judge,
    win_rate,
)

__all__ = [
    "Judge", "NO_LABEL", "ScoreJudge", "bleu", "classification_report", "distinct_n", "gold_judge", "labels_judge",
    "length_controlled_win_rate", "pass_at_k", "pass_at_k_table", "position_biased_judge", "response_lengths",
    "rouge_l", "score_judge", "win_rate",
]
