"""What a UI may read from a running engine: declared here, so ui/ never imports the engine
and the engine knows exactly what it must keep providing.

The engine satisfies :class:`RunView` structurally (its attributes of the same names); the UIs
(:mod:`rota.ui.plain`, :mod:`rota.ui.dashboard`) and :func:`rota.ui.snapshot.snapshot` read
nothing else. Everything here is read-only: a UI never changes the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rota.core.explain import Reason
from rota.core.resources import Machine, Placement
from rota.plan.eta import Forecast
from rota.spec.model import Task

Event = tuple[float, str, str, str]
"""``(ts, kind, task, text)``: one line of the run's event feed."""


class TaskView(Protocol):
    """One task of the run as the engine holds it in memory."""

    @property
    def task(self) -> Task: ...
    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def placement(self) -> Placement | None: ...
    @property
    def out(self) -> str | None: ...
    @property
    def log_path(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def queued(self) -> bool: ...


class HistoryView(Protocol):
    """The store, as far as the ETA reads it: past durations per command, in seconds."""

    def durations_by_command(self) -> dict[str, list[float]]: ...


class Forecasts:
    """What the controller's predictor (:class:`rota.engine.predict.Predictor`, one of the engine's
    hooks) publishes for the UIs: the latest forecast of the rest of the run (None: none yet) and
    every pending task's reason. The dashboard's ETA is ``forecast.makespan_s``."""

    forecast: Forecast | None = None
    reasons: Mapping[str, Reason] = {}


def forecasts(engine: RunView) -> Forecasts | None:
    """The engine's hook that publishes forecasts, if it has one."""
    for h in engine.hooks:
        if isinstance(h, Forecasts):
            return h
    return None


class RunView(Protocol):
    """A running engine, as far as a UI reads it."""

    @property
    def machine(self) -> Machine: ...
    @property
    def live(self) -> Mapping[str, TaskView]: ...
    @property
    def running(self) -> Mapping[str, TaskView]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def events(self) -> Sequence[Event]: ...
    @property
    def state_dir(self) -> str: ...
    @property
    def store(self) -> HistoryView: ...
    @property
    def hooks(self) -> Sequence[object]: ...
    def counts(self) -> dict[str, int]: ...
