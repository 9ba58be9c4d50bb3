"""The controller's side of "why does it wait, and when will it start": a hook that explains every
pending task (:func:`rota.core.explain.explain`) and forecasts every start and end
(:func:`rota.plan.eta.forecast`) on the live state, and writes both to the store.

When: from :attr:`Predictor.min_interval_s` after the start, at a loop round after something
changed (an attempt ended, was adopted or lost; a control request was taken: ``rota priority``,
``hold``, ``release``, ``cancel``, ``retry``, a live edit, through :func:`steered`; the number of
running, ready, backed-off or held tasks; the run's limits; GPU memory booked outside rota), at most every :attr:`Predictor.min_interval_s`
and never more often than :attr:`Predictor.cost_factor` times what the last computation took
(so it costs at most ~1/cost_factor of the controller's time, 1%: a forecast of 20,000 pending
tasks takes ~0.25 CPU-s, so a big run's predictions are redone every ~25 s; a run of 1,000
short tasks stays within 3% of its time without it, ``bench/bench_local.py``); and at least every
:attr:`Predictor.max_age_s` while tasks are pending (a task running past its estimate moves every
prediction). Once more when the run stops, so the tasks it leaves pending keep a current reason.

What: each pending task's ``tasks.reason`` (one line) and ``predicted_start``/``predicted_end``
(epoch seconds; None for a task that cannot start while GPU memory held outside rota stays, and for
the tasks that need it: that memory has no known end), each running task's ``predicted_end`` (start:
its real one), no events: in one
transaction with the engine's other commits (``EngineState._flush``: staged transitions are
committed within ``STAGE_WAIT_S``), or alone when nothing is staged. The UIs read the
same results from :class:`rota.ui.view.Forecasts` (the dashboard's ETA is the forecast's
makespan, its pending lines the reasons).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rota.core.explain import Reason, explain
from rota.core.policy import Candidate, Running
from rota.engine.hooks import Hook
from rota.engine.launching import _within
from rota.engine.runstate import Live
from rota.plan.eta import Forecast, forecast, history_s
from rota.spec.model import Task
from rota.store import base as S
from rota.studies.names import study_name
from rota.ui.view import Forecasts

HALTED = "the run launches nothing more (rota stop --drain, or --fail-fast after a failure)"


class Predictor(Hook, Forecasts):
    """Explains and forecasts the pending tasks of a live run (see the module docstring)."""

    def __init__(self, min_interval_s: float = 2.0, cost_factor: float = 100.0, max_age_s: float = 60.0) -> None:
        self.min_interval_s = min_interval_s
        self.max_age_s = max_age_s
        self.cost_factor = cost_factor
        self.forecast: Forecast | None = None
        self.reasons: Mapping[str, Reason] = {}
        self._changes = 0  # attempts ended, adopted or lost so far
        self._seen: tuple[int, ...] | None = None  # what had changed at the last computation
        self._at = -math.inf  # when the last computation ran (epoch seconds)
        self._cost_s = 0.0  # CPU seconds of the last computation (its wall time swells on a busy machine)
        self._history: dict[str, float] | None = None

    # -- hook points: each end, adoption or loss is a change --------------
    def finished(self, engine: Any, lv: Live, state: str, metrics: Mapping[str, float]) -> None:
        self._changes += 1

    def adopted(self, engine: Any, lv: Live) -> None:
        self._changes += 1

    def lost(self, engine: Any, lv: Live) -> None:
        self._changes += 1

    def steered(self) -> None:
        """A control request was taken (:func:`rota.engine.control.take_controls`): a change, so the
        next tick past the interval explains and forecasts again (a new priority changes no count)."""
        self._changes += 1

    def tick(self, engine: Any, now: float) -> None:
        if now - self._at < max(self.min_interval_s, self.cost_factor * self._cost_s):
            return
        # The machine (live limits) and the outside bookings are replaced, never changed in place.
        seen = (self._changes, len(engine.running), len(engine.ready), len(engine.delayed), len(engine.rs.held),
                int(engine.halted), id(engine.launch_machine), id(engine.outside_bookings))
        # Also when the last one is old: a running task past its estimate moves every prediction.
        if seen != self._seen or now - self._at >= self.max_age_s:
            self.update(engine, now, seen)

    def start(self, engine: Any) -> None:
        # The first one waits min_interval_s too: the first round's launches come first, and a run of
        # short tasks that is over by then pays nothing.
        self._at = time.time()
        self._learn_history(engine)  # now, before this run's own attempts are in the store

    def stop(self, engine: Any) -> None:
        if any(lv.state == S.PENDING for lv in engine.live.values()):
            # The run is over: a state folder that cannot be written now was reported already.
            with contextlib.suppress(sqlite3.Error, OSError):
                self.update(engine, time.time(), None)

    # -- the computation --------------------------------------------------
    def update(self, engine: Any, now: float, seen: tuple[int, ...] | None) -> None:
        """Explain and forecast now, and hand the rows to the engine's next commit (now, when nothing
        else is staged). A failure to explain or forecast is reported, never raised into the run; a
        failure to commit is the store's, raised as any commit's is."""
        t0 = time.thread_time()
        self._seen, self._at = seen, now
        rows = None
        # The last answers go before their successors are built (one copy of each at a time);
        # the UIs read them between loop rounds, never during this one.
        self.reasons, self.forecast = {}, None
        try:
            held = set(engine.rs.held)
            self.reasons = reasons_of(engine, now, held)
            # A halted run (rota stop --drain, --fail-fast) starts no pending task: none gets a
            # predicted start, and the ETA is that of the running tasks alone.
            kept = held | {n for n, lv in engine.live.items() if lv.state == S.PENDING} if engine.halted else held
            self.forecast = forecast(
                [_as_launched(engine, lv) for lv in engine.live.values()], engine.machine,
                engine.live,  # as it is: forecast reads state, started_at and ended_at
                now, self._learn_history(engine), held=kept,
                not_before={n: engine.live[n].not_before for n in engine.delayed},
                # Memory held outside rota has no known end: held for the whole forecast.
                outside=[r.placement for r in engine.outside_bookings])
            rows = self._rows(engine)
        except Exception as e:  # noqa: BLE001 - reported, never raised into the run
            engine._event("forecast", "", f"could not explain or forecast the pending tasks: {e}")
        self._cost_s = time.thread_time() - t0
        if rows is not None:
            # With the round's other commits (staged ones are flushed within STAGE_WAIT_S), or alone now.
            engine._forecast = rows
            if not engine._staged:
                engine._flush()

    def _rows(self, engine: Any) -> list[tuple[str, str | None, float | None, float | None]]:
        slots = self.forecast.slots if self.forecast is not None else {}
        rows: list[tuple[str, str | None, float | None, float | None]] = []
        for name, lv in engine.live.items():
            if lv.state == S.PENDING:
                r = self.reasons.get(name)
                start, end = slots.get(name, (None, None))
                rows.append((name, r.text if r is not None else None, start, end))
            elif lv.state in S.ACTIVE:
                start, end = slots.get(name, (lv.started_at, None))
                rows.append((name, None, start, end))
        return rows

    def _learn_history(self, engine: Any) -> dict[str, float]:
        """Median seconds by command of the successful attempts in the store at the start (before
        this run's own: the forecast learns those from its tasks by group, :mod:`rota.plan.eta`)."""
        if self._history is None:
            self._history = history_s(engine.store)
        return self._history


def reasons_of(engine: Any, now: float, held: set[str]) -> dict[str, Reason]:
    """:func:`rota.core.explain.explain` on the engine's live state: every pending task's reason."""
    live: Mapping[str, Live] = engine.live
    ready: set[str] = engine.ready
    gates = [h for h in engine.hooks if h.gates]
    for g in gates:
        g.begin_gating(engine)
    cands: list[Candidate] = []
    waiting: dict[str, list[tuple[str, str]]] = {}
    backoff: dict[str, float] = {}
    limits: dict[str, str] = {}
    for name, lv in live.items():
        if lv.state != S.PENDING:
            continue
        if name not in ready:
            waiting[name] = [(n, "held" if n in held else live[n].state) for n in dict.fromkeys(lv.task.needs)
                             if live[n].state not in S.DONE_OK]
            continue
        cands.append(engine._candidate(lv))
        if lv.not_before > now:
            backoff[name] = lv.not_before
        elif engine.halted:
            limits[name] = HALTED
        elif gates and not all(g.may_launch(engine, lv) for g in gates):
            limits[name] = limit_text(lv)
    # The policy's view of what runs, as Launching._launch builds it: bookings outside rota too
    # (foreign GPU memory), less what runs on GPUs live limits gave back.
    running = [Running(lv.placement, engine._remaining(lv, now)) for lv in engine.running.values() if lv.placement]
    outside = list(engine.outside_bookings)
    if engine._gpus_given_back:
        running, outside = _within(running, engine._gpus_given_back), _within(outside, engine._gpus_given_back)
    out = explain(cands, engine.launch_machine, running, now=now, waiting=waiting, held=held, backoff=backoff,
                  limits=limits, outside=outside)
    for name in backoff:  # what the retry follows stays in sight ("exit 1", "cuda out of memory")
        r = out[name]
        if r.kind == "backoff" and live[name].reason:
            out[name] = replace(r, text=f"{r.text}, after: {live[name].reason}")
    return out


def steered(engine: Any) -> None:
    """Tell the engine's predictor (if it has one) that a control request was taken."""
    for h in engine.hooks:
        if isinstance(h, Predictor):
            h.steered()


def _as_launched(engine: Any, lv: Live) -> Task:
    """A pending task as the policy would launch it now: ``rota priority``'s live override and an OOM
    retry's bigger booking (the forecast's simulator reads both from the task)."""
    t = lv.task
    if lv.state != S.PENDING:
        return t
    prio = t.priority if lv.priority is None else lv.priority
    req = engine.request_of(lv)
    return t if prio == t.priority and req == t.request else replace(t, priority=prio, request=req)


def limit_text(lv: Live) -> str:
    """What keeps a ready task back when a hook's gate says no: a sweep's ``parallel:``."""
    sw = lv.task.sweep
    if sw is not None and sw.parallel is not None:
        return f"sweep {study_name(lv.task)} runs at most {sw.parallel} trial(s) at once (parallel: {sw.parallel})"
    return "a concurrency limit of the run"
