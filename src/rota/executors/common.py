"""What several executors share, public so none imports another's private names.

The ``<log>.rc`` exit-status file (written by SLURM and Ray attempts, and by local
attempts of rota 0.1), reading it, discarding a failure's file, and turning an exit
code into a :class:`~rota.executors.base.Status`. The engine uses :func:`discard_rc_files`
as the default ``discard_status`` without importing a concrete executor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from rota.executors.base import Handle, Status


def rc_path_for(log_path: str) -> str:
    """Where the exit status of the attempt logging to ``log_path`` is written."""
    return log_path + ".rc"


def read_rc(path: str) -> int | None:
    """The exit status in an ``.rc`` file; ``None`` when it is missing, unreadable or not a number yet."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def discard_rc_files(handles: Sequence[Handle]) -> None:
    """``discard_status`` for attempts that write ``<log>.rc`` (SLURM, Ray): remove a failure's file."""
    for h in handles:
        path = str(h.data.get("rc_path") or "")
        if path and read_rc(path) not in (None, 0):
            with contextlib.suppress(OSError):
                os.unlink(path)


def note_never_started(handles: Sequence[Handle], backend: str) -> None:
    """After a cancel: give each attempt that never started a log that says so.

    A SLURM job cancelled while PENDING, or a Ray task cancelled in Ray's queue, never opened
    its log (both backends create it when the command starts), so ``rota logs TASK`` would find
    nothing to show for an attempt ``rota status`` lists. Only a missing log is written (with
    ``O_EXCL``): an attempt that did start keeps its own output untouched. Call it only for
    attempts known to have ended, or one starting late would append to this line.
    """
    for h in handles:
        rc = str(h.data.get("rc_path") or "")
        log = str(h.data.get("log_path") or (rc[: -len(".rc")] if rc.endswith(".rc") else ""))
        if not log:
            continue
        with contextlib.suppress(OSError):  # FileExistsError: it started; others: nothing to add
            with open(log, "x") as f:
                f.write(f"rota: cancelled while waiting in {backend}'s queue: this attempt never started\n")


def status_from_code(code: int, started_at: float | None = None, ended_at: float | None = None) -> Status:
    """A process's exit code (or an ``.rc`` file's) as a Status, for every executor: 0 succeeded;
    negative (``waitpid``: killed by signal N) and 128+N (a shell reporting signal N) failed,
    saying which signal."""
    if code == 0:
        return Status("succeeded", 0, "exit 0", started_at=started_at, ended_at=ended_at)
    if code < 0:
        return Status("failed", 128 - code, f"signal {-code}", started_at=started_at, ended_at=ended_at)
    if code > 128 and code - 128 < 65:
        return Status("failed", code, f"exit {code} (signal {code - 128})", started_at=started_at, ended_at=ended_at)
    return Status("failed", code, f"exit {code}", started_at=started_at, ended_at=ended_at)
