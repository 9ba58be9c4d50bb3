"""The timeline (a Gantt of lanes) and the booked GPU memory per GPU, as plotly figures.

One drawing for the run (``rota report``) and the plan (``rota plan --gantt``):
bars are coloured by task *group* (the spec task a matrix, shards or sweep
expanded; one legend entry each), the *state* shows as the bar's outline and
pattern (failed: red outline, ``x``; interrupted: orange, ``/``; running:
blue, ``.``; cached: faded), a label is written only where it fits the bar, and
the hover always names the task. A GPU that runs several tasks at once (packed
by ``gpu_memory``) gets one row per concurrent task: ``gpu0``, ``gpu0 · 2``...
(:data:`SHARED_LANES_NOTE` says so under the chart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rota.lanes import Lane, LaneLike, as_lanes, stack_rows
from rota.report.figures import downsample, esc, plotly_go, time_unit
from rota.report.model import TASK_STATES, EarlierAttempt, ReportData, TaskRow
from rota.units import format_duration, format_size

PALETTE: tuple[str, ...] = (
    "#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#eeca3b", "#ff9da6", "#9d755d",
    "#79706e", "#e45756", "#bab0ac", "#000075", "#f032e6", "#4363d8", "#aaffc3", "#d62790",
)  # fmt: skip
"""Group colours, assigned in order of first appearance and reused cyclically. Tableau's ten and
a grey, then five far from all of them (CIE76 distance >= 19 between any two: the next five of
plotly's own palette were near-copies of the first, main-medium and ablation-large both blue)."""

STATE_STYLE: dict[str, tuple[str, str, float]] = {
    "failed": ("x", "#d62728", 2.5),
    "interrupted": ("/", "#ff7f0e", 2.5),
    "running": (".", "#1f77b4", 2.0),
    "launching": (".", "#1f77b4", 2.0),
    "cancelled": ("-", "#e377c2", 2.0),
}
"""State -> (pattern shape, outline colour, outline width); other states: plain bar, white outline."""

SHARED_LANES_NOTE = (
    "Colour: task group (legend). Outline and pattern: state (red x failed, orange / interrupted, "
    "blue dots running, pink - cancelled, faded cached). A GPU that ran several tasks at the same time (packed by "
    "their gpu_memory) has one row per task running at once: gpu0, gpu0 · 2, ...; a task on "
    "several GPUs appears in each of their rows. Hover a bar for its task."
)

_PLOT_WIDTH_PX = 900  # the drawing area a 1400 px page leaves the bars beside the legend (labels fit this)
_CHAR_PX = 6.6  # one character of the 11 px label font


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    """``{group: colour}`` in order of first appearance (the palette repeats past 16 groups)."""
    out: dict[str, str] = {}
    for g in groups:
        if g not in out:
            out[g] = PALETTE[len(out) % len(PALETTE)]
    return out


def fit_label(label: str, width_px: float) -> str:
    """``label`` if it fits a bar ``width_px`` wide, cut with ``…`` if 6+ characters fit, else ``""``."""
    room = int((width_px - 8) / _CHAR_PX)
    if room >= len(label):
        return label
    return label[: room - 1] + "…" if room >= 6 else ""


def sub_row_name(lane: str, row: int) -> str:
    """Row ``row`` (from 0) of a lane: ``gpu0``, then ``gpu0 · 2``, ``gpu0 · 3``..."""
    return lane if row == 0 else f"{lane} · {row + 1}"


def gantt_figure(lanes: Sequence[LaneLike], title: str = "", colors: Mapping[str, str] | None = None) -> Any:
    """A plotly Gantt of ``lanes``: one trace per task group, state as outline and pattern.

    ``colors`` maps groups to colours (to match other figures; default: :func:`group_colors`
    in order of the items' starts). Returns a ``go.Figure``; its height grows with the rows.
    """
    go = plotly_go()
    lane_list: list[Lane] = as_lanes(lanes)
    end = max((b for lane in lane_list for _, _, b in lane.items), default=1.0) or 1.0
    unit, scale = time_unit(end)
    by_start = sorted(((a, lane.group(k)) for lane in lane_list for k, (_, a, _) in enumerate(lane.items)),
                      key=lambda p: p[0])  # ties: lane order
    colors = {**group_colors([g for _, g in by_start]), **(colors or {})}
    rows_order: list[str] = []
    traces: dict[str, dict[str, list[Any]]] = {}
    states_seen: dict[str, None] = {}
    for lane in lane_list:
        rows = stack_rows([(a, b) for _, a, b in lane.items])
        names = [sub_row_name(lane.name, r) for r in range(max(rows, default=0) + 1)]
        rows_order += names
        for k, (label, a, b) in enumerate(lane.items):
            state = lane.states[k] if lane.states else ""
            states_seen.setdefault(state, None)
            group = lane.group(k)
            pattern, outline, width = STATE_STYLE.get(state, ("", "white", 1.0))
            d = traces.setdefault(group, {k2: [] for k2 in
                                          ("y", "base", "x", "text", "hover", "pattern", "line", "lw", "op")})
            d["y"].append(names[rows[k]])
            d["base"].append(a / scale)
            d["x"].append(max(b - a, 0.0) / scale)
            d["text"].append(esc(fit_label(label, (b - a) / end * _PLOT_WIDTH_PX)))
            d["hover"].append(
                f"<b>{esc(label)}</b><br>group {esc(group)}, {esc(state or 'planned')}, on {esc(lane.name)}<br>"
                f"{format_duration(a)} → {format_duration(b)} ({format_duration(b - a)})"
            )
            d["pattern"].append(pattern)
            d["line"].append(outline)
            d["lw"].append(width)
            d["op"].append(0.45 if state == "cached" else 1.0)
    fig = go.Figure()
    rank_of = {g: k for k, g in enumerate(colors)}
    traces = dict(sorted(traces.items(), key=lambda kv: rank_of.get(kv[0], len(rank_of))))  # legend: by start
    for group, d in traces.items():
        fig.add_trace(go.Bar(
            orientation="h", y=d["y"], base=d["base"], x=d["x"], text=d["text"], name=esc(group),
            marker={"color": colors[group], "opacity": d["op"], "line": {"color": d["line"], "width": d["lw"]},
                    "pattern": {"shape": d["pattern"], "fgcolor": "rgba(0,0,0,0.45)", "size": 7}},
            textposition="inside", insidetextanchor="start", textfont={"size": 11}, constraintext="none",
            hovertext=d["hover"], hoverinfo="text", legendgroup="groups",
            legendgrouptitle={"text": "task group"} if group == next(iter(traces)) else None,
        ))  # fmt: skip
    rank = {s: k for k, s in enumerate(TASK_STATES)}
    for state in sorted((s for s in states_seen if s), key=lambda s: rank.get(s, len(rank))):
        pattern, outline, width = STATE_STYLE.get(state, ("", "#9aa5b1", 1.0))
        fig.add_trace(go.Bar(
            orientation="h", x=[None], y=[None], name=state, legendgroup="states", hoverinfo="skip",
            marker={"color": "#dde3ea", "opacity": 0.45 if state == "cached" else 1.0,
                    "line": {"color": outline, "width": width},
                    "pattern": {"shape": pattern, "fgcolor": "rgba(0,0,0,0.45)", "size": 7}},
            legendgrouptitle={"text": "state"} if state == min(
                (s for s in states_seen if s), key=lambda s: rank.get(s, len(rank))) else None,
        ))  # fmt: skip
    fig.update_layout(
        title=esc(title), barmode="overlay",
        height=max(260, 110 + 26 * len(rows_order), 120 + 21 * (len(traces) + len(states_seen) + 2)),
        margin={"l": 100, "r": 20, "t": 50 if title else 20, "b": 40}, plot_bgcolor="white",
        legend={"groupclick": "toggleitem", "tracegroupgap": 12}, bargap=0.15,
        uniformtext={"mode": "hide", "minsize": 8},
    )  # fmt: skip
    fig.update_yaxes(categoryorder="array", categoryarray=rows_order, autorange="reversed")
    fig.update_xaxes(title=f"time since start ({unit})", showgrid=True, gridcolor="#eee")
    return fig


def lanes_with_groups(lanes: Sequence[Lane], groups: dict[str, str]) -> list[Lane]:
    """The same lanes with each item's group looked up by its label (unknown labels: themselves)."""
    return [Lane(ln.name, ln.items, ln.states, tuple(groups.get(lbl, lbl) for lbl, _, _ in ln.items))
            for ln in lanes]


def run_group_colors(data: ReportData) -> dict[str, str]:
    """Group colours of a run, in order of the groups' first start (what every run figure uses)."""
    order = sorted(data.tasks, key=lambda t: (t.start_s is None, t.start_s or 0.0))
    return group_colors([t.base or t.name for t in order])


def gpu_memory_figure(data: ReportData) -> Any | None:
    """Booked GPU memory over time, one panel per GPU, stacked by task (coloured by group),
    with the measured memory (NVML samples) drawn over it where sampled and the GPU's
    size as a dashed line. A task that booked a whole GPU counts as the GPU's size.

    ``None`` when no task held a GPU and nothing was sampled.
    """
    go = plotly_go()
    from plotly.subplots import make_subplots

    origin, horizon = data.origin_s, data.horizon_s
    if origin is None or horizon is None:
        return None
    size = {g.index: g.memory_bytes for g in data.gpus}
    # A panel per GPU that a task held or NVML sampled: one nobody used would be an empty frame
    # without axes (hpo-gbdt's pool [0, 1] on 4 GPUs drew two); the title names those left out.
    used = {g for t in data.tasks if t.start_s is not None for g in t.gpus} | {s.gpu for s in data.gpu_samples}
    indices = [g.index for g in data.gpus if g.index in used]
    indices += sorted(used - set(indices))
    unused = [g.index for g in data.gpus if g.index not in used]
    if not indices:
        return None
    unit, scale = time_unit(max(horizon - origin, 1.0))
    colors = run_group_colors(data)
    fig = make_subplots(rows=len(indices), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[f"gpu{i}" + (f" ({format_size(size[i])})" if i in size else "")
                                        for i in indices])  # fmt: skip
    shown: set[str] = set()
    for row, g in enumerate(indices, 1):
        retried = [e for e in data.earlier if g in e.gpus]
        names = {e.task for e in retried}
        held = [t for t in data.tasks if (g in t.gpus or t.name in names) and t.start_s is not None]
        times = sorted({origin, horizon, *(t.start_s for t in held if t.start_s is not None),
                        *(t.end_s for t in held if t.end_s is not None and g in t.gpus),
                        *(e.start_s for e in retried), *(e.end_s for e in retried)})  # fmt: skip
        x = [(v - origin) / scale for v in times]
        index = {v: k for k, v in enumerate(times)}
        for name, group, spans in _layers(held, g, size.get(g), origin, horizon, retried):
            y = _stacked_step(index, spans)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines", line={"shape": "hv", "width": 0.5, "color": colors[group]},
                stackgroup=f"gpu{g}", fillcolor=colors[group], name=esc(group), legendgroup=esc(group),
                showlegend=group not in shown, hoverinfo="text",
                hovertext=[f"{esc(name)}: booked {v:.1f}GB" if v else "" for v in y],
            ), row, 1)  # fmt: skip
            shown.add(group)
        pts = sorted((s for s in data.gpu_samples if s.gpu == g), key=lambda s: s.t_s)
        if pts:
            ts, _, mem = downsample(pts)
            fig.add_trace(go.Scatter(
                x=[(v - origin) / scale for v in ts], y=[m / 2**30 if m is not None else None for m in mem],
                mode="lines", line={"color": "#111", "width": 1.5}, name="measured (NVML)",
                legendgroup="measured", showlegend="measured" not in shown,
            ), row, 1)  # fmt: skip
            shown.add("measured")
        if g in size:
            fig.add_hline(y=size[g] / 2**30, line_dash="dash", line_color="#999", row=row, col=1)
        fig.update_yaxes(title="GB", rangemode="tozero", gridcolor="#eee", row=row, col=1)
    fig.update_layout(height=120 + 170 * len(indices), margin={"l": 60, "r": 20, "t": 60 if unused else 40, "b": 40},
                      plot_bgcolor="white", hovermode="closest")  # fmt: skip
    if unused:
        fig.update_layout(title={"text": f"not used by any task: {', '.join(f'gpu{i}' for i in unused)}",
                                 "font": {"size": 12, "color": "#616e7c"}, "x": 0.01})  # fmt: skip
    fig.update_xaxes(title=f"time since start ({unit})", row=len(indices), col=1)
    return fig


MAX_STACKED_TASKS = 60
"""Tasks on one GPU beyond which its memory chart stacks per task group, not per task."""


def _layers(held: Sequence[TaskRow], gpu: int, gpu_bytes: int | None, origin: float, horizon: float,
            retried: Sequence[EarlierAttempt] = ()) -> list[tuple[str, str, list[tuple[float, float, float]]]]:
    """``(name, group, [(start, end, booked GB)])`` per stacked layer on GPU ``gpu``: a task each, or a group
    each when more than :data:`MAX_STACKED_TASKS` tasks shared the GPU (the chart stays small).
    A task that booked a whole GPU counts as ``gpu_bytes``; without it the task is left out.
    ``retried`` attempts on this GPU add their spans to their task's layer, at the task's
    booking (a retry after an out-of-memory error may have booked more than the attempt did)."""
    per_task = len(held) <= MAX_STACKED_TASKS
    out: dict[str, tuple[str, str, list[tuple[float, float, float]]]] = {}
    earlier: dict[str, list[EarlierAttempt]] = {}
    for e in retried:
        earlier.setdefault(e.task, []).append(e)
    for t in sorted(held, key=lambda t: t.start_s or 0.0):
        booked = t.gpu_memory_bytes if t.gpu_memory_bytes is not None else gpu_bytes
        if booked is None:
            continue
        group = t.base or t.name
        key = t.name if per_task else group
        layer = out.setdefault(key, (t.name if per_task else f"{group} (tasks of the group)", group, []))
        if gpu in t.gpus:  # its latest attempt ran here (else only a retried one did)
            layer[2].append((t.start_s or origin, t.end_s if t.end_s is not None else horizon, booked / 2**30))
        layer[2].extend((e.start_s, e.end_s, booked / 2**30) for e in earlier.get(t.name, ()))
    return list(out.values())


def _stacked_step(index: Mapping[float, int], spans: Sequence[tuple[float, float, float]]) -> list[float]:
    """The layer's height at each time of ``index`` (time -> position): the sum of the spans
    covering it, a span counting from its start up to (not at) its end."""
    delta = [0.0] * len(index)
    for start, end, gb in spans:
        delta[index[start]] += gb
        delta[index[end]] -= gb
    out, level = [], 0.0
    for d in delta:
        level += d
        out.append(round(level, 9) + 0.0)
    return out
