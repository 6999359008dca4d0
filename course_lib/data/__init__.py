"""Data for the track: loading and validation, the curation pipeline, exports, data cards.

Introduced in ``01_data_curation``; the pipeline, and how to curate your own data with it,
are described in ``docs/data.md``.
"""
from __future__ import annotations

from .augment import augment_step, paraphrase, prompt_diversity
from .dedup import content_hash, exact_dedup_step, minilm_embed, near_dedup_step, semantic_dedup_step
from .decontam import decontaminate_step
from .export import check_openai_record, export_openai, to_openai
from .io import iter_records, load_records, save_records
from .normalize import normalize_step, normalize_text
from .pii import PII_TYPES, find_pii, luhn_valid, pii_step, scrub_pii
from .pipeline import (USER_SETS, CurationConfig, build_curated_data, curate, curate_labeled_preferences,
                       ensure_curated_data, load_report)
from .quality import QualityRules, quality_step
from .report import StepReport
from .schema import NEUTRAL_DOMAIN, has_reference, validate_record
from .splits import stratified_split
from .user import as_kit_record, derived_id

__all__ = [
    "NEUTRAL_DOMAIN", "PII_TYPES", "USER_SETS", "CurationConfig", "QualityRules", "StepReport", "as_kit_record",
    "augment_step", "build_curated_data", "check_openai_record", "content_hash", "curate", "curate_labeled_preferences",
    "decontaminate_step", "derived_id", "ensure_curated_data", "exact_dedup_step", "export_openai", "find_pii",
    "has_reference", "iter_records", "load_records", "load_report", "luhn_valid", "minilm_embed", "near_dedup_step",
    "normalize_step", "normalize_text", "paraphrase", "pii_step", "prompt_diversity", "quality_step",
    "save_records", "scrub_pii", "semantic_dedup_step", "stratified_split", "to_openai", "validate_record",
]
