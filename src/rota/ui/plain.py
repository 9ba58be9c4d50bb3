"""The plain one-line-per-event printer (no rich: ``rota run --plain`` and pipes start faster)."""

from __future__ import annotations

import sys
import time
from typing import IO

from rota.store import base as S
from rota.ui.view import RunView
from rota.units import format_size


def event_line(ev: tuple[float, str, str, str]) -> str:
    ts, kind, task, text = ev
    stamp = time.strftime("%H:%M:%S", time.localtime(ts))
    return f"{stamp} {kind:<11} {task} {text}".rstrip()


class PlainUI:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.gpu_live: dict[int, tuple[float, int]] = {}  # the UI protocol's; one line per event shows neither
        self.gpu_notes: dict[int, tuple[str, str]] = {}

    def start(self, engine: RunView) -> None:
        m = engine.machine
        gpus = ", ".join(f"{g.index}:{format_size(g.memory_bytes)}" for g in m.gpus) or "none"
        nodes = f" on {len(m.nodes)} nodes" if len(m.nodes) > 1 else ""
        self.stream.write(f"rota: {len(engine.live)} tasks; GPUs {gpus}; {m.cpus} CPUs{nodes}; state {engine.state_dir}\n")
        self.stream.flush()

    def event(self, engine: RunView, ev: tuple[float, str, str, str]) -> None:
        # Flushed by flush(), which the engine calls before it waits: one write per round, not per line.
        self.stream.write(event_line(ev) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def refresh(self, engine: RunView) -> None:
        self.stream.flush()

    def stop(self, engine: RunView) -> None:
        c = engine.counts()
        self.stream.write(
            f"rota: {c[S.SUCCEEDED]} succeeded, {c[S.CACHED]} cached, {c[S.FAILED]} failed, "
            f"{c[S.SKIPPED]} skipped, {c[S.INTERRUPTED]} interrupted, {c[S.PENDING]} pending"
            + (f", {c[S.CANCELLED]} cancelled" if c.get(S.CANCELLED) else "") + "\n"
        )
        self.stream.flush()
