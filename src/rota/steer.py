"""Steering a run from outside its controller: ``rota cancel``, ``retry``, ``hold``, ``release``,
``priority`` (part of :mod:`rota.api`, which re-exports every name here).

Each commits a request to the state folder and waits for the live controller's answer, or, with no
controller running, applies it to the state under the state lock (:func:`rota.engine.control.request`);
an offline cancel also stops an attempt that a killed controller left running, through its backend
(:func:`offline_executor`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rota.errors import UsageError
from rota.executors import make_executor
from rota.store.read import state_dir_of


def _control(kind: str, patterns: Sequence[str], target: str | os.PathLike[str] | None,
             state_dir: str | os.PathLike[str] | None, data: dict[str, Any], wait_s: float) -> str:
    from rota.engine import control

    if not patterns:
        raise UsageError(f"rota {kind}: name at least one task (a name or a glob, as --only)")
    sd = state_dir_of(target, state_dir)
    return control.request(sd, kind, control.match(sd, patterns), data, wait_s=wait_s,
                           executor_for=lambda backend: offline_executor(sd, backend))


def offline_executor(state_dir: str | os.PathLike[str], backend: str) -> Any:
    """The executor that stops a killed controller's attempts for an offline ``rota cancel``
    (:mod:`rota.engine.control_offline`): SLURM with the run's state folder, Ray at
    ``$RAY_ADDRESS`` (else ``auto``: the address a run was given is not recorded)."""
    if backend == "slurm":
        return make_executor("slurm", state_dir=str(state_dir))
    if backend == "ray":
        return make_executor("ray", address=os.environ.get("RAY_ADDRESS") or "auto", waker=None)
    return make_executor(backend)


def cancel(patterns: Sequence[str], target: str | os.PathLike[str] | None = None, *,
           state_dir: str | os.PathLike[str] | None = None, grace_s: float | None = None,
           wait_s: float = 30.0) -> str:
    """Cancel the tasks matching ``patterns`` (globs, as ``only``): a running one's process group
    (or SLURM job, Ray task) gets SIGTERM, then SIGKILL after ``grace_s`` (default: the run's
    ``--grace``); a pending one never starts. State ``cancelled``, not retried; its dependents are
    skipped. Works on a live run (its controller applies it at once) or without one (the state is
    changed; an attempt a killed controller left running is stopped here, through its backend; the
    next ``rota run`` keeps it cancelled). Returns what changed, one line per kind of
    change. UsageError (exit 2) when a pattern matches no task. The same holds for the functions
    below."""
    if grace_s is not None and not grace_s >= 0:  # NaN too
        raise UsageError(f"grace_s={grace_s!r}: expected seconds >= 0 between SIGTERM and SIGKILL")
    data: dict[str, Any] = {} if grace_s is None else {"grace_s": grace_s}
    return _control("cancel", patterns, target, state_dir, data, wait_s)


def retry(patterns: Sequence[str], target: str | os.PathLike[str] | None = None, *,
          state_dir: str | os.PathLike[str] | None = None, force: bool = False, wait_s: float = 30.0) -> str:
    """Send failed, cancelled, skipped or interrupted tasks back to pending with a fresh retry
    budget; the tasks skipped because of them come back too. ``force``: succeeded (and cached)
    tasks as well, and the done tasks that used them run again after them."""
    return _control("retry", patterns, target, state_dir, {"force": force}, wait_s)


def hold(patterns: Sequence[str], target: str | os.PathLike[str] | None = None, *,
         state_dir: str | os.PathLike[str] | None = None, wait_s: float = 30.0) -> str:
    """Keep pending tasks from launching until :func:`release` (running ones are untouched). A run
    with only held tasks left ends (exit 1); they stay held for the next ``rota run``."""
    return _control("hold", patterns, target, state_dir, {}, wait_s)


def release(patterns: Sequence[str], target: str | os.PathLike[str] | None = None, *,
            state_dir: str | os.PathLike[str] | None = None, wait_s: float = 30.0) -> str:
    """Let held tasks launch again."""
    return _control("release", patterns, target, state_dir, {}, wait_s)


def priority(patterns: Sequence[str], value: int, target: str | os.PathLike[str] | None = None, *,
             state_dir: str | os.PathLike[str] | None = None, wait_s: float = 30.0) -> str:
    """Set the tasks' priority (higher first, as the spec's ``priority:``), overriding the spec's
    for this run and the next ones; the ready tasks are ordered again at once."""
    return _control("priority", patterns, target, state_dir, {"priority": int(value)}, wait_s)
