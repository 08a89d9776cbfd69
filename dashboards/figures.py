"""The dashboard's plotly figures, one function each; every function returns a ``go.Figure`` or ``None``.

Every string that came from a user (trial ids, class names, hyperparameter names and values, stop
reasons) goes through ``esc`` before plotly sees it: plotly.js renders a small subset of HTML in
text and decodes entities, so an escaped ``<script>`` shows as text.
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from experiment_store import Outcome
from fer_core.numbers import fmt, is_finite
from sweeps.experiment import Experiment
from sweeps.space import Param

from .edges import EdgeWarning
from .importance import Importance

__all__ = [
    "learning_curves",
    "collapsed_view",
    "parallel_coordinates",
    "axis_plots",
    "importance_bars",
    "confusion_heatmap",
    "score_distributions",
    "OUTCOME_STYLE",
]

# outcome -> (colour, marker symbol)
OUTCOME_STYLE = {
    Outcome.COMPLETED.value: ("#1f77b4", "circle"),
    Outcome.STOPPED.value: ("#8c8c8c", "x"),
    Outcome.COLLAPSED.value: ("#d62728", "triangle-down"),
    Outcome.EARLY_STOPPED.value: ("#2ca02c", "diamond"),
    Outcome.DIVERGED.value: ("#9467bd", "star"),
    Outcome.ERRORED.value: ("#111111", "square-x"),
    Outcome.OUT_OF_TIME.value: ("#bcbd22", "hourglass"),
    Outcome.RUNNING.value: ("#ff7f0e", "circle-open"),
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12))


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(v) -> float | None:
    return float(v) if is_finite(v) else None


def _fmt(v) -> str:
    """A hover label's value: ``0.0003``, ``0.6123``."""
    return fmt(v, spec="g")


def _curve(exp: Experiment, trial: dict) -> tuple[list[int], list, list]:
    rows = [r for r in exp.history(trial["trial_id"]) if r.get("epoch") is not None]
    return [r["epoch"] for r in rows], [_num(r.get("val_acc")) for r in rows], [_num(r.get("train_acc")) for r in rows]


def learning_curves(exp: Experiment, top: int = 5) -> go.Figure | None:
    """val_acc (solid) and train_acc (dashed) per epoch of the top trials by score; peak and final marked."""
    ranked = [t for t in exp.scored if exp.history(t["trial_id"])][:top]
    if not ranked:
        return None
    fig = go.Figure()
    for i, t in enumerate(ranked):
        color, tid = PALETTE[i % len(PALETTE)], esc(t["trial_id"])
        x, val, train = _curve(exp, t)
        label = f"#{i + 1} {tid} (score {t['score']:.3f})"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=val,
                mode="lines+markers",
                name=label,
                legendgroup=tid,
                line=dict(color=color, width=2),
                marker=dict(size=4),
                hovertemplate=f"{tid}<br>epoch %{{x}}<br>val acc %{{y:.4f}}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=train,
                mode="lines",
                name=f"{tid} train",
                legendgroup=tid,
                showlegend=False,
                line=dict(color=color, width=1, dash="dash"),
                hovertemplate=f"{tid}<br>epoch %{{x}}<br>train acc %{{y:.4f}}<extra></extra>",
            )
        )
        marks = [
            (t.get("peak_epoch"), _num(t.get("peak")), "star", "peak"),
            (x[-1] if x else None, _num(t.get("final")), "square", "final"),
        ]
        for epoch, value, symbol, what in marks:
            if epoch is not None and value is not None:
                fig.add_trace(
                    go.Scatter(
                        x=[epoch],
                        y=[value],
                        mode="markers",
                        legendgroup=tid,
                        showlegend=False,
                        marker=dict(color=color, symbol=symbol, size=12, line=dict(width=1, color="#fff")),
                        hovertemplate=f"{tid} {what}: %{{y:.4f}} at epoch %{{x}}<extra></extra>",
                    )
                )
    fig.update_layout(
        **LAYOUT,
        height=430,
        title=f"Top {len(ranked)} trials by score: val accuracy (solid), train accuracy (dashed); ★ peak, ■ final",
        xaxis_title="epoch",
        yaxis_title="accuracy",
        legend=dict(font=dict(size=10)),
    )
    return fig


#: Collapsed trials drawn at most (those with the highest peaks); the table under the plot lists them all.
MAX_COLLAPSED_DRAWN = 20


def collapsed_view(exp: Experiment, top: int = MAX_COLLAPSED_DRAWN) -> go.Figure | None:
    """Collapsed trials (the ``top`` with the highest peaks): their val_acc curves with the stop epoch marked,
    and peak vs final side by side."""
    collapsed = sorted(
        (t for t in exp.trials if t.get("outcome") == Outcome.COLLAPSED), key=lambda t: -(_num(t.get("peak")) or 0)
    )
    if not collapsed:
        return None
    trials = collapsed[:top]
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        horizontal_spacing=0.12,
        subplot_titles=["val accuracy until the collapse stop (✕ = stopped)", "peak vs final"],
    )
    for i, t in enumerate(trials):
        color, tid = PALETTE[i % len(PALETTE)], esc(t["trial_id"])
        reason = esc(t.get("stop_reason") or "")
        x, val, _ = _curve(exp, t)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=val,
                mode="lines+markers",
                name=tid,
                legendgroup=tid,
                line=dict(color=color),
                marker=dict(size=4),
                hovertemplate=f"{tid}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        if x:
            fig.add_trace(
                go.Scatter(
                    x=[x[-1]],
                    y=[val[-1]],
                    mode="markers",
                    legendgroup=tid,
                    showlegend=False,
                    marker=dict(symbol="x", size=13, color=color),
                    hovertemplate=f"{tid} stopped after epoch %{{x}}<br>{reason}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        peak, final = _num(t.get("peak")), _num(t.get("final"))
        fig.add_trace(
            go.Scatter(
                x=[peak, final],
                y=[tid, tid],
                mode="lines+markers",
                legendgroup=tid,
                showlegend=False,
                line=dict(color=color),
                marker=dict(symbol=["star", "square"], size=11, color=color),
                customdata=[["peak", t.get("peak_epoch")], ["final", t.get("epochs")]],
                hovertemplate=f"{tid} %{{customdata[0]}} %{{x:.4f}} (epoch %{{customdata[1]}})"
                f"<br>{reason}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_yaxes(title_text="val accuracy", row=1, col=1)
    fig.update_xaxes(title_text="val accuracy (★ peak, ■ final)", row=1, col=2)
    fig.update_yaxes(type="category", row=1, col=2)
    title = (
        f"{len(trials)} collapsed trial(s)"
        if len(trials) == len(collapsed)
        else f"the {len(trials)} collapsed trials with the highest peaks, of {len(collapsed)} (all in the table below)"
    )
    fig.update_layout(**LAYOUT, height=max(360, 60 + 28 * len(trials)), title=title)
    return fig


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10 units) and labels for a log-scale parallel-coordinates axis."""
    first, last = math.floor(lo), math.ceil(hi)
    powers = [float(k) for k in range(first, last + 1) if lo - 1e-9 <= k <= hi + 1e-9]
    if len(powers) < 2:
        powers = [lo, hi]
    return powers, [f"{10**p:.2g}" for p in powers]


def _dimension(exp: Experiment, p: Param, trials: list[dict]) -> dict:
    values = [exp.value(t, p.name) for t in trials]
    absent = any(v is None for v in values)
    if p.type == "categorical" or not all(v is None or _num(v) is not None for v in values):
        choices = list(p.choices) + sorted({v for v in values if v is not None and v not in p.choices}, key=str)
        codes = [(-1 if v is None else choices.index(v)) for v in values]
        tickvals: list[float] = list(range(len(choices)))
        ticktext = [esc(c) for c in choices]
        if absent:
            tickvals, ticktext = [-1] + tickvals, ["absent"] + ticktext
        return dict(
            label=esc(p.name),
            values=codes,
            tickvals=tickvals,
            ticktext=ticktext,
            range=[min(tickvals) - 0.2, max(tickvals) + 0.2],
        )
    nums = [_num(v) for v in values]
    present = [v for v in nums if v is not None] or [0.0, 1.0]
    lo = float(p.low) if p.low is not None else min(present)
    hi = float(p.high) if p.high is not None else max(present)
    if hi <= lo:  # one value only (a space inferred from a single trial)
        lo, hi = lo - 0.5, hi + 0.5
    if p.log and lo > 0:
        lo, hi = math.log10(lo), math.log10(hi)
        nums = [None if v is None or v <= 0 else math.log10(v) for v in nums]
        tickvals, ticktext = _log_ticks(lo, hi)
    else:
        tickvals = [lo + (hi - lo) * k / 4 for k in range(5)]
        ticktext = [f"{v:.3g}" for v in tickvals]
    span = (hi - lo) or 1.0
    if absent:
        sentinel = lo - 0.15 * span
        nums = [sentinel if v is None else v for v in nums]
        tickvals, ticktext, lo = [sentinel] + tickvals, ["absent"] + ticktext, sentinel
    return dict(
        label=esc(p.name + (" (log)" if p.log else "")),
        values=nums,
        range=[lo, hi],
        tickvals=tickvals,
        ticktext=ticktext,
    )


def parallel_coordinates(exp: Experiment) -> go.Figure | None:
    trials = exp.scored
    if len(trials) < 2 or not exp.params:
        return None
    dims = [_dimension(exp, p, trials) for p in exp.params]
    scores = [t["score"] for t in trials]
    dims.append(
        dict(label="score", values=scores, range=[min(scores), max(scores)] if max(scores) > min(scores) else None)
    )
    fig = go.Figure(
        go.Parcoords(
            dimensions=[{k: v for k, v in d.items() if v is not None} for d in dims],
            line=dict(color=scores, colorscale="Viridis", showscale=True, colorbar=dict(title=dict(text="score"))),
        )
    )
    fig.update_layout(
        **{**LAYOUT, "margin": dict(l=70, r=70, t=90, b=30)},
        height=460,
        title=f"Parallel coordinates: {len(trials)} scored trials (categoricals as integers, "
        "log-scale parameters in log10)",
    )
    return fig


def axis_plots(exp: Experiment, warnings: list[EdgeWarning], cols: int = 3) -> go.Figure | None:
    """Score against each hyperparameter; one point per trial, marked by outcome; searched bounds dotted."""
    params = exp.params
    if not params or not exp.trials:
        return None
    flagged = {w.param for w in warnings}
    rows = math.ceil(len(params) / cols)
    titles = [
        esc(p.name) + (" <span style='color:#c00'>⚠ best at the edge</span>" if p.name in flagged else "")
        for p in params
    ]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=min(0.5 / rows, 0.12), horizontal_spacing=0.07
    )
    scores = [t["score"] for t in exp.scored]
    top, bottom = (max(scores), min(scores)) if scores else (1.0, 0.0)
    pad = (top - bottom) * 0.08 or 0.02
    floor = bottom - 2 * pad  # where trials without a score (diverged, errored) are drawn
    shown: set[str] = set()
    for i, p in enumerate(params):
        r, c = i // cols + 1, i % cols + 1
        for outcome, (color, symbol) in OUTCOME_STYLE.items():
            group = [t for t in exp.trials if t.get("outcome") == outcome and exp.value(t, p.name) is not None]
            if not group:
                continue
            xs = [exp.value(t, p.name) for t in group]
            if p.type == "categorical":
                xs = [esc(v) for v in xs]
            ys = [_num(t.get("score")) if _num(t.get("score")) is not None else floor for t in group]
            text = [
                f"{esc(t['trial_id'])}<br>{esc(p.name)} = {esc(_fmt(exp.value(t, p.name)))}<br>score "
                f"{_fmt(_num(t.get('score')))} ({esc(outcome)})"
                for t in group
            ]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=outcome,
                    legendgroup=outcome,
                    showlegend=outcome not in shown,
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                    marker=dict(color=color, symbol=symbol, size=9, opacity=0.85, line=dict(width=0.5, color="#fff")),
                ),
                row=r,
                col=c,
            )
            shown.add(outcome)
        if p.type == "categorical":
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=[esc(v) for v in p.choices], row=r, col=c
            )
        elif p.low is not None and p.high is not None and p.high > p.low and not exp.space_inferred:
            lo, hi = float(p.low), float(p.high)
            for bound in (lo, hi):
                fig.add_trace(
                    go.Scatter(
                        x=[bound, bound],
                        y=[floor, top + pad],
                        mode="lines",
                        showlegend=False,
                        hoverinfo="skip",
                        line=dict(color="#c00" if p.name in flagged else "#aaa", dash="dot", width=1),
                    ),
                    row=r,
                    col=c,
                )
            if p.log and lo > 0:
                span = math.log10(hi) - math.log10(lo)
                fig.update_xaxes(
                    type="log",
                    range=[math.log10(lo) - 0.04 * span, math.log10(hi) + 0.04 * span],
                    exponentformat="e",
                    row=r,
                    col=c,
                )
            else:
                span = hi - lo
                fig.update_xaxes(range=[lo - 0.04 * span, hi + 0.04 * span], row=r, col=c)
    fig.update_yaxes(range=[floor - pad, top + pad])
    fig.update_yaxes(title_text="score", col=1)
    fig.update_layout(
        **LAYOUT,
        height=260 * rows + 80,
        title="Axis plots: score against each hyperparameter (dotted lines = searched range; "
        "trials without a score at the bottom)",
        legend=dict(orientation="h", y=-0.04, yanchor="top"),
    )
    return fig


def importance_bars(groups: list[Importance]) -> go.Figure | None:
    groups = [g for g in groups if g.values]
    if not groups:
        return None
    names: list[str] = []
    for g in groups:
        names.extend(n for n in sorted(g.values, key=lambda n: g.values[n]) if n not in names)
    fig = go.Figure()
    for i, g in enumerate(groups):
        fig.add_trace(
            go.Bar(
                y=[esc(n) for n in names],
                x=[g.values.get(n) for n in names],
                orientation="h",
                name=f"{esc(g.title)} (n={g.trials})",
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        **LAYOUT,
        height=140 + 26 * len(names) * len(groups),
        barmode="group",
        title="Hyperparameter importance (Optuna fANOVA, seed 0; fraction of the score's variance)",
        xaxis_title="importance",
        legend=dict(orientation="h", y=-0.15, yanchor="top"),
    )
    return fig


def confusion_heatmap(cm: list[list[int]], classes: list[str], title: str) -> go.Figure:
    names = [esc(c) for c in classes]
    norm = [[(v / sum(row)) if sum(row) else 0.0 for v in row] for row in cm]
    fig = go.Figure(
        go.Heatmap(
            z=norm,
            x=names,
            y=names,
            text=[[str(v) for v in row] for row in cm],
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title=dict(text="row share")),
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images (%{z:.0%} of the row)<extra></extra>",
        )
    )
    fig.update_layout(
        **LAYOUT,
        height=140 + 60 * len(classes),
        width=None,
        title=esc(title),
        xaxis=dict(title="predicted", type="category"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
    )
    return fig


def score_distributions(named: list[tuple[str, Experiment]]) -> go.Figure | None:
    """Overlaid histograms of the trials' scores of several experiments, on shared bins."""
    series = [(label, [t["score"] for t in exp.scored]) for label, exp in named]
    allv = [v for _, s in series for v in s]
    if not allv:
        return None
    lo, hi = min(allv), max(allv)
    size = (hi - lo) / 20 or 0.01
    fig = go.Figure()
    for i, (label, values) in enumerate(series):
        fig.add_trace(
            go.Histogram(
                x=values,
                name=f"{esc(label)} (n={len(values)})",
                opacity=0.55,
                marker_color=PALETTE[i % len(PALETTE)],
                xbins=dict(start=lo - size / 2, end=hi + size, size=size),
            )
        )
    fig.update_layout(
        **LAYOUT,
        barmode="overlay",
        height=380,
        title="Score distributions (scored trials)",
        xaxis_title="score (mean val acc of the last epochs)",
        yaxis_title="trials",
    )
    return fig


def confirmed_spread(ranking: list[dict], sweep_score: dict) -> go.Figure | None:
    """Mean score over fresh seeds with min-max whiskers per configuration, and the sweep's own score."""
    if not ranking:
        return None
    ids = [r["trial_id"] for r in ranking]
    means = [r["mean"] for r in ranking]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=ids,
            y=means,
            mode="markers",
            name="mean over fresh seeds",
            marker=dict(size=11),
            error_y=dict(
                type="data",
                symmetric=False,
                array=[r["max"] - r["mean"] for r in ranking],
                arrayminus=[r["mean"] - r["min"] for r in ranking],
            ),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ids,
            y=[sweep_score.get(i) for i in ids],
            mode="markers",
            name="sweep score (one seed)",
            marker=dict(symbol="x", size=10),
        )
    )
    fig.update_layout(
        height=360,
        xaxis_title="trial (best confirmed first)",
        yaxis_title="score (min-max whiskers)",
        margin=dict(l=60, r=20, t=30, b=60),
    )
    return fig
