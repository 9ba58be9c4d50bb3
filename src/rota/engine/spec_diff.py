"""A live edit of the spec as transitions: pure, no I/O (see :mod:`rota.engine.runstate`).

``rota run SPEC`` against a live controller hands it the file as it is now
(:mod:`rota.engine.respec`). :func:`diff_specs` compares the run's tasks with the
file's and returns the transitions that make the run follow the file:

=================================  ==============================================
task                               what the edit does
=================================  ==============================================
new in the file                    ADDED (pending; or as recorded, when the state
                                   folder holds it done with the same command)
pending, definition changed        REDEFINED: its new definition, a fresh retry
                                   budget, no back-off
running (launching, running)       left alone, changed or gone from the file
done (succeeded, cached)           kept; its command changed: reported, run
                                   again only when ``rerun`` matches it
final and matched by ``rerun``     REDEFINED back to pending, with the done and
                                   skipped tasks that use it (as ``--rerun``)
other final, definition changed    REDEFINED, its state kept (what a later
                                   ``rota retry`` runs)
gone from the file, not running    DROPPED, unless a task left running needs it
=================================  ==============================================

After applying them, :meth:`RunState.count_unmet` recounts waiting needs and
:func:`readiness` makes the run's ready set agree (READY, WAITING, SKIPPED).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rota.core.dag import blocked
from rota.engine.runstate import Op, RunState, Transition, made_ready
from rota.spec.model import Task
from rota.store import base as S

__all__ = ["Recorded", "SpecDiff", "diff_specs", "readiness"]

# A task that takes a new definition starts over: the store row's reset (as a sync writes it).
RESET: Mapping[str, Any] = {
    "state": S.PENDING, "attempts": 0, "free_attempts": 0, "exit_code": None, "reason": "", "not_before": 0.0,
    "started_at": None, "ended_at": None, "gpu_memory_override": None,
}
_NOT_OK = frozenset({S.FAILED, S.SKIPPED, S.CANCELLED})  # a pending task that needs one of these never runs


class Recorded(NamedTuple):
    """A task's row in the state folder, for a task the live run does not hold (dropped earlier)."""

    state: str
    fingerprint: str
    attempt: int


@dataclass(frozen=True)
class SpecDiff:
    """What a new spec changes in a live run. ``transitions``: ADDED, then REDEFINED, then DROPPED."""

    transitions: list[Transition]
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # pending tasks that take their new definition
    rerun: list[str] = field(default_factory=list)  # final tasks sent back to pending (rerun, or stale)
    dropped: list[str] = field(default_factory=list)
    left_running: list[tuple[str, str]] = field(default_factory=list)  # (task, why it is mentioned)
    changed_done: list[str] = field(default_factory=list)  # done, command changed, kept (no rerun)
    order: list[str] = field(default_factory=list)  # the run's tasks after the edit: the file's, then kept ones

    @property
    def changed(self) -> bool:
        return bool(self.transitions)


def diff_specs(rs: RunState, new: Sequence[Task], *, fingerprint: Callable[[Task], str],
               recorded: Mapping[str, Recorded] | None = None, rerun: Callable[[str], bool] = lambda _: False,
               rerun_dependents: bool = True) -> SpecDiff:
    """The transitions that make the run ``rs`` follow the task list ``new`` (the table above).

    ``fingerprint``: a task's identity (command, resources, env, workdir), as the
    store records it; ``recorded``: the state folder's rows of tasks ``rs`` does not
    hold; ``rerun``: whether ``--rerun`` names a task; ``rerun_dependents``: the
    done tasks that use a task sent back to pending go back too.
    """
    old, recorded = rs.tasks, recorded or {}
    added: list[Transition] = []
    redefined: list[Transition] = []
    out = SpecDiff([])
    new_names = {t.name for t in new}
    again: list[str] = []
    by_name = {t.name: t for t in new}
    for t in new:
        name = t.name
        lv = old.get(name)
        if lv is None:
            rec = recorded.get(name)
            state = S.PENDING
            if rec is not None and rec.state in S.DONE_OK and rec.fingerprint == fingerprint(t) and not rerun(name):
                state = rec.state
            added.append(Transition(Op.ADDED, name, {"state": state, "attempt": rec.attempt if rec else 0},
                                    define=t, note="added"))
            out.added.append(name)
        elif lv.state in S.ACTIVE:
            if t != lv.task:
                out.left_running.append((name, "changed in the file; its new definition applies to its next run"))
        elif lv.state == S.PENDING:
            if t != lv.task:
                redefined.append(Transition(Op.REDEFINED, name, RESET, define=t, note="takes its new definition"))
                out.updated.append(name)
        elif rerun(name):
            again.append(name)
        else:
            if lv.state in S.DONE_OK and fingerprint(t) != fingerprint(lv.task):
                out.changed_done.append(name)
            if t != lv.task:
                redefined.append(Transition(Op.REDEFINED, name, {}, define=t))
    if again:
        users: dict[str, list[str]] = {}
        for t in new:
            for n in t.needs:
                users.setdefault(n, []).append(t.name)
        back = {S.SKIPPED} | (set(S.DONE_OK) if rerun_dependents else set())

        def alive(u: str) -> bool:
            return u in old and old[u].state in back and u not in again

        stale = [u for u, _ in blocked(lambda n: users.get(n, ()), again, alive)]
        pos = {n: i for i, n in enumerate(by_name)}
        for name in again + sorted(stale, key=pos.__getitem__):
            redefined.append(Transition(Op.REDEFINED, name, RESET, define=by_name[name], note="runs again"))
            out.rerun.append(name)
    # Gone from the file: dropped, unless running, or needed by a task left running (its end reads them).
    keep = set(new_names)
    stack = [n for n, lv in old.items() if n not in new_names and lv.state in S.ACTIVE]
    for n in stack:
        out.left_running.append((n, "no longer in the file; it finishes"))
    while stack:
        n = stack.pop()
        if n in keep:
            continue
        keep.add(n)
        stack.extend(m for m in old[n].task.needs if m in old)
    dropped = [Transition(Op.DROPPED, n, note="dropped: no longer in the file") for n in old if n not in keep]
    out.dropped.extend(tr.task for tr in dropped)
    out.transitions.extend(added + redefined + dropped)
    out.order.extend([t.name for t in new] + [n for n in old if n in keep and n not in new_names])
    return out


def readiness(rs: RunState, redo: Collection[str] = (), now: float = 0.0) -> list[Transition]:
    """After an edit is applied and waiting needs recounted: SKIPPED for each pending task that
    (transitively) needs a failed, skipped or cancelled one; READY for each other pending task
    without waiting needs that is not ready yet, or is in ``redo`` (offered again with its new
    request); WAITING for each ready task that waits for needs again (a need runs again)."""
    tasks = rs.tasks
    out: list[Transition] = []

    def pending(u: str) -> bool:
        return tasks[u].state == S.PENDING

    roots = [n for n, lv in tasks.items() if lv.state in _NOT_OK and any(pending(u) for u in rs.dependents.get(n, ()))]
    skipped: set[str] = set()
    for u, because in blocked(lambda n: rs.dependents.get(n, ()), roots, pending):
        why = f"needs {because}, which did not succeed"
        out.append(Transition(Op.SKIPPED, u, {"state": S.SKIPPED, "reason": why}, note=why))
        skipped.add(u)
    for name, lv in tasks.items():
        if lv.state != S.PENDING or name in skipped:
            continue
        if lv.unmet:
            if name in rs.ready:
                out.append(Transition(Op.WAITING, name))
        elif name not in rs.ready or name in redo:
            out.append(made_ready(name, lv.not_before, delayed=lv.not_before > now))
    return out
