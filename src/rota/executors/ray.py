"""The Ray executor: every attempt is a Ray task, owned by a detached supervisor actor.

Contract (see :mod:`rota.executors.base`), as Ray does it:

- ``submit``/``submit_many``: one call to the supervisor actor, which starts one
  Ray task per attempt with ``num_cpus`` = cpus, ``memory`` = memory bytes and
  ``num_gpus`` = the GPU count, or ``launch.gpu_fraction`` for a single-GPU task
  that books only part of a GPU's memory (so Ray packs them like rota's ledger).
  The task runs ``bash -c COMMAND`` in its own session/process group with the
  launch env on top of the worker's, the ``CUDA_VISIBLE_DEVICES`` that *Ray*
  granted (``launch.gpus`` are rota's bookkeeping only), ``cwd`` = workdir, and
  stdout+stderr appended to ``launch.log_path``; it writes the exit status to
  ``<log>.rc`` and returns it. Logs and rc files are written *on the node that
  runs the task*: on more than one machine the state folder must be on a
  shared file system (same path everywhere), and rota must be installed on
  every node (workers import ``rota.executors.ray``).
- ``poll``: one supervisor call, which does ONE ``ray.wait(refs, timeout=0,
  num_returns=len(refs))`` over every attempt asked about.
- ``cancel``: ``ray.cancel(ref, force=False)`` raises KeyboardInterrupt inside
  the task, which sends SIGTERM to its process group, waits ``grace_s``
  (asked from the supervisor), then SIGKILL; tasks still there after the grace
  get ``ray.cancel(ref, force=True)``.
- ``adopt``: task refs die with their owner, so the owner is not the driver but
  a detached named actor, one per controller (``rota-supervisor-<uuid>`` in
  namespace ``rota``, pinned to the head node, 0 CPUs; its name is in every
  handle). A new controller finds it with ``ray.get_actor`` and asks for the
  attempt by id (``Handle.external_id``); results are kept by the supervisor
  and in ``<log>.rc``. A supervisor ends itself once none of its tasks runs
  and nobody has called it for ``supervisor_idle_s`` (its controller calls it
  every second while alive); later adoption reads the rc files.

Why a supervisor rather than one detached actor per attempt: an actor is a
dedicated worker process (seconds to start, ~100 MB), tasks reuse pooled
workers; 1,000 short tasks would cost 1,000 process starts. Why one per
controller rather than one for the cluster: Ray pools workers per job, and
the tasks a detached actor submits belong to the job that created it; once
that driver is gone every task would start a fresh worker process.

Known limits: a Ray worker killed from outside (OOM killer, node loss) leaves
the task's process group orphaned on that node; Ray's GPU placement may differ
from rota's ledger (a task then waits in Ray's queue while rota shows it
running); ``ray stop`` forgets every attempt (they are reported ``lost``).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rota.core.resources import Gpu, Machine
from rota.errors import ExecutorError
from rota.executors.base import Handle, Launch, Status
from rota.executors.local import _read_rc, _status_from_code, rc_path_for

try:  # optional extra: pip install 'rota[ray]'
    import ray
    from ray import exceptions as rex
except ImportError:  # pragma: no cover - exercised where ray is absent
    ray = None
    rex = None

NAME = "ray"
SUPERVISOR_PREFIX = "rota-supervisor-"
DEFAULT_GPU_MEMORY = 80 * 2**30  # "80GB" as rota reads sizes; per GPU (Ray knows GPU counts, not sizes)
DEFAULT_GRACE_S = 10.0
KEEP_RESULTS_S = 7 * 24 * 3600.0


def _need_ray() -> Any:
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
        self._recs: dict[str, dict[str, Any]] = {}
        self._last_call = time.time()
        self._idle_exit_s = idle_exit_s
        threading.Thread(target=self._reaper, name="rota-supervisor-reaper", daemon=True).start()

    def ping(self) -> int:
        self._last_call = time.time()
        return os.getpid()

    def _reaper(self) -> None:
        """End this actor once no task runs and no controller has called for ``idle_exit_s``."""
        while True:
            time.sleep(min(10.0, max(self._idle_exit_s / 4, 0.5)))
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
        with self._changed:
            rec = self._recs.get(tid)
            if rec is not None and rec["result"] is None:
                rec["result"] = result
            self._seq += 1
            self._changed.notify_all()

    def nudge(self) -> None:
        """Wake every ``wait_change`` caller (a controller closing its watcher)."""
        with self._changed:
            self._seq += 1
            self._changed.notify_all()

    def wait_change(self, seq: int, timeout_s: float) -> int:
        """Block until an attempt finished after ``seq`` (or the timeout); return the new seq."""
        self._last_call = time.time()
        with self._changed:
            self._changed.wait_for(lambda: self._seq != seq, timeout=timeout_s)
            return self._seq

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


# ----------------------------------------------------------------- executor
def _sigchld() -> None:
    """Default wake-up: the engine sleeps until SIGCHLD (what local tasks send) or its poll interval."""
    os.kill(os.getpid(), signal.SIGCHLD)


class RayExecutor:
    """Runs attempts on a Ray cluster (``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:10001``).

    ``gpu_memory_bytes`` (int or ``"80GB"``) is each GPU's memory for rota's
    ledger; Ray reports GPU counts only, so it defaults to 80 GB. ``waker`` is
    called from a thread as soon as an attempt ends (default: SIGCHLD to this
    process, which wakes the engine's loop as a local task's exit does).
    """

    name = NAME

    def __init__(self, address: str = "auto", gpu_memory_bytes: int | str | None = None, namespace: str = "rota",
                 supervisor: str | None = None, supervisor_idle_s: float = 1800.0,
                 waker: Callable[[], None] | None = _sigchld) -> None:
        _need_ray()
        if isinstance(gpu_memory_bytes, str):
            from rota.spec.units import parse_size

            gpu_memory_bytes = parse_size(gpu_memory_bytes)
        self.gpu_memory_bytes = int(gpu_memory_bytes or DEFAULT_GPU_MEMORY)
        self._token = uuid.uuid4().hex[:12]
        self.address, self.namespace = address, namespace
        self.supervisor_name = supervisor or SUPERVISOR_PREFIX + self._token
        self._waker = waker
        self._others: dict[tuple[str, str], Any] = {}
        self._closed = threading.Event()
        if not ray.is_initialized():
            try:
                ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"cannot connect to Ray at {address!r}: {e}; start a cluster with "
                                    "'ray start --head' or pass --address HOST:PORT") from None
        try:
            self._sup = ray.remote(Supervisor).options(
                name=self.supervisor_name, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
                max_concurrency=64, resources={"node:__internal_head__": 0.001}, max_restarts=0,
            ).remote(supervisor_idle_s)
            ray.get(self._sup.ping.remote(), timeout=120)
        except rex.RayError as e:
            raise ExecutorError(f"cannot start rota's supervisor actor on Ray: {e}") from None
        self._watcher = threading.Thread(target=self._watch_loop, name="rota-ray-watch", daemon=True)
        self._watcher.start()  # also the heartbeat that keeps the supervisor alive
        atexit.register(self.close)  # before Ray's own exit handler (atexit runs last-in first-out)

    # ------------------------------------------------------------ contract
    def capacity(self) -> Machine:
        """The cluster as one machine: Ray's GPU count (each ``gpu_memory_bytes``), CPUs and RAM."""
        res = ray.cluster_resources()
        gpus = tuple(Gpu(i, self.gpu_memory_bytes, name="Ray GPU") for i in range(int(res.get("GPU", 0))))
        return Machine(gpus, int(res.get("CPU", 0)), int(res.get("memory", 0)), source="ray")

    def submit(self, launch: Launch) -> Handle:
        return self.submit_many([launch])[0]

    def submit_many(self, launches: Sequence[Launch]) -> list[Handle]:
        items = [self._item(la) for la in launches]
        try:
            ray.get(self._sup.submit.remote(items), timeout=120)
        except rex.RayError as e:
            raise ExecutorError(f"Ray refused the tasks: {e}") from None
        return [Handle(la.key, NAME, it["id"], {"supervisor": self.supervisor_name, "namespace": self.namespace,
                                                 "rc_path": it["spec"]["rc_path"], "submitted_at": time.time()})
                for la, it in zip(launches, items, strict=True)]

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        out: dict[str, Status] = {}
        for sup, hs in self._by_supervisor(handles).items():
            got: dict[str, Any] = {}
            if sup is not None:
                try:
                    got = ray.get(sup.poll.remote([h.external_id for h in hs]), timeout=60)
                except rex.RayError:
                    got = {}
            for h in hs:
                out[h.key] = self._status(h, got.get(h.external_id))
        return out

    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        for sup, hs in self._by_supervisor(handles).items():
            if sup is not None:
                try:
                    ray.get(sup.cancel.remote([h.external_id for h in hs], grace_s), timeout=grace_s + 60)
                except rex.RayError as e:
                    raise ExecutorError(f"could not cancel on Ray: {e}") from None

    def kill_now(self, handles: Sequence[Handle]) -> None:
        """Second Ctrl-C: SIGKILL at once (no grace)."""
        self.cancel(handles, grace_s=0.0)

    def adopt(self, handle: Handle) -> bool:
        sup = self._find(handle)
        if sup is not None:
            try:
                if ray.get(sup.known.remote(handle.external_id, handle.key), timeout=60):
                    return True
            except rex.RayError:
                pass
        return _read_rc(str(handle.data.get("rc_path", ""))) is not None

    def stop_unrecorded(self, state_dir: str, key: str) -> None:
        """Cancel an attempt whose handle a dead controller never committed (same state folder and key)."""
        from ray.util import list_named_actors

        for name in list_named_actors(all_namespaces=True):
            if isinstance(name, dict):
                if name.get("namespace") != self.namespace:
                    continue
                name = name.get("name", "")
            if not str(name).startswith(SUPERVISOR_PREFIX):
                continue
            try:
                sup = ray.get_actor(name, namespace=self.namespace)
                ids = ray.get(sup.find.remote(state_dir, key), timeout=60)
                if ids:
                    ray.get(sup.cancel.remote(ids, 0.0), timeout=60)
            except (ValueError, rex.RayError):
                continue

    def close(self) -> None:
        """Stop the watcher thread (a Ray call in flight at interpreter exit makes it exit 1)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sup.nudge.remote()
        except Exception:  # noqa: BLE001 - already disconnected
            pass
        if self._watcher.is_alive() and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5.0)

    # ------------------------------------------------------------- helpers
    def _item(self, la: Launch) -> dict[str, Any]:
        env = dict(la.env)
        run, state_dir = env.get("ROTA_RUN"), env.get("ROTA_STATE_DIR", "")
        token = hashlib.sha1(f"{state_dir}\0{run}".encode()).hexdigest()[:12] if run else self._token
        tid = f"{token}:{la.key}"
        if la.gpu_count == 1 and la.gpu_fraction < 1.0:
            num_gpus: float = max(round(la.gpu_fraction, 4), 0.0001)
        else:
            num_gpus = la.gpu_count
        options: dict[str, Any] = {"num_cpus": la.cpus, "num_gpus": num_gpus, "name": la.key[:200]}
        if la.memory_bytes > 0:
            options["memory"] = la.memory_bytes
        spec = {"id": tid, "key": la.key, "command": la.command, "env": env, "workdir": la.workdir,
                "log_path": la.log_path, "rc_path": rc_path_for(la.log_path), "num_gpus": num_gpus,
                "supervisor": self.supervisor_name, "namespace": self.namespace}
        return {"id": tid, "state_dir": state_dir, "options": options, "spec": spec}

    def _find(self, h: Handle) -> Any:
        name = str(h.data.get("supervisor", self.supervisor_name))
        ns = str(h.data.get("namespace", self.namespace))
        if (name, ns) == (self.supervisor_name, self.namespace):
            return self._sup
        if (name, ns) not in self._others:
            try:
                self._others[(name, ns)] = ray.get_actor(name, namespace=ns)
            except ValueError:
                return None
        return self._others[(name, ns)]

    def _by_supervisor(self, handles: Sequence[Handle]) -> dict[Any, list[Handle]]:
        groups: dict[tuple[str, str], list[Handle]] = {}
        for h in handles:
            groups.setdefault((str(h.data.get("supervisor")), str(h.data.get("namespace"))), []).append(h)
        return {self._find(hs[0]): hs for hs in groups.values()}

    def _status(self, h: Handle, got: Mapping[str, Any] | None) -> Status:
        if got is not None and got.get("running"):
            return Status("running")
        if got is None:  # the supervisor does not know it (cluster restarted): the rc file may
            rc = _read_rc(str(h.data.get("rc_path", "")))
            if rc is None:
                return Status("lost", None, "vanished from Ray (no exit status recorded)", retry_free=True)
            return _status_from_code(rc)
        code, start, end = got.get("code"), got.get("started_at"), got.get("ended_at")
        if code is None:
            code = _read_rc(str(h.data.get("rc_path", "")))
        if got.get("lost"):
            return Status("lost", code, got.get("error", "lost"), True, start, end)
        if code is None:
            return Status("failed", None, got.get("error") or "failed", False, start, end)
        st = _status_from_code(int(code))
        if got.get("error") == "cancelled" and st.phase == "succeeded":
            return Status("failed", code, "cancelled", False, start, end)
        return Status(st.phase, st.exit_code, st.reason, False, start, end)

    def _watch_loop(self) -> None:
        """Wake the engine as soon as one of this supervisor's attempts ends."""
        seq = -1
        while not self._closed.is_set():
            try:
                new = ray.get(self._sup.wait_change.remote(seq, 1.0), timeout=30)
            except Exception:  # noqa: BLE001 - cluster gone or shutting down: poll will say
                if self._closed.wait(1.0):
                    return
                continue
            if new != seq and seq != -1 and self._waker is not None and not self._closed.is_set():
                self._waker()
            seq = new
