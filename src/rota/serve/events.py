"""``/api/events``: one server-sent-events stream per page instead of seven polling loops.

A page that polls asks about three times a second (the status every second, the timeline every
2 s, GPUs, results and the ETA every 5 s, sweeps and figures every 10 s), and each request costs
the server a parse, a route and a response whether or not anything changed: with twenty
browsers, ~60 requests a second of CPU taken from the run beside it. A stream costs a socket
write per change instead.

:class:`Hub` is the one reader behind every stream: while at least one stream is open, it asks
the :class:`rota.serve.cache.StateCache` for the status every :data:`TICK_S` (the cache reads the
database at most once a second, only when it changed) and for each slower piece at the
interval the page polled it (:data:`PIECES`), off the event loop, encodes each piece once
(:class:`rota.serve.bodies.Bodies`) and wakes the streams when something changed. Each stream
then sends only the pieces whose bytes differ from what it sent last, and its own table page
(its question: filter, search, offset), encoded once per snapshot and question however many
streams share it.

The stream's events are named after the polling routes and carry the same JSON (``status``,
``timeline``, ``gpus``, ``results``, ``sweeps``, ``eta``, ``figures``; ``?pieces=status,eta``
chooses); a comment line keeps an idle connection open every :data:`KEEPALIVE_S`. The page keeps
two streams: the table's (status only: reopened when its filter, search or page changes, which
costs one status, not the figures again) and the rest's. The polling routes stay (scripts, and pages in
browsers without ``EventSource``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from rota.serve.bodies import Bodies
from rota.serve.cache import Snapshot, StateCache

TICK_S = 0.5
"""How often the hub asks the cache (which reads the database at most once a second)."""
KEEPALIVE_S = 15.0
"""An idle stream gets a comment line this often (proxies and tunnels close silent connections;
a closed browser is noticed at the next write)."""
RETRY_MS = 2000
"""The browser's reconnection delay after a dropped stream (the SSE ``retry:`` field)."""
PIECES: tuple[tuple[str, float], ...] = (("timeline", 2.0), ("gpus", 5.0), ("results", 5.0), ("eta", 5.0),
                                         ("sweeps", 10.0), ("figures", 10.0))
"""The slower pieces and how often each is asked for (as the polling page asked)."""
NAMES = frozenset(("status", *(name for name, _ in PIECES)))
"""Every event a stream can carry (``?pieces=`` chooses; all by default)."""

Question = tuple[frozenset[str] | None, str, int, int]
"""A table page: states shown (None: all), search text, offset, limit."""
StatusBody = Callable[[Snapshot, Any, Question], bytes]
"""The status route's JSON for a snapshot, its page and the question (with ``now`` in front)."""


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def event(name: str, data: bytes) -> bytes:
    """One SSE event; ``data`` is compact JSON (no newline), so one ``data:`` line."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class Hub:
    """The shared reader of every open stream (used from the event loop only)."""

    def __init__(self, state: StateCache, bodies: Bodies, tick_s: float = TICK_S) -> None:
        self.state = state
        self.bodies = bodies
        self.tick_s = tick_s
        self.snap: Snapshot | None = None
        self.encoded: dict[str, bytes] = {}
        """Each slower piece's latest JSON (a new bytes object only when its text changed)."""
        self.version = 0
        self._changed = asyncio.Event()
        self._streams = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._pieces: dict[str, Callable[[], Any]] = {
            "timeline": state.timeline, "gpus": state.gpus, "results": state.results, "eta": state.eta,
            "sweeps": state.sweeps, "figures": state.figures}

    def _read(self, due: list[str]) -> tuple[Snapshot, dict[str, Any]]:
        snap = self.state.status()
        values: dict[str, Any] = {}
        for name in due:
            try:
                values[name] = self._pieces[name]()
            except Exception as e:  # noqa: BLE001 - one piece's defect must not stop every stream
                # (polling, it was that route's 500 alone); the page shows the error in its place.
                values[name] = {"error": f"{name}: {type(e).__name__}: {e}"}
        return snap, values

    async def _run(self) -> None:
        due_at: dict[str, float] = {}
        while self._streams and not self.closing:
            now = time.monotonic()
            due = [name for name, _every in PIECES if now >= due_at.get(name, 0.0)]
            try:
                snap, values = await run_in_threadpool(self._read, due)
            except Exception as e:  # noqa: BLE001 - the streams live on: the next tick reads again
                print(f"rota serve: reading the state failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                await asyncio.sleep(max(self.tick_s, 1.0))
                continue
            for name, every in PIECES:
                if name in values:
                    due_at[name] = now + every
            changed = self.snap is None or snap.seq != self.snap.seq
            self.snap = snap
            for name, value in values.items():
                data, _gz = self.bodies.get(("event", name), (value,), _const(value), gzip=False)
                if self.encoded.get(name) != data:
                    self.encoded[name] = data
                    changed = True
            if changed:
                self.version += 1
                self._wake()
            await asyncio.sleep(self.tick_s)

    def close(self) -> None:
        """End every stream at its next wake-up (now): the server is stopping. Thread-safe."""
        self.closing = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._streams += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _wait(self, seen: int, timeout_s: float) -> bool:
        """Until the version moves past ``seen`` (True) or ``timeout_s`` passes (False)."""
        if self.version != seen:
            return True
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stream(self, question: Question, status_body: StatusBody, page_of: Callable[[Snapshot, Question], Any],
                     pieces: frozenset[str] = NAMES) -> AsyncIterator[bytes]:
        """The events of one page (``pieces``: which; a page reopens a status-only stream when its
        table's question changes, and keeps one for the rest): all at once, then what changed,
        until the client goes (the server notices at the next write: a change or a keep-alive)."""
        self._start()
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            seen = 0  # the hub's version before its first read: wait for that read
            sent_seq: int | None = None
            sent: dict[str, bytes] = {}
            while True:
                woke = await self._wait(seen, KEEPALIVE_S)
                if self.closing:
                    return
                out: list[bytes] = []
                snap = self.snap
                if self.version != seen and snap is not None:
                    seen = self.version
                    if snap.seq != sent_seq and "status" in pieces:
                        sent_seq = snap.seq
                        out.append(event("status", status_body(snap, page_of(snap, question), question)))
                    for name, data in list(self.encoded.items()):
                        if name in pieces and sent.get(name) is not data:
                            sent[name] = data
                            out.append(event(name, data))
                if out:
                    yield b"".join(out)
                elif not woke:  # quiet for KEEPALIVE_S: a comment keeps tunnels and proxies open
                    yield b": keep-alive\n\n"
        finally:
            self._streams -= 1
