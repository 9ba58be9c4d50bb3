"""One self-contained HTML report (plotly offline, plotly.js once, compressed).

plotly is optional (the ``report`` extra) and imported lazily: without it these
functions raise :class:`~rota.report.model.ReportError` saying
``pip install 'rota[report]'``. Every string from the run is HTML-escaped.

:func:`report_figures` gives every figure of the report by a file-safe name
(``rota report --figures DIR`` writes them; a live view can reuse them);
:func:`render_html` lays them out with the tables, one per task group.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rota.report.code import CodeConflict, code_conflicts, code_id, code_text, code_versions
from rota.report.figures import gpu_figure, plan_vs_actual_figure, planned_tasks, ratio_text
from rota.report.gantt import lanes_from_report
from rota.report.gantt_file import render_gantt_file
from rota.report.model import FAILED_STATES, LaneLike, ReportData, TaskRow
from rota.report.page import PlotlyJs, esc, figure_div, page
from rota.report.render import STATE_COLORS, fmt_ci, fmt_value, header_lines
from rota.report.results import results_by_group, results_figure, untitled
from rota.report.stats import (
    GroupRow,
    group_metrics,
    memory_flags,
    metric_names,
    run_summary,
    task_table,
)
from rota.report.sweep_figures import FIGURE_TITLES
from rota.report.tables import task_groups
from rota.report.timeline import (
    SHARED_LANES_NOTE,
    gantt_figure,
    gpu_memory_figure,
    run_group_colors,
)
from rota.units import format_duration, format_size

__all__ = ["gantt_figure", "render_gantt_file", "render_html", "report_figures"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;max-width:1500px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;white-space:nowrap}th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px;margin-right:4px}
pre{background:#1f2933;color:#e4e7eb;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
.note{color:#616e7c;font-size:13px}.head td{border:none;padding:1px 12px 1px 0}
.row{display:flex;flex-wrap:wrap;gap:16px}.row>div{flex:1 1 440px;min-width:0}
nav a{margin-right:12px;font-size:14px}
.warn{background:#fff4e5;border-left:4px solid #d9822b;padding:6px 10px;margin:8px 0;font-size:13px}
.dirty{color:#b3261e;font-weight:600}
"""


def slug(text: str) -> str:
    """A file- and id-safe name: letters, digits, ``-``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "x"


def report_figures(data: ReportData, by: Sequence[str], sweep_figs: Mapping[str, Mapping[str, Any]] | None = None,
                   plan: Sequence[LaneLike] | None = None) -> dict[str, Any]:
    """Every figure of the report, ``{file-safe name: go.Figure}``, in page order:
    ``results-<group>``, ``sweep-<study>-<history|parallel|importance>``, ``timeline``,
    ``plan``, ``gpu-memory``, ``gpu-util``, ``planned-vs-actual`` (each only when it has data)."""
    out: dict[str, Any] = {}
    for base, (mine, rows) in results_by_group(group_metrics(data.tasks, by), by).items():
        out[f"results-{slug(base)}"] = results_figure(base, mine, rows, data.tasks)
    for study, figs in (sweep_figs or {}).items():
        for kind, fig in figs.items():
            out[f"sweep-{slug(study)}-{kind}"] = fig
    out["timeline"] = gantt_figure(lanes_from_report(data), colors=run_group_colors(data))
    if plan is not None:
        out["plan"] = gantt_figure(plan)
    mem = gpu_memory_figure(data)
    if mem is not None and any(t.gpus for t in data.tasks):
        out["gpu-memory"] = mem
    if data.gpu_samples:
        out["gpu-util"] = gpu_figure(data, memory=False)
    pva = plan_vs_actual_figure(data)
    if pva is not None:
        out["planned-vs-actual"] = pva
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """HTML table; cells are ``(already escaped html, numeric?)``."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if num else ''}>{c}</td>" for c, num in row) + "</tr>"
                   for row in rows)  # fmt: skip
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _chip(state: str, text: str) -> str:
    return f'<span class=chip style="background:{STATE_COLORS.get(state, "#555")}">{esc(text)}</span>'


def _code_html(code: Mapping[str, Any]) -> str:
    """One code version: ``git 1a2b3c4d5e6f``, a red ``dirty`` and the diff's hash where the tree was
    dirty; hovering shows where the diff is kept (state folder), the repository or the script."""
    text = esc(code_text(code))
    if code.get("kind") == "git" and code.get("dirty"):
        text = text.replace(" dirty ", " <span class=dirty>dirty</span> ", 1)
    tip = code.get("diff_path") or code.get("repo") or code.get("path") or ""
    return f'<code title="{esc(tip)}">{text}</code>'


def _code_line(tasks: Sequence[TaskRow]) -> str:
    """Which code these tasks' latest attempts ran: each version and how many tasks ran it
    (nothing when no task has a code record)."""
    versions = code_versions(tasks)
    if not versions:
        return ""
    items = [f"{_code_html(code)} ({len(names)} task{'s' if len(names) != 1 else ''})" for code, names in versions]
    return "<p class=note>code: " + ", ".join(items) + "</p>"


def _code_warnings(conflicts: Sequence[CodeConflict], most: int | None = None) -> str:
    """The text report's warnings (replicates of one group ran different code), as boxes; past
    ``most`` of them, one box that counts the rest (each group's results show its own)."""
    shown = conflicts if most is None else conflicts[:most]
    out = "".join(f"<div class=warn>&#9888; {esc(c.message)}</div>" for c in shown)
    if len(conflicts) > len(shown):
        out += (f"<div class=warn>&#9888; and {len(conflicts) - len(shown)} more groups of replicates ran "
                "different code: see each group's results</div>")
    return out


def _task_rows(tasks: Sequence[TaskRow]) -> str:
    """A group's task table: its own metrics as columns (narrow: only what the group has), and the
    code each task's latest attempt ran (:func:`rota.report.code.code_id`) where any was recorded."""
    names = metric_names(tasks)
    rows = task_table(tasks)
    with_mem = any(r.gpu_memory_bytes is not None or r.peak_gpu_memory_bytes is not None for r in rows)
    codes = {t.name: code_id(t.code) for t in tasks}
    with_code = any(codes.values())
    out = []
    for r in rows:
        cells = [(esc(r.name), False), (_chip(r.state, r.state), False), (str(r.attempts), True),
                 (format_duration(r.duration_s), True), (esc(",".join(map(str, r.gpus)) or "cpu"), False)]  # fmt: skip
        if with_mem:
            mem = format_size(r.peak_gpu_memory_bytes) if r.peak_gpu_memory_bytes is not None else "-"
            cells.append((esc(mem + (f" / {format_size(r.gpu_memory_bytes)}" if r.gpu_memory_bytes else "")), True))
        cells += [(esc(fmt_value(r.metrics.get(m))), True) for m in names]
        if with_code:
            cells.append((f"<code>{esc(codes.get(r.name) or '-')}</code>", False))
        out.append(cells)
    head = ["task", "state", "att.", "duration", "GPUs", *(["GPU mem peak / booked"] if with_mem else []), *names,
            *(["code"] if with_code else [])]
    return _table(head, out)


def _interval(g: GroupRow) -> str:
    """``0.872 [0.856, 0.888]`` (``*``: a bootstrap interval); the mean alone for one replicate."""
    s = g.summary
    if s.ci_low is None or s.ci_high is None:
        return fmt_value(s.mean)
    return f"{fmt_value(s.mean)} {fmt_ci(s.ci_low, s.ci_high)}" + (" *" if s.method == "bootstrap" else "")


def _group_table(mine: Sequence[str], rows: Sequence[GroupRow]) -> str:
    """A group's results, narrow: one row per value of its variables, one column per metric
    (mean and 95% interval), and the number of replicates."""
    metrics = list(dict.fromkeys(g.metric for g in rows))
    combos: dict[tuple[str, ...], dict[str, GroupRow]] = {}
    for g in rows:
        combos.setdefault(tuple(g.vars[v] for v in mine), {})[g.metric] = g
    out = []
    for values, by_metric in combos.items():
        ns = sorted({g.summary.n for g in by_metric.values()})
        out.append([*((esc(v), False) for v in values),
                    *((esc(_interval(by_metric[m])) if m in by_metric else "-", True) for m in metrics),
                    ("/".join(map(str, ns)), True)])  # fmt: skip
    return _table([*mine, *(f"{m}, mean [95% CI]" for m in metrics), "n"], out)


def _param(v: Any) -> str:
    return "-" if v is None else fmt_value(v) if isinstance(v, float) else str(v)


def _best_trials(s: Mapping[str, Any]) -> str:
    """The best trials of one sweep, one column per parameter."""
    params = list(dict.fromkeys(k for b in s["best"] for k in b["params"]))
    rows = [[(str(b["rank"]), True), (esc(fmt_value(b["value"])), True), (esc(b["task"] or f"#{b['number']}"), False),
             *((esc(_param(b["params"].get(p))), True) for p in params)]
            for b in s["best"]]  # fmt: skip
    return _table(["rank", s["metric"] or "value", "trial task", *params], rows)


def render_html(data: ReportData, by: Sequence[str], plan: Sequence[LaneLike] | None = None,
                sweeps: Sequence[Mapping[str, Any]] | None = None,
                sweep_figs: Mapping[str, Mapping[str, Any]] | None = None,
                plotlyjs: PlotlyJs = "inline") -> str:
    """The whole report as one self-contained HTML page.

    Sections: run summary; results (per task group: each metric against the
    grouping variables, mean and 95% interval over replicates, and the group's
    interval table); sweeps (``sweeps``: :func:`rota.report.sweeps.best_trials`,
    ``sweep_figs``: :func:`rota.report.sweep_figures.sweep_figures`); timeline
    (and the plan's, when ``plan`` lanes are given); booked and measured GPU
    memory per GPU; GPU utilisation; planned vs actual (tasks with an estimate
    or history only); GPU-memory flags; failures with their log tails; the
    tasks, one table per group.

    The code each task ran (``TaskRow.code``): per group, in its results and its task table, each
    version (short commit, dirty marker) and how many tasks ran it; a warning box, at the top and
    in the group's results, for each group of replicates that ran different code
    (:func:`rota.report.code.code_conflicts`, as ``rota report`` warns on stderr).
    """
    figs = report_figures(data, by, sweep_figs, plan)
    conflicts = code_conflicts(data.tasks, {t.name: t.code for t in data.tasks if t.code}, by)
    summary = run_summary(data)
    parts: list[str] = []
    nav = [("results", "Results"), ("sweeps", "Sweeps"), ("timeline", "Timeline"), ("gpus", "GPUs"),
           ("plan", "Planned vs actual"), ("failures", "Failures"), ("tasks", "Tasks")]  # fmt: skip
    head_rows = "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in header_lines(data))
    chips = "".join(_chip(s, f"{n} {s}") for s, n in summary.states.items())
    parts.append(f"<h1>rota report — {esc(data.run_id)}</h1><table class=head>{head_rows}</table><p>{chips}</p>"
                 + _code_warnings(conflicts, most=5)
                 + "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in nav if a != "sweeps" or sweeps) + "</nav>")

    parts.append("<h2 id=results>Results</h2>")
    groups = results_by_group(group_metrics(data.tasks, by), by)
    if not groups:
        trials = any(t.trial is not None and t.metrics for t in data.tasks)
        parts.append("<p class=note>No succeeded task reported metrics"
                     + (" outside sweeps (sweep trials are configurations, not replicates: see Sweeps)."
                        if trials else ".") + "</p>")
    else:
        parts.append("<p class=note>Per task group: the mean over replicates (the variables not grouped by: "
                     "seeds by default, <code>--by</code> to choose) with its 95% interval, and each replicate "
                     "as a faint dot. Intervals are Student t, or a bootstrap where t leaves the metric's range; "
                     "sweep trials are never averaged (see Sweeps).</p>")
    for base, (mine, rows) in groups.items():
        parts.append(f"<h3>{esc(base)}</h3>"
                     + figure_div(untitled(figs[f"results-{slug(base)}"]), f"fig-results-{slug(base)}"))
        parts.append(_group_table(mine, rows))
        replicates = {n for g in rows for n in g.tasks}
        parts.append(_code_line([t for t in data.tasks if t.name in replicates])
                     + _code_warnings([c for c in conflicts if (c.base or "tasks") == base]))
        if any(g.summary.method == "bootstrap" for g in rows):
            parts.append("<p class=note>* bootstrap interval (the t-interval left the metric's range)</p>")

    if sweeps:
        parts.append("<h2 id=sweeps>Sweeps</h2>")
        for s in sweeps:
            c = s["counts"]
            parts.append(f"<h3>{esc(s['sweep'])}: {esc(s['metric'] or 'value')} ({esc(s['direction'])})</h3>"
                         f"<p>{c['complete']} complete, {c['fail']} failed, {c['pruned']} pruned, "
                         f"{c['running']} running" + (f"; earlier studies: {esc(', '.join(s['earlier']))}"
                                                      if s.get("earlier") else "") + "</p>")  # fmt: skip
            parts.append(_best_trials(s) if s["best"] else "<p class=note>No complete trial yet.</p>")
            names = [f"sweep-{slug(s['sweep'])}-{k}" for k in FIGURE_TITLES]
            parts.append("<div class=row>" + "".join(f"<div>{figure_div(figs[n], 'fig-' + n)}</div>"
                                                     for n in names if n in figs) + "</div>")

    parts.append("<h2 id=timeline>Timeline</h2>" + figure_div(figs["timeline"], "fig-timeline")
                 + f"<p class=note>{esc(SHARED_LANES_NOTE)}</p>")
    if "plan" in figs:
        parts.append("<h3>Plan (simulated)</h3>" + figure_div(figs["plan"], "fig-plan"))

    parts.append("<h2 id=gpus>GPU memory and utilisation</h2>")
    if "gpu-memory" in figs:
        parts.append("<p class=note>Booked GPU memory over time, stacked by task (coloured by group): how tasks "
                     "were packed. The black line is the memory measured by NVML, where sampled; dashed: the "
                     "GPU's size.</p>" + figure_div(figs["gpu-memory"], "fig-gpu-memory"))
    if "gpu-util" in figs:
        parts.append(figure_div(figs["gpu-util"], "fig-gpu-util"))
    else:
        parts.append("<p class=note>No GPU samples were recorded for this run (no GPU, or NVML unavailable).</p>")

    parts.append("<h2 id=plan>Planned vs actual duration</h2>")
    timed = planned_tasks(data)
    if "planned-vs-actual" in figs:
        ratios = [t.duration_s / t.planned_duration_s for t in timed
                  if t.duration_s is not None and t.planned_duration_s]  # fmt: skip
        if ratios:
            parts.append(f"<p>median actual / planned: {ratio_text(statistics.median(ratios))} over "
                         f"{len(ratios)} tasks with an estimate or history</p>")
        parts.append(figure_div(figs["planned-vs-actual"], "fig-planned-vs-actual"))
    else:
        parts.append("<p class=note>No finished task has an estimate or a duration from history to compare "
                     "against.</p>")

    flags = memory_flags(data.tasks)
    if flags:
        parts.append("<h2>GPU memory declared vs measured</h2>")
        parts.append(_table(["task", "flag", "advice"],
                            [[(esc(f.task), False), (f.kind, False), (esc(f.message), False)] for f in flags]))

    failed = [t for t in data.tasks if t.state in FAILED_STATES]
    parts.append(f"<h2 id=failures>Failures ({len(failed)})</h2>")
    for t in failed:
        parts.append(
            f"<h3>{_chip(t.state, t.state)}{esc(t.name)}</h3><p>exit {esc(t.exit_code)}, "
            f"{t.attempts} attempt(s): {esc(t.reason or 'no reason recorded')}"
            + (f"<br>log: <code>{esc(t.log_path)}</code>" if t.log_path else "") + "</p>"
            + (f"<pre>{esc(t.log_tail.rstrip())}</pre>" if t.log_tail.strip() else "")
        )
    if not failed:
        parts.append("<p class=note>No task failed.</p>")

    parts.append("<h2 id=tasks>Tasks</h2>")
    for group, members in task_groups(data.tasks):
        parts.append(f"<h3>{esc(group) if group is not None else 'Other tasks'} ({len(members)})</h3>"
                     + _code_line(members) + _task_rows(members))
    return page(f"rota report {data.run_id}", parts, _CSS, plotlyjs)
