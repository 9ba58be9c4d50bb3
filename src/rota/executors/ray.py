"""The Ray executor: every attempt is a Ray task, owned by a detached supervisor actor.

Contract (see :mod:`rota.executors.base`), as Ray does it:

- ``submit``/``submit_many``: one call to the supervisor actor (sent, not waited
  for; ``cancel``/``adopt`` wait for it, ``poll`` reports a refusal), which starts one
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
- ``poll``: the supervisor hears of each task's end as its owner (the task's
  return value; the task itself makes no Ray call); its long-poll
  (``wait_change``, held by a watcher thread) hands the results to the
  controller and wakes the engine at once (SIGCHLD to the main thread). Other
  attempts: at most every ``RECHECK_S``, one supervisor call, which does ONE
  ``ray.wait(refs, timeout=0, num_returns=len(refs))`` over all of them (this
  also finds tasks that died without reporting).
- ``cancel``: ``ray.cancel(ref, force=False)`` raises KeyboardInterrupt inside
  the task, which sends SIGTERM to its process group, waits ``grace_s``
  (asked from the supervisor), then SIGKILL; tasks still there after the grace
  get ``ray.cancel(ref, force=True)``.
- timeouts (``enforces_timeout``): the task itself stops its group
  ``launch.timeout_s`` after it really starts (SIGTERM, ``launch.grace_s``,
  SIGKILL) and ends with reason ``timeout``; time spent waiting in Ray's queue
  does not count. So the engine may book ``queue_ahead`` (a fraction of the
  cluster's CPUs) more CPU slots: Ray starts those attempts the moment a CPU
  frees.
- ``queues``: an attempt is shown ``queued in ray`` until it starts. The task
  makes no Ray call when it starts; it opens its log and stamps its time, so
  ``poll`` reports ``started_at`` (that time) once a log stamped after the
  submission exists: one ``stat`` per attempt not yet seen started.
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

A controller that died between committing ``launching`` and committing the
handle left an attempt the engine cannot see: :meth:`RayExecutor.recover` finds
it again (asking the supervisors by state folder and attempt key, or by its rc
file), so the engine commits handles with its next round rather than at once;
:meth:`RayExecutor.stop_unrecorded` cancels one that is not to be adopted.

``capacity``: the cluster's sums (GPUs, CPUs, RAM) to book against, and its live
nodes, so that validation refuses a task no single node can take (Ray would
keep it queued forever). ``rota run``'s ``--gpus``/``--cpus``/``--memory`` cap it
for the run (:mod:`rota.executors.cluster_limits`; under a ``--cpus`` cap below the
cluster's CPUs nothing is booked ahead: ``queue_ahead`` is set to 0).

Known limits: a Ray worker killed from outside (OOM killer, node loss) leaves
the task's process group orphaned on that node; Ray's GPU placement may differ
from rota's ledger (a task then waits in Ray's queue, shown queued); ``ray stop``
forgets every attempt (they are reported ``lost``).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rota.core.resources import Gpu, Machine, Node
from rota.errors import ExecutorError
from rota.executors.base import Executor, Handle, Launch, Status
from rota.executors.common import note_never_started, rc_path_for, read_rc, status_from_code
from rota.executors.ray_connect import connect, error_of, wake_main_thread
from rota.executors.ray_supervisor import Supervisor
from rota.executors.ray_task import need_ray, ray, rex

NAME = "ray"
SUPERVISOR_PREFIX = "rota-supervisor-"
DEFAULT_GPU_MEMORY = 80 * 2**30  # "80GB" as rota reads sizes; per GPU (Ray knows GPU counts, not sizes)
RECHECK_S = 1.0  # poll Ray for real at least this often, even without a wake-up from the supervisor
QUEUE_AHEAD = 1.0  # extra CPU slots the engine may book, as a fraction of the cluster's CPUs
# A log written within this much before the submission is this attempt's (a shared file system's clock may lag).
CLOCK_SLACK_S = 1.0
SUBMIT_SETTLE_S = 5.0  # a submission sent by a controller that then died has arrived (or never will) by then

class RayExecutor(Executor):
    """Runs attempts on a Ray cluster (``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:10001``).

    ``gpu_memory_bytes`` (int or ``"80GB"``) is each GPU's memory for rota's
    ledger; Ray reports GPU counts only, so it defaults to 80 GB. ``waker`` is
    called from a thread as soon as an attempt ends (default: SIGCHLD to this
    process, which wakes the engine's loop as a local task's exit does).
    """

    name = NAME
    # The task's wrapper stops it at its timeout, counted from its real start (see run_attempt),
    # so attempts may wait in Ray's queue: the engine books QUEUE_AHEAD more CPU slots than the
    # cluster has, and a worker that finishes one attempt is handed the next without waiting for
    # the controller to hear of the end and submit (bench/bench_ray.py).
    enforces_timeout = True
    queue_ahead = QUEUE_AHEAD
    queues = True  # shown "queued in ray" until the attempt's log appears (see _seen_start)

    def __init__(self, address: str = "auto", gpu_memory_bytes: int | str | None = None, namespace: str = "rota",
                 supervisor: str | None = None, supervisor_idle_s: float = 1800.0,
                 waker: Callable[[], None] | None = wake_main_thread) -> None:
        need_ray()
        if isinstance(gpu_memory_bytes, str):
            from rota.units import parse_size

            gpu_memory_bytes = parse_size(gpu_memory_bytes)
        self.gpu_memory_bytes = int(gpu_memory_bytes or DEFAULT_GPU_MEMORY)
        self._token = uuid.uuid4().hex[:12]
        self.address, self.namespace = address, namespace
        self.supervisor_name = supervisor or SUPERVISOR_PREFIX + self._token
        self._waker = waker
        self._others: dict[tuple[str, str], Any] = {}
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[Any, list[str]] = {}  # submit call ref -> ids it carries
        self._unconfirmed: set[str] = set()
        self._refused: dict[str, str] = {}
        self._ended: dict[str, dict[str, Any]] = {}  # results the watcher brought, by id
        self._must_poll = True  # the watcher may have missed results: ask the supervisor
        self._seen: dict[str, float] = {}  # attempt key -> when its log appeared (it started), until it ends
        self._polled_at = 0.0
        connect(address, namespace)
        try:
            self._sup = ray.remote(Supervisor).options(
                name=self.supervisor_name, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
                max_concurrency=64, resources={"node:__internal_head__": 0.001}, max_restarts=0,
            ).remote(supervisor_idle_s)  # not waited for: the first calls queue until it is up
        except rex.RayError as e:
            raise ExecutorError(f"cannot start rota's supervisor actor on Ray: {e}") from None
        self._watcher = threading.Thread(target=self._watch_loop, name="rota-ray-watch", daemon=True)
        self._watcher.start()  # also the heartbeat that keeps the supervisor alive
        atexit.register(self.close)  # before Ray's own exit handler (atexit runs last-in first-out)

    # ------------------------------------------------------------ contract
    def capacity(self) -> Machine:
        """The cluster as one machine: Ray's GPU count (each ``gpu_memory_bytes``), CPUs and RAM,
        with its live nodes (a task must fit one: validation refuses one that fits none)."""
        res = ray.cluster_resources()
        gpus = tuple(Gpu(i, self.gpu_memory_bytes, name="Ray GPU") for i in range(int(res.get("GPU", 0))))
        nodes = tuple(
            Node(str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node") + f" ({n['NodeID'][:8]})",
                 int(n["Resources"].get("GPU", 0)), int(n["Resources"].get("CPU", 0)),
                 int(n["Resources"].get("memory", 0)))
            for n in ray.nodes() if n.get("Alive")
        )
        return Machine(gpus, int(res.get("CPU", 0)), int(res.get("memory", 0)), source="ray", nodes=nodes,
                       cpus_from="ray", memory_from="ray")

    def submit(self, launch: Launch) -> Handle:
        return self.submit_many([launch])[0]

    def submit_many(self, launches: Sequence[Launch]) -> list[Handle]:
        """One supervisor call, not waited for: ``poll`` reports its failure, ``adopt`` and ``cancel`` wait for it."""
        items = [self._item(la) for la in launches]
        ids = [it["id"] for it in items]
        try:
            ref = self._sup.submit.remote(items)
        except rex.RayError as e:
            raise ExecutorError(f"Ray refused the tasks: {e}") from None
        with self._lock:
            self._inflight[ref] = ids
            self._unconfirmed.update(ids)
        return [Handle(la.key, NAME, it["id"], {"supervisor": self.supervisor_name, "namespace": self.namespace,
                                                 "rc_path": it["spec"]["rc_path"], "submitted_at": time.time(),
                                                 **({"attempt_id": la.attempt_id} if la.attempt_id else {})})
                for la, it in zip(launches, items, strict=True)]

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        """Results the watcher brought; else one supervisor call (one ``ray.wait`` there).

        The supervisor is asked at least every ``RECHECK_S`` (a task that died
        without reporting is found by its ``ray.wait``) and for adopted handles.
        """
        out: dict[str, Status] = {}
        now = time.monotonic()
        for sup, hs in self._by_supervisor(handles).items():
            got: dict[str, Any] = {}
            if sup is self._sup:
                with self._lock:
                    got = {h.external_id: self._ended.pop(h.external_id) for h in hs if h.external_id in self._ended}
                    fresh = not self._must_poll and now - self._polled_at < RECHECK_S
                    if not fresh:
                        self._must_poll, self._polled_at = False, now
                if not fresh:
                    self._confirm(block=False)
                ask = [h.external_id for h in hs if h.external_id not in got]
                if fresh:
                    got.update({i: {"running": True} for i in ask})
                    ask = []
            else:
                ask = [h.external_id for h in hs]
            if sup is not None and ask:
                try:
                    got.update(ray.get(sup.poll.remote(ask), timeout=60))
                except rex.RayError:
                    pass
            for h in hs:
                st = out[h.key] = self._status(h, got.get(h.external_id))
                if st.phase != "running":
                    self._seen.pop(h.key, None)
        return out

    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        self._confirm(block=True)  # a cancel must not overtake the submission it cancels
        for sup, hs in self._by_supervisor(handles).items():
            if sup is not None:
                try:
                    ids = [h.external_id for h in hs]
                    ray.get(sup.cancel.remote(ids, grace_s), timeout=grace_s + 60)
                    # the supervisor's own poll: it keeps results (ours hands each to the engine once)
                    got = ray.get(sup.poll.remote(ids), timeout=60)
                except rex.RayError as e:
                    raise ExecutorError(f"could not cancel on Ray: {e}") from None
                # a task cancelled in Ray's queue never opened its log: say so there (rota logs shows it)
                ended = [h for h in hs if isinstance(got.get(h.external_id), dict)
                         and not got[h.external_id].get("running")]
                note_never_started(ended, "Ray")

    def kill_now(self, handles: Sequence[Handle]) -> None:
        """Second Ctrl-C: SIGKILL at once (no grace). Called from a signal handler: never blocks."""
        threading.Thread(target=self.cancel, args=(list(handles), 0.0), name="rota-ray-kill", daemon=True).start()

    def adopt(self, handle: Handle) -> bool:
        """Known to its supervisor (asked again until ``SUBMIT_SETTLE_S`` after submission), or an rc file."""
        self._confirm(block=True)
        sup = self._find(handle)
        settle = float(handle.data.get("submitted_at", 0) or 0) + SUBMIT_SETTLE_S
        while sup is not None:
            try:
                if ray.get(sup.known.remote(handle.external_id, handle.key), timeout=60):
                    return True
            except rex.RayError:
                break
            if time.time() >= settle:
                break
            time.sleep(0.1)
        return read_rc(str(handle.data.get("rc_path", ""))) is not None

    def recover(self, state_dir: str, key: str, log_path: str | None, started_at: float = 0.0, *,
                attempt_id: int | None = None) -> Handle | None:
        """The handle of an attempt a dead controller submitted but never recorded (``launching``, no handle).

        Every rota supervisor in the namespace is asked for it by state folder and
        key, again until a submission sent at ``started_at`` has surely arrived
        (``SUBMIT_SETTLE_S``); else its ``<log>.rc`` says it ended (its supervisor
        is gone). None when neither knows it: it never started. Having this lets
        the engine commit handles with its next round instead of at once. The key is the
        attempt's alone (attempt numbers never restart), and so is its log and rc file;
        ``attempt_id`` goes into the handle (see :meth:`_seen_start`).
        """
        extra = {"attempt_id": attempt_id} if attempt_id else {}
        rc_path = rc_path_for(log_path) if log_path else ""
        while True:
            found = next(self._knowing(state_dir, key), None)
            if found is not None:
                name, _sup, ids = found
                return Handle(key, NAME, ids[-1], {"supervisor": name, "namespace": self.namespace,
                                                  "rc_path": rc_path, "submitted_at": started_at, **extra})
            if time.time() >= started_at + SUBMIT_SETTLE_S:
                break
            time.sleep(0.2)
        if rc_path and read_rc(rc_path) is not None:
            return Handle(key, NAME, f"rc:{key}", {"supervisor": "", "namespace": self.namespace,
                                                   "rc_path": rc_path, "submitted_at": started_at, **extra})
        return None

    def stop_unrecorded(self, state_dir: str, key: str, *, attempt_id: int | None = None) -> None:
        """Cancel an attempt whose handle a dead controller never committed (same state folder and key)."""
        for _name, sup, ids in self._knowing(state_dir, key):
            try:
                ray.get(sup.cancel.remote(ids, 0.0), timeout=60)
            except rex.RayError:
                continue

    def _knowing(self, state_dir: str, key: str) -> Iterator[tuple[str, Any, list[str]]]:
        """The other controllers' live supervisors that know the attempt: name, actor, its ids there."""
        from ray.util import list_named_actors

        for entry in list_named_actors(all_namespaces=True):
            name = entry
            if isinstance(entry, dict):
                if entry.get("namespace") != self.namespace:
                    continue
                name = entry.get("name", "")
            if not str(name).startswith(SUPERVISOR_PREFIX) or name == self.supervisor_name:
                continue
            try:
                sup = ray.get_actor(str(name), namespace=self.namespace)
                ids: list[str] = ray.get(sup.find.remote(state_dir, key), timeout=60)
            except (ValueError, rex.RayError):  # gone since it was listed
                continue
            if ids:
                yield str(name), sup, ids

    def close(self) -> None:
        """Stop the watcher thread (a Ray call in flight at interpreter exit makes it exit 1)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sup.nudge.remote()
            ray.get(self._sup.retire.remote(), timeout=10)  # ends it soon if none of its tasks runs
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
                "timeout_s": la.timeout_s, "grace_s": la.grace_s, "halt_path": la.halt_path,
                "supervisor": self.supervisor_name, "namespace": self.namespace}
        return {"id": tid, "state_dir": state_dir, "options": options, "spec": spec}

    def _confirm(self, block: bool) -> None:
        """Settle finished submit calls: confirmed ids, or refused ones with Ray's error."""
        with self._lock:
            refs = list(self._inflight)
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if block else 0)
        try:
            ray.get(ready, timeout=60)
            errors = dict.fromkeys(ready, "")
        except rex.RayError:
            errors = {ref: error_of(ref) for ref in ready}
        for ref, err in errors.items():
            with self._lock:
                ids = self._inflight.pop(ref, [])
                self._unconfirmed.difference_update(ids)
                if err:
                    self._refused.update(dict.fromkeys(ids, err))

    def _find(self, h: Handle) -> Any:
        name = str(h.data.get("supervisor", self.supervisor_name))
        ns = str(h.data.get("namespace", self.namespace))
        if not name:  # recovered from its rc file alone
            return None
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
        if h.external_id in self._refused:
            return Status("failed", None, f"could not start on Ray: {self._refused[h.external_id]}")
        if got is not None and got.get("running") or got is None and h.external_id in self._unconfirmed:
            return Status("running", started_at=self._seen_start(h))
        if got is None:  # the supervisor does not know it (cluster restarted): the rc file may
            rc = read_rc(str(h.data.get("rc_path", "")))
            if rc is None:
                return Status("lost", None, "vanished from Ray (no exit status recorded)", retry_free=True)
            return status_from_code(rc)
        code, start, end = got.get("code"), got.get("started_at"), got.get("ended_at")
        if code is None:
            code = read_rc(str(h.data.get("rc_path", "")))
        if got.get("lost"):
            return Status("lost", code, got.get("error", "lost"), True, start, end)
        if got.get("error") == "timeout":
            return Status("failed", code, "timeout", False, start, end)
        if code is None:
            return Status("failed", None, got.get("error") or "failed", False, start, end)
        st = status_from_code(int(code))
        if got.get("error") == "cancelled" and st.phase == "succeeded":
            return Status("failed", code, "cancelled", False, start, end)
        return Status(st.phase, st.exit_code, st.reason, False, start, end)

    def _seen_start(self, h: Handle) -> float | None:
        """When the attempt started, as seen from here: its task opens the log and sets its
        modification time as it starts (``run_attempt``), so that time at first sight (exact
        until the task writes; the outcome brings the task's own clock at the end). None while
        the log is missing: the attempt still waits in Ray's queue. An attempt with an id has a
        log of its own (numbers never restart): no time is compared. Only for one submitted by a
        rota before ids, whose log a rerun's earlier attempt may have written, a log older than
        the submission does not count."""
        seen = self._seen.get(h.key)
        if seen is None:
            rc_path = str(h.data.get("rc_path") or "")
            try:
                mtime = os.stat(rc_path.removesuffix(".rc")).st_mtime if rc_path.endswith(".rc") else None
            except OSError:
                return None
            if mtime is None:
                return None
            submitted = float(h.data.get("submitted_at") or 0.0)
            if not h.data.get("attempt_id") and mtime < submitted - CLOCK_SLACK_S:
                return None
            seen = self._seen[h.key] = min(mtime, time.time())
        return seen

    def _watch_loop(self) -> None:
        """Wake the engine as soon as one of this supervisor's attempts ends."""
        seq = -1
        while not self._closed.is_set():
            try:
                new, ended, complete = ray.get(self._sup.wait_change.remote(seq, 1.0), timeout=30)
            except Exception:  # noqa: BLE001 - cluster gone or shutting down: poll will say
                with self._lock:
                    self._must_poll = True
                if self._closed.wait(1.0):
                    return
                continue
            with self._lock:
                self._ended.update(ended)
                if not complete:
                    self._must_poll = True
            if ended and self._waker is not None and not self._closed.is_set():
                self._waker()
            seq = new
