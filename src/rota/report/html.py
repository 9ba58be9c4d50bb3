"""One self-contained HTML report (plotly offline), and Gantt files for ``rota plan``.

plotly is optional (the ``report`` extra) and imported lazily: without it these
functions raise :class:`~rota.report.model.ReportError` saying
``pip install 'rota[report]'``. The HTML embeds plotly.js inline, so the file
opens with no network; every string from the run is HTML-escaped.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rota.report.figures import (
    esc,
    gantt_figure,
    gpu_figure,
    plan_vs_actual_figure,
    time_unit,
)
from rota.report.gantt import lanes_from_report, stack_rows
from rota.report.model import FAILED_STATES, Lane, LaneLike, ReportData, ReportError, as_lanes
from rota.report.render import STATE_COLORS, fmt_ci, fmt_mean_std, fmt_value, header_lines
from rota.report.stats import group_metrics, memory_flags, run_summary, task_table
from rota.units import format_duration, format_size

__all__ = ["gantt_figure", "render_gantt_file", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left}th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px;margin-right:4px}
pre{background:#1f2933;color:#e4e7eb;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
.note{color:#616e7c;font-style:italic}.head td{border:none;padding:1px 12px 1px 0}
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """HTML table; cells are ``(already escaped html, numeric?)``."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if num else ''}>{c}</td>" for c, num in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _chip(state: str, text: str) -> str:
    return (
        f'<span class=chip style="background:{STATE_COLORS.get(state, "#555")}">{esc(text)}</span>'
    )


def render_html(data: ReportData, by: Sequence[str], plan: Sequence[LaneLike] | None = None) -> str:
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
        f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in header_lines(data)
    )
    chips = "".join(_chip(s, f"{n} {s}") for s, n in summary.states.items())
    parts.append(
        f"<h1>rota report — {esc(data.run_id)}</h1><table class=head>{head_rows}</table><p>{chips}</p>"
    )

    parts.append("<h2>Timeline</h2>")
    parts.append(fig_html(gantt_figure(lanes_from_report(data))))
    if plan is not None:
        parts.append("<h2>Plan (simulated)</h2>")
        parts.append(fig_html(gantt_figure(plan)))

    parts.append("<h2>GPU utilisation and memory</h2>")
    if data.gpu_samples:
        parts.append(fig_html(gpu_figure(data)))
    else:
        parts.append(
            "<p class=note>No GPU samples were recorded for this run (no GPU, or NVML unavailable).</p>"
        )

    parts.append("<h2>Planned vs actual duration</h2>")
    pva = plan_vs_actual_figure(data)
    if pva is not None:
        # Only tasks with an estimate: the others were planned at the default duration,
        # a guess that says nothing about the plan's accuracy.
        ratios = [t.duration_s / t.planned_duration_s for t in data.tasks
                  if t.duration_s is not None and t.planned_duration_s and t.estimate_s is not None]  # fmt: skip
        if ratios:
            median_ratio = statistics.median(ratios)
            shown = f"{median_ratio:.2f}" if median_ratio >= 0.1 or median_ratio == 0 else f"{median_ratio:.2g}"
            parts.append(f"<p>median actual / planned: {shown}x over {len(ratios)} tasks with an estimate</p>")
        parts.append(fig_html(pva))
    else:
        parts.append("<p class=note>No task has both a planned and an actual duration.</p>")

    groups = group_metrics(data.tasks, by)
    parts.append(f"<h2>Metrics by {esc(', '.join(by) or 'task')}</h2>")
    if groups:
        rows = [
            [(esc(g.base or "-"), False), *((esc(g.vars[v]), False) for v in by), (esc(g.metric), False),
             (esc(fmt_mean_std(g.summary.mean, g.summary.std)), True), (str(g.summary.n), True),
             (esc(fmt_ci(g.summary.ci_low, g.summary.ci_high)), True)]
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
                [[(esc(f.task), False), (f.kind, False), (esc(f.message), False)] for f in flags],
            )
        )

    failed = [t for t in data.tasks if t.state in FAILED_STATES]
    parts.append(f"<h2>Failures ({len(failed)})</h2>")
    for t in failed:
        parts.append(
            f"<h3>{_chip(t.state, t.state)}{esc(t.name)}</h3><p>exit {esc(t.exit_code)}, "
            f"{t.attempts} attempt(s): {esc(t.reason or 'no reason recorded')}"
            + (f"<br>log: <code>{esc(t.log_path)}</code>" if t.log_path else "")
            + "</p>"
            + (f"<pre>{esc(t.log_tail.rstrip())}</pre>" if t.log_tail.strip() else "")
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
        trows.append([(esc(r.name), False), (_chip(r.state, r.state), False), (str(r.attempts), True),
                      (format_duration(r.duration_s), True), (",".join(map(str, r.gpus)) or "cpu", False),
                      (esc(mem), True), (esc(metrics), False)])  # fmt: skip
    parts.append(
        _table(
            ["task", "state", "att.", "duration", "GPUs", "peak / declared mem", "metrics"], trows
        )
    )

    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>rota report {esc(data.run_id)}</title><style>{_CSS}</style></head>"
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
    unit, scale = time_unit(end)
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
