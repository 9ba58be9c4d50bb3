"""What runs inside the Ray cluster for :mod:`rota.executors.ray`.

- :func:`run_attempt` is the body of each attempt's Ray task (on a worker):
  ``bash -c COMMAND`` in its own session/process group with the launch env on
  top of the worker's and the CUDA_VISIBLE_DEVICES that Ray granted; output
  appended to the log; exit status written to ``<log>.rc`` and returned.
  ``ray.cancel(ref, force=False)`` arrives as KeyboardInterrupt: SIGTERM to
  the group, the grace period (asked from the supervisor), then SIGKILL.
  The task makes no Ray call of its own unless cancelled: its end reaches
  the supervisor as the task's return value (the owner hears of it anyway).
- :class:`Supervisor` is the detached named actor that submits those tasks,
  so it (not the controller) owns their refs: they survive a controller crash
  and a new controller finds them by the supervisor's name.

Imported by Ray workers (by reference), so rota must be installed on every node.
"""

from __future__ import annotations

import importlib
import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from rota.errors import ExecutorError

ray: Any  # typed Any: Ray's own stubs do not know what ray.remote makes of a class
rex: Any
try:  # optional extra: pip install 'rota[ray]'
    ray = importlib.import_module("ray")
    rex = importlib.import_module("ray.exceptions")
except ImportError:  # pragma: no cover - exercised where ray is absent
    ray = rex = None

DEFAULT_GRACE_S = 10.0
KEEP_RESULTS_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 600.0
LOG_MAX = 20_000
INTERRUPT_CHECK_S = 0.1  # ray.cancel's KeyboardInterrupt is only raised between bytecodes: wake this often


def need_ray() -> Any:
    if ray is None:
        raise ExecutorError("the Ray backend needs Ray: pip install 'rota[ray]' (or 'ray[default]')")
    return ray


# ---------------------------------------------------------------- in the task
_SUP_CACHE: dict[tuple[str, str], Any] = {}


def _supervisor(name: str, namespace: str) -> Any:
    key = (name, namespace)
    if key not in _SUP_CACHE:
        _SUP_CACHE[key] = ray.get_actor(name, namespace=namespace)
    return _SUP_CACHE[key]


def _grace(spec: Mapping[str, Any]) -> float:
    try:
        sup = _supervisor(spec["supervisor"], spec["namespace"])
        return float(ray.get(sup.grace_for.remote(spec["id"]), timeout=5))
    except Exception:  # noqa: BLE001 - fall back to the default grace
        return DEFAULT_GRACE_S


def _killpg(pgid: int, sig: signal.Signals) -> None:
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float, grace_now: Any = None) -> int:
    """SIGTERM the group, wait ``grace_s``, SIGKILL.

    A further interrupt cuts the grace short only if ``grace_now()`` (the supervisor's
    current grace) says 0, as ``kill_now`` sets it: Ray may deliver one cancellation
    more than once, which must not turn a SIGTERM into a SIGKILL.
    """
    _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            try:
                if grace_now is None or grace_now() <= 0:
                    break
            except KeyboardInterrupt:
                continue
    _killpg(proc.pid, signal.SIGKILL)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


# The worker's environment less ROTA_*, and the raw environment it was made from: a pooled
# worker runs many attempts, and comparing two dicts is far cheaper than filtering again.
_BASE_ENV: list[tuple[dict[bytes, bytes], dict[str, str]]] = []


def _base_env() -> dict[str, str]:
    raw = getattr(os.environ, "_data", None)  # CPython's encoded environment: a plain dict, compared in C
    if _BASE_ENV and raw is not None and _BASE_ENV[0][0] == raw:
        return dict(_BASE_ENV[0][1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    if raw is not None:
        _BASE_ENV[:] = [(dict(raw), env)]
    return dict(env)


def _task_env(spec: Mapping[str, Any]) -> dict[str, str]:
    env = _base_env()
    env.update(spec["env"])
    granted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec["num_gpus"] > 0 and granted is not None:  # Ray's grant wins over rota's bookkeeping
        env["CUDA_VISIBLE_DEVICES"] = granted
        env["ROTA_GPUS"] = granted
    return env


class _TimedOut(Exception):
    """The attempt ran past its timeout (counted from its real start, in the task)."""


def _wait(proc: subprocess.Popen[bytes], timeout_s: float | None = None) -> int:
    """The child's exit status, as soon as it exits; :class:`_TimedOut` after ``timeout_s``.

    ``ray.cancel(force=False)`` only trips Python's interrupt flag (no real
    signal): a blocking wait would never see it, so this wakes every
    ``INTERRUPT_CHECK_S``. A pidfd makes the exit itself wake us at once
    (``Popen.wait(timeout)`` sleeps in growing steps of up to 50 ms instead).
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None

    def check() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise _TimedOut

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, sandbox): Popen's own sleeping wait
        while True:
            try:
                return proc.wait(timeout=INTERRUPT_CHECK_S)
            except subprocess.TimeoutExpired:
                check()
    try:
        while not select.select([fd], [], [], INTERRUPT_CHECK_S)[0]:
            check()
        return proc.wait()
    finally:
        os.close(fd)


def _open_log(log: str) -> Any:
    try:
        return open(log, "ab", buffering=0)
    except FileNotFoundError:  # the engine normally made the folder; a shared FS may lag
        os.makedirs(os.path.dirname(log), exist_ok=True)
        return open(log, "ab", buffering=0)


def run_attempt(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: run one attempt, write ``<log>.rc``, return the outcome.

    ``spec["timeout_s"]`` (optional) counts from here, the attempt's real start:
    past it the group gets SIGTERM, ``spec["grace_s"]``, then SIGKILL, and the
    outcome's error is ``"timeout"``.
    """
    started = time.time()
    log, rc_path = spec["log_path"], spec["rc_path"]
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    error = ""
    try:
        try:
            os.unlink(rc_path)  # a stale status must not pass for this attempt's
        except FileNotFoundError:
            pass
        with _open_log(log) as out:
            proc = subprocess.Popen(
                ["bash", "-c", spec["command"]], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=spec["workdir"], env=_task_env(spec),
                start_new_session=True, close_fds=True,
            )
        code = _wait(proc, spec.get("timeout_s"))
    except _TimedOut:  # the engine leaves timeouts to the task (the time it waited in Ray's queue is not counted)
        assert proc is not None
        code = _stop_group(proc, float(spec.get("grace_s", DEFAULT_GRACE_S)), lambda: _grace(spec))
        error = "timeout"
    except KeyboardInterrupt:  # ray.cancel(force=False)
        code = _stop_group(proc, _grace(spec), lambda: _grace(spec)) if proc is not None else None
        error = "cancelled"
    except OSError as e:
        error = f"could not start: {e}"
        try:
            with open(log, "a") as f:
                f.write(f"rota: {error}\n")
        except OSError:
            pass
    if proc is not None:
        _killpg(proc.pid, signal.SIGKILL)  # leftovers such as `sleep 1000 &`
    if code is not None and code < 0:
        code = 128 - code
    if code is not None:
        try:
            with open(rc_path, "w") as f:
                f.write(f"{code}\n")
        except OSError:
            pass
    return {"code": code, "error": error, "started_at": started, "ended_at": time.time(),
            "host": _HOST or socket.gethostname()}


_HOST = socket.gethostname()
_TASK: list[Any] = []


def _task_fn() -> Any:
    if not _TASK:
        _TASK.append(ray.remote(max_retries=0, retry_exceptions=False)(run_attempt))
    return _TASK[0]


# --------------------------------------------------------------- supervisor
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
