"""One self-contained HTML report (plotly offline), and Gantt files for ``rota plan``.

plotly is optional (the ``report`` extra) and imported lazily: without it these
functions raise :class:`~rota.report.model.ReportError` saying
``pip install 'rota[report]'``. The HTML embeds plotly.js inline, so the file
opens with no network; every string from the run is HTML-escaped.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rota.report.gantt import lanes_from_report, stack_rows
from rota.report.model import (
    FAILED_STATES,
    TASK_STATES,
    Lane,
    LaneLike,
    ReportData,
    ReportError,
    as_lanes,
)
from rota.report.render import STATE_COLORS, fmt_ci, fmt_mean_std, fmt_value, header_lines
from rota.report.stats import group_metrics, memory_flags, run_summary, task_table
from rota.spec.units import format_duration, format_size

_INSTALL_HINT = "pip install 'rota[report]'"
_PLANNED_COLOR = "#9aa5b1"
_ACTUAL_COLOR = "#1f77b4"
_GPU_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left}th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px;margin-right:4px}
pre{background:#1f2933;color:#e4e7eb;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
.note{color:#616e7c;font-style:italic}.head td{border:none;padding:1px 12px 1px 0}
"""


def _plotly() -> Any:
    """Import plotly lazily; a ReportError with the install hint when it is missing."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise ReportError(f"HTML reports and Gantt files need plotly: {_INSTALL_HINT}") from exc
    return go


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time_unit(span_s: float) -> tuple[str, float]:
    """Axis unit for a span: seconds, minutes or hours, and its length in seconds."""
    if span_s > 3 * 3600:
        return "h", 3600.0
    if span_s > 180:
        return "min", 60.0
    return "s", 1.0


def gantt_figure(lanes: Sequence[LaneLike], title: str = "") -> Any:
    """A plotly Gantt of lanes: one horizontal bar per item, sub-rows for overlaps,
    coloured by item state (one legend entry per state). Returns a ``go.Figure``."""
    go = _plotly()
    lane_list = as_lanes(lanes)
    end = max((b for lane in lane_list for _, _, b in lane.items), default=1.0)
    unit, scale = _time_unit(end)
    rows_order: list[str] = []
    by_state: dict[str, dict[str, list[Any]]] = {}
    for lane in lane_list:
        rows = stack_rows([(a, b) for _, a, b in lane.items])
        names = [
            lane.name if r == 0 else f"{lane.name} ({r + 1})"
            for r in range(max(rows, default=0) + 1)
        ]
        rows_order += names
        for k, (label, a, b) in enumerate(lane.items):
            state = lane.states[k] if lane.states else ""
            d = by_state.setdefault(state, {"y": [], "base": [], "x": [], "text": [], "hover": []})
            d["y"].append(names[rows[k]])
            d["base"].append(a / scale)
            d["x"].append(max(b - a, 0.0) / scale)
            d["text"].append(_esc(label))
            d["hover"].append(
                f"{_esc(label)}<br>{_esc(lane.name)}, {state or 'planned'}<br>"
                f"{format_duration(a)} → {format_duration(b)} ({format_duration(b - a)})"
            )
    fig = go.Figure()
    rank = {s: k for k, s in enumerate(TASK_STATES)}
    for state, d in sorted(by_state.items(), key=lambda kv: rank.get(kv[0], len(rank))):
        fig.add_trace(
            go.Bar(
                orientation="h", y=d["y"], base=d["base"], x=d["x"], text=d["text"],
                name=state or "planned", marker_color=STATE_COLORS.get(state, "#17becf"),
                marker_line_color="white", marker_line_width=1, textposition="inside",
                insidetextanchor="start", hovertext=d["hover"], hoverinfo="text",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title, barmode="overlay", height=max(260, 90 + 34 * len(rows_order)),
        margin={"l": 90, "r": 20, "t": 50 if title else 20, "b": 40}, plot_bgcolor="white",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
    )  # fmt: skip
    fig.update_yaxes(categoryorder="array", categoryarray=rows_order, autorange="reversed")
    fig.update_xaxes(title=f"time since start ({unit})", showgrid=True, gridcolor="#eee")
    return fig


def _gpu_figure(data: ReportData) -> Any:
    go = _plotly()
    from plotly.subplots import make_subplots

    origin = data.origin_s or min(s.t_s for s in data.gpu_samples)
    span = max(s.t_s for s in data.gpu_samples) - origin
    unit, scale = _time_unit(span)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
        subplot_titles=("GPU utilisation (%)", "GPU memory used (GB)"),
    )  # fmt: skip
    gpus = sorted({s.gpu for s in data.gpu_samples})
    for k, g in enumerate(gpus):
        pts = sorted((s for s in data.gpu_samples if s.gpu == g), key=lambda s: s.t_s)
        x = [(s.t_s - origin) / scale for s in pts]
        color = _GPU_COLORS[k % len(_GPU_COLORS)]
        common = {"x": x, "mode": "lines", "legendgroup": f"gpu{g}", "line": {"color": color}}
        fig.add_trace(go.Scatter(y=[s.util_pct for s in pts], name=f"gpu{g}", **common), 1, 1)
        mem = [s.memory_used_bytes / 2**30 for s in pts]
        fig.add_trace(go.Scatter(y=mem, name=f"gpu{g}", showlegend=False, **common), 2, 1)
    total = max(s.memory_total_bytes for s in data.gpu_samples) / 2**30
    fig.add_hline(y=total, line_dash="dash", line_color="#999", row=2, col=1)
    fig.update_layout(height=520, margin={"l": 60, "r": 20, "t": 40, "b": 40}, plot_bgcolor="white")
    fig.update_yaxes(range=[0, 105], row=1, col=1, gridcolor="#eee")
    fig.update_yaxes(range=[0, total * 1.05], row=2, col=1, gridcolor="#eee")
    fig.update_xaxes(title=f"time since start ({unit})", row=2, col=1)
    return fig


def _plan_vs_actual_figure(data: ReportData) -> Any | None:
    go = _plotly()
    rows = [
        (t.name, t.planned_duration_s, t.duration_s)
        for t in data.tasks
        if t.planned_duration_s is not None and t.duration_s is not None
    ]
    if not rows:
        return None
    unit, scale = _time_unit(max(max(p or 0.0, a or 0.0) for _, p, a in rows))
    names = [_esc(n) for n, _, _ in rows]
    planned = [(p or 0.0) / scale for _, p, _ in rows]
    actual = [(a or 0.0) / scale for _, _, a in rows]
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
        fig.update_xaxes(title=f"duration ({unit})")
    else:
        top = max(planned + actual)
        fig.add_trace(go.Scatter(x=planned, y=actual, mode="markers", text=names, name="tasks"))
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="actual = planned",
                                 line={"dash": "dash", "color": "#999"}))  # fmt: skip
        fig.update_layout(height=520)
        fig.update_xaxes(title=f"planned ({unit})")
        fig.update_yaxes(title=f"actual ({unit})")
    fig.update_layout(margin={"l": 200, "r": 20, "t": 20, "b": 40}, plot_bgcolor="white")
    return fig


def _table(head: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """HTML table; cells are ``(already escaped html, numeric?)``."""
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if num else ''}>{c}</td>" for c, num in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _chip(state: str, text: str) -> str:
    return (
        f'<span class=chip style="background:{STATE_COLORS.get(state, "#555")}">{_esc(text)}</span>'
    )


def render_html(data: ReportData, by: Sequence[str], plan: Sequence[Lane] | None = None) -> str:
    """The whole report as one self-contained HTML page (plotly.js inline).

    Sections: run summary, Gantt of the real run (one lane per GPU plus ``cpu``,
    colour by state), the plan's Gantt when ``plan`` lanes are given, GPU
    utilisation and memory over time (a note when there are no samples),
    planned vs actual duration per task, grouped metrics (mean ± std, n, 95% CI),
    GPU-memory flags, failures with their log excerpts, and the task table.
    """
    parts: list[str] = []
    summary = run_summary(data)

    embedded: list[bool] = []

    def fig_html(fig: Any) -> str:
        """The figure's div; the first one also carries plotly.js, inline."""
        first = not embedded
        embedded.append(True)
        return str(fig.to_html(full_html=False, include_plotlyjs=first, default_width="100%",
                               config={"displaylogo": False, "responsive": True}))  # fmt: skip

    head_rows = "".join(
        f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in header_lines(data)
    )
    chips = "".join(_chip(s, f"{n} {s}") for s, n in summary.states.items())
    parts.append(
        f"<h1>rota report — {_esc(data.run_id)}</h1><table class=head>{head_rows}</table><p>{chips}</p>"
    )

    parts.append("<h2>Timeline</h2>")
    parts.append(fig_html(gantt_figure(lanes_from_report(data))))
    if plan is not None:
        parts.append("<h2>Plan (simulated)</h2>")
        parts.append(fig_html(gantt_figure(plan)))

    parts.append("<h2>GPU utilisation and memory</h2>")
    if data.gpu_samples:
        parts.append(fig_html(_gpu_figure(data)))
    else:
        parts.append(
            "<p class=note>No GPU samples were recorded for this run (no GPU, or NVML unavailable).</p>"
        )

    parts.append("<h2>Planned vs actual duration</h2>")
    pva = _plan_vs_actual_figure(data)
    if pva is not None:
        ratios = [t.duration_s / t.planned_duration_s for t in data.tasks
                  if t.duration_s is not None and t.planned_duration_s]  # fmt: skip
        if ratios:
            parts.append(
                f"<p>median actual / planned: {statistics.median(ratios):.2f}x over {len(ratios)} tasks</p>"
            )
        parts.append(fig_html(pva))
    else:
        parts.append("<p class=note>No task has both a planned and an actual duration.</p>")

    groups = group_metrics(data.tasks, by)
    parts.append(f"<h2>Metrics by {_esc(', '.join(by) or 'task')}</h2>")
    if groups:
        rows = [
            [(_esc(g.base or "-"), False), *((_esc(g.vars[v]), False) for v in by), (_esc(g.metric), False),
             (_esc(fmt_mean_std(g.summary.mean, g.summary.std)), True), (str(g.summary.n), True),
             (_esc(fmt_ci(g.summary.ci_low, g.summary.ci_high)), True)]
            for g in groups
        ]  # fmt: skip
        parts.append(_table(["task", *by, "metric", "mean ± std", "n", "95% CI"], rows))
    else:
        parts.append("<p class=note>No succeeded task reported metrics.</p>")

    flags = memory_flags(data.tasks)
    if flags:
        parts.append("<h2>GPU memory declared vs measured</h2>")
        parts.append(
            _table(
                ["task", "flag", "advice"],
                [[(_esc(f.task), False), (f.kind, False), (_esc(f.message), False)] for f in flags],
            )
        )

    failed = [t for t in data.tasks if t.state in FAILED_STATES]
    parts.append(f"<h2>Failures ({len(failed)})</h2>")
    for t in failed:
        parts.append(
            f"<h3>{_chip(t.state, t.state)}{_esc(t.name)}</h3><p>exit {_esc(t.exit_code)}, "
            f"{t.attempts} attempt(s): {_esc(t.reason or 'no reason recorded')}"
            + (f"<br>log: <code>{_esc(t.log_path)}</code>" if t.log_path else "")
            + "</p>"
            + (f"<pre>{_esc(t.log_tail.rstrip())}</pre>" if t.log_tail.strip() else "")
        )
    if not failed:
        parts.append("<p class=note>No task failed.</p>")

    parts.append("<h2>Tasks</h2>")
    trows = []
    for r in task_table(data.tasks):
        mem = format_size(r.peak_gpu_memory_bytes) if r.peak_gpu_memory_bytes is not None else "-"
        if r.gpu_memory_bytes is not None:
            mem += f" / {format_size(r.gpu_memory_bytes)}"
        metrics = ", ".join(f"{k}={fmt_value(v)}" for k, v in r.metrics.items())
        trows.append([(_esc(r.name), False), (_chip(r.state, r.state), False), (str(r.attempts), True),
                      (format_duration(r.duration_s), True), (",".join(map(str, r.gpus)) or "cpu", False),
                      (_esc(mem), True), (_esc(metrics), False)])  # fmt: skip
    parts.append(
        _table(
            ["task", "state", "att.", "duration", "GPUs", "peak / declared mem", "metrics"], trows
        )
    )

    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>rota report {_esc(data.run_id)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


# --------------------------------------------------------------- Gantt files


def render_gantt_file(
    lanes: Sequence[LaneLike], path: str | Path, title: str = "rota plan"
) -> Path:
    """Write a Gantt chart of ``lanes`` to ``path`` and return it.

    ``.html``/``.htm``: plotly, self-contained. ``.png``: plotly + kaleido when
    both import and work, else matplotlib when installed, else a ReportError
    naming what to install. Any other suffix, or an unwritable path, is a
    ReportError.
    """
    out = Path(path)
    lane_list = as_lanes(lanes)
    suffix = out.suffix.lower()
    try:
        if suffix in (".html", ".htm"):
            fig = gantt_figure(lane_list, title)
            out.write_text(fig.to_html(full_html=True, include_plotlyjs=True), encoding="utf-8")
            return out
        if suffix != ".png":
            raise ReportError(f"--gantt file must end in .html or .png, found {out.name!r}")
        kaleido_error: Exception | None = None
        try:
            import kaleido  # noqa: F401

            fig = gantt_figure(lane_list, title)
            fig.write_image(str(out), width=1400, height=int(fig.layout.height or 400))
            return out
        except ImportError:
            pass
        except (OSError, RuntimeError, ValueError) as exc:  # kaleido present but unusable
            kaleido_error = exc
        try:
            _gantt_png_matplotlib(lane_list, out, title)
        except ImportError as exc:
            hint = f" (kaleido failed: {kaleido_error})" if kaleido_error else ""
            raise ReportError(
                "writing a PNG Gantt needs kaleido or matplotlib: "
                f"pip install 'rota[report]' kaleido, or pip install matplotlib{hint}; "
                "or write .html instead"
            ) from exc
        return out
    except OSError as exc:
        raise ReportError(f"cannot write Gantt chart to {str(out)!r}: {exc}") from exc


def _gantt_png_matplotlib(lanes: list[Lane], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((b for lane in lanes for _, _, b in lane.items), default=1.0)
    unit, scale = _time_unit(end)
    rows: list[str] = []
    bars: list[tuple[int, float, float, str, str]] = []
    for lane in lanes:
        sub = stack_rows([(a, b) for _, a, b in lane.items])
        base = len(rows)
        rows += [
            lane.name if r == 0 else f"{lane.name} ({r + 1})"
            for r in range(max(sub, default=0) + 1)
        ]
        for k, (label, a, b) in enumerate(lane.items):
            state = lane.states[k] if lane.states else ""
            bars.append((base + sub[k], a / scale, (b - a) / scale, label, state))
    fig, ax = plt.subplots(figsize=(14, max(2.5, 0.9 + 0.4 * len(rows))), dpi=100)
    try:
        for row, left, width, label, state in bars:
            ax.barh(
                row, width, left=left, color=STATE_COLORS.get(state, "#17becf"), edgecolor="white"
            )
            ax.text(left + 0.005 * end / scale, row, label, va="center", fontsize=7, clip_on=True)
        ax.set_yticks(range(len(rows)), rows)
        ax.invert_yaxis()
        ax.set_xlabel(f"time since start ({unit})")
        ax.set_title(title)
        ax.set_axisbelow(True)
        ax.grid(axis="x", color="#eee")
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
