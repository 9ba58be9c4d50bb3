"""A run's state and its transitions, pure (in the manner of dask/local.py).

The engine (:mod:`rota.engine.loop`) is the loop plus side effects: it turns
what it observes (a task made ready, a placement, a submitted handle, a
backend's start, an attempt's end, Ctrl-C) into typed :class:`Transition` records
with pure functions (this module's and its two siblings'), and hands them to
:func:`apply`, which updates this in-memory state *and* hands the store rows to
the engine's commit in the same step. Nothing here spawns, polls, sleeps or reads a clock;
``tests/unit/test_runstate.py`` drives it without processes. The DAG's
bookkeeping (waiting needs counted down, dependents released or blocked) is
:mod:`rota.core.dag`'s, which ``rota plan``'s simulator (:mod:`rota.plan.simulate`)
uses too.

State keys (:class:`RunState`):

- ``tasks``: name -> :class:`Live`, every task's record, a mirror of its store
  row: ``state`` (``rota.store.base`` names), ``attempts``, ``free_attempts``,
  ``unmet`` (its *waiting needs*: how many of its needs are not done yet),
  ``placement`` (the reservation of its current attempt), ``handle``, times,
  log and output paths, ``not_before`` (retry back-off).
- ``dependents``: name -> the names of the tasks that need it (one entry per
  ``needs`` entry, so ``unmet`` and ``dependents`` always agree).
- ``ready``: pending tasks whose needs are all done, delayed ones included.
- ``delayed``: ready tasks waiting for their ``not_before`` (a retry back-off).
- ``fresh``: ready, not delayed, not yet offered to the policy.
- ``running``: name -> its :class:`Live`, the *running attempts* (states
  ``launching`` and ``running``); each one's ``placement`` is its reservation.
- ``ran``: tasks that started an attempt in this run.
- ``held``: tasks ``rota hold`` keeps from launching (``Live.held``); they stay ready.

Events, their functions and the transitions they return:

=====================  ======================  =========================================
event                  function                transitions (``Op``)
=====================  ======================  =========================================
ready                  :func:`made_ready`      READY (memory only: the row is pending)
outputs exist          :func:`cached`          CACHED
placed                 :func:`placed`          LAUNCHING
submitted              :func:`submitted`       RUNNING, or SUBMIT_FAILED
started (queued)       :func:`started`         STARTED
ended with a status    :func:`ended`           SUCCEEDED, RETRY or FAILED
a new state            :func:`released`        READY / SKIPPED (dependents), READY (retry)
control: Ctrl-C        :func:`interrupted`     INTERRUPTED for every running attempt
recovery: vanished     :func:`lost`            LOST
recovery: adopted      :func:`adopted`         RUNNING
recovery: reset        ``Engine._sync``        RESET (the store row rewritten from the spec)
deadline passed        :func:`timed_out`       TIMED_OUT (then its end is a ``timeout``)
control: cancel        :func:`cancelled`       CANCELLED (pending), CANCELLING (running;
                       :func:`ended`           its end is then CANCELLED, not retried)
control: retry         :func:`retried`         REQUEUED (itself, its skipped dependents;
                                               ``force``: done ones and their consumers)
control: hold/release  :func:`held`            HELD / RELEASED (``held`` column; pending)
control: priority      :func:`prioritised`     PRIORITY (``priority`` column: live override)
live edit: a new spec   :mod:`~rota.engine.     ADDED, REDEFINED, DROPPED (memory only:
                       spec_diff`              :mod:`rota.engine.respec` writes the rows),
                                               WAITING (memory only), READY, SKIPPED
=====================  ======================  =========================================

Where the functions live: :func:`made_ready`, :func:`released`, :func:`reset` here (with
:class:`RunState`, :class:`Transition`, :func:`apply` and :func:`replay`); an attempt's, from
``cached`` to ``adopted``, in :mod:`rota.engine.runstate_attempt`; the control requests', from
``cancelled`` to ``prioritised``, in :mod:`rota.engine.runstate_control`; a live edit's in
:mod:`rota.engine.spec_diff`.

The store's event log is a journal of the stored transitions: :func:`replay`
rebuilds a run's task states from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rota.core.dag import blocked, needs_met
from rota.core.resources import Placement
from rota.executors.base import Handle
from rota.spec.model import Task
from rota.store import base as S
from rota.store.sqlite import Change


class Op(StrEnum):
    """A transition's kind; the value is the store's event ``kind`` (a public contract)."""

    READY = "ready"
    CACHED = "cached"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUBMIT_FAILED = "submit-failed"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    RESET = "reset"  # a new run sends it back to pending (rerun, changed, not done): logged by sync
    TIMED_OUT = "timed-out"  # ran past its timeout: being stopped; its end says "timeout"
    CANCELLING = "cancelling"  # rota cancel of a running attempt: it is being stopped
    CANCELLED = "cancelled"
    REQUEUED = "requeued"  # rota retry: pending again with a fresh retry budget
    HELD = "held"
    RELEASED = "released"
    PRIORITY = "priority"
    ADDED = "added"  # a live edit of the spec (rota.engine.spec_diff): a new task
    REDEFINED = "redefined"  # ... a task takes its new definition (pending, or back to pending)
    DROPPED = "dropped"  # ... a task left the file
    WAITING = "waiting"  # ... a ready task waits for needs again (memory only)


# The state a task's row must be in for each stored transition (the store's compare-and-set).
EXPECT: dict[Op, str | frozenset[str]] = {
    Op.CACHED: S.PENDING, Op.LAUNCHING: S.PENDING, Op.RUNNING: S.LAUNCHING, Op.SUBMIT_FAILED: S.LAUNCHING,
    Op.STARTED: S.ACTIVE, Op.SUCCEEDED: S.ACTIVE, Op.RETRY: S.ACTIVE, Op.FAILED: S.ACTIVE,
    Op.SKIPPED: S.PENDING, Op.INTERRUPTED: S.ACTIVE, Op.LOST: S.ACTIVE, Op.TIMED_OUT: S.ACTIVE,
    Op.RESET: frozenset(S.STATES) - S.ACTIVE,
    Op.CANCELLING: S.ACTIVE, Op.CANCELLED: S.ACTIVE | {S.PENDING}, Op.REQUEUED: S.RETRYABLE | S.DONE_OK,
    Op.HELD: S.PENDING, Op.RELEASED: frozenset(S.STATES), Op.PRIORITY: frozenset(S.STATES),
}
_LEAVE = frozenset({Op.SUCCEEDED, Op.RETRY, Op.FAILED, Op.INTERRUPTED, Op.LOST, Op.CANCELLED})  # its attempt stops
_FINAL = frozenset({Op.CACHED, Op.SUCCEEDED, Op.FAILED, Op.SKIPPED, Op.INTERRUPTED, Op.CANCELLED})  # leaves ready

# Store column -> Live attribute: a transition's fields are written once and mirrored from here.
_LIVE_ATTR = {
    "state": "state", "attempts": "attempts", "attempt": "attempt", "free_attempts": "free_attempts",
    "exit_code": "exit_code", "reason": "reason", "started_at": "started_at", "ended_at": "ended_at", "deadline": "deadline",
    "not_before": "not_before", "log_path": "log_path", "out_dir": "out", "params": "params",
    "gpu_memory_override": "gpu_override", "held": "held", "priority": "priority",
}


@dataclass
class Live:
    """One task in :class:`RunState`: the in-memory mirror of its store row."""

    task: Task
    state: str
    attempts: int = 0  # attempts since the task was last reset (what retries count)
    attempt: int = 0  # the number of its latest attempt, never restarted (its attempt-N.log)
    attempt_id: int | None = None  # that attempt's id, unique in the state folder
    free_attempts: int = 0
    handle: Handle | None = None
    placement: Placement | None = None
    started_at: float | None = None
    deadline: float | None = None
    not_before: float = 0.0
    gpu_override: int | None = None
    params: dict[str, Any] | None = None
    log_path: str | None = None
    out: str | None = None
    exit_code: int | None = None
    reason: str = ""
    ended_at: float | None = None
    unmet: int = 0
    timed_out: bool = False
    queued: bool = False  # submitted to a backend that queues, its start not seen yet
    held: int = 0  # 1: rota hold keeps it from launching (the ``held`` column)
    priority: int | None = None  # rota priority's live override of the spec's (None: the spec's)
    cancelling: bool = False  # rota cancel stops its running attempt: its end is CANCELLED


@dataclass
class RunState:
    """The run's state; its keys are documented at the top of this module."""

    tasks: dict[str, Live] = field(default_factory=dict)
    dependents: dict[str, list[str]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    delayed: set[str] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)
    running: dict[str, Live] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    queues: bool = False  # the executor queues: a launched attempt waits for its start to be seen

    @classmethod
    def of(cls, tasks: Iterable[Task], *, queues: bool = False) -> RunState:
        """Every task pending, with its dependents and waiting needs (none made ready yet)."""
        rs = cls(queues=queues)
        for t in tasks:
            rs.tasks[t.name] = Live(t, S.PENDING, unmet=len(t.needs))
            for n in t.needs:
                rs.dependents.setdefault(n, []).append(t.name)
        return rs

    def count_unmet(self) -> None:
        """Recount every task's waiting needs from its needs' states (after loading a store)."""
        tasks = self.tasks
        for lv in tasks.values():
            lv.unmet = sum(1 for n in lv.task.needs if tasks[n].state not in S.DONE_OK)


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of one task. ``fields`` are its store columns (mirrored on its :class:`Live`);
    ``attempt``/``metrics`` its attempts row and metrics; ``note`` what the UI shows."""

    kind: Op
    task: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    attempt: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] | None = None
    note: str = ""
    handle: Handle | None = None  # RUNNING: the handle object (``fields`` hold its JSON)
    placement: Placement | None = None  # LAUNCHING, adopted RUNNING: the reservation
    delayed: bool = False  # READY: waits for ``not_before``
    define: Task | None = None  # ADDED, REDEFINED: the task's new definition

    @property
    def state(self) -> str | None:
        """The task's state after this transition (None: unchanged)."""
        st: str | None = self.fields.get("state")
        return st


class _Unmet:
    """``RunState.tasks`` seen as name -> waiting needs (for :func:`needs_met`)."""

    __slots__ = ("tasks",)

    def __init__(self, tasks: dict[str, Live]) -> None:
        self.tasks = tasks

    def __getitem__(self, name: str) -> int:
        return self.tasks[name].unmet

    def __setitem__(self, name: str, value: int) -> None:
        self.tasks[name].unmet = value


# ---------------------------------------------------------------- events -> transitions (pure)
def made_ready(name: str, not_before: float = 0.0, *, delayed: bool = False) -> Transition:
    """A pending task whose needs are done may be offered to the policy (after ``not_before``)."""
    return Transition(Op.READY, name, {"not_before": not_before}, delayed=delayed)


def released(rs: RunState, name: str, now: float = 0.0) -> list[Transition]:
    """What ``name``'s new state means (call after its transition is applied):
    done (``succeeded``/``cached``) -> READY for each pending dependent left without waiting needs;
    ``failed``/``skipped`` -> SKIPPED for every pending task that transitively needs it;
    back to ``pending`` (a retry, a lost attempt) -> READY for itself once its needs are done,
    delayed while its ``not_before`` is after ``now``."""
    tasks = rs.tasks
    lv = tasks[name]
    state = lv.state
    if state == S.PENDING:
        return [made_ready(name, lv.not_before, delayed=lv.not_before > now)] if lv.unmet == 0 else []
    users = rs.dependents.get(name, ())
    if state in S.DONE_OK:
        return [made_ready(u) for u in users if tasks[u].unmet == 0 and tasks[u].state == S.PENDING]
    if state not in (S.FAILED, S.SKIPPED, S.CANCELLED):
        return []
    why = f"needs {name}, which did not succeed"
    pairs = blocked(lambda n: rs.dependents.get(n, ()), (name,), lambda u: tasks[u].state == S.PENDING)
    return [Transition(Op.SKIPPED, u, {"state": S.SKIPPED, "reason": why}, note=why) for u, _ in pairs]


def reset(name: str, reason: str = "") -> Transition:
    """A new run sends a task back to pending from its spec (``--rerun``, a changed command, not
    done, a need that runs again): what ``Engine._sync``'s rewritten store row means, as
    :func:`replay` reads its ``reset`` event. The sync writes whole rows (the spec's definition),
    so this transition is never applied with a commit."""
    return Transition(Op.RESET, name, {"state": S.PENDING, "attempts": 0, "free_attempts": 0, "exit_code": None,
                                       "reason": reason, "not_before": 0.0, "ended_at": None})


# ---------------------------------------------------------------- apply: memory and store in one step
Commit = Callable[[list[Change]], object]


def apply(rs: RunState, transitions: Sequence[Transition], commit: Commit | None = None) -> None:
    """Apply ``transitions`` in order to ``rs`` and hand their store rows to ``commit`` (the
    engine's staging, or ``SqliteStore.apply``) in one call: memory and store from one description.

    ``commit=None`` updates memory only (:func:`replay`, tests).
    """
    tasks = rs.tasks
    changes: list[Change] = []
    attr_of = _LIVE_ATTR.get
    for tr in transitions:
        kind, name = tr.kind, tr.task
        if kind in _RESPEC:  # a live edit of the spec: memory only (rota.engine.respec writes the rows)
            _respecify(rs, tr)
            continue
        lv = tasks[name]
        if kind is Op.REQUEUED and lv.state in S.DONE_OK:  # a done need runs again: its users wait for it
            for u in rs.dependents.get(name, ()):
                tasks[u].unmet += 1
                if tasks[u].state == S.PENDING:
                    rs.ready.discard(u)
                    rs.delayed.discard(u)
                    rs.fresh.discard(u)
        for col, v in tr.fields.items():
            attr = attr_of(col)
            if attr is not None:
                setattr(lv, attr, v)
        if kind is Op.READY:
            rs.ready.add(name)
            if tr.delayed:
                rs.delayed.add(name)
                rs.fresh.discard(name)
            else:
                rs.fresh.add(name)
            continue
        if commit is not None:
            changes.append(Change(name, EXPECT[kind], kind.value, tr.fields, tr.attempt, tr.metrics))
        if kind is Op.LAUNCHING:
            lv.placement, lv.timed_out, lv.queued = tr.placement, False, rs.queues
            lv.attempt_id = tr.attempt.get("id") if tr.attempt else None
            rs.ready.discard(name)
            rs.delayed.discard(name)
            rs.fresh.discard(name)
            rs.running[name] = lv
            rs.ran.add(name)
        elif kind is Op.RUNNING:
            lv.handle = tr.handle
            if tr.placement is not None:  # adopted from a previous controller
                lv.placement = tr.placement
                rs.running[name] = lv
        elif kind is Op.SUBMIT_FAILED:
            lv.handle, lv.reason = None, tr.note
        elif kind is Op.STARTED:
            lv.queued = False
        elif kind is Op.TIMED_OUT:
            lv.timed_out = True
        elif kind is Op.CANCELLING:
            lv.cancelling = True
        elif kind is Op.HELD:
            rs.held.add(name)
        elif kind is Op.RELEASED:
            rs.held.discard(name)
        elif kind is Op.REQUEUED:
            lv.cancelling, lv.handle = False, None
        elif kind in _LEAVE:
            rs.running.pop(name, None)
            if kind is Op.RETRY or kind is Op.LOST:
                lv.handle = None  # on a final end the hooks still see the handle (gpu_monitor: its group)
        if kind in _FINAL:
            rs.ready.discard(name)
            rs.delayed.discard(name)
            rs.fresh.discard(name)
            if kind is Op.CACHED or kind is Op.SUCCEEDED:
                needs_met(rs.dependents.get(name, ()), _Unmet(tasks))
    if changes and commit is not None:
        commit(changes)


_RESPEC = frozenset({Op.ADDED, Op.REDEFINED, Op.DROPPED, Op.WAITING})


def _respecify(rs: RunState, tr: Transition) -> None:
    """:func:`apply` for a live edit's transitions: the task's record, its place among its needs'
    dependents, and ready; waiting needs are recounted by the caller once for the whole edit."""
    tasks, name, kind = rs.tasks, tr.task, tr.kind
    lv = tasks.get(name)
    if kind is not Op.WAITING and lv is not None:  # it leaves its old needs' dependents
        for n in lv.task.needs:
            users = rs.dependents.get(n)
            if users is not None and name in users:
                users.remove(name)
    if kind is not Op.ADDED and kind is not Op.REDEFINED:  # WAITING, DROPPED: not ready
        rs.ready.discard(name)
        rs.delayed.discard(name)
        rs.fresh.discard(name)
        if kind is Op.DROPPED:
            del tasks[name]
            rs.held.discard(name)
        return
    t = tr.define
    assert t is not None, "ADDED and REDEFINED carry the task's definition"
    if lv is None:
        lv = tasks[name] = Live(t, S.PENDING)
    lv.task = t
    for col, v in tr.fields.items():
        attr = _LIVE_ATTR.get(col)
        if attr is not None:
            setattr(lv, attr, v)
    for n in t.needs:
        rs.dependents.setdefault(n, []).append(name)
    if lv.state != S.PENDING:
        rs.ready.discard(name)
        rs.delayed.discard(name)
        rs.fresh.discard(name)


# ---------------------------------------------------------------- the event log as a journal
def replay(tasks: Iterable[Task], events: Iterable[Mapping[str, Any]]) -> RunState:
    """Rebuild a run's state from the store's event log (``SqliteStore.events()``).

    Starts from every task pending (what ``sync`` writes for a new state folder)
    and applies each logged transition (its state, attempts, exit code, reason)
    with :func:`apply` and :func:`released`, as the engine does; events that are
    not transitions (a hook's notes) are passed over. Across runs: each later run's
    ``sync`` event follows one RESET event per task it sent back to pending (kept
    done tasks have none); at ``sync`` the waiting needs are recounted and the ready
    set rebuilt, as ``Engine._sync`` does.
    """
    rs = RunState.of(tasks)
    initial = [made_ready(n) for n, lv in rs.tasks.items() if lv.unmet == 0]
    apply(rs, initial)
    for ev in events:
        name = ev.get("task")
        if ev["kind"] == "sync" or ev["kind"] == "respec":  # respec: a live edit's rows (rota.engine.respec)
            rs.count_unmet()
            rs.ready.clear()
            rs.delayed.clear()
            rs.fresh.clear()
            rs.ran.clear()
            apply(rs, [made_ready(n) for n, lv in rs.tasks.items() if lv.state == S.PENDING and lv.unmet == 0])
            continue
        try:
            kind = Op(ev["kind"])
        except ValueError:
            continue
        if name not in rs.tasks or kind is Op.READY:
            continue
        if kind is Op.RESET:  # memory only, as in the engine; the sync event that follows re-readies
            apply(rs, [reset(name, str((ev.get("data") or {}).get("reason", "")))])
            rs.ready.discard(name)
            rs.fresh.discard(name)
            rs.delayed.discard(name)
            continue
        tr = Transition(kind, name, dict(ev.get("data") or {}))
        apply(rs, [tr])
        if tr.state is not None and kind is not Op.RUNNING and kind is not Op.SUBMIT_FAILED:
            apply(rs, released(rs, name))
    return rs
