"""Plotly figures of a report: GPU samples, planned vs actual (the timeline: :mod:`rota.report.timeline`).

plotly is optional (the ``report`` extra) and imported lazily: without it
these functions raise :class:`~rota.report.model.ReportError` saying
``pip install 'rota[report]'``. Every string from the run is HTML-escaped
before plotly sees it (plotly renders tags such as ``<b>`` in labels).
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Sequence
from typing import Any

from rota.report.model import (
    GpuSample,
    ReportData,
    ReportError,
    TaskRow,
)

_INSTALL_HINT = "pip install 'rota[report]'"
MAX_POINTS_PER_GPU = 2000
"""GPU samples per GPU beyond which the charts average them into buckets."""
_PLANNED_COLOR = "#9aa5b1"
_ACTUAL_COLOR = "#1f77b4"
_GPU_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def plotly_go() -> Any:
    """Import plotly lazily; a ReportError with the install hint when it is missing."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise ReportError(f"HTML reports and Gantt files need plotly: {_INSTALL_HINT}") from exc
    return go


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def time_unit(span_s: float) -> tuple[str, float]:
    """Axis unit for a span: seconds, minutes or hours, and its length in seconds."""
    if span_s > 3 * 3600:
        return "h", 3600.0
    if span_s > 180:
        return "min", 60.0
    return "s", 1.0


def gpu_figure(data: ReportData, memory: bool = True) -> Any:
    """Sampled utilisation (and, with ``memory``, measured memory) over time, one line per GPU."""
    go = plotly_go()
    from plotly.subplots import make_subplots

    origin = data.origin_s
    if origin is None:
        origin = min(s.t_s for s in data.gpu_samples)
    span = max(s.t_s for s in data.gpu_samples) - origin
    unit, scale = time_unit(span)
    fig = make_subplots(
        rows=2 if memory else 1, cols=1, shared_xaxes=True, vertical_spacing=0.1,
        subplot_titles=("GPU utilisation (%)", "GPU memory used (GB)") if memory else ("GPU utilisation (%)",),
    )  # fmt: skip
    gpus = sorted({s.gpu for s in data.gpu_samples})
    for k, g in enumerate(gpus):
        pts = sorted((s for s in data.gpu_samples if s.gpu == g), key=lambda s: s.t_s)
        t, util, mem = downsample(pts)
        x = [(v - origin) / scale for v in t]
        color = _GPU_COLORS[k % len(_GPU_COLORS)]
        common = {"x": x, "mode": "lines", "legendgroup": f"gpu{g}", "line": {"color": color}}
        fig.add_trace(go.Scatter(y=util, name=f"gpu{g}", **common), 1, 1)
        if not memory:
            continue
        gb = [m / 2**30 if m is not None else None for m in mem]
        fig.add_trace(go.Scatter(y=gb, name=f"gpu{g}", showlegend=False, **common), 2, 1)
    totals = [s.memory_total_bytes for s in data.gpu_samples if s.memory_total_bytes]
    peak = max((m for m in (s.memory_used_bytes for s in data.gpu_samples) if m), default=2**30)
    total = max(totals) / 2**30 if totals else peak / 2**30
    fig.update_layout(height=520 if memory else 300, margin={"l": 60, "r": 20, "t": 40, "b": 40},
                      plot_bgcolor="white")  # fmt: skip
    fig.update_yaxes(range=[0, 105], row=1, col=1, gridcolor="#eee")
    fig.update_xaxes(title=f"time since start ({unit})", row=2 if memory else 1, col=1)
    if not memory:
        return fig
    if totals:  # the capacity line
        fig.add_hline(y=total, line_dash="dash", line_color="#999", row=2, col=1)
    fig.update_yaxes(range=[0, total * 1.05], row=2, col=1, gridcolor="#eee")
    return fig


def downsample(
    samples: Sequence[GpuSample], most: int = MAX_POINTS_PER_GPU
) -> tuple[list[float], list[float | None], list[float | None]]:
    """``(times, util_pct, memory_used_bytes)`` of time-sorted samples of one GPU,
    at most ``most`` points: consecutive buckets keep their first time, mean
    utilisation and *peak* memory (so a short spike stays visible). Missing
    readings are skipped; a bucket without any reading gives ``None`` (a gap)."""
    size = max(1, -(-len(samples) // most))
    t: list[float] = []
    util: list[float | None] = []
    mem: list[float | None] = []
    for i in range(0, len(samples), size):
        chunk = samples[i : i + size]
        utils = [s.util_pct for s in chunk if s.util_pct is not None and math.isfinite(s.util_pct)]
        mems = [s.memory_used_bytes for s in chunk if s.memory_used_bytes is not None]
        t.append(chunk[0].t_s)
        util.append(statistics.fmean(utils) if utils else None)
        mem.append(float(max(mems)) if mems else None)
    return t, util, mem


LOG_SPAN = 30.0
"""Planned vs actual goes on log axes where the longest duration is over this many times the shortest."""


def planned_tasks(data: ReportData) -> list[TaskRow]:
    """Tasks whose plan says something: an actual duration and a planned one that came from
    an estimate or history (a default duration is a guess, not a plan to compare against)."""
    return [t for t in data.tasks
            if t.duration_s is not None and t.planned_duration_s is not None
            and (t.estimate_s is not None or t.duration_source in ("estimate", "history"))]  # fmt: skip


def ratio_text(ratio: float) -> str:
    """``1.2x``, ``0.0012x``: two significant digits, never ``0.00x``."""
    return f"{ratio:.2f}x" if ratio >= 0.1 or ratio == 0 else f"{ratio:.2g}x"


def plan_vs_actual_figure(data: ReportData) -> Any | None:
    """Planned against actual duration of :func:`planned_tasks` (bars up to 60 tasks, else a scatter)."""
    go = plotly_go()
    rows = [(t.name, t.planned_duration_s, t.duration_s) for t in planned_tasks(data)]
    if not rows:
        return None
    unit, scale = time_unit(max(max(p or 0.0, a or 0.0) for _, p, a in rows))
    names = [esc(n) for n, _, _ in rows]
    # Durations spanning more than LOG_SPAN x (a 4 h estimate run in 15 s) go on log axes: on linear
    # ones every short bar or point sat on 0. There a duration under 0.1 s is drawn as 0.1 s.
    seconds = [v for _, p, a in rows for v in (p or 0.0, a or 0.0)]
    log = max(seconds) > LOG_SPAN * max(min(seconds), 0.1)
    floor = 0.1 if log else 0.0
    planned = [max(p or 0.0, floor) / scale for _, p, _ in rows]
    actual = [max(a or 0.0, floor) / scale for _, _, a in rows]
    kind = "log" if log else "linear"
    fig = go.Figure()
    if len(rows) <= 60:
        fig.add_trace(
            go.Bar(orientation="h", y=names, x=planned, name="planned", marker_color=_PLANNED_COLOR)
        )
        fig.add_trace(
            go.Bar(orientation="h", y=names, x=actual, name="actual", marker_color=_ACTUAL_COLOR)
        )
        fig.update_layout(barmode="group", height=max(260, 80 + 30 * len(rows)))
        fig.update_yaxes(autorange="reversed")
        fig.update_xaxes(title=f"duration ({unit}{', log scale' if log else ''})", type=kind)
    else:
        top, bottom = max(planned + actual), min(planned + actual) if log else 0.0
        fig.add_trace(go.Scatter(x=planned, y=actual, mode="markers", text=names, name="tasks"))
        fig.add_trace(go.Scatter(x=[bottom, top], y=[bottom, top], mode="lines", name="actual = planned",
                                 line={"dash": "dash", "color": "#999"}))  # fmt: skip
        fig.update_layout(height=520)
        fig.update_xaxes(title=f"planned ({unit}{', log scale' if log else ''})", type=kind)
        fig.update_yaxes(title=f"actual ({unit}{', log scale' if log else ''})", type=kind)
    fig.update_layout(margin={"l": 200, "r": 20, "t": 20, "b": 40}, plot_bgcolor="white")
    return fig
