"""The Gantt lane model and its text drawing, shared by ``rota plan`` and ``rota report``.

Neutral: imports only :mod:`rota.errors` and :mod:`rota.units`, so the plan and
report layers both use it without importing each other. Times are seconds
relative to the chart's origin (the start of the run or plan).

Contract checked at construction (a :class:`~rota.errors.ReportError`
otherwise): a ``Lane`` item ends no earlier than it starts, and ``states`` and
``groups`` are each empty or one per item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rota.errors import ReportError
from rota.units import format_duration

LaneItem = tuple[str, float, float]
"""``(label, start_s, end_s)`` in seconds relative to the chart's origin."""


@dataclass(frozen=True)
class Lane:
    """One row of a Gantt chart: a GPU (``"gpu0"``), ``"cpu"``, or anything else.

    Items may overlap in time (several tasks packed on one GPU); charts stack
    them in sub-rows. ``states`` optionally gives one state per item (same
    length as ``items``) so charts can colour by it; empty means "no state".
    ``groups`` likewise gives each item's task group (the spec task it was
    expanded from), which the charts colour by; empty means "the label".
    """

    name: str
    items: tuple[LaneItem, ...] = ()
    states: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        items = tuple((str(label), float(a), float(b)) for label, a, b in self.items)
        for label, a, b in items:
            if b < a:
                raise ReportError(
                    f"lane {self.name!r}: item {label!r} ends ({b}) before it starts ({a})"
                )
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "states", tuple(self.states))
        if self.states and len(self.states) != len(items):
            raise ReportError(
                f"lane {self.name!r}: {len(self.states)} states for {len(items)} items"
            )
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.groups and len(self.groups) != len(items):
            raise ReportError(
                f"lane {self.name!r}: {len(self.groups)} groups for {len(items)} items"
            )

    def group(self, k: int) -> str:
        """The task group of item ``k``: its entry in ``groups``, else its label."""
        return self.groups[k] if self.groups else self.items[k][0]


LaneLike = Lane | tuple[str, Sequence[LaneItem]]
"""A :class:`Lane`, or a ``(name, items)`` pair."""


def as_lanes(lanes: Sequence[LaneLike]) -> list[Lane]:
    """Accept ``Lane`` objects or ``(name, items)`` pairs; return ``Lane`` objects."""
    out: list[Lane] = []
    for lane in lanes:
        if isinstance(lane, Lane):
            out.append(lane)
        else:
            name, items = lane
            out.append(Lane(name, tuple(items)))
    return out


_STATE_FILL = {
    "succeeded": "=", "failed": "x", "interrupted": "~", "cancelled": "~", "running": ">", "launching": ">",
    "cached": ".",
}  # fmt: skip


def stack_rows(items: Sequence[tuple[float, float]], slack: float = 1e-3) -> list[int]:
    """Greedy sub-row per interval so that intervals in one row never overlap.

    Returns the row of each interval, in input order; touching intervals
    (``end <= next start + slack``, slack absorbing float rounding of epoch
    times) share a row. Deterministic.
    """
    order = sorted(range(len(items)), key=lambda i: (items[i][0], items[i][1], i))
    row_end: list[float] = []
    rows = [0] * len(items)
    for i in order:
        a, b = items[i]
        for r, end in enumerate(row_end):
            if end <= a + slack:
                row_end[r] = b
                rows[i] = r
                break
        else:
            row_end.append(b)
            rows[i] = len(row_end) - 1
    return rows


_TICK_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800,
)  # fmt: skip


def nice_ticks(t0: float, t1: float, most: int = 6) -> list[float]:
    """Round tick times (1s, 5m, 1h, ... steps) covering ``[t0, t1]``, at most ``most`` of them."""
    span = max(t1 - t0, 1e-9)
    step = float(next((s for s in _TICK_STEPS if span / s <= most - 1), _TICK_STEPS[-1]))
    while span / step > most - 1:
        step *= 2
    first = math.ceil(t0 / step) * step
    return [first + k * step for k in range(int((t1 - first) / step + 1e-9) + 1)]


def gantt_text(lanes: Sequence[LaneLike], width: int = 100) -> str:
    """A Gantt chart as plain text, ``width`` characters wide (at least 30).

    One line per lane, more when items overlap in time (packed GPU); items
    that only share a column at this scale are drawn over one another. Each item is drawn
    as ``[label===]`` over its columns (``#`` when one column wide); the fill
    character tells the state when lanes carry states (``=`` succeeded,
    ``x`` failed, ``~`` interrupted, ``>`` running, ``.`` cached). The axis
    shows durations from ``min(0, earliest start)``.
    """
    lane_list = as_lanes(lanes)
    if width < 30:
        raise ReportError(f"gantt width must be at least 30 characters, found {width}")
    if not lane_list:
        return "(no lanes)"
    starts = [a for lane in lane_list for _, a, _ in lane.items]
    ends = [b for lane in lane_list for _, _, b in lane.items]
    t0 = min([0.0, *starts])
    t1 = max(ends, default=t0 + 1.0)
    span = t1 - t0 if t1 > t0 else 1.0
    name_w = min(max(len(lane.name) for lane in lane_list), 14)
    chart_w = width - name_w - 3

    def col(t: float) -> int:
        return min(chart_w, max(0, int(round((t - t0) / span * chart_w))))

    lines: list[str] = []
    states_seen: dict[str, None] = {}
    for lane in lane_list:
        spans = []
        for k, (_, a, b) in enumerate(lane.items):
            c0 = min(col(a), chart_w - 1)
            spans.append((c0, max(col(b), c0 + 1)))
            if lane.states:
                states_seen.setdefault(lane.states[k], None)
        # Rows follow real concurrency; items that merely share a column at this
        # scale stay on one row, the later one drawn over the earlier.
        rows = stack_rows([(a, b) for _, a, b in lane.items])
        grid = [[" "] * chart_w for _ in range(max(rows, default=0) + 1)]
        for k in sorted(range(len(spans)), key=lambda i: (lane.items[i][1], i)):
            label, (c0, c1) = lane.items[k][0], spans[k]
            w = c1 - c0
            fill = _STATE_FILL.get(lane.states[k], "-") if lane.states else "="
            if w == 1:
                cells = "#"
            elif w == 2:
                cells = "[]"
            else:
                cells = "[" + label[: w - 2].ljust(w - 2, fill) + "]"
            grid[rows[k]][c0:c1] = list(cells)
        for r, row in enumerate(grid):
            name = lane.name[:name_w] if r == 0 else ""
            lines.append(f"{name:<{name_w}} |{''.join(row)}|")
    axis = ["+"] + ["-"] * chart_w + ["+"]
    labels = [" "] * (chart_w + 2)
    for t in nice_ticks(t0, t1):
        c = col(t)
        i = 0 if c == 0 else (c + 1 if c < chart_w else chart_w + 1)
        axis[i] = "+"
        text = format_duration(t) if t else "0s"
        pos = i if i + len(text) <= len(labels) else i - len(text) + 1
        if pos >= 0 and all(ch == " " for ch in labels[max(0, pos - 1) : pos + len(text) + 1]):
            labels[pos : pos + len(text)] = list(text)
    lines.append(f"{'':<{name_w}} {''.join(axis)}")
    lines.append(f"{'':<{name_w}} {''.join(labels).rstrip()}")
    if states_seen:
        legend = "  ".join(f"{_STATE_FILL.get(s, '-')} {s or 'planned'}" for s in states_seen)
        lines.append(f"{'':<{name_w}}  {legend}")
    return "\n".join(lines)
