"""The engine's extension points, declared: :class:`Hook` (sweeps, GPU monitoring) and :class:`UI`.

A hook subclasses :class:`Hook` and overrides what it needs; every method has a
no-op default, so the engine calls each one directly (no ``getattr`` probes).
Hooks see the engine itself (``engine.live``, ``engine.running``, ``engine.ready``,
``engine.store``, ``engine._event``); they must not change the run's state except
through the return values below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from rota.executors.base import Status

if TYPE_CHECKING:
    from rota.engine.runstate import Live
    from rota.ui.view import RunView

Event = tuple[float, str, str, str]
"""A UI event: ``(time, kind, task, text)``."""


class Hook:
    """An engine hook. Each method is called at one point of the loop; the defaults do nothing."""

    commit_before_finished: bool = False
    """True: the engine commits an attempt's end before calling :meth:`finished` (a sweep tells
    its Optuna study, outside rota's store, only what rota has recorded)."""

    def start(self, engine: Any) -> None:
        """The run starts (after the store is in line with the spec, before the first launch)."""

    def stop(self, engine: Any) -> None:
        """The run ends, however it ends."""

    def tick(self, engine: Any, now: float) -> None:
        """Once per loop round, after polling and launching."""

    @property
    def gates(self) -> bool:
        """Whether :meth:`may_launch` can say no (it is overridden): the engine asks only such hooks,
        so a run without one pays nothing per ready task."""
        return type(self).may_launch is not Hook.may_launch

    def may_launch(self, engine: Any, lv: Live) -> bool:
        """Whether the ready task ``lv`` may be offered to the policy this round (a concurrency cap).
        Every pass of such questions starts with :meth:`begin_gating`."""
        return True

    def begin_gating(self, engine: Any) -> None:
        """A pass of :meth:`may_launch` questions begins (the engine's launch, a pending-reason
        refresh): what a gate cached from the last pass (its caps) is stale, as running and
        ready tasks may have changed since."""

    def params_for(self, engine: Any, lv: Live) -> dict[str, Any] | None:
        """The parameters of ``lv``'s next attempt (a sweep's trial), or None to keep its own."""
        return None

    def outcome(self, engine: Any, lv: Live, status: Status) -> Status | None:
        """Another reading of an attempt's end (a pruned trial succeeded), or None to keep ``status``."""
        return None

    def finished(self, engine: Any, lv: Live, state: str, metrics: Mapping[str, float]) -> None:
        """An attempt ended as ``state`` (``succeeded``, ``failed`` (retried or not), ``interrupted``)."""

    def adopted(self, engine: Any, lv: Live) -> None:
        """Recovery followed a previous controller's still-running attempt again."""

    def lost(self, engine: Any, lv: Live) -> None:
        """Recovery found a previous controller's attempt gone; it runs again."""


class UI(Protocol):
    """What the engine shows a run on (``rota.ui.plain.PlainUI``, ``rota.ui.dashboard.LiveUI``)."""

    gpu_live: dict[int, tuple[float, int]]
    """Per GPU, the sampler's latest (utilisation %, used bytes): written by ``engine.gpu_monitor``."""

    gpu_notes: dict[int, tuple[str, str]]
    """Per GPU, ``("unhealthy", why)`` or ``("foreign", who holds memory)``: written by ``engine.gpu_watch``."""

    def start(self, engine: RunView) -> None: ...

    def event(self, engine: RunView, ev: Event) -> None: ...

    def refresh(self, engine: RunView) -> None: ...

    def flush(self) -> None:
        """Write out what is buffered before the engine sleeps."""

    def stop(self, engine: RunView) -> None: ...
