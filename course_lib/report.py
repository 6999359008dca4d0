"""The run report: the result first (gold score per stage and per variant with CIs, the reward
model's accuracy, KL, each notebook's time) as tables and charts, then every recorded metric.

``report.md`` and ``report.html`` are written into the run directory by the track runner after
each notebook. The HTML carries its charts (plotly, embedded, so it opens offline).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .results import load_metrics

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}
th{background:#f3f3f3} code{background:#f6f6f6;padding:1px 3px}
details{margin:1em 0} summary{cursor:pointer;font-weight:600}
"""
STAGE_NOTEBOOKS = {"SFT": "02_sft", "PPO": "04_ppo", "DPO": "05_dpo"}
"""The notebooks whose metrics hold each training stage's gold score before and after."""


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics to dotted keys; lists longer than 8 items are summarised."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and len(value) > 8:
            flat[name] = f"[{len(value)} values, last {value[-1]!r}]"
        else:
            flat[name] = value
    return flat


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(value: Any) -> str:
    """A headline cell: blank where a stage has no such figure."""
    return "" if value is None else _fmt(value)


def _ci(gain: dict[str, float] | None) -> str:
    if not gain:
        return ""
    return f"{gain['mean']:+.3f} ({gain['ci_low']:+.3f}, {gain['ci_high']:+.3f})"


def headline(metrics: dict[str, dict[str, Any]], track_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result of a run, from its recorded metrics: what the report opens with.

    Returns:
        ``{"stages": [rows], "variants": [rows], "reward_model": {...} | None, "notebooks": [rows]}``;
        a part is empty when the notebooks that record it have not run.
    """
    stages = []
    for stage, notebook in STAGE_NOTEBOOKS.items():
        m = metrics.get(notebook)
        if m and m.get("gold_score_after") is not None:
            stages.append({"stage": stage, "gold before": m.get("gold_score_before"), "gold after": m["gold_score_after"],
                           "gain": m.get("gold_gain"), "KL to start": m.get("kl", m.get("final_kl")),
                           "train seconds": (m.get("ledger") or {}).get("wall_seconds")})
    variants = []
    tests = {row["variant"]: row for row in (metrics.get("07_evaluation") or {}).get("significance") or []}
    for name, r in ((metrics.get("06_unified_pipeline") or {}).get("results") or {}).items():
        variants.append({"variant": name, "gold": r["gold_score"], "gain": r["gold_gain"], "reward": r.get("reward"),
                         "KL to SFT": r.get("kl"), "p (Holm)": tests.get(name, {}).get("p_holm"),
                         "significant": tests.get(name, {}).get("significant")})
    reward = metrics.get("03_reward_model")
    reward_model = None
    if reward and reward.get("accuracy") is not None:
        low, high = (reward.get("accuracy_ci") or [None, None])[:2]
        swap = (metrics.get("03b_reward_model_limits") or {}).get("answer_swap") or {}
        reward_model = {"accuracy": reward["accuracy"], "ci_low": low, "ci_high": high,
                        "answer_swap": swap.get("own_preferred_rate")}
    notebooks = [{"notebook": name, "status": s.get("status"), "seconds": s.get("seconds")}
                 for name, s in ((track_state or {}).get("notebooks") or {}).items()]
    versions = (track_state or {}).get("versions") or {}
    return {"stages": stages, "variants": variants, "reward_model": reward_model, "notebooks": notebooks,
            "versions": {k: v for k, v in versions.items() if v}}


def _headline_markdown(head: dict[str, Any]) -> list[str]:
    lines = ["## Headline", ""]
    if head["stages"]:
        lines += ["Gold score (the gold judge, held-out prompts) of each stage against the model it started from;",
                  "the gain is the paired difference with its bootstrap 95% CI.", "",
                  "| stage | gold before | gold after | gain (95% CI) | KL to start | train seconds |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {_cell(r['gold before'])} | {_cell(r['gold after'])} | {_ci(r['gain'])} | "
                  f"{_cell(r['KL to start'])} | {_cell(r['train seconds'])} |" for r in head["stages"]]
        lines.append("")
    if head["reward_model"]:
        rm = head["reward_model"]
        ci = f" (95% CI {rm['ci_low']:.3f} to {rm['ci_high']:.3f})" if rm["ci_low"] is not None else ""
        swap = (f"; prefers its own prompt's good answer to another prompt's {rm['answer_swap']:.2f} of the time"
                if rm["answer_swap"] is not None else "")
        lines += [f"Reward model: accuracy against gold on held-out pairs {rm['accuracy']:.3f}{ci}{swap}.", ""]
    if head["variants"]:
        lines += ["Ablations of the unified pipeline (notebook 06), each against SFT on the same prompts; the paired",
                  "permutation test's p-value, Holm-corrected across the variants, is notebook 07's:", "",
                  "| variant | gold | gain vs SFT (95% CI) | p (Holm) | significant | reward | KL to SFT |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {_cell(r['gold'])} | {_ci(r['gain'])} | {_cell(r['p (Holm)'])} | "
                  f"{_cell(r['significant'])} | {_cell(r['reward'])} | {_cell(r['KL to SFT'])} |" for r in head["variants"]]
        lines.append("")
    if head["notebooks"]:
        lines += ["| notebook | status | seconds |", "|---|---|---|"]
        lines += [f"| {r['notebook']} | {r['status']} | {_cell(r['seconds'])} |" for r in head["notebooks"]]
        lines.append("")
    if len(lines) == 2:
        lines += ["No notebook has recorded results yet.", ""]
    if head.get("versions"):
        from .env import verified_versions

        verified = verified_versions()
        shown = [f"{name} {version}" + (f" (verified: {verified[name]})" if verified.get(name, version) != version else "")
                 for name, version in head["versions"].items()]
        lines += ["Software: " + ", ".join(shown) + ".", ""]
    return lines


def headline_charts(head: dict[str, Any]) -> list[Any]:
    """Plotly figures of the headline: gold per stage and per variant with CIs, and notebook times."""
    import plotly.graph_objects as go

    def bars(rows, label, title):
        gains = [r["gain"] for r in rows]
        fig = go.Figure(go.Bar(
            x=[r[label] for r in rows], y=[r["gold after"] if "gold after" in r else r["gold"] for r in rows],
            error_y={"type": "data", "symmetric": False,
                     "array": [g["ci_high"] - g["mean"] if g else 0 for g in gains],
                     "arrayminus": [g["mean"] - g["ci_low"] if g else 0 for g in gains]}))
        fig.update_layout(title=title, yaxis_title="mean gold score", height=360)
        return fig

    figures = []
    if head["stages"]:
        figures.append(bars(head["stages"], "stage", "Gold score after each stage (bars: 95% CI of its gain)"))
    if head["variants"]:
        figures.append(bars(head["variants"], "variant", "Gold score per variant (bars: 95% CI of the gain over SFT)"))
    if head["notebooks"]:
        fig = go.Figure(go.Bar(x=[r["notebook"] for r in head["notebooks"]], y=[r["seconds"] for r in head["notebooks"]]))
        fig.update_layout(title="Wall time per notebook", yaxis_title="seconds", height=320)
        figures.append(fig)
    return figures


def build_report(run_dir: str | Path, title: str | None = None, track_state: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` from its recorded metrics.

    Both open with the headline (:func:`headline`); the HTML adds its charts. Every recorded
    metric follows, collapsed.

    Args:
        run_dir: the run directory.
        title: heading of the report (default: the run's folder name).
        track_state: the runner's per-notebook status and timings.

    Returns:
        ``{"markdown": path, "html": path}``.
    """
    import markdown

    run_dir = Path(run_dir)
    title = title or f"Run {run_dir.name}"
    metrics = load_metrics(run_dir)
    head = headline(metrics, track_state)
    raw = []
    for notebook, values in metrics.items():
        raw += [f"### {notebook}", "", "| metric | value |", "|---|---|"]
        raw += [f"| {key} | {_fmt(val)} |" for key, val in flatten(values).items()]
        raw.append("")
    top = [f"# {title}", ""] + _headline_markdown(head)
    md_path = atomic_write_text(run_dir / "report.md", "\n".join(
        top + ["<details><summary>All recorded metrics</summary>", ""] + raw + ["</details>", ""]))
    charts = "".join(f"<div class='chart'>{fig.to_html(full_html=False, include_plotlyjs=(i == 0))}</div>"
                     for i, fig in enumerate(headline_charts(head)))
    body = (markdown.markdown("\n".join(top), extensions=["tables"]) + charts
            + "<details><summary>All recorded metrics</summary>" + markdown.markdown("\n".join(raw), extensions=["tables"])
            + "</details>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")
    html_path = atomic_write_text(run_dir / "report.html", page)
    return {"markdown": md_path, "html": html_path}
