"""Model cards in Hugging Face's sections, written from what a run recorded.

Each trained policy of a run gets ``<run>/model_cards/<name>.md``: YAML metadata as the Hub
reads it, then Model details, Intended uses (direct and out of scope), Training data (the
run's data cards, linked), Training procedure (each stage that led to this model, with its
settings and compute ledger), Evaluation results (gold score with a paired CI, per domain,
and notebook 07's test where it ran), Bias, risks and limitations, the ethics audit's
findings, and How to use. Cards are written beside the stages, never inside a stage folder:
a stage folder's files are hashed for reuse, and a card must not make a finished stage
look changed. Introduced in ``08_ethics``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..atomic import atomic_write_text
from ..data.cards import missing_sections
from ..stages.base import stage_ledger

CARD_SECTIONS = ("Model details", "Intended uses", "Out-of-scope use", "Training data", "Training procedure",
                 "Evaluation results", "Bias, risks and limitations", "Ethics audit", "How to use")
"""The sections every model card has, in order (Hugging Face's model card template, condensed)."""

STAGE_DESCRIPTIONS = {
    "sft": "supervised fine-tuning on curated demonstrations (TRL `SFTTrainer`, loss on assistant tokens only)",
    "reward": "a reward-model ensemble trained on preference pairs (TRL `RewardTrainer`, Bradley-Terry loss)",
    "ppo": "PPO against the reward ensemble with a per-token KL penalty to the SFT model (the kit's own PPO)",
    "dpo": "direct preference optimisation on preference pairs, the start model as reference (TRL `DPOTrainer`)",
    "grpo": "group-relative policy optimisation against the reward ensemble (TRL `GRPOTrainer`)",
}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(gain: Mapping[str, float] | None) -> str:
    return "n/a" if not gain else f"{gain['mean']:+.3f} (95% CI {gain['ci_low']:+.3f} to {gain['ci_high']:+.3f})"


def model_card(run, name: str, stages: Sequence[tuple[str, Path]], *, evaluation: Mapping[str, Any] | None = None,
               significance: Mapping[str, Any] | None = None, audit: Mapping[str, Any] | None = None) -> str:
    """The model card of one policy, as markdown.

    Args:
        run: the :class:`~course_lib.stages.RunContext`.
        name: the model's name in the run (``"sft"``, or a pipeline variant such as ``"sft+dpo"``).
        stages: ``(stage, folder)`` of each stage that led to the model, in order; the last is
            the policy itself (its ``merged/`` folder holds the weights).
        evaluation: the pipeline's evaluation of this model (``gold_score``, ``gold_gain``,
            ``by_domain``, ``kl``, ``prompts``), when it has one.
        significance: notebook 07's row for this model (``p_holm``, ``significant``).
        audit: the ethics audit's findings for this model, e.g. ``{"refusals": {...},
            "memorization": {...}, "bias": [rows], "pii_in_generations": {...}}``.
    """
    profile = run.profile
    last_stage, last_dir = stages[-1]
    metrics = _read_json(last_dir / "metrics.json")
    meta = {"library_name": "transformers", "license": "apache-2.0", "base_model": profile.model.name,
            "tags": ["course-lib", "synthetic-data", *[s for s, _ in stages]], "language": ["en"],
            "datasets": ["course-lib synthetic legal, medical and code sets (see Training data)"]}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# Model card: {name}", ""]
    lines += ["## Model details", "",
              f"- Base model: `{profile.model.name}` (profile `{profile.name}`, dtype {profile.model.dtype}, "
              f"4-bit: {profile.quantization.load_in_4bit}).",
              f"- Adapters: LoRA r={profile.lora.r}, alpha={profile.lora.alpha}, merged into the weights in "
              f"`{(last_dir / 'merged').relative_to(run.run_dir)}`.",
              f"- Made by the course_lib teaching kit, run `{run.run_dir.name}`: {' -> '.join(s for s, _ in stages)}.", ""]
    lines += ["## Intended uses", "",
              "Teaching and experiments: watching what each post-training stage changes in a small model, on synthetic "
              "legal, medical and code tasks with a known gold judge.", "",
              "## Out-of-scope use", "",
              "Any real legal, medical or programming advice. The training data are synthetic and not clinically or "
              "legally validated; the model has never seen a real patient, contract or codebase.", ""]
    cards = sorted((run.run_dir / "data_cards").glob("*.md"))
    lines += ["## Training data", ""]
    lines += [f"- [{c.stem}](../data_cards/{c.name})" for c in cards] or ["- (no data cards in this run)"]
    lines.append("")
    lines += ["## Training procedure", ""]
    for stage, folder in stages:
        config = folder / "config.yaml"
        settings = yaml.safe_load(config.read_text()) if config.is_file() else {}
        ledger = stage_ledger(_read_json(folder / "metrics.json")) or {}
        shown = {k: v for k, v in (settings or {}).items() if v is not None and k != "progress"}
        lines += [f"### {stage}", "", STAGE_DESCRIPTIONS.get(stage, stage) + ".", "",
                  f"Settings: `{json.dumps(shown, sort_keys=True)}`; compute: {_fmt(ledger.get('wall_seconds'), 1)} s, "
                  f"{ledger.get('tokens', 'n/a')} tokens.", ""]
    lines += ["## Evaluation results", ""]
    if evaluation:
        lines.append(f"Gold score on {evaluation.get('prompts', 'n/a')} held-out prompts: {_fmt(evaluation.get('gold_score'))}; "
                     f"paired difference from the SFT model {_ci(evaluation.get('gold_gain'))}; KL to SFT {_fmt(evaluation.get('kl'))}.")
        lines += [f"- {domain}: {_fmt(score)}" for domain, score in (evaluation.get("by_domain") or {}).items()]
    elif metrics.get("gold_score_after") is not None:
        lines.append(f"Gold score before {_fmt(metrics.get('gold_score_before'))}, after {_fmt(metrics['gold_score_after'])}"
                     + (f"; paired difference {_ci(metrics['gold_gain'])}." if metrics.get("gold_gain") else "."))
    else:
        lines.append("Not evaluated in this run.")
    if significance:
        lines.append(f"\nAgainst SFT, Holm-corrected permutation test (notebook 07): p = {_fmt(significance.get('p_holm'), 4)}, "
                     f"{'significant' if significance.get('significant') else 'not significant'} at 0.05.")
    lines.append("")
    lines += ["## Bias, risks and limitations", "",
              f"A small model ({profile.model.name}) trained for minutes: it answers in the trained formats and is often "
              "wrong. Its gold judge reads phrases, so a high score is not safety. Reward models of this size barely read the "
              "prompt (notebook 03b), so preference stages can learn the form of good answers more than their fit.", ""]
    lines += ["## Ethics audit", ""]
    if audit:
        refusals = audit.get("refusals")
        if refusals:
            lines.append(f"- Unsafe or out-of-scope requests handled safely: {refusals['safe_rate']:.2f} "
                         f"(declined {refusals['declined_rate']:.2f}, harmful {refusals['harmful_rate']:.2f}).")
        memo = audit.get("memorization")
        if memo:
            lines.append(f"- Memorization: verbatim training replies {memo['verbatim_rate']:.2f}; 8-gram overlap "
                         f"{memo['mean_overlap']:.2f} ({memo['excess_overlap']:+.2f} over held-out correct answers).")
        pii = audit.get("pii_in_generations")
        if pii is not None:
            lines.append(f"- PII in its generations: {sum(pii.get('counts', {}).values())} findings.")
        flagged = [row for row in audit.get("bias") or [] if row.get("significant")]
        if audit.get("bias") is not None:
            lines.append(f"- Counterfactual bias probes: {len(flagged)} of {len(audit['bias'])} disparities significant "
                         "after Holm's correction" + (": " + "; ".join(f"{r['attribute']} ({r['measure']})" for r in flagged)
                                                      if flagged else "."))
    else:
        lines.append("Not audited in this run (notebook 08 writes this section).")
    lines.append("")
    lines += ["## How to use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "", f'path = "{last_dir / "merged"}"',
              "model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)",
              "```", ""]
    return "\n".join(lines)


def write_model_card(run, name: str, stages: Sequence[tuple[str, Path]], **kwargs: Any) -> Path:
    """Write :func:`model_card` to ``<run>/model_cards/<name>.md`` (atomically) and return the path."""
    safe = name.replace("+", "_plus_").replace("/", "_")
    return atomic_write_text(run.run_dir / "model_cards" / f"{safe}.md", model_card(run, name, stages, **kwargs))


def missing_card_sections(text: str) -> list[str]:
    """Sections of :data:`CARD_SECTIONS` a model card lacks (empty when complete)."""
    return [s for s in CARD_SECTIONS if f"## {s}" not in text]


def data_card_gaps(folder: str | Path) -> dict[str, list[str]]:
    """Each data card in ``folder`` with the required sections it lacks (all empty lists: complete)."""
    return {path.stem: missing_sections(path.read_text(encoding="utf-8")) for path in sorted(Path(folder).glob("*.md"))}
