"""The ethics audit of a run: personal data, counterfactual bias, refusals, memorization, model cards.

- :mod:`~course_lib.audit.pii`: PII counts and masked examples in datasets and generations;
  detectors scored on a planted corpus (``docs/pii.md``);
- :mod:`~course_lib.audit.bias`: counterfactual probes (sex, age, origin of a name) and the
  disparities they show in reward-model scores and policy outcomes, with paired tests;
- :mod:`~course_lib.audit.safety`: unsafe and out-of-scope requests and a refusal judge;
- :mod:`~course_lib.audit.memorization`: verbatim and n-gram overlap with the training replies;
- :mod:`~course_lib.audit.model_card`: model cards in Hugging Face's sections, data-card checks.

Introduced in ``08_ethics``; ``docs/ethics.md`` describes each part and its limits.
"""
from __future__ import annotations

from .bias import build_probes, paired_disparity, probe_run, run_bias_probes
from .memorization import memorization_report
from .model_card import data_card_gaps, missing_card_sections, write_model_card
from .pii import audit_dataset, audit_texts, compare_detectors, planted_corpus, score_detector
from .safety import UNSAFE_REQUESTS, judge_refusal, refusal_audit

__all__ = [
    "UNSAFE_REQUESTS", "audit_dataset", "audit_texts", "build_probes", "compare_detectors", "data_card_gaps",
    "judge_refusal", "memorization_report", "missing_card_sections", "paired_disparity", "planted_corpus",
    "probe_run", "refusal_audit", "run_bias_probes", "score_detector", "write_model_card",
]
