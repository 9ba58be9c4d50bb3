"""``rota stop --drain``: a request file in the state folder, read by the controller each round;
and the halt marker that tells attempts still queued in a backend not to start.

A file, not a signal: a signal that arrives before the controller has set its
handler (while it loads the spec) would kill it, and the loop wakes at least
every poll interval anyway. The request names the controller it is for, so one
left behind by a controller that died first never halts the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

NAME = "drain.request"


def path_for(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), NAME)


def request(state_dir: str | os.PathLike[str], pid: int) -> None:
    """Ask controller ``pid`` to launch nothing more (written whole, then renamed into place)."""
    path = path_for(state_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": pid, "at": time.time()}, f)
    os.replace(tmp, path)


def _pid_of(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(json.load(f).get("pid"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def take(state_dir: str | os.PathLike[str], pid: int) -> bool:
    """True (once) if a drain request for ``pid`` is there; the request is removed."""
    path = path_for(state_dir)
    if not os.path.exists(path):  # the common case: one stat per round
        return False
    if _pid_of(path) != pid:
        return False
    with contextlib.suppress(OSError):
        os.unlink(path)
    return True


def discard_stale(state_dir: str | os.PathLike[str], pid: int) -> None:
    """Remove a request meant for another controller (one that ended before reading it)."""
    path = path_for(state_dir)
    if os.path.exists(path) and _pid_of(path) != pid:
        with contextlib.suppress(OSError):
            os.unlink(path)


HALT_PREFIX = "halted."


def halt_path(state_dir: str | os.PathLike[str], pid: int) -> str:
    """The marker controller ``pid`` writes once it launches nothing more (``Launch.halt_path``)."""
    return os.path.join(os.fspath(state_dir), f"{HALT_PREFIX}{pid}")


def mark_halted(path: str) -> None:
    """Best effort: without the marker, queued attempts start and finish as running ones do."""
    with contextlib.suppress(OSError), open(path, "w"):
        pass


def clear_halt_markers(state_dir: str | os.PathLike[str]) -> None:
    """Remove every controller's marker (called by the one controller holding the lock)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(state_dir):
            if name.startswith(HALT_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(os.fspath(state_dir), name))

