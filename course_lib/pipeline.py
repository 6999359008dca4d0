"""The unified pipeline: stages in order from one YAML file, named ablations, cached stages.

A pipeline file names the stages with their settings, in the order they may run, and the
ablations to compare (``pipelines/unified.yaml``)::

    seed: 0
    preferences: prefs_train.jsonl      # or prefs_labeled.jsonl: the labeling widget's labels
    evaluation: {prompts: 60, max_new_tokens: 96}
    stages:
      sft: {}
      reward: {ensemble_size: 2}
      ppo: {}
      dpo: {beta: 0.1}
    ablations:
      sft: [sft]
      sft+dpo: [sft, dpo]
      sft+reward+ppo: [sft, reward, ppo]
      sft+reward+ppo+dpo: [sft, reward, ppo, dpo]

Where each stage's outputs live. The run directory's own stage folders (``runs/<name>/sft``,
``.../dpo``) are the ones the notebooks write. For each ablation, each stage's completion hash
(its config, its inputs, the kit's code) is compared with that folder's marker: equal, the
stage is reused (a cache hit: no training). Otherwise it runs in the ablation's own folder,
``runs/<name>/variants/<ablation>/``, unless the run has never finished that stage, in which
case it fills the run's own folder. A stage whose inputs changed has a new hash, so a changed
stage re-runs and so does everything downstream of it (their inputs are its outputs); a stage
stopped midway resumes from its checkpoint; stages the notebooks finished are never
overwritten. A stage that starts from a policy (DPO, and stages registered with
``start_field``) starts from the previous policy stage of its ablation.

Each ablation's final policy is then scored on held-out prompts: the gold judge (with a
paired bootstrap CI of the difference with the SFT model), the reward models' mean score and
the KL to the SFT model; those results are cached by the same rule. A user's own prompts may
carry no reference: the gold judge scores those that do and the results count the others;
the reward models, the KL and distinct-2 cover every prompt.

Run one from a shell (``course-pipeline pipelines/unified.yaml --run runs/tiny``), under
``accelerate launch``, or from notebook 06 with :func:`run_pipeline`. Introduced in
``06_unified_pipeline``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import atomic_write_json, atomic_write_jsonl
from .config import from_mapping, read_yaml
from .errors import ConfigError, CourseLibError, MissingArtifactError
from .fingerprint import digest_json, files_digest
from .stages import STAGES, RunContext, StageResult
from .stages.base import (
    MARKER, code_version, completed, is_main_process, join_processes, leave_processes, stage_hash, stage_ledger,
    wait_for_everyone, world_size,
)

PIPELINES_DIR = Path(__file__).resolve().parent / "pipelines"
TOP_LEVEL = {"seed", "preferences", "evaluation", "stages", "ablations", "description"}
PREFERENCE_STAGES_FIELD = "train_file"
"""The config field through which a stage reads preference pairs (set from ``preferences``)."""


@dataclass
class EvaluationSettings:
    """How each ablation's final policy is scored."""

    prompts: int = field(default=60, metadata={"help": "held-out prompts, balanced across domains", "min": 1})
    max_new_tokens: int = field(default=96, metadata={"help": "longest greedy reply", "min": 1})
    kl_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the replies the KL is measured on", "above": 0})


@dataclass
class Pipeline:
    """A parsed, validated pipeline file.

    Attributes:
        stages: stage name -> its config object, in the file's order.
        ablations: ablation name -> the stage names it runs, in order.
        evaluation: how final policies are scored.
        seed: the seed every stage gets unless its settings name one.
        source: the file it came from.
    """

    stages: dict[str, Any]
    ablations: dict[str, list[str]]
    evaluation: EvaluationSettings
    seed: int = 0
    source: str = ""

    def with_settings_of(self, run: RunContext) -> "Pipeline":
        """This pipeline with each stage's settings replaced by those its finished stage in ``run`` used.

        Notebooks 02-05 train each stage with their own parameters; notebook 06 adopts them, so
        the ablations that need those very stages reuse them instead of training them again.
        """
        stages = dict(self.stages)
        for name, cfg in self.stages.items():
            recorded = run.stage_dir(name) / "config.yaml"
            if (run.stage_dir(name) / MARKER).is_file() and recorded.is_file():
                settings = read_yaml(recorded)
                if isinstance(settings, dict) and "progress" in settings:
                    settings["progress"] = cfg.progress
                stages[name] = from_mapping(type(cfg), settings, file=str(recorded))
        return dataclasses.replace(self, stages=stages)

    def selected(self, names: list[str] | None) -> list[str]:
        """The ablations ``names`` asks for (all of them for None), checked against the file's.

        Raises:
            ConfigError: naming the first ablation the file does not define.
        """
        unknown = [n for n in names or [] if n not in self.ablations]
        if unknown:
            raise ConfigError(f"no ablation named {unknown[0]!r}; expected one of: {', '.join(self.ablations)}",
                              file=self.source, key="ablations")
        return names or list(self.ablations)

    def config_for(self, stage: str, previous_policy: str | None) -> Any:
        """The stage's config within an ablation: its ``start_field`` set to the ablation's previous policy."""
        spec = STAGES[stage]
        cfg = self.stages[stage]
        if spec.start_field and previous_policy:
            cfg = dataclasses.replace(cfg, **{spec.start_field: previous_policy})
        return cfg


def load_pipeline(path: str | Path, *, progress: bool = True, seed: int | None = None) -> Pipeline:
    """Read and validate a pipeline file.

    Args:
        path: the YAML file, or the name of one shipped in ``course_lib/pipelines`` (``unified``).
        progress: the stages' live progress bars (off for notebook 06, which shows one of its own).
        seed: replaces the file's ``seed`` (the track passes its ``SEED``).

    Raises:
        ConfigError: naming the file and the key (or the line, for a file that is not UTF-8 YAML):
            unknown stages or settings, a missing section, or an ablation whose stages come in an
            impossible order.
    """
    file = Path(path)
    if not file.suffix and not file.exists():
        file = PIPELINES_DIR / f"{path}.yaml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml")))
        raise ConfigError(f"pipeline file does not exist; expected a .yaml path or one of: {known}", file=file)
    data = read_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping with 'stages' and 'ablations', got {type(data).__name__}", file=file)
    unknown = sorted(set(data) - TOP_LEVEL, key=str)
    if unknown:
        raise ConfigError(f"unknown section; expected one of: {', '.join(sorted(TOP_LEVEL))}", file=file, key=str(unknown[0]))
    for section in ("stages", "ablations"):
        if not data.get(section):
            raise ConfigError(f"missing or empty; expected a mapping of {section}", file=file, key=section)
        if not isinstance(data[section], dict):
            raise ConfigError(f"expected a mapping of {section}, got {type(data[section]).__name__}", file=file, key=section)
    for key in ("description", "preferences"):
        if key in data and (not isinstance(data[key], str) or not data[key]):
            raise ConfigError(f"expected a non-empty string, got {data[key]!r}", file=file, key=key)
    seed = data.get("seed", 0) if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"expected an integer >= 0, got {seed!r}", file=file, key="seed")
    preferences = data.get("preferences")
    stages: dict[str, Any] = {}
    for name, settings in data["stages"].items():
        key = f"stages.{name}"
        if name not in STAGES:
            raise ConfigError(f"unknown stage; expected one of: {', '.join(STAGES)} "
                              "(or register one with course_lib.stages.register_stage)", file=file, key=key)
        if not isinstance(settings, (dict, type(None))):
            raise ConfigError(f"expected a mapping of the stage's settings ({{}} for its defaults), "
                              f"got {type(settings).__name__}", file=file, key=key)
        cls = STAGES[name].config_class
        names = {f.name for f in dataclasses.fields(cls)}
        defaults = {"seed": seed, "progress": progress, PREFERENCE_STAGES_FIELD: preferences}
        settings = {**{k: v for k, v in defaults.items() if k in names and v is not None}, **(settings or {})}
        stages[name] = from_mapping(cls, settings, file=str(file), prefix=f"{key}.")
    ablations = {}
    for name, order in data["ablations"].items():
        key = f"ablations.{name}"
        if not isinstance(order, list) or not order or not all(isinstance(s, str) for s in order):
            raise ConfigError("expected a non-empty list of stage names", file=file, key=key)
        _check_order(order, list(stages), file, key)
        ablations[str(name)] = order
    evaluation = from_mapping(EvaluationSettings, data.get("evaluation") or {}, file=str(file), prefix="evaluation.")
    return Pipeline(stages=stages, ablations=ablations, evaluation=evaluation, seed=seed, source=str(file))


def _check_order(order: list[str], declared: list[str], file: Path, key: str) -> None:
    """An ablation's stages: declared, each once, in the file's order, each after what it needs."""
    for stage in order:
        if stage not in declared:
            raise ConfigError(f"stage {stage!r} is not in 'stages' (declared: {', '.join(declared)})", file=file, key=key)
    if len(set(order)) != len(order):
        raise ConfigError("a stage appears twice", file=file, key=key)
    if [s for s in declared if s in order] != order:
        raise ConfigError(f"impossible order {order}: stages run in the order 'stages' declares them "
                          f"({', '.join(declared)})", file=file, key=key)
    if STAGES[order[0]].needs or not STAGES[order[0]].policy:
        raise ConfigError(f"an ablation starts with a stage that trains a policy from the base (sft), got {order[0]!r}",
                          file=file, key=key)
    for i, stage in enumerate(order):
        spec = STAGES[stage]
        missing = [need for need in spec.needs if need not in order[:i]]
        if missing:
            raise ConfigError(f"impossible order: {stage!r} needs {', '.join(missing)} before it", file=file, key=key)
        policies_before = [s for s in order[1:i] if STAGES[s].policy]
        if policies_before and not spec.start_field:
            raise ConfigError(f"impossible order: {stage!r} always starts from the first stage's model, so it cannot "
                              f"follow {policies_before[-1]!r}", file=file, key=key)


@dataclass
class StageOutcome:
    """What happened to one stage of one ablation."""

    ablation: str
    stage: str
    status: str  # "reused" (cache hit) or "trained"
    where: str  # the stage folder, relative to the run directory
    seconds: float
    ledger: dict[str, Any] | None


def _place(stage: str, cfg: Any, main: RunContext, variant: RunContext, dry: bool = False) -> tuple[str, RunContext]:
    """Where a stage of an ablation comes from: ``("reused" | "run", context)``.

    The hash is computed with the inputs as the ablation sees them; the run's own folder is
    reused when its marker matches, else the ablation's folder, else the stage runs: in the
    run's own folder when that has never been finished and the inputs are the run's own,
    otherwise in the ablation's folder.
    """
    inputs = STAGES[stage].inputs(cfg, variant)
    digest = stage_hash(cfg, main.profile, inputs)
    if completed(main.stage_dir(stage), digest):
        if not dry:  # a stale copy in the ablation's folder must not shadow the run's own (artifact() reads it first)
            (variant.stage_dir(stage) / MARKER).unlink(missing_ok=True)
        return "reused", main
    if completed(variant.stage_dir(stage), digest):
        return "reused", variant
    inputs_are_main = all(variant.run_dir not in p.parents for p in inputs.values())
    if inputs_are_main and not (main.stage_dir(stage) / MARKER).exists():
        return "run", main
    return "run", variant


def plan_pipeline(pipeline: Pipeline, run: RunContext, ablations: list[str] | None = None):
    """What :func:`run_pipeline` would do, without training anything: one row per ablation and stage.

    A stage downstream of one that would train is marked to train too: its inputs would change.

    Returns:
        A ``pandas.DataFrame`` with ``ablation``, ``stage``, ``action`` (reuse or train) and ``folder``.
    """
    import pandas as pd

    rows = []
    for name in pipeline.selected(ablations):
        variant = run.variant(name, copy_data=False)
        previous_policy, upstream_trains = None, False
        for stage in pipeline.ablations[name]:
            cfg = pipeline.config_for(stage, previous_policy)
            if upstream_trains:
                action, folder = "train", "(its inputs change)"
            else:
                try:
                    status, where = _place(stage, cfg, run, variant, dry=True)
                except MissingArtifactError:
                    status, where = "run", variant
                action = "reuse" if status == "reused" else "train"
                folder = str(where.stage_dir(stage).relative_to(run.run_dir))
            upstream_trains = upstream_trains or action == "train"
            rows.append({"ablation": name, "stage": stage, "action": action, "folder": folder})
            if STAGES[stage].policy:
                previous_policy = stage
    return pd.DataFrame(rows)


def run_ablation(pipeline: Pipeline, name: str, run: RunContext,
                 on_stage: Callable[[StageOutcome], None] | None = None) -> list[StageOutcome]:
    """Run (or reuse) the stages of one ablation; returns what happened to each."""
    variant = run.variant(name, copy_data=False)
    outcomes, previous_policy = [], None
    for stage in pipeline.ablations[name]:
        spec = STAGES[stage]
        cfg = pipeline.config_for(stage, previous_policy)
        status, where = _place(stage, cfg, run, variant)
        started = time.time()
        result: StageResult = spec.run(cfg, where)
        status = "reused" if status == "reused" or result.skipped else "trained"
        outcome = StageOutcome(name, stage, status, str(where.stage_dir(stage).relative_to(run.run_dir)),
                               round(time.time() - started, 1), stage_ledger(result.metrics))
        outcomes.append(outcome)
        if on_stage:
            on_stage(outcome)
        if spec.policy:
            previous_policy = stage
    return outcomes


def final_policy(pipeline: Pipeline, name: str, run: RunContext) -> Path:
    """The merged model an ablation ends with (its last policy stage)."""
    variant = run.variant(name, copy_data=False)
    last = [s for s in pipeline.ablations[name] if STAGES[s].policy][-1]
    return variant.artifact(last, "merged", f"the {last} stage of ablation {name!r}")


def evaluate_ablations(pipeline: Pipeline, run: RunContext, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Score each ablation's final policy on the same held-out prompts; cached per policy.

    Returns:
        ablation -> ``{"gold_score", "gold_gain" (vs the SFT model, paired, with CI),
        "gold_skipped_prompts", "reward", "kl" (to the SFT model, nats per reply), "by_domain",
        "parts", "distinct_2", "prompts", "policy", "rows_file"}``. The gold values cover the
        prompts with a reference; ``gold_skipped_prompts`` counts those without one, and
        ``gold_score`` and ``gold_gain`` are None when no prompt has one. ``reward`` (None without
        a reward stage), ``kl`` and ``distinct_2`` cover every prompt. ``rows_file`` (relative to
        the run) holds one row per prompt, the same prompts in the same order for every ablation:
        ``{"id", "domain", "response", "score", "parts", "reward"}`` (``score`` and ``parts`` None
        where the prompt has no reference); :func:`evaluation_rows` reads it (notebook 07's statistics).
    """
    from .data import load_records
    from .generation import balanced_sample, gold_evaluate
    from .models import load_model, load_tokenizer
    from .rl import kl_to_reference
    from .stages.reward import ensemble_scores, load_reward_ensemble
    from .stats import paired_difference

    ev = pipeline.evaluation
    names = names or list(pipeline.ablations)
    records = balanced_sample(list(load_records(run.data_file("eval_prompts.jsonl"))), ev.prompts)
    sft_dir = run.artifact("sft", "merged", "the sft stage")
    has_reward = run.has_stage("reward")
    reward_key = files_digest(run.stage_dir("reward") / MARKER) if has_reward else None
    common = {"evaluation": dataclasses.asdict(ev), "eval": files_digest(run.data_file("eval_prompts.jsonl")),
              "sft": files_digest(sft_dir), "reward": reward_key, "code": code_version()}
    tok = load_tokenizer(run.profile, str(sft_dir))
    cache_dir = run.run_dir / "pipeline" / "evaluations"
    sft_model, sft_gold, reward_models = None, None, None
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        policy_dir = final_policy(pipeline, name, run)
        digest = digest_json({**common, "policy": files_digest(policy_dir)})
        cached, rows_file = cache_dir / f"{digest}.json", cache_dir / f"{digest}.rows.jsonl"
        if cached.is_file() and rows_file.is_file():
            out[name] = {**json.loads(cached.read_text()), "cached": True}
            continue
        if sft_model is None:
            sft_model = load_model(run.profile, str(sft_dir), for_training=False)
            sft_gold = gold_evaluate(sft_model, tok, records, max_new_tokens=ev.max_new_tokens)
            reward_models = load_reward_ensemble(run) if has_reward else []
        is_sft = policy_dir.resolve() == sft_dir.resolve()
        policy = sft_model if is_sft else load_model(run.profile, str(policy_dir), for_training=False)
        gold = sft_gold if is_sft else gold_evaluate(policy, tok, records, max_new_tokens=ev.max_new_tokens)
        conversations = [r["prompt"] + [{"role": "assistant", "content": row["response"]}]
                         for r, row in zip(records, gold["rows"])]
        rewards = (ensemble_scores(reward_models, tok, conversations, run.profile.model.max_seq_length).mean(axis=0).tolist()
                   if reward_models else [None] * len(records))
        # The SFT model is its own reference: its KL is zero by definition.
        kl = {"mean": 0.0, "eos_rate": None} if is_sft else kl_to_reference(
            policy, tok, records, temperature=ev.kl_temperature, max_new_tokens=ev.max_new_tokens, seed=pipeline.seed,
            reference=sft_model)
        # Both models were judged on the same prompts (those with a reference), in the same order.
        scores, sft_scores = ([row["score"] for row in g["rows"] if row["score"] is not None] for g in (gold, sft_gold))
        result = {"policy": str(policy_dir.relative_to(run.run_dir)), "gold_score": gold["gold_score"],
                  "gold_gain": paired_difference(scores, sft_scores, seed=pipeline.seed) if scores else None,
                  "gold_skipped_prompts": gold["gold_skipped_prompts"],
                  "reward": float(np.mean(rewards)) if reward_models else None, "kl": kl["mean"], "eos_rate": kl["eos_rate"], "by_domain": gold["by_domain"],
                  "parts": gold["parts"], "distinct_2": gold["distinct_2"], "prompts": len(records),
                  "rows_file": str(rows_file.relative_to(run.run_dir))}
        atomic_write_jsonl(rows_file, [{**row, "reward": r} for row, r in zip(gold["rows"], rewards)])
        atomic_write_json(cached, result)
        out[name] = {**result, "cached": False}
    return out


def evaluation_rows(run: RunContext, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-prompt rows behind one ablation's evaluation (see :func:`evaluate_ablations`)."""
    from .data.io import iter_jsonl

    return [row for _, row in iter_jsonl(run.run_dir / result["rows_file"])]


def check_processes(pipeline: Pipeline, names: list[str]) -> None:
    """Under a multi-process launch, refuse before anything trains a stage that runs in one process only.

    Raises:
        ConfigError: naming the file, the first such stage and the ablation that runs it.
    """
    if world_size() == 1:
        return
    several = [name for name, spec in STAGES.items() if spec.multi_process]
    for name in names:
        for stage in pipeline.ablations[name]:
            if not STAGES[stage].multi_process:
                raise ConfigError(
                    f"the {stage} stage (ablation {name!r}) runs in one process, and this launch started "
                    f"{world_size()}; only {', '.join(several)} train under several. Launch with "
                    "--num_processes 1, or pick ablations without it (--ablation)", file=pipeline.source, key=f"stages.{stage}")


def check_reward_members(pipeline: Pipeline, names: list[str]) -> None:
    """Refuse before anything trains an ablation whose PPO or GRPO reads more reward models than its reward stage trains.

    Checked when the pipeline runs, not when the file is read: settings adopted from a run
    (:meth:`Pipeline.with_settings_of`) may supply the ensemble size the file leaves out.

    Raises:
        ConfigError: naming the file and ``stages.<stage>.reward_members``.
    """
    reward = pipeline.stages.get("reward")
    for name in names:
        for stage in pipeline.ablations[name]:
            members = getattr(pipeline.stages[stage], "reward_members", None)
            if "reward" in pipeline.ablations[name] and members is not None and members > reward.ensemble_size:
                raise ConfigError(f"{stage} reads {members} reward models but the reward stage trains "
                                  f"{reward.ensemble_size} (stages.reward.ensemble_size); lower one or raise the other",
                                  file=pipeline.source, key=f"stages.{stage}.reward_members")


def run_pipeline(pipeline: Pipeline | str | Path, run: RunContext, ablations: list[str] | None = None,
                 on_stage: Callable[[StageOutcome], None] | None = None) -> dict[str, Any]:
    """Run the ablations (all by default), evaluate them, and write ``<run>/pipeline/results.json``.

    Under ``accelerate launch`` every process calls it: all train each stage together, the main
    process alone evaluates and writes the results, and every process returns the same summary.

    Args:
        pipeline: a :class:`Pipeline` or a pipeline file.
        run: the run directory and profile (the curated data of notebook 01 must be there).
        ablations: names of the ablations to run; None runs them all.
        on_stage: called after each stage with its :class:`StageOutcome` (progress displays).

    Returns:
        ``{"stages": [outcome, ...], "results": {ablation: evaluation}, "trained": n}``.

    Raises:
        ConfigError: under several processes, an ablation runs a stage that needs one; or its PPO or
            GRPO reads more reward models than its reward stage trains.
    """
    pipe = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    names = pipe.selected(ablations)
    check_processes(pipe, names)
    check_reward_members(pipe, names)
    join_processes(run.profile)
    outcomes = [o for name in names for o in run_ablation(pipe, name, run, on_stage)]
    summary_file = run.run_dir / "pipeline" / "results.json"
    if is_main_process():
        results = evaluate_ablations(pipe, run, names)
        summary = {"pipeline": pipe.source, "stages": [dataclasses.asdict(o) for o in outcomes], "results": results,
                   "trained": sum(o.status == "trained" for o in outcomes)}
        atomic_write_json(summary_file, summary)
    wait_for_everyone()  # the other processes read the main process's summary
    return summary if is_main_process() else json.loads(summary_file.read_text())


def finished_pipeline(pipeline: Pipeline | str | Path, run: RunContext, *, prompts: int | None = None,
                      seed: int = 0) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline as notebook 06 ran it on ``run``, and its summary, read from the caches alone.

    Notebooks 07 and 08 study what 06 trained; they must never train it again themselves.

    Args:
        pipeline: a :class:`Pipeline`, a pipeline file, or the name of one the kit ships.
        run: the run notebook 06 ran the pipeline on.
        prompts: the evaluation's held-out prompts, as notebook 06 set them (None: the file's).
        seed: the seed notebook 06 gave the pipeline.

    Returns:
        ``(pipeline, summary)``: the pipeline with the notebooks' settings adopted, and
        :func:`run_pipeline`'s summary (every stage reused, every evaluation cached).

    Raises:
        MissingArtifactError: when a stage would train, naming the ablation and stage.
    """
    pipe = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline, progress=False, seed=seed)
    pipe = pipe.with_settings_of(run)
    if prompts is not None:
        pipe = dataclasses.replace(pipe, evaluation=dataclasses.replace(pipe.evaluation, prompts=prompts))
    untrained = plan_pipeline(pipe, run).query("action == 'train'")
    if len(untrained):
        stages = ", ".join(untrained["ablation"] + "/" + untrained["stage"])
        raise MissingArtifactError(f"the trained stage(s) {stages}", run.run_dir, "notebook 06_unified_pipeline")
    return pipe, run_pipeline(pipe, run)


def results_table(summary: dict[str, Any]):
    """The ablation table: gold score (with the paired CI against SFT), reward-model score and KL per variant.

    Gold cells are empty when no prompt has a reference; a ``gold skipped`` column counts the
    prompts the gold judge left out when there are any.
    """
    import pandas as pd

    results = summary["results"]
    any_skipped = any(r.get("gold_skipped_prompts") for r in results.values())
    rows = []
    for name, r in results.items():
        gain = r["gold_gain"]
        row = {"variant": name, "gold": None if r["gold_score"] is None else round(r["gold_score"], 3),
               "gain vs SFT": None if gain is None else round(gain["mean"], 3),
               "95% CI": None if gain is None else f"({gain['ci_low']:+.3f}, {gain['ci_high']:+.3f})"}
        if any_skipped:
            row["gold skipped"] = r["gold_skipped_prompts"]
        rows.append({**row, "reward": None if r["reward"] is None else round(r["reward"], 2), "KL to SFT": round(r["kl"], 2),
                     "distinct-2": round(r["distinct_2"], 3)})
    return pd.DataFrame(rows).set_index("variant")


def ledger_table(summary: dict[str, Any]):
    """The compute ledger per stage and ablation: trained or reused, where, seconds, tokens, peak memory."""
    import pandas as pd

    rows = [{"variant": o["ablation"], "stage": o["stage"], "status": o["status"], "folder": o["where"],
             "seconds": o["seconds"], "train seconds": (o["ledger"] or {}).get("wall_seconds"),
             "tokens": (o["ledger"] or {}).get("tokens"), "peak MB": (o["ledger"] or {}).get("peak_memory_mb")}
            for o in summary["stages"]]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """``course-pipeline FILE --run DIR``: run a pipeline file outside Jupyter, then print the ablation table."""
    from .data import ensure_curated_data
    from .env import quiet_library_noise

    parser = argparse.ArgumentParser(prog="course-pipeline", description=main.__doc__)
    parser.add_argument("pipeline", help="pipeline YAML file, or a shipped one's name (unified)")
    parser.add_argument("--run", default="runs/pipeline", help="run directory (shared with the notebooks)")
    parser.add_argument("--profile", default="tiny-cpu", help="profile name or YAML path")
    parser.add_argument("--ablation", action="append", help="run only this ablation (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bars inside the stages")
    parser.add_argument("--settings-from-run", action="store_true",
                        help="adopt the settings of the stages the notebooks finished in --run, so they are reused")
    args = parser.parse_args(argv)
    quiet_library_noise()
    try:
        pipe = load_pipeline(args.pipeline, progress=not args.no_progress)
        check_processes(pipe, pipe.selected(args.ablation))  # before the run directory is made
        run = RunContext.create(args.run, args.profile)
        if args.settings_from_run:
            pipe = pipe.with_settings_of(run)
        ensure_curated_data(run.run_dir, seed=pipe.seed, sizes=run.profile.data)  # locked: one process builds
    except CourseLibError as exc:
        if is_main_process():  # under several processes each fails the same way; one says so
            print(f"error: {exc}", file=sys.stderr)
        return 2

    def show(o: StageOutcome) -> None:
        if is_main_process():
            print(f"[{o.ablation}] {o.stage:<7} {o.status:<8} {o.seconds:7.1f} s  {o.where}", flush=True)

    started = time.time()
    try:
        summary = run_pipeline(pipe, run, args.ablation, on_stage=show)
    except CourseLibError as exc:  # a missing input or a bad file found mid-run: finished stages stay cached
        if is_main_process():
            print(f"error: {exc}", file=sys.stderr)
        return 2
    leave_processes()  # every process has the summary; the group ends before any of them exits
    if not is_main_process():
        return 0
    print()
    print(results_table(summary).to_string())
    print(f"\n{summary['trained']} stage(s) trained, {len(summary['stages']) - summary['trained']} reused; "
          f"{time.time() - started:.0f} s. Results: {run.run_dir / 'pipeline' / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
