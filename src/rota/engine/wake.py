"""A wake-up for the engine's sleep that signal handlers may set.

``threading.Event.set()`` takes a lock; a SIGCHLD handler calling it while the
main thread is inside ``Event.wait()``/``clear()`` (which hold the same lock)
deadlocks the controller. ``Waker`` is a self-pipe: ``set()`` is one
non-blocking ``os.write`` (async-signal-safe, no lock), ``wait()`` a
``select``. Same ``set``/``wait``/``clear`` interface as ``threading.Event``.
"""

from __future__ import annotations

import os
import select
import weakref


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Waker:
    """Self-pipe wake-up; ``set()`` is safe in signal handlers and other threads."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()  # close-on-exec by default
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        weakref.finalize(self, _close, self._r, self._w)

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except OSError:  # pipe full: a wake-up is already pending; closed: nobody waits
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until ``set()`` or ``timeout`` seconds; True if woken."""
        try:
            ready, _, _ = select.select([self._r], [], [], timeout)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
