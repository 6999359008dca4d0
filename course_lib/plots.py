"""Plotly figures the training notebooks show (the data funnel lives in ``course_lib.data.plots``).

Each function returns a ``plotly.graph_objects.Figure``; the notebook calls ``.show()``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go


def loss_curves(log_history: Sequence[Mapping[str, Any]], title: str = "Training and evaluation loss") -> go.Figure:
    """Training loss and evaluation loss against step, from a trainer's ``log_history`` (``02_sft``)."""
    fig = go.Figure()
    for key, name in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(h["step"], h[key]) for h in log_history if key in h]
        if points:
            steps, values = zip(*points)
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="cross-entropy", height=380)
    return fig


def before_after_bars(before: Mapping[str, float], after: Mapping[str, float], title: str, yaxis: str = "mean gold score") -> go.Figure:
    """Grouped bars of a per-domain score before and after a stage (``02_sft``)."""
    domains = sorted(set(before) | set(after))
    fig = go.Figure([
        go.Bar(name="before", x=domains, y=[before.get(d) for d in domains]),
        go.Bar(name="after", x=domains, y=[after.get(d) for d in domains]),
    ])
    fig.update_layout(barmode="group", title=title, yaxis_title=yaxis, yaxis_range=[0, 1], height=380)
    return fig


def calibration_plot(calibration: Mapping[str, Sequence[float]], title: str = "Reward-model calibration") -> go.Figure:
    """Predicted win probability against observed win rate, with the diagonal (``03_reward_model``)."""
    fig = go.Figure([
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dash", "color": "grey"}),
        go.Scatter(x=calibration["predicted"], y=calibration["observed"], mode="lines+markers", name="reward model",
                   text=[f"{c} pairs" for c in calibration["count"]]),
    ])
    fig.update_layout(title=f"{title} (ECE {calibration['ece']:.3f})", xaxis_title="predicted P(first reply wins)",
                      yaxis_title="observed win rate", height=400)
    return fig


def curve_with_band(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str, xaxis: str, yaxis: str) -> go.Figure:
    """One line per name with a shaded interval: ``{name: {"x", "mean", "low", "high"}}`` (``03_reward_model``)."""
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=list(c["x"]) + list(c["x"])[::-1], y=list(c["high"]) + list(c["low"])[::-1],
                                 fill="toself", opacity=0.2, line={"width": 0}, showlegend=False, name=f"{name} CI"))
        fig.add_trace(go.Scatter(x=c["x"], y=c["mean"], mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=400)
    return fig


def rl_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = ("reward", "gold", "kl"),
              x: str = "step", title: str = "PPO, iteration by iteration") -> go.Figure:
    """One panel per statistic, one line per run: ``{run name: [stats dict per iteration]}`` (``04_ppo``).

    Args:
        histories: each run's per-iteration stats (``PPOTrainer.history``, or rows in that shape).
        keys: the statistics to plot, one panel each.
        x: ``"step"``, or ``"elapsed_s"`` for wall time.
        title: the figure's title.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=list(keys))
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, history) in enumerate(histories.items()):
        shown = False  # one legend entry per run, on the first panel that has its line
        for col, key in enumerate(keys, start=1):
            points = [(h[x], h[key]) for h in history if key in h and x in h]
            if points:
                xs, ys = zip(*points)
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name,
                                         showlegend=not shown, line={"color": colors[i % len(colors)]}), row=1, col=col)
                shown = True
    fig.update_layout(title=title, height=360)
    fig.update_xaxes(title_text="wall time (s)" if x == "elapsed_s" else x)
    return fig
