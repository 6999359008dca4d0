"""Preference labeling: the widget, the crash-safe store, simulated annotators, agreement,
conversion to TRL preference rows, and active selection of the next pairs to label.

Introduced in ``03_reward_model``; workshop labeling happens in
``notebooks/labeling/label_preferences.ipynb``.
"""
from __future__ import annotations

from .active import STRATEGIES, ensemble_uncertainty, select_next
from .agreement import AgreementScore, agreement_summary, cohens_kappa, gold_agreement, krippendorff_alpha
from .annotators import CachedJudge, SimulatedAnnotator, gold_choice, require_references, simulated_panel
from .pairs import preferences_to_pairs, read_pairs, sample_pairs, validate_pair
from .preferences import TIE_POLICIES, PreferenceRows, labels_to_preferences
from .store import CHOICES, LabelStore, TornLineWarning, active_labels, parse_store
from .widget import LabelingWidget, render_message

__all__ = [
    "AgreementScore", "CHOICES", "CachedJudge", "LabelStore", "LabelingWidget", "PreferenceRows",
    "STRATEGIES", "SimulatedAnnotator", "TIE_POLICIES", "TornLineWarning", "active_labels",
    "agreement_summary", "cohens_kappa", "ensemble_uncertainty", "gold_agreement", "gold_choice", "krippendorff_alpha",
    "labels_to_preferences", "parse_store", "preferences_to_pairs", "read_pairs", "render_message", "require_references",
    "sample_pairs",
    "select_next", "simulated_panel", "validate_pair",
]
