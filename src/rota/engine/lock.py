"""One controller per state folder: an flock'ed lock file naming its holder."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rota.errors import StateError, StateLockedError


class StateLock:
    """Held for the controller's lifetime; released by the kernel if it dies."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "controller.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as e:
            from rota.store.sqlite import storage_error

            raise storage_error(self.path.parent, e) or StateError(
                f"cannot take the lock {self.path}: {e.strerror}"
            ) from None

    def _acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(Path(self.path).read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            os.close(fd)
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise StateLockedError(
                f"another rota controller ({who}) is running on {self.path.parent}; "
                "wait for it, stop it, or use --state-dir for a separate run"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
