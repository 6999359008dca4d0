"""Recording each notebook's metrics into the run directory (read by the report and the tests).

Every notebook's last cell calls :func:`record_metrics`; introduced in ``00_setup``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_write_json

METRICS_DIR = "metrics"


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: numpy/torch scalars to Python numbers, NaN to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def record_metrics(run_dir: str | Path, notebook: str, metrics: Mapping[str, Any]) -> Path:
    """Record a notebook's metrics as ``<run_dir>/metrics/<notebook>.json``.

    Args:
        run_dir: the run directory (``runs/<name>``).
        notebook: the notebook's stem, e.g. ``"00_setup"``.
        metrics: a flat or nested mapping of JSON-able values.

    Returns:
        The path written.
    """
    payload = {"notebook": notebook, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": _clean(metrics)}
    return atomic_write_json(Path(run_dir) / METRICS_DIR / f"{notebook}.json", payload)


def load_metrics(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every recorded notebook's metrics in a run, keyed by notebook stem, in track order."""
    folder = Path(run_dir) / METRICS_DIR
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))["metrics"]
    return out
