"""The engine's options and the attributes its parts share; the run's state itself is a
:class:`rota.engine.runstate.RunState` (``Live`` is re-exported from there)."""

from __future__ import annotations

import errno
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "STORAGE_ERRNOS", "EngineState", "Live", "Options"]

from rota.core.policy import Candidate
from rota.core.resources import Machine, Request
from rota.engine import drain
from rota.engine import runstate as R
from rota.engine.hooks import UI, Hook
from rota.engine.runstate import Live, RunState, Transition
from rota.executors.base import Executor
from rota.spec.load import Spec
from rota.spec.model import Task
from rota.store import base as S
from rota.store.sqlite import Change, ForecastRow, SqliteStore

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

# OSErrors from writing logs/out folders that mean "the state folder cannot be written".
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass
class Options:
    rerun: tuple[str, ...] = ()
    grace_s: float = 10.0
    retry_delay_s: float = 1.0  # first retry delay; doubles each attempt, capped at 300 s
    poll_interval_s: float = 0.5
    fail_fast: bool = False  # after a task fails for good, launch nothing more; running tasks finish
    rerun_dependents: bool = True  # a task that runs again sends its done dependents back to pending


class EngineState:
    """Attributes the engine's parts share (declared here so each part type-checks alone), and the
    few methods every part uses. The parts stack in one direction, each using only those below it:
    EngineState <- Finishing (an attempt's end) <- Launching (ready -> placed -> submitted) <-
    Recovery (sync with the spec, adopt a dead controller's attempts) <- Engine (the loop, signals,
    polling, sleeping: :mod:`rota.engine.loop`). Every state change is a :mod:`runstate` transition."""

    spec: Spec
    machine: Machine
    store: SqliteStore
    executor: Executor
    opt: Options
    ui: UI | None
    hooks: list[Hook]
    state_dir: str
    run_id: str
    rs: RunState  # the run's state: tasks, dependents, ready, running attempts (see runstate)
    ranks: dict[str, float]
    learned: dict[str, float]
    forced: set[str]
    kept: set[str]  # done in an earlier run and kept as done by this one (nothing to do)
    stale: set[str]  # done in an earlier run, run again because a task they need runs again
    order: dict[str, int]  # task -> position in the spec (the policy's last tie-break)
    _sorted: list[Candidate]  # candidates of ready tasks, in policy order
    _sorted_names: dict[str, Request]  # the tasks in _sorted, with their requests
    _requests: Counter[Request]  # how many of _sorted ask for each request (the policy's request classes)
    _dirty: bool  # something changed since the policy was last asked
    _queues: bool  # the executor queues submitted attempts (their start comes later)
    _enforces_timeout: bool  # the executor stops attempts at their timeout itself (no engine deadline)
    launch_machine: Machine  # what the policy books against: the machine, plus queue-ahead CPU slots
    _halt_path: str | None  # written on halt: queued-ahead attempts must not start (Launch.halt_path)
    halted: bool  # fail_fast tripped: nothing more is launched
    interrupts: int
    events: list[tuple[float, str, str, str]]  # the last UI lines (hooks read them)
    started_at: float  # when this controller started
    _staged: list[Change]
    _staged_handles: dict[str, int]  # task -> index in _staged of its uncommitted "running" change

    # The run's state, by the names the engine's parts (and hooks, the UI) use.
    @property
    def live(self) -> dict[str, Live]:
        return self.rs.tasks

    @property
    def users(self) -> dict[str, list[str]]:
        return self.rs.dependents

    @property
    def ready(self) -> set[str]:
        return self.rs.ready

    @property
    def delayed(self) -> set[str]:
        return self.rs.delayed

    @property
    def running(self) -> dict[str, Live]:
        return self.rs.running

    @property
    def ran(self) -> set[str]:
        return self.rs.ran

    def _apply(self, transitions: list[Transition], *, commit_now: bool = False) -> None:
        """Apply transitions to the run's state; their rows are staged (or committed now)."""
        R.apply(self.rs, transitions, self.store.apply if commit_now else self._stage_all)

    def _stage_all(self, changes: list[Change]) -> None:
        self._stage(*changes)

    def _stage(self, *changes: Change) -> None:
        """Queue transitions for the next commit: ``_flush()`` runs before anything acts on them.

        An attempt that ends before its "running" change (its handle) was committed
        gets one transition, launching -> its end, carrying the handle too: a short
        task costs two writes, not three. Nothing is lost: the folded change was
        never committed, and the row that is says everything it would have.
        """
        for ch in changes:
            at = self._staged_handles.pop(ch.name, None)
            if at is not None:
                first = self._staged[at]
                attempt = {**first.attempt, **ch.attempt} if first.attempt and ch.attempt else ch.attempt
                # A start seen before the handle's commit is part of that "running" change, and
                # the attempt's end may still fold into it.
                started = ch.event == "started"
                self._staged[at] = Change(ch.name, first.expect, first.event if started else ch.event,
                                          {**first.fields, **ch.fields}, attempt, ch.metrics or first.metrics)
                if started:
                    self._staged_handles[ch.name] = at
                continue
            if ch.event == "running":
                self._staged_handles[ch.name] = len(self._staged)
            self._staged.append(ch)

    _forecast: Sequence[ForecastRow] = ()  # the predictor's rows, committed with the next flush

    def _flush(self) -> None:
        """Commit every staged transition in one transaction, with the predictor's rows if any
        (:mod:`rota.engine.predict`: pending tasks' reasons and predicted starts)."""
        if self._staged or self._forecast:
            staged, self._staged = self._staged, []
            forecast, self._forecast = self._forecast, ()
            self._staged_handles.clear()
            self.store.apply(staged, forecast=forecast)

    def _halt(self, task: str, why: str) -> None:
        """Launch nothing more (``--fail-fast``, ``rota stop --drain``); running tasks finish."""
        if not self.halted:
            self.halted = True
            if self._halt_path is not None:
                drain.mark_halted(self._halt_path)
            self._event("halt", task, f"{why}: launching nothing more; {len(self.running)} running task(s) finish")

    def _event(self, kind: str, task: str, text: str) -> None:
        """A line for the UI (and the hooks' ``engine.events``): ``(time, kind, task, text)``."""
        ev = (time.time(), kind, task, text)
        self.events.append(ev)
        if len(self.events) > 500:
            del self.events[:250]
        if self.ui is not None:
            self.ui.event(self, ev)

    def request_of(self, lv: Live) -> Request:
        """What ``lv``'s next attempt asks for: its task's request, with an OOM retry's bigger booking."""
        r = lv.task.request
        if lv.gpu_override is not None and r.gpus:
            r = replace(r, gpu_memory_bytes=lv.gpu_override)
        return r

    def _need_outputs(self, t: Task) -> list[str]:
        out: list[str] = []
        for n in t.needs:
            out.extend(self.live[n].task.outputs)
        return out

    def failed_names(self) -> tuple[str, ...]:
        """The failed tasks' names, in the spec's order (what a run's last lines name; read from
        memory, not the store: re-reading a big run's rows was its peak memory)."""
        return tuple(name for name, lv in self.live.items() if lv.state == S.FAILED)

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        out = {s: 0 for s in S.STATES}
        for lv in self.live.values():
            out[lv.state] += 1
        return out
