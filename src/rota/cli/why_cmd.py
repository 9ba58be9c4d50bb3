"""``rota why TASK [TARGET]``: why a task waits, and when it will start.

Registered by :mod:`rota.cli.main` through :func:`register`. Read-only: it never writes the state
folder and never wakes the controller.

With a live controller, the reason and the prediction are the controller's (``tasks.reason``,
``predicted_start``/``predicted_end``, refreshed by :mod:`rota.engine.predict` as tasks end).
Without one, they are computed here from the stored state and the spec, by the same functions
(:func:`rota.core.explain.explain`, :func:`rota.plan.eta.forecast`): what the next ``rota run``
would decide first, on the CPU slots the run books (with those booked ahead in Ray's queue, as
the state's machine records them). Either way it prints the reason in full, the task's needs and
their states, the per-GPU table (size, booked, by which tasks, free) and the prediction. With a live controller
the table also shows what it books for what rota did not start (processes holding GPU memory, with
their margin; unhealthy GPUs), read from the GPU notes it writes for ``rota status``.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import click

from rota.errors import StateError, UsageError

if TYPE_CHECKING:
    from rota.core.explain import GpuLoad
    from rota.core.resources import Machine, Placement


@dataclass(frozen=True)
class Answer:
    """Everything ``rota why`` prints about one task."""

    name: str
    state: str
    held: bool
    reason: str  # one line; empty when the task is not pending
    source: str  # "controller" (its stored reason), "computed" (no controller), or "" (not pending)
    needs: tuple[tuple[str, str], ...]  # every need, with its state
    gpus: tuple[GpuLoad, ...]  # per GPU: size, booked by rota's tasks, booked for others (other_bytes), free
    predicted_start: float | None  # epoch seconds
    predicted_end: float | None
    now: float


def answer(task: str, target: str | None, state_dir: str | None) -> Answer:
    """The answer for ``task`` of the run at ``target``/``state_dir`` (``rota status``' rules).
    UsageError (exit 2) for a task the state does not know; StateError for unusable state."""
    from rota.store.read import controller, state_dir_of
    from rota.store.sqlite import SqliteStore

    sd = state_dir_of(target, state_dir)
    alive = bool(controller(sd)["alive"])
    store = SqliteStore(sd, readonly=True)
    try:
        recs = {r.name: r for r in store.tasks()}
        if task not in recs:
            close = difflib.get_close_matches(task, list(recs), n=1)
            names = list(recs)
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            hint = f"; did you mean {close[0]!r}?" if close else f"; its tasks are named {shown}" if names else ""
            raise UsageError(f"{sd}: no task {task!r} in this run{hint}")
        meta_machine = store.get_meta("machine")
        spec_path = store.get_meta("spec_path")
        now = time.time()
        rec = recs[task]
        loads = _gpu_loads(meta_machine, recs.values(), sd if alive else None, lambda: _spec(spec_path, target))
        reason, source = "", ""
        start, end = rec.predicted_start, rec.predicted_end
        needs: tuple[tuple[str, str], ...] = ()
        if rec.state == "pending" and alive:
            reason, source = rec.reason or "not explained yet (the controller explains it within seconds)", "controller"
        elif rec.state == "pending":
            spec = _spec(spec_path, target)
            if spec is None:
                reason, source = (rec.reason or "not explained") + " (the spec file is gone: stored reason)", "controller"
            else:
                reason, start, end, needs = _computed(task, spec, recs, meta_machine, store, now)
                source = "computed"
        if not needs:
            needs = _needs_of(task, spec_path, target, recs)
        if rec.state not in ("pending", "launching", "running"):
            start = end = None
        return Answer(task, rec.state, bool(rec.held), reason, source, needs, loads, start, end, now)
    finally:
        store.close()


def _spec(spec_path: str | None, target: str | None) -> Any:
    from rota.errors import RotaError
    from rota.spec.load import load_spec

    path = target if target is not None and os.path.isfile(target) else spec_path
    if not path or not os.path.isfile(path):
        return None
    try:
        return load_spec(path)
    except RotaError:
        return None


def _needs_of(task: str, spec_path: str | None, target: str | None, recs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    spec = _spec(spec_path, target)
    if spec is None:
        return ()
    t = next((t for t in spec.tasks if t.name == task), None)
    if t is None:
        return ()
    return tuple((n, ("held" if recs[n].held else recs[n].state) if n in recs else "unknown")
                 for n in dict.fromkeys(t.needs))


def _machine(meta_machine: str | None, *, booked_ahead: bool = False) -> Any:
    """The machine the state records (:mod:`rota.engine.recovery` writes it). ``booked_ahead``: with
    the CPU slots the run books ahead of it in the backend's queue (Ray), as the policy books against
    them (the engine's ``launch_machine``); a state written before they were recorded has none."""
    from rota.core.resources import Gpu, Machine

    if not meta_machine:
        raise StateError("the state records no machine; run 'rota run SPEC' first")
    m = json.loads(meta_machine)
    gpus = tuple(Gpu(g["index"], g["memory_bytes"], g.get("name") or "GPU", g.get("uuid")) for g in m["gpus"])
    ahead = int(m.get("cpus_ahead") or 0) if booked_ahead else 0
    return Machine(gpus, int(m["cpus"]) + ahead, int(m["memory_bytes"]), m.get("source") or "declared",
                   cpus_from=str(m.get("cpus_from") or ""), cpus_ahead=ahead,
                   memory_from=str(m.get("memory_from") or ""))


def _gpu_loads(meta_machine: str | None, recs: Any, live_sd: str | None, spec: Any) -> tuple[GpuLoad, ...]:
    """The per-GPU table's rows: the running attempts' bookings, and (``live_sd``: the state folder
    of a live controller) what that controller books for what rota did not start. ``spec``: a
    callable giving the spec or None (read only when there is such a booking: its margin)."""
    from rota.core.explain import gpu_loads
    from rota.core.resources import Placement
    from rota.nvml import read_notes

    if not meta_machine:
        return ()
    machine = _machine(meta_machine)
    running = [Placement(r.name, tuple(r.gpus), tuple(r.gpu_bytes), r.cpus, r.memory_bytes)
               for r in recs if r.state in ("launching", "running")]
    notes = read_notes(live_sd) if live_sd is not None else []
    outside = _outside(notes, machine, functools.cache(lambda: _margin_bytes(spec()))) if notes else []
    return gpu_loads(machine, running, outside)


# The lines rota.engine.gpu_watch writes for `rota status` (GpuWatch._write_notes, Holder.describe):
#   GPU 1: 30GB held by pid 4242, user bob, python (not rota's: booked, tasks pack around it)
#   GPU 2 unhealthy: Xid 79 error (no new tasks there)
# tests/integration/test_why_foreign.py runs the real controller, so a change of format fails there.
_HELD = re.compile(r"^GPU (\d+): (\S+) held by pid (\d+), user (.*?), (.*) \(not rota's: booked")
_SICK = re.compile(r"^GPU (\d+) unhealthy: (.*) \(no new tasks there\)$")


def _outside(notes: Sequence[str], machine: Machine, margin: Callable[[], int]) -> list[Placement]:
    """The controller's bookings for what rota did not start, from its GPU notes: a holder's memory
    plus the margin (capped at the GPU's size), an unhealthy GPU whole; as the controller books them
    (rota.engine.gpu_watch.foreign_bookings, sick_bookings). Lines it cannot read are skipped."""
    from rota.core.resources import Placement
    from rota.units import parse_size

    size = {g.index: g.memory_bytes for g in machine.gpus}
    out: list[Placement] = []
    for line in notes:
        m = _SICK.match(line)
        if m and int(m[1]) in size:
            out.append(Placement(f"unhealthy: {m[2]}", (int(m[1]),), (size[int(m[1])],), cpus=0, memory_bytes=0))
            continue
        m = _HELD.match(line)
        if m is None or int(m[1]) not in size:
            continue
        try:
            used = parse_size(m[2])
        except ValueError:
            continue
        booked = min(max(used + margin(), 1), size[int(m[1])])
        out.append(Placement(f"pid {m[3]} ({m[4]}, {m[5]})", (int(m[1]),), (booked,), cpus=0, memory_bytes=0))
    return out


def _margin_bytes(spec: Any) -> int:
    """The margin booked above a foreign process's memory: the spec's ``foreign_gpu_margin``, else 1GB
    (rota.engine.gpu_watch.DEFAULT_MARGIN_BYTES)."""
    margin = getattr(getattr(spec, "file", None), "foreign_gpu_margin", None)
    return int(margin) if margin is not None else 2**30


def _computed(task: str, spec: Any, recs: Mapping[str, Any], meta_machine: str | None, store: Any,
              now: float) -> tuple[str, float | None, float | None, tuple[tuple[str, str], ...]]:
    """What the next controller would decide first, from the stored state and the spec."""
    from rota.core.explain import explain
    from rota.core.policy import Candidate, Running
    from rota.core.resources import Placement
    from rota.plan.eta import Progress, forecast
    from rota.spec.graph import critical_path_ranks

    machine = _machine(meta_machine)
    # The policy books against the slots booked ahead too (Ray), the forecast against the machine's
    # own capacity, as the controller's rota.engine.predict does.
    launch = _machine(meta_machine, booked_ahead=True)
    history: dict[str, float] = {cmd: max(statistics.median(v), 0.001)
                                 for cmd, v in store.durations_by_command().items() if v}
    state = {t.name: recs[t.name].state if t.name in recs else "pending" for t in spec.tasks}
    ranks = critical_path_ranks(spec.tasks)
    held = store.held_tasks()
    cands, waiting, backoff, running = [], {}, {}, []
    for i, t in enumerate(spec.tasks):
        r = recs.get(t.name)
        est = t.estimate_s if t.estimate_s is not None else history.get(t.command)
        if state[t.name] in ("launching", "running") and r is not None:
            left = None if est is None or r.started_at is None else max(est - (now - r.started_at), 1.0)
            running.append(Running(Placement(t.name, tuple(r.gpus), tuple(r.gpu_bytes), r.cpus, r.memory_bytes), left))
        if state[t.name] != "pending":
            continue
        unmet = [(n, "held" if n in held else state.get(n, "unknown")) for n in dict.fromkeys(t.needs)
                 if state.get(n) not in ("succeeded", "cached")]
        if unmet:
            waiting[t.name] = unmet
            continue
        req = t.request
        if r is not None and r.gpu_memory_override is not None and req.gpus:
            req = replace(req, gpu_memory_bytes=r.gpu_memory_override)
        prio = r.priority if r is not None and r.priority is not None else t.priority
        cands.append(Candidate(t.name, req, prio, ranks[t.name], est, i))
        if r is not None and r.not_before is not None and r.not_before > now:
            backoff[t.name] = r.not_before
    reasons = explain(cands, launch, running, now=now, waiting=waiting, held=held, backoff=backoff)
    progress = {n: Progress(s, recs[n].started_at if n in recs else None, recs[n].ended_at if n in recs else None)
                for n, s in state.items()}
    fc = forecast(list(spec.tasks), machine, progress, now, history, held=held, not_before=backoff)
    start, end = fc.slots.get(task, (None, None))
    r = reasons[task]
    return r.text, start, end, ()


def render(a: Answer) -> str:
    """The text ``rota why`` prints (ends in a newline)."""
    from rota.core.explain import clock
    from rota.units import format_duration, format_size

    held = " (held)" if a.held else ""
    lines = [f"{a.name}: {a.state}{held}"]
    if a.state == "pending":
        lines.append(f"why: {a.reason}")
        if a.source == "computed":
            lines.append("     (no controller runs: computed from the stored state and the spec, as the next "
                         "'rota run' would decide first)")
    else:
        lines.append("it is not waiting" + (": it runs" if a.state in ("launching", "running") else ""))
    if a.predicted_start is not None or a.predicted_end is not None:
        def at(t: float | None) -> str:
            if t is None:
                return "unknown"
            return f"{clock(t)} ({'now' if t <= a.now else 'in ~' + format_duration(t - a.now)})"
        if a.state == "pending":
            lines.append(f"predicted start: {at(a.predicted_start)}, end: {at(a.predicted_end)}")
        else:
            lines.append(f"predicted end: {at(a.predicted_end)}")
    elif a.state == "pending" and "held outside rota" in a.reason:
        lines.append("predicted start: none: it waits for GPU memory held outside rota, which has no known end")
    elif a.state == "pending" and "launches nothing more" in a.reason:
        lines.append("predicted start: none: this run launches nothing more; the next 'rota run' starts it")
    elif a.state == "pending":
        lines.append("predicted start: none (held, needs a held task, waits for GPU memory held outside rota, "
                     "or not forecast yet)")
    if a.needs:
        lines.append("needs:")
        w = max(len(n) for n, _ in a.needs)
        lines += [f"  {n.ljust(w)}  {s}" for n, s in a.needs]
    if a.gpus:
        lines.append("GPUs:")
        # The "others" column only where the controller books memory for what rota did not start.
        others = any(g.others for g in a.gpus)
        rows = [("GPU", "size", "booked", *(("others",) if others else ()), "free", "by")] + [
            (str(g.index), format_size(g.total_bytes), format_size(g.booked_bytes),
             *((format_size(g.other_bytes) if g.others else "-",) if others else ()),
             format_size(max(g.free_bytes, 0)), ", ".join((*g.tasks, *g.others)) or "-") for g in a.gpus]
        n = len(rows[0]) - 1
        widths = [max(len(r[k]) for r in rows) for k in range(n)]
        lines += ["  " + "  ".join(c.ljust(wd) for c, wd in zip(r[:n], widths, strict=True)) + "  " + r[n]
                  for r in rows]
        if others:
            lines.append("  others: booked for what rota did not start (a process's memory and a safety margin; "
                         "an unhealthy GPU whole), packed around like a task")
    return "\n".join(lines) + "\n"


def as_dict(a: Answer) -> dict[str, Any]:
    """``rota why --json``: the answer as one JSON object (times in epoch seconds)."""
    return {"name": a.name, "state": a.state, "held": a.held, "reason": a.reason, "source": a.source,
            "needs": [{"name": n, "state": s} for n, s in a.needs],
            "gpus": [{"index": g.index, "memory_bytes": g.total_bytes, "booked_bytes": g.booked_bytes,
                      "tasks": list(g.tasks), "other_bytes": g.other_bytes, "others": list(g.others)}
                     for g in a.gpus],
            "predicted_start": a.predicted_start, "predicted_end": a.predicted_end, "now": a.now}


def register(cli: click.Group) -> None:
    """Add the ``why`` command to ``cli``."""
    from rota.cli.main import CONTEXT

    @cli.command("why", context_settings=CONTEXT)
    @click.argument("task")
    @click.argument("target", required=False, type=click.Path())
    @click.option("--state-dir", type=click.Path(file_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="One JSON object (times in epoch seconds).")
    def why(task: str, target: str | None, state_dir: str | None, as_json: bool) -> None:
        """Why TASK waits (needs, held, no GPU with N GB free, GPUs reserved for a large task,
        back-off, the run's limit) and when it will start. Read-only; works with and without a
        live controller."""
        a = answer(task, target, state_dir)
        click.echo(json.dumps(as_dict(a)) if as_json else render(a), nl=as_json)


__all__: Sequence[str] = ("Answer", "answer", "as_dict", "register", "render")
