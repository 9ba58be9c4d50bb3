"""What runs inside the Ray cluster for :mod:`rota.executors.ray`.

- :func:`run_attempt` is the body of each attempt's Ray task (on a worker):
  ``bash -c COMMAND`` in its own session/process group with the launch env on
  top of the worker's and the CUDA_VISIBLE_DEVICES that Ray granted; output
  appended to the log; exit status written to ``<log>.rc`` and returned.
  ``ray.cancel(ref, force=False)`` arrives as KeyboardInterrupt: SIGTERM to
  the group, the grace period (asked from the supervisor), then SIGKILL.
- :class:`Supervisor` is the detached named actor that submits those tasks,
  so it (not the controller) owns their refs: they survive a controller crash
  and a new controller finds them by the supervisor's name.

Imported by Ray workers (by reference), so rota must be installed on every node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rota.errors import ExecutorError

try:  # optional extra: pip install 'rota[ray]'
    import ray
    from ray import exceptions as rex
except ImportError:  # pragma: no cover - exercised where ray is absent
    ray = None
    rex = None

DEFAULT_GRACE_S = 10.0
KEEP_RESULTS_S = 7 * 24 * 3600.0
LOG_MAX = 20_000


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


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM the group, wait ``grace_s`` (a second interrupt cuts it short), SIGKILL."""
    _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            break
    _killpg(proc.pid, signal.SIGKILL)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def _task_env(spec: Mapping[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    env.update(spec["env"])
    granted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec["num_gpus"] > 0 and granted is not None:  # Ray's grant wins over rota's bookkeeping
        env["CUDA_VISIBLE_DEVICES"] = granted
        env["ROTA_GPUS"] = granted
    return env


def run_attempt(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: run one attempt, write ``<log>.rc``, return the outcome."""
    started = time.time()
    log, rc_path = spec["log_path"], spec["rc_path"]
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    error = ""
    try:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(rc_path).unlink(missing_ok=True)
        with open(log, "ab", buffering=0) as out:
            proc = subprocess.Popen(
                ["bash", "-c", spec["command"]], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=spec["workdir"], env=_task_env(spec),
                start_new_session=True, close_fds=True,
            )
        while code is None:
            try:
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:  # ray.cancel(force=False)
        code = _stop_group(proc, _grace(spec)) if proc is not None else None
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
            Path(rc_path).write_text(f"{code}\n")
        except OSError:
            pass
    result = {"code": code, "error": error, "started_at": started, "ended_at": time.time(),
              "host": socket.gethostname()}
    try:  # a wake-up hint for the controller; the returned value stays the truth
        _supervisor(spec["supervisor"], spec["namespace"]).finished.remote(spec["id"], result)
    except Exception:  # noqa: BLE001
        pass
    return result


_TASK: list[Any] = []


def _task_fn() -> Any:
    if not _TASK:
        _TASK.append(ray.remote(max_retries=0, retry_exceptions=False)(run_attempt))
    return _TASK[0]


# --------------------------------------------------------------- supervisor
def _outcome(ref: Any) -> dict[str, Any]:
    """The result of a finished task ref, errors included."""
    try:
        return dict(ray.get(ref, timeout=10))
    except rex.TaskCancelledError:
        return {"code": None, "error": "cancelled"}
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.OwnerDiedError, rex.ObjectLostError,
            rex.LocalRayletDiedError) as e:
        return {"code": None, "error": f"lost: {type(e).__name__}", "lost": True}
    except rex.RayError as e:
        return {"code": None, "error": f"ray: {str(e).strip().splitlines()[-1][:300]}"}


class Supervisor:
    """Detached actor that owns every attempt's task ref and remembers outcomes.

    Thread-safe (a threaded actor): ``cancel`` and ``wait_change`` block while
    ``poll`` and ``submit`` go on.
    """

    def __init__(self, idle_exit_s: float = 1800.0) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._seq = 0
        self._log: deque[tuple[int, str, dict[str, Any]]] = deque()  # (seq, id, result) of ended attempts
        self._dropped = 0  # highest seq no longer in the log
        self._recs: dict[str, dict[str, Any]] = {}
        self._last_call = time.time()
        self._idle_exit_s = idle_exit_s
        threading.Thread(target=self._reaper, name="rota-supervisor-reaper", daemon=True).start()

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
            self._prune()
            for it in items:
                if it["id"] in self._recs:
                    continue
                ref = fn.options(**it["options"]).remote(it["spec"])
                self._recs[it["id"]] = {"key": it["spec"]["key"], "state_dir": it["state_dir"], "ref": ref,
                                        "result": None, "grace": DEFAULT_GRACE_S, "at": time.time()}
        return [it["id"] for it in items]

    def finished(self, tid: str, result: dict[str, Any]) -> None:
        """Called by the task itself as it ends: record it and wake the controller's watcher."""
        with self._changed:
            rec = self._recs.get(tid)
            if rec is not None and rec["result"] is None:
                rec["result"] = result
            self._seq += 1
            self._log.append((self._seq, tid, result))
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
        for tid, r in recs.items():
            out[tid] = None if r is None else (r["result"] or {"running": True})
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
        old = time.time() - KEEP_RESULTS_S
        for tid in [t for t, r in self._recs.items() if r["result"] is not None and r["at"] < old]:
            del self._recs[tid]
