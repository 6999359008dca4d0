"""The run report: every notebook's recorded metrics gathered into Markdown and HTML."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .results import load_metrics

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}
th{background:#f3f3f3} code{background:#f6f6f6;padding:1px 3px}
"""


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


def build_report(run_dir: str | Path, title: str | None = None, track_state: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` from its recorded metrics.

    Args:
        run_dir: the run directory.
        title: heading of the report (default: the run's folder name).
        track_state: the runner's per-notebook status and timings, shown as a summary table.

    Returns:
        ``{"markdown": path, "html": path}``.
    """
    import markdown

    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    lines = [f"# {title or 'Run ' + run_dir.name}", ""]
    if track_state:
        lines += ["## Track", "", "| notebook | status | seconds |", "|---|---|---|"]
        for name, state in track_state.get("notebooks", {}).items():
            lines.append(f"| {name} | {state.get('status')} | {_fmt(state.get('seconds'))} |")
        lines.append("")
    if not metrics:
        lines += ["No notebook has recorded metrics yet.", ""]
    for notebook, values in metrics.items():
        lines += [f"## {notebook}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(val)} |" for key, val in flatten(values).items()]
        lines.append("")
    text = "\n".join(lines)
    md_path = atomic_write_text(run_dir / "report.md", text)
    body = markdown.markdown(text, extensions=["tables"])
    html = f"<!doctype html><html><head><meta charset='utf-8'><title>{title or run_dir.name}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    html_path = atomic_write_text(run_dir / "report.html", html)
    return {"markdown": md_path, "html": html_path}
