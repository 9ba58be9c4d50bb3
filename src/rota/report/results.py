"""Results figures: per task group, each metric against the grouping variables.

One figure per task group (spec task): one panel per metric, the group's own
grouping variables on the x axis (the first one; any others split the points
into coloured series), the mean over replicates as a point with its 95%
interval as error bars, and every replicate's value as a faint dot beside it.
Intervals come from :func:`rota.report.stats.group_metrics`: only over
replicates, never over sweep trials or across groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rota.report.figures import esc, plotly_go
from rota.report.model import TaskRow
from rota.report.stats import GroupRow
from rota.report.tables import fmt_ci, fmt_value
from rota.report.timeline import PALETTE

MAX_PANEL_COLUMNS = 3


def results_by_group(groups: Sequence[GroupRow], by: Sequence[str]) -> dict[str, tuple[list[str], list[GroupRow]]]:
    """``{group name: (its grouping variables, its rows)}`` for groups of more than one task,
    in first-appearance order. A group's variables are those of ``by`` it has (a task
    without a variable groups under ``-``)."""
    per: dict[str, list[GroupRow]] = {}
    for g in groups:
        per.setdefault(g.base or "tasks", []).append(g)
    out: dict[str, tuple[list[str], list[GroupRow]]] = {}
    for base, rows in per.items():
        if len({t for g in rows for t in g.tasks}) <= 1:
            continue  # one task: nothing to aggregate (its metrics are in its task table)
        mine = [v for v in by if any(g.vars.get(v, "-") != "-" for g in rows)]
        out[base] = (mine, rows)
    return out


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def axis_order(values: Sequence[str]) -> list[str]:
    """The distinct ``values`` in x-axis order: by value when every one is a number (``8`` before
    ``16``), else in order of first appearance, which is the spec's matrix order (``small, medium,
    large``, as the table under the figure lists them; sorting names would reverse that one)."""
    distinct = list(dict.fromkeys(values))
    return sorted(distinct, key=float) if all(_is_number(v) for v in distinct) else distinct


def results_figure(base: str, mine: Sequence[str], rows: Sequence[GroupRow], tasks: Sequence[TaskRow]) -> Any:
    """The figure of one task group (see the module docstring); a ``go.Figure``."""
    go = plotly_go()
    from plotly.subplots import make_subplots

    metrics = list(dict.fromkeys(g.metric for g in rows))
    cols = min(MAX_PANEL_COLUMNS, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[esc(m) for m in metrics],
                        horizontal_spacing=0.08, vertical_spacing=0.22 / max(nrows, 1) + 0.08)  # fmt: skip
    xvar, series_vars = (mine[0], list(mine[1:])) if mine else (None, [])
    xs = axis_order([g.vars[xvar] for g in rows]) if xvar else ["all"]
    value_of = {t.name: t.metrics for t in tasks}
    series = list(dict.fromkeys(", ".join(f"{v}={g.vars[v]}" for v in series_vars) for g in rows))
    offsets = {s: (k - (len(series) - 1) / 2) * 0.12 for k, s in enumerate(series)}
    for k, metric in enumerate(metrics):
        r, c = k // cols + 1, k % cols + 1
        for si, s in enumerate(series):
            pts = [g for g in rows if g.metric == metric
                   and ", ".join(f"{v}={g.vars[v]}" for v in series_vars) == s]  # fmt: skip
            if not pts:
                continue
            color = PALETTE[si % len(PALETTE)]
            pos = [xs.index(g.vars[xvar] if xvar else "all") + offsets[s] for g in pts]
            mean = [g.summary.mean for g in pts]
            up = [(g.summary.ci_high - g.summary.mean) if g.summary.ci_high is not None else 0.0 for g in pts]
            down = [(g.summary.mean - g.summary.ci_low) if g.summary.ci_low is not None else 0.0 for g in pts]
            hover = [
                f"<b>{esc(metric)}</b> {esc(', '.join(f'{v}={g.vars[v]}' for v in mine) or base)}<br>"
                f"mean {fmt_value(g.summary.mean)}, 95% CI {fmt_ci(g.summary.ci_low, g.summary.ci_high)}"
                f"{' (bootstrap)' if g.summary.method == 'bootstrap' else ''}<br>n={g.summary.n} replicate(s)"
                for g in pts
            ]
            name = esc(s) if s else "mean, 95% CI"
            fig.add_trace(go.Scatter(
                x=pos, y=mean, mode="markers", marker={"color": color, "size": 9}, name=name,
                error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down,
                         "color": color, "thickness": 1.5, "width": 6},
                hovertext=hover, hoverinfo="text", legendgroup=name, showlegend=k == 0,
            ), r, c)  # fmt: skip
            dots_x, dots_y, dots_t = [], [], []
            for g, p in zip(pts, pos, strict=True):
                for t in g.tasks:
                    v = value_of.get(t, {}).get(metric)
                    if v is not None and math.isfinite(v):
                        dots_x.append(p + 0.05)
                        dots_y.append(v)
                        dots_t.append(f"{esc(t)}: {fmt_value(v)}")
            fig.add_trace(go.Scatter(
                x=dots_x, y=dots_y, mode="markers", marker={"color": color, "size": 5, "opacity": 0.35},
                hovertext=dots_t, hoverinfo="text", legendgroup=name, showlegend=False,
            ), r, c)  # fmt: skip
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(xs))), ticktext=[esc(x) for x in xs],
                         range=[-0.6, len(xs) - 0.4], title=esc(xvar or ""), row=r, col=c)  # fmt: skip
        fig.update_yaxes(gridcolor="#eee", row=r, col=c)
    # The group's name as the title: a figure on its own (--figures files, rota serve's page)
    # otherwise said only "accuracy", "loss", the same for every group.
    fig.update_layout(height=100 + 270 * nrows, margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      title={"text": esc(base), "x": 0.01, "font": {"size": 14}},
                      plot_bgcolor="white", showlegend=bool(series_vars),
                      legend={"title": {"text": esc(", ".join(series_vars))}})  # fmt: skip
    return fig


def untitled(fig: Any) -> Any:
    """``fig`` without the title :func:`results_figure` gives it (the report's heading names it)."""
    return fig.update_layout(title=None, height=fig.layout.height - 30, margin={"t": 40})
