"""The engine's wake-up survives a storm of signals (a SIGCHLD per finished task)."""

from __future__ import annotations

import os
import signal
import threading
import time

from rota.engine.wake import Waker


def test_waker_set_from_signal_handler_never_deadlocks() -> None:
    w = Waker()
    hits = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal hits
        hits += 1
        w.set()
        w.set()  # handlers may fire inside set() itself

    old = signal.signal(signal.SIGUSR1, handler)
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.0001)

    t = threading.Thread(target=storm, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 1.5
        loops = 0
        while time.monotonic() < deadline:  # the engine's loop: wait, clear
            w.wait(0.001)
            w.clear()
            loops += 1
    finally:
        stop.set()
        t.join()
        signal.signal(signal.SIGUSR1, old)
    assert hits > 100 and loops > 100


def test_waker_wait_times_out_and_wakes() -> None:
    w = Waker()
    t0 = time.monotonic()
    assert w.wait(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    for _ in range(100_000):  # more wake-ups than the pipe holds: never blocks
        w.set()
    assert w.wait(1.0) is True
    w.clear()
    assert w.wait(0) is False
