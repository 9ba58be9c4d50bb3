"""Steering a run from any terminal: the request path of every control (``rota cancel``, ``retry``,
``hold``, ``release``, ``priority``, and the live edits ``spec``/``limits`` of :mod:`rota.engine.respec`).

Requester side (:func:`request`): the request is committed to the state folder's ``controls``
table first (so it is never lost), then the live controller is woken (SIGUSR1 to the pid in
``controller.lock``, only once that process catches SIGUSR1: before the engine installs its
handler the signal would kill it) and its answer (``controls.result``) is waited for. With no live
controller, the requester takes the state lock itself and applies every untaken request in id
order (:func:`take_offline`): the store changes, and the next ``rota run`` obeys them; a cancel of an
attempt a killed controller left running is carried out there too (:mod:`rota.engine.control_offline`).

Controller side: :func:`start` once after the store is synced (held tasks, live priorities, a
cancel a dead controller had begun, dependents of cancelled tasks skipped, then the requests
committed while no controller ran), :func:`tick` every loop round (takes requests when woken,
and at least every :data:`CHECK_EVERY_S`, for requesters that cannot signal: another host).

Exactly once: each request is marked taken in the same transaction as its store changes
(:meth:`SqliteStore.take_control`); the effects outside the store (stopping a running attempt)
follow that commit and are redone from the store by the next controller (the ``cancelling`` mark).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rota.core.policy import sort_key
from rota.engine import control_offline as CO
from rota.engine import runstate as R
from rota.engine import runstate_control as RC
from rota.engine.lock import StateLock
from rota.engine.runstate import Op, Transition
from rota.errors import StateError, StateLockedError, UsageError
from rota.store import base as S
from rota.store.read import controller
from rota.store.records import Control
from rota.store.schema import DB_NAME
from rota.store.sqlite import Change, SqliteStore

if TYPE_CHECKING:
    from rota.engine.loop import Engine

__all__ = ["CHECK_EVERY_S", "KINDS", "match", "request", "start", "take_controls", "take_offline", "tick"]

KINDS = ("cancel", "retry", "hold", "release", "priority")
"""The controls this module applies itself (``spec`` and ``limits`` go to :mod:`rota.engine.respec`)."""
CHECK_EVERY_S = 1.0  # the controller looks for requests at least this often, woken or not
POLL_S = 0.05  # how often a requester looks for its answer
LIST_MAX = 12  # task names shown per line of an answer


# ---------------------------------------------------------------- requester side
def match(state_dir: str | os.PathLike[str], patterns: Sequence[str]) -> list[str]:
    """The task names of the run in ``state_dir`` matching ``patterns`` (globs, as ``--only``),
    in the run's order. UsageError (exit 2) for a pattern that matches no task."""
    store = _open(state_dir, readonly=True)
    try:
        names = [t.name for t in store.tasks()]
    finally:
        store.close()
    chosen: set[str] = set()
    for p in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, p)]
        if not hits:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UsageError(f"{p!r} matches no task of the run in {state_dir}; its tasks are named {shown} "
                             "(a glob: quote it so the shell does not expand it)")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def request(state_dir: str | os.PathLike[str], kind: str, targets: Sequence[str] = (),
            data: dict[str, Any] | None = None, *, wait_s: float = 30.0,
            executor_for: CO.ExecutorFor | None = None) -> str:
    """Commit a request, wake the live controller and return its answer (what it changed); with no
    live controller, apply it here (:func:`take_offline`; ``executor_for`` lets an offline cancel
    stop the attempts that still run). Returns a line saying the request waits when the controller
    has not answered within ``wait_s`` (it takes it in its next round)."""
    sd = Path(state_dir)
    store = _open(sd)
    after: list[str] = []  # what an offline pass did beyond the store (attempts stopped)
    try:
        cid = store.add_control(kind, targets, data)
        deadline = time.monotonic() + wait_s
        signalled: int | None = None
        while True:
            got = store.control(cid)
            if got is not None and got.taken_at is not None:
                return "\n".join(x for x in (got.result or "", *after) if x)
            lock = StateLock(sd)
            host = controller(sd).get("host")  # the last controller's, read before taking the lock rewrites it
            try:
                lock.acquire()
            except StateLockedError:
                ctl = controller(sd)
                pid = ctl.get("pid")
                if isinstance(pid, int) and pid != signalled and ctl.get("host") in (None, socket.gethostname()):
                    if _catches_sigusr1(pid):  # never before its handler: SIGUSR1 would kill it
                        # gone already: its lock frees and the next pass applies the request here
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, signal.SIGUSR1)
                        signalled = pid
            else:
                try:
                    after = take_offline(store, None if executor_for is None else CO.on_host(executor_for, host))
                finally:
                    lock.release()
                continue
            if time.monotonic() >= deadline:
                return (f"requested (control {cid}); the controller (pid {controller(sd).get('pid')}) has not "
                        f"answered within {wait_s:g}s: it applies the request in its next round")
            time.sleep(POLL_S)
    finally:
        store.close()


def _open(state_dir: str | os.PathLike[str], *, readonly: bool = False) -> SqliteStore:
    if not (Path(state_dir) / DB_NAME).is_file():
        raise StateError(f"no run state in {state_dir} (no {DB_NAME}); run 'rota run SPEC' first")
    return SqliteStore(state_dir, readonly=readonly)


def _catches_sigusr1(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGUSR1 (Linux: ``SigCgt`` in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def take_offline(store: SqliteStore, executor_for: CO.ExecutorFor | None = None) -> list[str]:
    """Apply every untaken request to the store, in id order (the caller holds the state lock: no
    controller runs): the next ``rota run`` obeys them (a cancelled task stays cancelled, a held
    one held). A cancelled task's pending dependents are skipped (on the recorded spec's graph).
    With ``executor_for``, once a cancel was taken, every attempt marked ``cancelling`` that still
    runs (a killed controller's SLURM job, Ray task, process group) is stopped and recorded
    cancelled (:func:`rota.engine.control_offline.stop_cancelling`); without it (or when its
    backend cannot be reached) the mark stays and the next controller stops it. Returns the lines
    that say what that stop did."""
    graces: dict[str, float] = {}
    cancels = False
    for c in store.controls(untaken=True):
        if c.kind in KINDS:
            state_of = _store_states(store)
            try:
                trs, lines = _decide(c, state_of, CO.offline_retried(store) if c.kind == "retry" else None,
                                     time.time())
                if c.kind == "cancel":
                    cancels = True
                    grace = c.data.get("grace_s")
                    graces.update((tr.task, float(grace)) for tr in trs if grace is not None)
                    skips = CO.skipped_behind(store, [tr.task for tr in trs if tr.kind is Op.CANCELLED])
                    if skips:
                        lines.append(f"skipped (they need a cancelled task): {_names([tr.task for tr in skips])}")
                    trs.extend(skips)
            except (KeyError, ValueError, TypeError) as e:  # a malformed request: answered, never retried
                store.take_control(c.id, f"refused: {c.kind} could not be applied ({e!r}); nothing changed")
                continue
            # Say the state changed only when it did: a request that changes nothing says so.
            head = ("no controller is running: the state is changed; the next 'rota run' obeys it" if trs else
                    "no controller is running: nothing changed")
            result = "\n".join([head, *lines])
            store.take_control(c.id, result, [_change(tr) for tr in trs])
        else:
            from rota.engine import respec

            store.take_control(c.id, respec.handle_offline(store, c))
    return CO.stop_cancelling(store, executor_for, graces) if cancels and executor_for is not None else []


def _store_states(store: SqliteStore) -> StateOf:
    states = {t.name: (t.state, t.held) for t in store.tasks()}
    return lambda name: states.get(name, (None, 0))


def _change(tr: Transition) -> Change:
    return Change(tr.task, R.EXPECT[tr.kind], tr.kind.value, tr.fields, tr.attempt, tr.metrics)


# ---------------------------------------------------------------- what a request changes (pure)
StateOf = Callable[[str], tuple[str | None, int]]  # name -> (state, held); state None: no such task


def _decide(c: Control, state_of: StateOf, retried: Callable[[list[str], bool], list[Transition]] | None,
            now: float) -> tuple[list[Transition], list[str]]:
    """The transitions of request ``c`` and the lines that say what it changed. ``retried``: the
    graph-aware :func:`runstate_control.retried`, on the live run or (offline) on the recorded
    spec's graph (None: the targets only)."""
    groups: dict[str, list[str]] = {}
    trs: list[Transition] = []

    def note(what: str, name: str) -> None:
        groups.setdefault(what, []).append(name)

    known = []
    for name in c.targets:
        if state_of(name)[0] is None:
            note("not in this run (unchanged)", name)
        else:
            known.append(name)
    if c.kind == "cancel":
        for name in known:
            state = state_of(name)[0]
            if state == S.PENDING:
                trs.append(RC.cancelled(name, now))
                note("cancelled", name)
            elif state in S.ACTIVE:
                trs.append(RC.cancelling(name))
                note("stopping (SIGTERM, then SIGKILL after the grace period)", name)
            else:
                note(f"unchanged ({state})", name)
    elif c.kind == "retry":
        force = bool(c.data.get("force"))
        ok = S.RETRYABLE | S.DONE_OK if force else S.RETRYABLE
        roots = [n for n in known if state_of(n)[0] in ok]
        for name in known:
            if name not in roots:
                note(f"unchanged ({state_of(name)[0]}{'' if force else '; --force reruns a done task'})", name)
        trs = retried(roots, force) if retried is not None else [RC.requeued(n, "retried (rota retry)") for n in roots]
        for tr in trs:
            note("pending again" if tr.task in roots else "pending again (uses one of them)", tr.task)
    elif c.kind in ("hold", "release"):
        on = c.kind == "hold"
        for name in known:
            state, is_held = state_of(name)
            if state != S.PENDING and on:
                note(f"unchanged ({state}; only pending tasks are held)", name)
            elif bool(is_held) == on:
                note(f"unchanged (already {'held' if on else 'not held'})", name)
            else:
                trs.append(RC.held(name, on))
                note("held" if on else "released", name)
    elif c.kind == "priority":
        prio = int(c.data["priority"])
        for name in known:
            trs.append(RC.prioritised(name, prio))
            note(f"priority {prio}", name)
    return trs, [f"{what}: {_names(names)}" for what, names in groups.items()]


def _names(names: list[str]) -> str:
    more = len(names) - LIST_MAX
    return ", ".join(names[:LIST_MAX]) + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------- controller side
def start(engine: Engine) -> None:
    """After the store is synced, before the first round: the store's held tasks and live
    priorities, a cancel a dead controller committed but did not finish (its attempt, adopted, is
    stopped now), the dependents of cancelled tasks skipped; then the requests left untaken."""
    rs, live = engine.rs, engine.live
    engine.control_woken = False
    engine.controls_at = 0.0
    # Only the rows that say more than their spec (held, a live priority, a cancel begun): every
    # task's decoded record was a 20,000-task run's peak memory, and the rest are as synced.
    for name, held, priority, reason in engine.store.marked_tasks(RC.CANCELLING_REASON):
        lv = live.get(name)
        if lv is None:
            continue
        if held:
            lv.held = 1
            rs.held.add(name)
        lv.priority = priority
        if name in rs.running and reason == RC.CANCELLING_REASON:
            lv.cancelling = True
            _stop(engine, [name], None)
    for name, lv in live.items():
        if lv.state == S.CANCELLED:
            engine._apply(R.released(rs, name, time.time()))
    _resort(engine)
    take_controls(engine, time.time())


def tick(engine: Engine, now: float) -> None:
    """Each loop round: take requests when SIGUSR1 woke the loop, or every CHECK_EVERY_S."""
    if engine.control_woken or now >= engine.controls_at + CHECK_EVERY_S:
        engine.control_woken = False
        engine.controls_at = now
        take_controls(engine, now)


def take_controls(engine: Engine, now: float) -> None:
    """Apply every untaken request in id order: its transitions (and what follows from them:
    dependents skipped or made ready) committed with the request marked taken, in one transaction;
    then running attempts are stopped, the policy's list re-sorted and the predictor told
    (:func:`rota.engine.predict.steered`: reasons and predicted starts follow at its next pass)."""
    store = engine.store
    controls = store.controls(untaken=True)
    if not controls:
        return
    for c in controls:
        if c.kind in KINDS:
            engine._flush()  # the store agrees with memory: the requests' compare-and-sets hold
            try:
                _take(engine, c, now)
            except (sqlite3.Error, OSError):
                raise  # the state folder's trouble: the engine stops as for any write
            except Exception as e:  # noqa: BLE001 - a request that cannot be applied must not stop the run,
                # nor every controller after it (it would stay untaken): it is answered as refused
                store.take_control(c.id, f"refused: {c.kind} could not be applied ({e!r}); nothing changed")
                engine._event("control", "", f"refused control {c.id} ({c.kind}): {e!r}")
        else:
            from rota.engine import respec

            store.take_control(c.id, respec.handle(engine, c))
    _resort(engine)
    from rota.engine.predict import steered

    steered(engine)  # a new priority, a hold...: the predictions follow within seconds, not at the next end


def _take(engine: Engine, c: Control, now: float) -> None:
    """One request on the live run; targets in the store but not in this run (``--only``) change
    in the store alone, as with no controller."""
    store, live, rs = engine.store, engine.live, engine.rs
    recs = {n: store.task(n) for n in c.targets if n not in live}

    def state_of(name: str) -> tuple[str | None, int]:
        lv = live.get(name)
        if lv is not None:
            return lv.state, lv.held
        rec = recs.get(name)
        return (rec.state, rec.held) if rec is not None else (None, 0)

    def retried(names: list[str], force: bool) -> list[Transition]:
        return [*RC.retried(rs, [n for n in names if n in live], force=force),
                *(RC.requeued(n, "retried (rota retry)") for n in names if n not in live)]

    trs, lines = _decide(c, state_of, retried, now)
    changes = [_change(tr) for tr in trs if tr.task not in live]
    mine = [tr for tr in trs if tr.task in live]
    R.apply(rs, mine, changes.extend)
    follow: list[Transition] = []
    for tr in mine:
        if tr.kind is Op.CANCELLED or tr.kind is Op.REQUEUED:
            more = R.released(rs, tr.task, now)
            R.apply(rs, more, changes.extend)
            follow.extend(more)
    skipped = [f.task for f in follow if f.kind is Op.SKIPPED]
    if skipped:
        lines.append(f"skipped (they need a cancelled task): {_names(skipped)}")
    on_old = sorted({u for tr in mine if tr.kind is Op.REQUEUED for u in rs.dependents.get(tr.task, ())
                     if u in rs.running})
    if on_old:  # they read what runs again: only a retry once they end brings them up to date
        lines.append(f"still running on the old results (retry them --force once they end): {_names(on_old)}")
    store.take_control(c.id, "\n".join(lines) or "nothing to change", changes)
    stopping = [tr.task for tr in mine if tr.kind is Op.CANCELLING]
    if stopping:
        grace = c.data.get("grace_s")
        _stop(engine, stopping, float(grace) if grace is not None else None)
    for tr in [*mine, *follow]:
        if tr.note and tr.kind is not Op.READY:
            engine._event(tr.kind.value, tr.task, tr.note)


def _stop(engine: Engine, names: list[str], grace_s: float | None) -> None:
    """SIGTERM, then SIGKILL after the grace period, to these running attempts (on their executor:
    process groups, scancel, Ray cancel), from a thread: the loop goes on and sees them end."""
    handles = [h for h in (engine.live[n].handle for n in names) if h is not None]
    if handles:
        grace = engine.opt.grace_s if grace_s is None else grace_s
        threading.Thread(target=engine.executor.cancel, args=(handles, grace), daemon=True).start()


def _resort(engine: Engine) -> None:
    """The policy's list of offered ready tasks rebuilt: without those no longer ready, in the
    order of their (live) priorities; the next round asks the policy again."""
    ready, delayed = engine.rs.ready, engine.rs.delayed
    keep = [n for n in engine._sorted_names if n in ready and n not in delayed]
    engine._sorted = sorted((engine._candidate(engine.live[n]) for n in keep), key=sort_key)
    engine._sorted_names = {c.name: c.request for c in engine._sorted}
    engine._requests = Counter(engine._sorted_names.values())
    engine._dirty = True
