"""The supervisor actor of :mod:`rota.executors.ray`.

:class:`Supervisor` is the detached named actor that submits each attempt's
Ray task (:func:`rota.executors.ray_task.run_attempt`), so it (not the
controller) owns their refs: they survive a controller crash and a new
controller finds them by the supervisor's name.

Imported by Ray workers (by reference), so rota must be installed on every node.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from rota.executors.ray_task import DEFAULT_GRACE_S, _task_fn, ray, rex

KEEP_RESULTS_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 600.0
LOG_MAX = 20_000


def _failure(e: BaseException) -> dict[str, Any]:
    """The outcome of a task that ended with Ray's error ``e`` instead of a result."""
    if isinstance(e, rex.TaskCancelledError):
        return {"code": None, "error": "cancelled"}
    if isinstance(e, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OwnerDiedError, rex.ObjectLostError,
                      rex.LocalRayletDiedError)):
        return {"code": None, "error": f"lost: {type(e).__name__}", "lost": True}
    return {"code": None, "error": f"ray: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else e!r}"}


def _outcome(ref: Any) -> dict[str, Any]:
    """The result of a finished task ref, errors included."""
    try:
        return dict(ray.get(ref, timeout=10))
    except rex.RayError as e:
        return _failure(e)


def _outcome_of(fut: Future[Any]) -> dict[str, Any]:
    """The result of a finished task's future (``ObjectRef.future()``), errors included."""
    err = fut.exception()
    return _failure(err) if err is not None else dict(fut.result())


class Supervisor:
    """Detached actor that owns every attempt's task ref and remembers outcomes.

    Thread-safe (a threaded actor): ``cancel`` and ``wait_change`` block while
    ``poll`` and ``submit`` go on. An attempt's end is learnt from its ref's
    completion callback (Ray's own reply to the owner): the callback runs on
    Ray's I/O thread, so it only queues the future; the collector thread
    records it and wakes ``wait_change``.
    """

    def __init__(self, idle_exit_s: float = 1800.0) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._seq = 0
        self._log: deque[tuple[int, str, dict[str, Any]]] = deque()  # (seq, id, result) of ended attempts
        self._dropped = 0  # highest seq no longer in the log
        self._recs: dict[str, dict[str, Any]] = {}
        self._done: queue.SimpleQueue[tuple[str, Future[Any]]] = queue.SimpleQueue()
        self._last_call = time.time()
        self._pruned_at = time.time()
        self._idle_exit_s = idle_exit_s
        threading.Thread(target=self._reaper, name="rota-supervisor-reaper", daemon=True).start()
        threading.Thread(target=self._collect, name="rota-supervisor-collect", daemon=True).start()

    def ping(self) -> int:
        self._last_call = time.time()
        return os.getpid()

    def retire(self) -> bool:
        """Its controller closed cleanly: end soon unless a task still runs (then as when idle)."""
        with self._lock:
            ids = [t for t, r in self._recs.items() if r["result"] is None]
        if any(v is not None and v.get("running") for v in self.poll(ids, touch=False).values()):
            return False
        self._idle_exit_s, self._last_call = 0.0, 0.0
        return True

    def _reaper(self) -> None:
        """End this actor once no task runs and no controller has called for ``idle_exit_s``."""
        while True:
            time.sleep(min(2.0, max(self._idle_exit_s / 4, 0.5)))
            if time.time() - self._last_call < self._idle_exit_s:
                continue
            with self._lock:
                ids = [t for t, r in self._recs.items() if r["result"] is None]
            if any(v is not None and v.get("running") for v in self.poll(ids, touch=False).values()):
                continue
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
            return

    def submit(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        """Start one task per item; an id already known is not started again."""
        fn = _task_fn()
        self._last_call = time.time()
        with self._lock:
            if self._last_call - self._pruned_at > PRUNE_EVERY_S:
                self._prune()
            for it in items:
                tid = it["id"]
                if tid in self._recs:
                    continue
                ref = fn.options(**it["options"]).remote(it["spec"])
                self._recs[tid] = {"key": it["spec"]["key"], "state_dir": it["state_dir"], "ref": ref,
                                   "result": None, "grace": DEFAULT_GRACE_S, "at": time.time()}
                # Never blocks (a SimpleQueue): it may run here at once or later on Ray's I/O thread.
                ref.future().add_done_callback(lambda fut, tid=tid: self._done.put((tid, fut)))
        return [it["id"] for it in items]

    def _collect(self) -> None:
        """Record ended attempts (all that are queued, at once) and wake ``wait_change``."""
        while True:
            batch = [self._done.get()]
            while True:
                try:
                    batch.append(self._done.get_nowait())
                except queue.Empty:
                    break
            results = [(tid, _outcome_of(fut)) for tid, fut in batch]
            with self._changed:
                for tid, result in results:
                    rec = self._recs.get(tid)
                    if rec is not None and rec["result"] is None:
                        rec["result"] = result
                    self._seq += 1
                    self._log.append((self._seq, tid, rec["result"] if rec is not None else result))
                    if len(self._log) > LOG_MAX:
                        self._dropped = self._log.popleft()[0]
                self._changed.notify_all()

    def nudge(self) -> None:
        """Wake every ``wait_change`` caller (a controller closing its watcher)."""
        with self._changed:
            self._seq += 1
            self._changed.notify_all()

    def wait_change(self, seq: int, timeout_s: float) -> tuple[int, dict[str, dict[str, Any]], bool]:
        """Block until something changed after ``seq`` (or the timeout).

        Returns the new seq, the results of attempts that ended after ``seq``,
        and whether that list is complete (False: some were dropped; poll).
        """
        self._last_call = time.time()
        with self._changed:
            self._changed.wait_for(lambda: self._seq != seq, timeout=timeout_s)
            ended: dict[str, dict[str, Any]] = {}
            for s, tid, result in reversed(self._log):
                if s <= seq:
                    break
                ended[tid] = result
            return self._seq, ended, seq >= self._dropped

    def poll(self, ids: Sequence[str], touch: bool = True) -> dict[str, dict[str, Any] | None]:
        """Outcome per id: None unknown, {"running": True}, or the finished task's result."""
        if touch:
            self._last_call = time.time()
        with self._lock:
            recs = {tid: self._recs.get(tid) for tid in ids}
        waiting = {tid: r for tid, r in recs.items() if r is not None and r["result"] is None}
        if waiting:
            refs = [r["ref"] for r in waiting.values()]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
            done = set(ready)
            for r in waiting.values():
                if r["ref"] in done and r["result"] is None:
                    r["result"] = _outcome(r["ref"])
        out: dict[str, dict[str, Any] | None] = {}
        for tid, rec in recs.items():
            out[tid] = None if rec is None else (rec["result"] or {"running": True})
        return out

    def known(self, tid: str, key: str) -> bool:
        self._last_call = time.time()
        with self._lock:
            rec = self._recs.get(tid)
            return rec is not None and rec["key"] == key

    def find(self, state_dir: str, key: str) -> list[str]:
        with self._lock:
            return [t for t, r in self._recs.items() if r["state_dir"] == state_dir and r["key"] == key]

    def grace_for(self, tid: str) -> float:
        with self._lock:
            rec = self._recs.get(tid)
            return DEFAULT_GRACE_S if rec is None else float(rec["grace"])

    def cancel(self, ids: Sequence[str], grace_s: float) -> None:
        """Interrupt each task (it stops its own group within ``grace_s``); force after that."""
        self._last_call = time.time()
        with self._lock:
            recs = [self._recs[t] for t in ids if t in self._recs and self._recs[t]["result"] is None]
            for r in recs:
                r["grace"] = grace_s
        refs = [r["ref"] for r in recs]
        for ref in refs:
            ray.cancel(ref, force=False)
        if not refs:
            return
        _, left = ray.wait(refs, num_returns=len(refs), timeout=grace_s + 5.0)
        for ref in left:
            ray.cancel(ref, force=True)

    def _prune(self) -> None:
        self._pruned_at = time.time()
        old = self._pruned_at - KEEP_RESULTS_S
        for tid in [t for t, r in self._recs.items() if r["result"] is not None and r["at"] < old]:
            del self._recs[tid]
