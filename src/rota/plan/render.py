"""Text for ``rota plan``: the summary, the side-by-side table, the Gantt lanes.

Pure functions returning strings or rich renderables; the CLI prints them.
The Gantt drawing itself is :func:`rota.lanes.gantt_text` (one bar per
task); above :data:`MAX_GANTT_ITEMS` tasks it would be unreadable, so
:func:`occupancy_text` draws one line per lane with how busy it is per column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table

from rota.lanes import Lane, gantt_text
from rota.plan.compare import Plan
from rota.plan.estimates import Durations
from rota.units import format_duration, format_size

MAX_GANTT_ITEMS = 300
_SHADES = " .:-=+*#%@"


def lanes(p: Plan, groups: Mapping[str, str] | None = None) -> list[Lane]:
    """One lane per GPU (``gpu<i>``) and a ``cpu`` lane for tasks without GPUs, in seconds.

    ``groups`` maps a task to its group (the spec task it was expanded from), which
    the drawn charts colour by, as the report's timeline does; a task not in it is its own.
    """
    gpu_items: dict[int, list[tuple[str, float, float]]] = {g.index: [] for g in p.option.machine.gpus}
    cpu_items: list[tuple[str, float, float]] = []
    for s in p.schedule.slots:
        item = (s.name, s.start_s, s.end_s)
        for i in s.gpus:
            gpu_items[i].append(item)
        if not s.gpus:
            cpu_items.append(item)
    named = groups or {}

    def lane(name: str, items: list[tuple[str, float, float]]) -> Lane:
        return Lane(name, tuple(items), groups=tuple(named.get(n, n) for n, _, _ in items) if named else ())

    out = [lane(f"gpu{i}", v) for i, v in gpu_items.items()]
    if cpu_items or not out:
        out.append(lane("cpu", cpu_items))
    return out


def occupancy_text(lns: Sequence[Lane], width: int = 100) -> str:
    """One line per lane; each column shows how many tasks overlap it on average
    (`` `` none ... ``@`` 9 or more), for charts with too many tasks to draw."""
    end = max((b for ln in lns for _, _, b in ln.items), default=1.0) or 1.0
    name_w = min(max((len(ln.name) for ln in lns), default=3), 14)
    cols = max(width - name_w - 3, 10)
    step = end / cols
    lines = []
    for ln in lns:
        load = [0.0] * cols
        for _, a, b in ln.items:
            c0, c1 = int(a / step), min(int(b / step), cols - 1)
            for c in range(c0, c1 + 1):
                lo, hi = max(a, c * step), min(b, (c + 1) * step)
                if hi > lo:
                    load[c] += (hi - lo) / step
        row = "".join(_SHADES[min(int(round(x)), 9)] if x > 0 else " " for x in load)
        lines.append(f"{ln.name[:name_w]:<{name_w}} |{row}|")
    lines.append(f"{'':<{name_w}}  0{format_duration(end):>{cols}}")
    lines.append(f"{'':<{name_w}}  (tasks running at once: ' ' 0, '.' 1, ':' 2, ... '@' 9+)")
    return "\n".join(lines)


GANTT_KEY = ("  [name===]: one task, from its start to its end; #: a task too short to draw.\n"
             "  A GPU running several tasks at once (packed by gpu_memory) has a line per task beside it.\n"
             "  --gantt plan.html draws it coloured by task group, with every task named on hover.")


def gantt(p: Plan, width: int = 100) -> str:
    """The chart for the terminal: bars per task, or occupancy for large plans, and a key."""
    lns = lanes(p)
    if len(p.schedule.slots) > MAX_GANTT_ITEMS:
        return occupancy_text(lns, width)
    return gantt_text(lns, width) + "\n" + GANTT_KEY


def cost_terms(p: Plan) -> str:
    """``GPU 13.50 h x $0.35 + CPU 17.35 h x $0.10``: booked hours times prices (the usage model)."""
    c, pr = p.cost, p.option.prices
    terms = [f"GPU {c.gpu_hours:.2f} h booked x {price(pr.per_gpu_hour)}",
             f"CPU {c.cpu_hours:.2f} h x {price(pr.per_cpu_hour)}"]
    return " + ".join(terms)


def price(x: float) -> str:
    """A unit price: ``$0.10``, ``$0.035``."""
    return f"${x:.2f}" if round(x, 2) == x else f"${x:g}"


def usd(x: float | None) -> str:
    """``$6.13``; ``-`` without a price (never ``$0.00`` for "not priced")."""
    return "-" if x is None else f"${x:.2f}"


def cost_lines(p: Plan) -> list[str]:
    """The cost under each pricing model the machine has prices for, each saying how it is billed."""
    c, pr = p.cost, p.option.prices
    if not c.priced:
        return [f"  cost         -  (no prices; GPU {c.gpu_hours:.2f} h, CPU {c.cpu_hours:.2f} h booked, machine "
                f"{c.machine_hours:.2f} h: give a 'machines:' entry price_per_hour (a rented VM) or "
                "price_per_gpu_hour (a shared cluster), see --machine)"]
    out = []
    if c.rent_usd is not None:
        out.append(f"  cost, rented {usd(c.rent_usd)}  (whole machine {price(pr.per_hour)}/h x {c.machine_hours:.2f} h "
                   "makespan: a VM is billed every hour it is held)")
    if c.usage_usd is not None:
        out.append(f"  cost, usage  {usd(c.usage_usd)}  ({cost_terms(p)}: what a shared cluster charges)")
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def machine_line(p: Plan) -> str:
    m = p.option.machine
    gpus = "no GPUs"
    if m.gpus:
        sizes = [format_size(g.memory_bytes) for g in m.gpus]
        gpus = f"{len(sizes)}x{sizes[0]} GPUs" if len(set(sizes)) == 1 else f"GPUs {','.join(sizes)}"
    speed = f", speed x{p.option.speed:g}" if p.option.speed != 1 else ""
    return f"{p.option.name}: {gpus}, {m.cpus} CPUs, {format_size(m.memory_bytes)} RAM{speed}"


def summary(p: Plan) -> str:
    """The figures for one machine, one per line."""
    b, u = p.bound, p.utilization
    lines = [
        machine_line(p),
        f"  makespan     {format_duration(p.makespan_s)}",
        f"  sequential   {format_duration(p.sequential_s)}  (speedup {p.speedup:.2f}x)",
        f"  lower bound  {format_duration(b.value_s)}  (set by {b.binding}; plan is "
        f"{p.makespan_s / b.value_s if b.value_s else 1:.2f}x the bound)",
        *cost_lines(p),
        "  utilisation  " + "  ".join(
            [f"gpu{i} {_pct(x)}" for i, x in u.gpu_busy.items()] + [f"CPUs {_pct(u.cpus)}", f"RAM {_pct(u.memory)}"]
        ),
        "  critical path " + (" -> ".join(p.critical_path) if len(p.critical_path) <= 12 else
                              " -> ".join(p.critical_path[:5]) + f" -> ... ({len(p.critical_path) - 10} more) -> "
                              + " -> ".join(p.critical_path[-5:])),
    ]
    lines += problems(p)
    return "\n".join(lines)


def problems(p: Plan) -> list[str]:
    out = []
    for t, why in p.schedule.unschedulable[:10]:
        out.append(f"  cannot run here: {t}: {why}")
    if len(p.schedule.unschedulable) > 10:
        out.append(f"  ... and {len(p.schedule.unschedulable) - 10} more that cannot run here")
    if p.schedule.blocked:
        out.append(f"  not planned: {len(p.schedule.blocked)} task(s) that need those")
    return out


def estimates_line(d: Durations) -> str:
    c = d.counts()
    line = f"durations: {c['estimate']} from estimate, {c['history']} from history, {c['default']} default"
    flagged = d.defaulted()
    if flagged:
        shown = ", ".join(flagged[:8]) + (f", ... ({len(flagged) - 8} more)" if len(flagged) > 8 else "")
        line += f"\n  no estimate and no history, assumed {format_duration(d.default_s)}: {shown}"
    return line


def comparison_table(plans: Sequence[Plan]) -> Table:
    """Machines side by side: makespan, cost, utilisation. Cost in two columns: ``rent``
    (price_per_hour x makespan: a rented VM) and ``usage`` (booked GPU-h and CPU-h x
    their prices: a shared cluster); ``-`` where the machine has no such price."""
    t = Table(title="rota plan: machines compared",
              caption="rent: price_per_hour x makespan (a VM is billed every hour); "
                      "usage: booked GPU-h, CPU-h x prices (a shared cluster)")
    for col in ("machine", "GPUs", "speed", "makespan", "sequential", "lower bound", "speedup",
                "GPU util", "CPU util", "GPU-h", "rent", "usage", "cannot run"):
        t.add_column(col, justify="left" if col in ("machine", "GPUs") else "right", no_wrap=True)
    for p in plans:
        m = p.option.machine
        sizes = [format_size(g.memory_bytes) for g in m.gpus]
        gpus = "none" if not sizes else (f"{len(sizes)}x{sizes[0]}" if len(set(sizes)) == 1 else ",".join(sizes))
        t.add_row(
            p.option.name, gpus, f"x{p.option.speed:g}", format_duration(p.makespan_s),
            format_duration(p.sequential_s), format_duration(p.bound.value_s), f"{p.speedup:.2f}x",
            _pct(p.utilization.gpus) if m.gpus else "-", _pct(p.utilization.cpus),
            f"{p.cost.gpu_hours:.2f}", usd(p.cost.rent_usd), usd(p.cost.usage_usd),
            str(len(p.schedule.unschedulable) + len(p.schedule.blocked)) or "0",
        )
    return t
