"""Where each task's planned duration comes from: estimate, history or default.

:func:`resolve_durations` is pure. :func:`load_history` is the only I/O: it
reads finished attempts from a state folder (read-only) through
:meth:`SqliteStore.history`, matched by the task's command.

Rule (``use_history=False``): the spec's ``estimate`` if given, else the
median duration of past successful attempts of the same command, else the
default. With ``use_history=True`` history comes first, then the estimate,
then the default. Durations are taken as measured on the reference machine
(speed factor 1).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rota.spec.model import Task

DEFAULT_DURATION_S = 60.0
ESTIMATE, HISTORY, DEFAULT = "estimate", "history", "default"


@dataclass(frozen=True)
class Durations:
    """``seconds[name]`` and ``source[name]`` (``estimate``/``history``/``default``) per task."""

    seconds: Mapping[str, float]
    source: Mapping[str, str]
    default_s: float
    use_history: bool

    def counts(self) -> dict[str, int]:
        out = {ESTIMATE: 0, HISTORY: 0, DEFAULT: 0}
        for s in self.source.values():
            out[s] += 1
        return out

    def defaulted(self) -> list[str]:
        return [n for n, s in self.source.items() if s == DEFAULT]


def resolve_durations(
    tasks: Sequence[Task],
    history_s: Mapping[str, float],
    *,
    use_history: bool = False,
    default_s: float = DEFAULT_DURATION_S,
) -> Durations:
    """Each task's duration and its source; ``history_s`` maps a command to its learned seconds."""
    if default_s <= 0:
        raise ValueError("the default duration must be positive")
    seconds: dict[str, float]
    source: dict[str, str]
    if not history_s:  # the usual plan: estimates and the default only, one pass each
        seconds = {t.name: t.estimate_s if t.estimate_s is not None else default_s for t in tasks}
        source = {t.name: ESTIMATE if t.estimate_s is not None else DEFAULT for t in tasks}
        return Durations(seconds, source, default_s, use_history)
    seconds, source = {}, {}
    for t in tasks:
        hist = history_s.get(t.command)
        if use_history and hist is not None:
            seconds[t.name], source[t.name] = hist, HISTORY
        elif t.estimate_s is not None:
            seconds[t.name], source[t.name] = t.estimate_s, ESTIMATE
        elif hist is not None:
            seconds[t.name], source[t.name] = hist, HISTORY
        else:
            seconds[t.name], source[t.name] = default_s, DEFAULT
    return Durations(seconds, source, default_s, use_history)


def load_history(state_dir: str | os.PathLike[str], commands: Iterable[str]) -> dict[str, float]:
    """Median duration of past successful attempts per command; {} without a state folder."""
    from rota.errors import RotaError
    from rota.store.schema import DB_NAME
    from rota.store.sqlite import SqliteStore

    sd = Path(state_dir)
    if not (sd / DB_NAME).exists():
        return {}
    try:
        store = SqliteStore(sd, readonly=True)
    except RotaError:
        return {}
    try:
        out: dict[str, float] = {}
        for cmd in dict.fromkeys(commands):
            runs = [
                r["ended_at"] - r["started_at"]
                for r in store.history(cmd)
                if r["started_at"] is not None and r["ended_at"] is not None and r["ended_at"] >= r["started_at"]
            ]
            if runs:
                out[cmd] = max(statistics.median(runs), 0.001)
        return out
    finally:
        store.close()
