"""Live edits of a run: a new spec (control kind ``spec``) or new limits (kind ``limits``).

``rota run SPEC`` against a state folder whose controller is alive commits these
requests (:func:`rota.engine.control.request`) instead of refusing; the controller
takes them in its loop (:func:`rota.engine.control.take_controls`) and calls
:func:`handle`, whose text is the requester's answer. With no live controller,
:func:`handle_offline` answers instead.

- ``spec`` (data: ``path``, ``rerun`` and ``only`` patterns): the file is loaded and
  validated again here; :func:`rota.engine.spec_diff.diff_specs` says what changes
  (new tasks added, pending ones redefined or dropped, running ones left alone, done
  ones run again only with ``rerun``), :func:`apply_spec` applies it to the run's
  state and its store rows.
- ``limits`` (data: ``gpus``, ``cpus``, ``memory`` as the flags of ``rota run``):
  the machine the policy books against changes from the next round; attempts on
  GPUs that are given back finish there, nothing new goes there.

An answer starting with :data:`REFUSED` changed nothing (``rota run`` exits 2).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rota.core.resources import Machine, fits_machine
from rota.engine import attempt as A
from rota.engine import runstate as R
from rota.engine import spec_diff as D
from rota.errors import RotaError
from rota.spec.graph import critical_path_ranks
from rota.store import base as S
from rota.store.records import Control
from rota.store.sqlite import Change, SqliteStore
from rota.units import format_size

if TYPE_CHECKING:
    from rota.engine.loop import Engine
    from rota.spec.load import Spec

__all__ = ["OFFLINE", "REFUSED", "apply_spec", "handle", "handle_offline", "limited_machine"]

REFUSED = "refused: "
"""How an answer that changed nothing starts (bad input: ``rota run`` exits 2)."""
OFFLINE_SPEC = "no controller is running: the next 'rota run' reads the spec as it is then"
OFFLINE_LIMITS = REFUSED + "no controller is running, so the run has no live limits; give them to 'rota run'"
OFFLINE = (OFFLINE_SPEC, OFFLINE_LIMITS)
"""The answers with no live controller (``rota run`` then runs the spec itself)."""
LIST_MAX = 12  # task names shown per line of an answer


def handle(engine: Engine, control: Control) -> str:
    """Apply a ``spec`` or ``limits`` request to the live ``engine``; returns what changed, or a
    line starting with :data:`REFUSED` (the run is unchanged)."""
    if control.kind == "spec":
        return _spec(engine, control.data)
    if control.kind == "limits":
        return _limits(engine, control.data)
    raise ValueError(f"respec handles spec and limits requests, not {control.kind!r}")


def handle_offline(store: SqliteStore, control: Control) -> str:
    """Answer a request no controller is alive to take. A new spec needs nothing: the next
    ``rota run`` reads the file anyway. Limits belong to a live run: refused."""
    if control.kind == "spec":
        return OFFLINE_SPEC
    if control.kind == "limits":
        return OFFLINE_LIMITS
    raise ValueError(f"respec handles spec and limits requests, not {control.kind!r}")


# ---------------------------------------------------------------- spec
def _spec(engine: Engine, data: dict[str, Any]) -> str:
    from rota.spec.load import load_spec

    path = str(data.get("path") or engine.spec.path)
    if os.path.realpath(path) != os.path.realpath(engine.spec.path):
        return REFUSED + f"this controller runs {engine.spec.path}, not {path}"
    rerun = [str(p) for p in data.get("rerun") or ()]
    only = [str(p) for p in data.get("only") or ()]
    try:
        spec = load_spec(path)
        if only:
            spec = spec.only(only)
    except RotaError as e:
        return REFUSED + str(e)
    for t in spec.tasks:
        why = fits_machine(t.request, engine.machine)
        if why is not None:
            return REFUSED + f"{path}: task {t.name!r} can never run on this run's machine: {why}"
    if only:  # the edit covers the selection: the run's other tasks are left as they are (never dropped)
        chosen = {t.name for t in spec.tasks}
        spec = replace(spec, tasks=spec.tasks + tuple(lv.task for n, lv in engine.live.items() if n not in chosen))
    why = _sweeps_changed(engine, spec)
    if why:
        return REFUSED + why
    return apply_spec(engine, spec, rerun)


def _sweeps_changed(engine: Engine, spec: Spec) -> str | None:
    """A sweep's trials are the sweep hook's, made when the run started: a live edit leaves them be."""
    def sweeps(tasks: Any) -> dict[str, Any]:
        return {t.name: t for t in tasks if t.sweep is not None or t.trial is not None}

    if sweeps(spec.tasks) != sweeps(lv.task for lv in engine.live.values()):
        return (f"{spec.path}: a live edit cannot change a sweep's tasks; stop the run ('rota stop') "
                "and start it again")
    return None


def apply_spec(engine: Engine, spec: Spec, rerun: list[str]) -> str:
    """Make the live run follow ``spec`` (already validated): store rows first (new and reset
    tasks written, dropped pending ones removed), then the run's state; returns what changed."""
    rs, store = engine.rs, engine.store
    now = time.time()

    def rerun_of(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in rerun)

    missing = [t.name for t in spec.tasks if t.name not in rs.tasks]
    recorded = {}
    for name in missing:
        rec = store.task(name)
        past = max((int(a["attempt"]) for a in store.attempts(name)), default=0)
        if rec is not None:
            recorded[name] = D.Recorded(rec.state, rec.fingerprint, max(rec.attempt, past))
        elif past:  # dropped earlier (its row removed): its attempt numbers go on
            recorded[name] = D.Recorded(S.PENDING, "", past)
    diff = D.diff_specs(rs, spec.tasks, fingerprint=A.fingerprint, recorded=recorded, rerun=rerun_of,
                        rerun_dependents=engine.opt.rerun_dependents)
    if diff.changed:
        engine._flush()  # the store agrees with memory before rows are rewritten
        _write_rows(engine, diff)
        R.apply(rs, diff.transitions)
        rs.count_unmet()
        engine.spec = replace(spec, tasks=tuple(rs.tasks[n].task for n in diff.order))
        engine.order = {n: i for i, n in enumerate(diff.order)}
        engine.forced |= {n for n in diff.rerun if rerun_of(n)}
        engine.stale |= {n for n in diff.rerun if not rerun_of(n)}
        engine.kept -= set(diff.rerun) | set(diff.dropped)
        engine._learn_estimates()
        engine.ranks = critical_path_ranks(engine.spec.tasks, estimates=engine.learned)
        follow = D.readiness(rs, set(diff.updated) | set(diff.rerun), now)
        engine._apply(follow, commit_now=True)
        for tr in follow:
            if tr.kind is R.Op.SKIPPED:
                engine._event("skipped", tr.task, tr.note)
        # Every ready task is offered again: new definitions, new ranks, tasks gone.
        engine._sorted, engine._sorted_names, engine._requests = [], {}, Counter()
        rs.fresh = rs.ready - rs.delayed
        engine._dirty = True
    text = _answer(diff)
    engine._event("respec", "", text.replace("\n", "; "))
    return text


def _write_rows(engine: Engine, diff: D.SpecDiff) -> None:
    """The edit's store rows: a pending row for each task added or reset, its attempt number carried
    on; the rows of dropped pending tasks removed (a done one's record stays: a task put back in the
    file later is found done)."""
    store, rs = engine.store, engine.rs
    rows, numbers = [], []
    for tr in diff.transitions:
        if tr.define is None or tr.fields.get("state") != S.PENDING:
            continue
        t = tr.define
        rows.append(engine._row(t, A.fingerprint(t), S.PENDING))
        n = int(tr.fields.get("attempt") or 0)
        if n:  # a row written anew starts at 0: the task's numbers go on from its last attempt
            numbers.append(Change(t.name, S.PENDING, "respec", {"attempt": n}))
    again = [n for n in diff.rerun if n in rs.tasks]
    if rows:
        store.upsert_tasks(rows, event="respec", resets=again)
    if numbers:
        store.apply(numbers)
    gone = [n for n in diff.dropped if rs.tasks[n].state == S.PENDING]
    if gone:
        store.remove_pending(gone, event="respec")


def _answer(diff: D.SpecDiff) -> str:
    lines = []
    for what, names in (("added", diff.added), ("updated", diff.updated), ("dropped", diff.dropped),
                        ("run again", diff.rerun)):
        if names:
            lines.append(f"{what}: {_names(names)}")
    why: dict[str, list[str]] = {}
    for name, because in diff.left_running:
        why.setdefault(because, []).append(name)
    for because, names in why.items():
        lines.append(f"left running ({because}): {_names(names)}")
    if diff.changed_done:
        lines.append(f"done, command changed, kept as done ('rota run SPEC --rerun NAME' runs one again): "
                     f"{_names(diff.changed_done)}")
    return "\n".join(lines) if lines else "the spec is unchanged: nothing to do"


def _names(names: list[str]) -> str:
    more = len(names) - LIST_MAX
    return ", ".join(names[:LIST_MAX]) + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------- limits
def limited_machine(base: Machine, current: Machine, *, gpus: str | None = None, cpus: int | None = None,
                    memory: str | None = None) -> Machine:
    """``current`` with the flags of ``rota run`` applied: ``--gpus`` indices pick from the GPUs
    the run started with (``base``: so ``0,1,2`` gives GPU 3 back and ``0,1,2,3`` takes it again),
    sizes declare new GPUs, ``none`` none; ``--cpus`` and ``--memory`` replace. MachineError for a
    bad flag."""
    from rota.errors import MachineError
    from rota.machine import parse_gpus_flag
    from rota.units import parse_size

    m = current
    if gpus is not None:
        m = replace(m, gpus=tuple(parse_gpus_flag(gpus, list(base.gpus))))
    if cpus is not None:
        if cpus < 1:
            raise MachineError(f"--cpus {cpus}: expected a positive number")
        m = replace(m, cpus=cpus, cpus_from="flag")
    if memory is not None:
        try:
            m = replace(m, memory_bytes=parse_size(memory), memory_from="flag")
        except ValueError as e:
            raise MachineError(f"--memory {memory}: {e}") from None
    return m


def _limits(engine: Engine, data: dict[str, Any]) -> str:
    cpus = data.get("cpus")
    try:
        new = limited_machine(engine.base_machine, engine.machine, gpus=data.get("gpus"),
                              cpus=int(cpus) if cpus is not None else None, memory=data.get("memory"))
    except RotaError as e:
        had = ",".join(map(str, engine.base_machine.gpu_indices)) or "none"
        return REFUSED + f"{e} (live, --gpus indices pick from the GPUs the run started with: {had})"
    for name, lv in engine.live.items():
        if lv.state == S.PENDING:
            why = fits_machine(engine.request_of(lv), new)
            if why is not None:
                return REFUSED + f"task {name!r} could never run within these limits: {why}"
    old = engine.machine
    engine.set_machine(new)
    text = _describe_change(old, new, engine)
    engine._event("limits", "", text)
    return text


def _describe_change(old: Machine, new: Machine, engine: Engine) -> str:
    def gpus(m: Machine) -> str:
        return ",".join(f"{g.index}:{format_size(g.memory_bytes)}" for g in m.gpus) or "none"

    parts = []
    if gpus(old) != gpus(new):
        parts.append(f"GPUs {gpus(new)} (were {gpus(old)})")
    if old.cpus != new.cpus:
        parts.append(f"{new.cpus} CPUs (were {old.cpus})")
    if old.memory_bytes != new.memory_bytes:
        parts.append(f"RAM {format_size(new.memory_bytes)} (was {format_size(old.memory_bytes)})")
    if not parts:
        return "limits unchanged"
    text = "limits: " + "; ".join(parts)
    gone = set(old.gpu_indices) - set(new.gpu_indices)
    on_gone = sorted(n for n, lv in engine.running.items() if lv.placement and set(lv.placement.gpus) & gone)
    if on_gone:
        text += f"\nleft running on GPUs given back (they finish there; nothing new goes there): {_names(on_gone)}"
    return text
