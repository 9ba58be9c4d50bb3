"""``rota cancel`` with no controller: the cancelled attempts that still run are stopped here.

A killed controller (``kill -9``, a controller that left on Ctrl-C with SLURM jobs queued) leaves
attempts running on purpose: a SLURM job, a Ray task, a local process group (its own session)
outlive it, to be adopted by the next ``rota run``. A cancel of such a task used to commit only the
``cancelling`` mark (:func:`rota.engine.runstate_control.cancelling`) and say "stopping", while the
attempt ran on until the next ``rota run`` stopped it. Now the requester, which holds the state
lock (no controller can start meanwhile), stops it through the executor's public interface
(``cancel``: SIGTERM, the grace, SIGKILL; scancel; Ray cancel; ``stop_unrecorded`` for an attempt
whose handle was never committed), then records it ``cancelled`` (never retried) and the pending
tasks that need it ``skipped``; the next ``rota run`` neither waits for nor adopts it.

The executor is built by the caller's ``executor_for(backend)`` (the engine never imports a
concrete executor: :func:`rota.api.offline_executor`). Crash safety is unchanged: the mark is
committed (with the request taken) before anything is stopped, so an attempt this cannot stop
(SLURM or Ray unreachable, still running after the grace) keeps it, and the next controller finishes
the cancel (:func:`rota.engine.control.start`).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rota.engine import runstate as R
from rota.engine import runstate_control as RC
from rota.engine.runstate import Op, Transition
from rota.errors import ExecutorError, RotaError
from rota.executors.base import Executor, Handle, Status
from rota.store import base as S
from rota.store.records import TaskRecord
from rota.store.sqlite import Change, SqliteStore

__all__ = ["DEFAULT_GRACE_S", "ExecutorFor", "offline_retried", "on_host", "skipped_behind", "stop_cancelling"]

ExecutorFor = Callable[[str], Executor]
"""``backend name -> Executor`` able to cancel and poll that backend's handles (raises RotaError
when it cannot be reached)."""
DEFAULT_GRACE_S = 10.0  # rota run's --grace default: the dead controller's own value is not recorded


def stop_cancelling(store: SqliteStore, executor_for: ExecutorFor, grace_s: Mapping[str, float],
                    now: Callable[[], float] = time.time) -> list[str]:
    """Stop every attempt marked ``cancelling`` (the caller holds the state lock: no controller
    runs), record each one that ended ``cancelled`` and what needs it ``skipped``, in one commit.
    ``grace_s``: a task's grace when its request named one (else :data:`DEFAULT_GRACE_S`).
    Returns the lines that say what happened (for the requester's answer)."""
    rows = [r for r in store.tasks(tuple(S.ACTIVE)) if r.reason == RC.CANCELLING_REASON]
    if not rows:
        return []
    by_backend: dict[str, list[TaskRecord]] = {}
    for r in rows:  # an attempt without a handle was the dead controller's executor's
        by_backend.setdefault(str((r.handle or {}).get("executor") or _last_executor(store)), []).append(r)
    ended: dict[str, Status | None] = {}
    lines: list[str] = []
    for backend, recs in by_backend.items():
        try:
            stopped, over = _stop(store, executor_for, backend, recs, grace_s)
        except (RotaError, OSError) as e:  # unreachable: the mark stays for the next controller
            lines.append(f"could not stop them now ({e}); the next 'rota run --backend {backend}' stops them: "
                         f"{_names(r.name for r in recs)}")
            continue
        ended.update(stopped)
        if over:  # nothing to stop; their end (a success stays one) is the next controller's to record
            lines.append(f"had ended before the cancel; the next 'rota run --backend {backend}' records how: "
                         f"{_names(over)}")
        left = [r.name for r in recs if r.name not in ended and r.name not in over]
        if left:
            lines.append(f"still running after the grace period; the next 'rota run --backend {backend}' stops "
                         f"them: {_names(left)}")
    if not ended:
        return lines
    at = now()
    trs = [_cancelled(r, ended[r.name], at) for r in rows if r.name in ended]
    skips = skipped_behind(store, list(ended))
    store.apply([_change(tr) for tr in [*trs, *skips]])
    lines.append(f"stopped and cancelled: {_names(ended)}")
    if skips:
        lines.append(f"skipped (they need a cancelled task): {_names(tr.task for tr in skips)}")
    return lines


def _stop(store: SqliteStore, executor_for: ExecutorFor, backend: str, recs: list[TaskRecord],
          grace_s: Mapping[str, float]) -> tuple[dict[str, Status | None], list[str]]:
    """Stop ``recs`` on ``backend``: the end of each one stopped now (None: never recorded, killed),
    and the names of those that had ended by themselves (a success or failure: never signalled,
    as a process group id may be another's by now)."""
    ex = executor_for(backend)
    out: dict[str, Status | None] = {}
    over: list[str] = []
    try:
        for r in recs:
            if not r.handle:  # submitted (or not) just before the controller died: find and kill it
                ex.stop_unrecorded(str(store.state_dir), f"{r.name}#{r.attempt}",
                                   attempt_id=store.attempt_id(r.name, r.attempt))
                out[r.name] = None
        handled = [(r, Handle.from_json(r.handle)) for r in recs if r.handle]
        if handled:
            before = ex.poll([h for _r, h in handled])
            for r, h in handled:
                s = before.get(h.key)
                if s is not None and s.phase == "lost":  # vanished without a status: nothing to stop
                    out[r.name] = s
                elif s is not None and s.phase != "running":
                    over.append(r.name)
            handled = [(r, h) for r, h in handled if r.name not in out and r.name not in over]
        by_grace: dict[float, list[Handle]] = {}
        for r, h in handled:
            by_grace.setdefault(grace_s.get(r.name, DEFAULT_GRACE_S), []).append(h)
        for grace, hs in sorted(by_grace.items()):
            ex.cancel(hs, grace)
        if handled:
            st = ex.poll([h for _r, h in handled])
            for r, h in handled:
                s = st.get(h.key)
                if s is not None and s.phase != "running":
                    out[r.name] = s
    finally:
        ex.close()
    return out, over


def _cancelled(r: TaskRecord, end: Status | None, now: float) -> Transition:
    """The end of a stopped attempt: CANCELLED, as :func:`rota.engine.runstate_attempt.ended` records
    a live cancel (its exit code kept; never a retry)."""
    code = end.exit_code if end is not None else None
    return Transition(Op.CANCELLED, r.name, {
        "state": S.CANCELLED, "exit_code": code, "reason": "cancelled", "ended_at": now, "handle": None},
        {"attempt": r.attempt, "state": S.CANCELLED, "ended_at": now, "reason": "cancelled", "exit_code": code},
        note="cancelled (rota cancel, no controller running: stopped by the request)")


def skipped_behind(store: SqliteStore, cancelled: Iterable[str]) -> list[Transition]:
    """SKIPPED for every pending task that (transitively) needs one of ``cancelled``, as a live run
    skips them. Empty when the recorded spec cannot be read: the next ``rota run`` skips them."""
    rs = _recorded_run(store)
    if rs is None:
        return []
    names = [n for n in cancelled if n in rs.tasks]
    for name in names:  # all first: one cancelled beside a task it needs is not also skipped
        rs.tasks[name].state = S.CANCELLED
    out: list[Transition] = []
    for name in names:
        more = [tr for tr in R.released(rs, name) if tr.kind is Op.SKIPPED]
        R.apply(rs, more)
        out.extend(more)
    return out


def offline_retried(store: SqliteStore) -> Callable[[list[str], bool], list[Transition]] | None:
    """The live run's graph-aware retry (:func:`runstate_control.retried`) with no controller. So an
    offline ``rota retry`` resets and names the dependents skipped behind a task (``--force``: the
    done ones that used it) as a live one does. None when the recorded spec cannot be read: the
    targets alone are reset, and the next ``rota run`` brings their dependents back."""
    rs = _recorded_run(store)
    if rs is None:
        return None

    def retried(names: list[str], force: bool) -> list[Transition]:
        return [*RC.retried(rs, [n for n in names if n in rs.tasks], force=force),
                *(RC.requeued(n, "retried (rota retry)") for n in names if n not in rs.tasks)]

    return retried


def _recorded_run(store: SqliteStore) -> R.RunState | None:
    """The run's graph from the spec it recorded (``meta.spec_path``), each task in its stored state
    (pending when not in the store yet: never a retry's nor a cancel's); None when that spec cannot
    be read (moved, now invalid)."""
    from rota.spec.load import load_spec

    path = store.get_meta("spec_path")
    if not path:
        return None
    try:
        tasks = load_spec(path).tasks
    except (RotaError, OSError):
        return None
    rs = R.RunState.of(tasks)
    states = {t.name: t.state for t in store.tasks()}
    for name, lv in rs.tasks.items():
        lv.state = states.get(name) or S.PENDING
    return rs


def on_host(executor_for: ExecutorFor, host: str | None) -> ExecutorFor:
    """``executor_for``, refusing the local backend when the last controller ran on another host
    (``host``, from its lock file; None: not known): its process groups are not this machine's."""
    def made(backend: str) -> Executor:
        if backend == "local" and host not in (None, socket.gethostname()):
            raise ExecutorError(f"its processes run on {host}, not here: run 'rota cancel' on {host}")
        return executor_for(backend)

    return made


def _change(tr: Transition) -> Change:
    return Change(tr.task, R.EXPECT[tr.kind], tr.kind.value, tr.fields, tr.attempt, tr.metrics)


def _last_executor(store: SqliteStore) -> str:
    try:
        return str(json.loads(store.get_meta("machine") or "{}").get("executor") or "local")
    except (ValueError, AttributeError):
        return "local"


def _names(names: Iterable[str], limit: int = 12) -> str:
    shown: list[Any] = list(names)
    more = len(shown) - limit
    return ", ".join(shown[:limit]) + (f" and {more} more" if more > 0 else "")
