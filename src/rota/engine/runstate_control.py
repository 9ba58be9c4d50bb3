"""The control requests' transitions, pure: ``rota cancel``, ``retry``, ``hold``/``release``, ``priority``.

A part of :mod:`rota.engine.runstate` (its state keys and table of events are documented there):
:mod:`rota.engine.control` turns each request it takes into these
:class:`~rota.engine.runstate.Transition` records and applies them with
:func:`rota.engine.runstate.apply`, then :func:`~rota.engine.runstate.released` for what follows.
"""

from __future__ import annotations

from collections.abc import Iterable

from rota.core.dag import blocked
from rota.engine.runstate import Op, RunState, Transition
from rota.store import base as S


def cancelled(name: str, now: float) -> Transition:
    """``rota cancel`` of a pending task: it never starts (then
    :func:`~rota.engine.runstate.released` skips its dependents)."""
    return Transition(Op.CANCELLED, name, {"state": S.CANCELLED, "reason": "cancelled", "ended_at": now},
                      note="cancelled (rota cancel); it will not start")


def cancelling(name: str) -> Transition:
    """``rota cancel`` of a running attempt: committed before it is stopped, so a controller that
    dies first leaves the mark for the next one; the attempt's end is then CANCELLED
    (:func:`rota.engine.runstate_attempt.ended`)."""
    return Transition(Op.CANCELLING, name, {"reason": CANCELLING_REASON}, note="stopping it (rota cancel)")


CANCELLING_REASON = "cancelling (rota cancel)"
"""A running task's ``reason`` once ``rota cancel`` asked for it to be stopped."""


def requeued(name: str, why: str) -> Transition:
    """Back to pending with a fresh retry budget (``rota retry``; a consumer of a forced one)."""
    return Transition(Op.REQUEUED, name, {
        "state": S.PENDING, "attempts": 0, "free_attempts": 0, "exit_code": None, "reason": why,
        "not_before": 0.0, "ended_at": None, "handle": None, "gpu_memory_override": None}, note=why)


def retried(rs: RunState, names: Iterable[str], *, force: bool = False) -> list[Transition]:
    """``rota retry``: each of ``names`` that failed, was cancelled, skipped or interrupted (with
    ``force``, also succeeded or cached) goes back to pending; then every task left skipped behind
    one of them comes back too, and (``force``) every done task that used one of them runs again
    after it (the stale-results rule of a rerun). Apply these, then :func:`~rota.engine.runstate.released` for each."""
    tasks = rs.tasks
    ok = S.RETRYABLE | S.DONE_OK if force else S.RETRYABLE
    roots = [n for n in names if tasks[n].state in ok]
    out = [requeued(n, "retried (rota retry)") for n in roots]
    back = S.RETRYABLE | S.DONE_OK if force else frozenset({S.SKIPPED})
    seen = set(roots)
    for u, because in blocked(lambda n: rs.dependents.get(n, ()), roots,
                              lambda u: u not in seen and tasks[u].state in back):
        seen.add(u)
        out.append(requeued(u, f"needs {because}, which runs again"))
    return out


def held(name: str, on: bool) -> Transition:
    """``rota hold`` (``on``) / ``rota release`` of a pending task: while held it is not launched."""
    if on:
        return Transition(Op.HELD, name, {"held": 1}, note="held (rota hold): it will not start until released")
    return Transition(Op.RELEASED, name, {"held": 0}, note="released (rota release)")


def prioritised(name: str, priority: int) -> Transition:
    """``rota priority``: a live override of the spec's priority (the policy's first sort key)."""
    return Transition(Op.PRIORITY, name, {"priority": priority}, note=f"priority {priority} (rota priority)")
