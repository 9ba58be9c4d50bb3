"""Connecting to Ray and small helpers of :mod:`rota.executors.ray` (driver side only)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

from rota.errors import ExecutorError
from rota.executors.ray_task import ray, rex


def connect(address: str, namespace: str) -> None:
    """``ray.init`` this process unless it is already connected; one clear error if it cannot."""
    if ray.is_initialized():
        return
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ExecutorError(f"cannot connect to Ray at {address!r}: {e}; start a cluster with "
                            "'ray start --head' or pass --address HOST:PORT") from None


def wake_main_thread() -> None:
    """Default wake-up: SIGCHLD to the main thread, as a local task's exit sends.

    The engine sleeps in ``select`` until SIGCHLD or its poll interval; a signal
    sent to the process may land on this (watcher) thread and not interrupt
    the main thread's ``select``, hence ``pthread_kill``.
    """
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGCHLD)


def error_of(ref: Any) -> str:
    """The last line of the error a finished ref holds ("" if it holds none)."""
    try:
        ray.get(ref, timeout=60)
        return ""
    except rex.RayError as e:
        return str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__


def _check_reachable(address: str) -> None:
    """Fail fast on a wrong address: ``ray.init`` retries an unreachable GCS for many minutes."""
    target = address
    if address == "auto":
        try:
            from ray._private import services

            target = services.canonicalize_bootstrap_address(address) or ""
        except Exception:  # noqa: BLE001 - private API moved: let ray.init decide
            return
    host, sep, port = target.rpartition(":")
    if not sep or "://" in target or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ExecutorError(f"no Ray cluster answers at {target} ({e.strerror or e}); start one with "
                            "'ray start --head' or pass --address HOST:PORT") from None
