"""Plan a spec on one or several machines and put the figures side by side.

:func:`machine_options` turns the spec's ``machines:`` section (and/or the
machine from the CLI flags) into :class:`MachineOption` records;
:func:`plan` simulates on one of them; :func:`plan_json` is the documented
``rota plan --json`` object. Everything here is pure.

``rota plan --json`` (version 1). Top level: the plan of the first machine
(the only one without ``--machine``), plus ``version``, ``spec``,
``estimates`` and ``machines`` (the full plan of every machine, in order)::

    {
      "version": 1, "spec": "/abs/rota.yaml",
      "estimates": {"default_s": 60.0, "use_history": false,
                    "counts": {"estimate": 7, "history": 1, "default": 1},
                    "defaulted": ["task-without-estimate"]},
      "machine": {"name": "l4", "gpus": [{"index": 0, "memory_bytes": ...}], "cpus": 8,
                  "memory_bytes": ..., "speed": 2.0, "cpu_speed": 1.0,
                  "price_per_gpu_hour": 0.7, "price_per_cpu_hour": 0.1, "price_per_hour": 0.0},
      "complete": true,                 # false when some task cannot run on this machine
      "makespan_s": 16200.0,            # simulated, rota's policy
      "sequential_s": 32400.0,          # one task at a time, same machine speeds
      "lower_bound_s": 15000.0,         # no schedule can be shorter
      "lower_bound": {"critical_path_s": ..., "gpu_s": ..., "cpu_s": ..., "memory_s": ...,
                      "parallel_s": ...,        # a sweep's work / its parallel: (largest sweep)
                      "binding": "critical path"},  # or GPUs, CPUs, RAM, "sweep <name> parallel"
      "speedup": 2.0,                   # sequential_s / makespan_s
      "efficiency": 0.93,               # lower_bound_s / makespan_s (1.0 = provably optimal)
      "critical_path": ["a", "b", "c"], "critical_path_s": 15000.0,
      "utilization": {"gpus": 0.5, "cpus": 0.1, "memory": 0.0,
                      "gpu": {"0": {"busy": 0.5, "memory": 0.4}}},
      "cost": {"total_usd": 2.95, "gpu_hours": 3.75, "cpu_hours": 3.3, "machine_hours": 4.5,
               "gpu_usd": 2.62, "cpu_usd": 0.33, "machine_usd": 0.0,
               "rent_usd": null,        # price_per_hour x makespan: a rented VM; null: no price_per_hour
               "usage_usd": 2.95},      # booked GPU-h and CPU-h x their prices: a shared cluster; null: none
      "unschedulable": [{"task": "x", "reason": "asks for 2 GPUs but the machine has 1"}],
      "blocked": [{"task": "y", "needs": "x"}],
      "tasks": [{"name": "a", "start_s": 0.0, "end_s": 900.0, "duration_s": 900.0, "gpus": [0],
                 "gpu_bytes": [17179869184], "cpus": 1, "memory_bytes": 0, "source": "estimate"}],
      "machines": [ <the same object without "machines"/"version"/"spec"/"estimates">, ... ]
    }

Cost, two pricing models kept apart (:class:`rota.plan.bounds.Cost`): ``rent_usd`` =
``machine_hours x price_per_hour``, a rented machine (a cloud VM) billed for every
hour of the makespan; ``usage_usd`` = ``gpu_hours x price_per_gpu_hour + cpu_hours
x price_per_cpu_hour``, a shared cluster's charge for what the run books, where
GPU-hours are *booked*: per GPU, the time it holds at least one task (packed tasks
are not counted twice; a GPU is paid in full while anything runs on it) and
CPU-hours are ``cpus x duration``. Each is null when its prices are not given.
``total_usd`` (kept from version 1) is the sum of all priced terms. Tasks' times are
seconds from the start of the plan, on that machine (durations divided by its
``speed`` for GPU tasks and ``cpu_speed`` for CPU-only tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from rota.core.resources import Machine
from rota.errors import UsageError
from rota.plan.bounds import (
    Cost,
    LowerBound,
    Prices,
    Utilization,
    cost,
    critical_path,
    lower_bound,
    sequential_s,
    slot_sums,
    utilization,
)
from rota.plan.estimates import Durations
from rota.plan.limits import concurrency_caps
from rota.plan.simulate import Schedule, Slot, scaled_durations, simulate
from rota.spec.model import MachineSpec, Task

JSON_VERSION = 1
_NAME, _REQUEST = attrgetter("name"), attrgetter("request")


@dataclass(frozen=True)
class MachineOption:
    """A machine to plan on, with its speed factors and prices."""

    name: str
    machine: Machine
    speed: float = 1.0
    cpu_speed: float = 1.0
    prices: Prices = Prices()


@dataclass(frozen=True)
class Plan:
    """Everything ``rota plan`` reports for one machine."""

    option: MachineOption
    schedule: Schedule
    durations_s: Mapping[str, float]  # on this machine (scaled)
    sequential_s: float
    bound: LowerBound
    critical_path: tuple[str, ...]
    utilization: Utilization
    cost: Cost

    @property
    def makespan_s(self) -> float:
        return self.schedule.makespan_s

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.makespan_s if self.makespan_s > 0 else 1.0

    @property
    def efficiency(self) -> float:
        return self.bound.value_s / self.makespan_s if self.makespan_s > 0 else 1.0


def option_from_spec(name: str, ms: MachineSpec, base: Machine) -> MachineOption:
    """A ``machines:`` entry as a MachineOption; missing ``cpus``/``memory`` come from ``base``."""
    from rota.errors import MachineError
    from rota.machine import parse_gpus_flag

    try:
        gpus = parse_gpus_flag(ms.gpus, []) if ms.gpus else []
    except MachineError as e:
        raise UsageError(f"machine {name!r}: {e}") from None
    m = Machine(
        gpus=tuple(gpus),
        cpus=ms.cpus if ms.cpus is not None else base.cpus,
        memory_bytes=ms.memory if ms.memory is not None else base.memory_bytes,
        source=f"spec machine {name}",
    )
    prices = Prices(ms.price_per_gpu_hour, ms.price_per_cpu_hour, ms.price_per_hour)
    return MachineOption(name, m, ms.speed, ms.cpu_speed, prices)


def machine_options(
    names: Sequence[str], spec_machines: Mapping[str, MachineSpec], base: Machine, base_name: str = "this machine"
) -> list[MachineOption]:
    """The machines named by ``--machine`` (in order), or ``base`` when none are named."""
    if not names:
        return [MachineOption(base_name, base)]
    out = []
    for n in names:
        if n not in spec_machines:
            known = ", ".join(sorted(spec_machines)) or "none; add a 'machines:' section to the spec"
            raise UsageError(f"--machine {n}: no such machine in the spec (known: {known})")
        out.append(option_from_spec(n, spec_machines[n], base))
    return out


def plan(tasks: Sequence[Task], option: MachineOption, durations: Durations) -> Plan:
    """Simulate ``tasks`` on ``option`` and compute every figure ``rota plan`` shows."""
    seconds = durations.seconds
    if option.speed == option.cpu_speed == 1 and len(seconds) == len(tasks):
        scaled = seconds  # nothing to scale; every task has its duration (or simulate raises)
    else:
        scaled = scaled_durations(tasks, seconds, option.speed, option.cpu_speed)
    caps = concurrency_caps(tasks)
    sched = simulate(tasks, option.machine, scaled, caps=caps)
    if sched.complete:
        live = list(tasks)
        path = critical_path(live, scaled, sched.ranks_s)
    else:
        ran = {s.name for s in sched.slots}
        live = [t for t in tasks if t.name in ran]
        path = critical_path(live, scaled)
    sums = slot_sums(sched)
    return Plan(
        option=option,
        schedule=sched,
        durations_s=scaled,
        sequential_s=sequential_s(scaled, list(map(_NAME, live))),
        bound=lower_bound(sched, dict(zip(map(_NAME, live), map(_REQUEST, live), strict=True)),
                          sum(scaled[n] for n in path), sums, caps),
        critical_path=path,
        utilization=utilization(sched, sums),
        cost=cost(sched, option.prices, sums),
    )


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _opt(x: float | None) -> float | None:
    return None if x is None else _r(x, 4)


def plan_dict(p: Plan, source: Mapping[str, str]) -> dict[str, Any]:
    """One machine's plan as the documented JSON object (see the module docstring)."""
    return {**plan_figures(p), "tasks": [task_dict(s, source) for s in p.schedule.slots]}


def task_dict(s: Slot, source: Mapping[str, str]) -> dict[str, Any]:
    """One entry of ``tasks`` in the JSON object."""
    return {"name": s.name, "start_s": _r(s.start_s), "end_s": _r(s.end_s), "duration_s": _r(s.duration_s),
            "gpus": list(s.gpus), "gpu_bytes": list(s.gpu_bytes), "cpus": s.cpus,
            "memory_bytes": s.memory_bytes, "source": source.get(s.name, "")}


def plan_figures(p: Plan) -> dict[str, Any]:
    """:func:`plan_dict` without its last key, ``tasks``."""
    m = p.option.machine
    u, c, b = p.utilization, p.cost, p.bound
    return {
        "machine": {
            "name": p.option.name,
            "gpus": [{"index": g.index, "memory_bytes": g.memory_bytes} for g in m.gpus],
            "cpus": m.cpus, "memory_bytes": m.memory_bytes,
            "speed": p.option.speed, "cpu_speed": p.option.cpu_speed,
            "price_per_gpu_hour": p.option.prices.per_gpu_hour,
            "price_per_cpu_hour": p.option.prices.per_cpu_hour,
            "price_per_hour": p.option.prices.per_hour,
        },
        "complete": p.schedule.complete,
        "makespan_s": _r(p.makespan_s),
        "sequential_s": _r(p.sequential_s),
        "lower_bound_s": _r(b.value_s),
        "lower_bound": {"critical_path_s": _r(b.critical_path_s), "gpu_s": _r(b.gpu_s), "cpu_s": _r(b.cpu_s),
                        "memory_s": _r(b.memory_s), "parallel_s": _r(b.parallel_s), "binding": b.binding},
        "speedup": _r(p.speedup, 4),
        "efficiency": _r(p.efficiency, 4),
        "critical_path": list(p.critical_path),
        "critical_path_s": _r(b.critical_path_s),
        "utilization": {
            "gpus": _r(u.gpus, 4), "cpus": _r(u.cpus, 4), "memory": _r(u.memory, 4),
            "gpu": {str(i): {"busy": _r(u.gpu_busy[i], 4), "memory": _r(u.gpu_memory[i], 4)} for i in u.gpu_busy},
        },
        "cost": {"total_usd": _r(c.total_usd, 4), "gpu_hours": _r(c.gpu_hours, 4), "cpu_hours": _r(c.cpu_hours, 4),
                 "machine_hours": _r(c.machine_hours, 4), "gpu_usd": _r(c.gpu_usd, 4),
                 "cpu_usd": _r(c.cpu_usd, 4), "machine_usd": _r(c.machine_usd, 4),
                 "rent_usd": _opt(c.rent_usd), "usage_usd": _opt(c.usage_usd)},
        "unschedulable": [{"task": t, "reason": r} for t, r in p.schedule.unschedulable],
        "blocked": [{"task": t, "needs": n} for t, n in p.schedule.blocked],
    }


def plan_json(spec_path: str, plans: Sequence[Plan], durations: Durations) -> dict[str, Any]:
    """The whole ``rota plan --json`` object (version 1)."""
    per = [plan_dict(p, durations.source) for p in plans]
    return {**json_head(spec_path, durations), **per[0], "machines": per}


def json_head(spec_path: str, durations: Durations) -> dict[str, Any]:
    """The keys of the JSON object before the first machine's plan."""
    return {
        "version": JSON_VERSION,
        "spec": spec_path,
        "estimates": {"default_s": durations.default_s, "use_history": durations.use_history,
                      "counts": durations.counts(), "defaulted": durations.defaulted()},
    }
