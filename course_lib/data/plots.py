"""The curation funnel as a plotly chart (``01_data_curation``)."""
from __future__ import annotations

from typing import Any


def funnel_figure(report: dict[str, Any], datasets: tuple[str, ...] = ("sft", "prefs")):
    """A funnel per dataset: records left after each curation step, removed counts on hover.

    Args:
        report: the curation report (:func:`course_lib.data.load_report`).
        datasets: which datasets of the report to draw.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    figure = go.Figure()
    for name in datasets:
        counts = report["datasets"][name]["funnel"]
        figure.add_trace(go.Funnel(
            name=name,
            y=[c["step"] for c in counts],
            x=[c["count"] for c in counts],
            textinfo="value+percent initial",
            hovertext=[", ".join(f"{d}: {n}" for d, n in c["by_domain"].items()) for c in counts],
        ))
    figure.update_layout(title="Curation funnel: records left after each step", legend_title="dataset",
                         height=450)
    return figure
