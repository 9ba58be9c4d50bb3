"""The executor contract: the narrow interface every backend implements.

The engine (the one loop where side effects meet) decides *what* runs *where*
with the pure policy, commits that decision to the state store, and only then
asks an executor to start it. Executors know nothing of dependencies, retries,
the spec or the UI. Three operations, all batch-friendly (submitit style):

- ``submit(launch) -> Handle``: start one attempt. The handle is JSON-able and
  is committed to the store by the engine, so a new controller can reattach.
- ``poll(handles) -> {key: Status}``: one call for many attempts (one ``squeue``
  for all SLURM jobs, one ``ray.wait`` for all refs). Never blocks long.
- ``cancel(handles, grace_s)``: SIGTERM-then-SIGKILL (or scancel / ray.cancel)
  for every handle; returns when they are gone or the grace period is over.

``submit_many(launches) -> [Handle]``: the engine hands it every launch decided
in one scheduling round, so a backend can batch (one ``sbatch --array`` for many
tasks of one matrix); the default submits each.

``adopt(handle) -> bool`` is called on a handle left by a dead controller: it
returns True when the attempt can be followed again (still running or its
result is readable), False when it is gone without a trace.

``queues = True`` says a submitted attempt may wait in the
backend's own queue (SLURM's PENDING): the engine then starts a task's
``timeout`` at the ``started_at`` that ``poll`` reports with ``running``, not
at submission, so time spent queued never counts against it.

``enforces_timeout = True`` says the backend itself stops
an attempt ``launch.timeout_s`` after it really starts (SIGTERM to its group,
``launch.grace_s``, SIGKILL) and reports that end with reason ``"timeout"``; the
engine then arms no deadline of its own (Ray: the task's wrapper does it).

``queue_ahead = F`` (a fraction) lets the engine book
``ceil(cpus * F)`` CPU slots beyond the backend's capacity (GPUs and RAM never):
the backend's own queue holds those attempts and starts each as soon as a CPU
frees, without a round trip through the controller. Only an executor that also
enforces timeouts may set it (time spent in that queue must not count). Such an
executor must also honour ``launch.halt_path``: once that file exists (the run
launches nothing more: ``--fail-fast``, ``rota stop --drain``), an attempt that
has not started yet must not start; it ends ``lost`` ("not started").

Every executor subclasses :class:`Executor`, whose defaults declare each of these
capabilities (and ``kill_now``, ``recover``, ``stop_unrecorded``, ``discard_status``),
and passes ``tests/contract/test_executor_contract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rota.core.resources import Machine

Phase = Literal["running", "succeeded", "failed", "lost"]

# Variables rota sets for a task. A rota started inside a task must not pass its
# parent task's values on; the user's own ROTA_* settings (or any other) pass through.
TASK_VAR_PREFIXES = (
    "ROTA_SHARD_", "ROTA_PARAM", "ROTA_VAR_", "ROTA_TRIAL", "ROTA_GPU_MEMORY_", "ROTA_NEEDS_OUT",
    "ROTA_TASK", "ROTA_RUN", "ROTA_OUT", "ROTA_ATTEMPT", "ROTA_STATE_DIR", "ROTA_GPUS", "ROTA_CPUS", "ROTA_RC_PATH",
    "ROTA_EXIT_LOG",
)


def inherited_env(environ: Mapping[str, str], drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment a task inherits: ``environ`` without rota's task variables."""
    drop = TASK_VAR_PREFIXES + drop_prefixes
    return {k: v for k, v in environ.items() if not k.startswith(drop)}


@dataclass(frozen=True)
class Launch:
    """One attempt of one task, fully resolved.

    ``key`` is unique per attempt in its state folder (``"<task>#<attempt>"``: attempt numbers
    never restart). ``attempt_id`` is the attempt's id in the store (``ROTA_ATTEMPT_ID`` in
    ``env``; 0: none, a launch made outside a run): executors find an attempt again by it
    (its process, its exit-status line), never by time.
    ``env`` holds only rota's additions (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS,
    ROTA_*, matrix variables, the task's ``env``); executors add them on top of
    the inherited environment. ``gpus`` are the host GPU indices chosen by the
    policy (meaningful for the local executor; remote backends may ignore them
    and set CUDA_VISIBLE_DEVICES from what their engine grants).
    """

    key: str
    task: str
    attempt: int
    command: str
    env: Mapping[str, str]
    workdir: str
    log_path: str
    gpus: tuple[int, ...] = ()
    gpu_count: int = 0
    gpu_memory_bytes: int | None = None  # per GPU; None = whole GPU
    gpu_fraction: float = 1.0  # share of one GPU (gpu_memory / GPU memory); for Ray
    cpus: int = 1
    memory_bytes: int = 0
    timeout_s: float | None = None
    grace_s: float = 10.0  # SIGTERM-to-SIGKILL wait when a backend enforces the timeout itself
    halt_path: str | None = None  # exists once the run launches nothing more: a queued attempt must not start
    estimate_s: float | None = None
    array_group: str | None = None  # tasks of one matrix: a backend may batch them
    attempt_id: int = 0


@dataclass(frozen=True)
class Handle:
    """How to find an attempt again; committed to the store as JSON."""

    key: str
    executor: str
    external_id: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "executor": self.executor, "external_id": self.external_id, "data": dict(self.data)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Handle:
        return cls(d["key"], d["executor"], str(d["external_id"]), dict(d.get("data") or {}))


@dataclass(frozen=True)
class Status:
    """What ``poll`` says about one attempt.

    ``phase``: running, succeeded, failed, or lost (vanished: killed with the
    controller, node failure, preemption). ``retry_free`` marks failures that
    must not count against ``retries`` (SLURM preemption, NODE_FAIL).
    ``reason`` is a short human phrase: ``exit 1``, ``signal 9``, ``timeout``,
    ``preempted``, ``cuda out of memory`` (the engine may refine it from the log).
    """

    phase: Phase
    exit_code: int | None = None
    reason: str = ""
    retry_free: bool = False
    started_at: float | None = None
    ended_at: float | None = None


class Executor:
    """The base class of every executor (submitit's ``Executor`` is the model).

    Subclasses implement :meth:`submit`, :meth:`poll`, :meth:`cancel`, :meth:`adopt`
    and set :attr:`name`; everything else is a declared capability with a default
    that the engine relies on (it calls each one directly, never probes for it).
    """

    name: str = "?"

    queues: bool = False
    """A submitted attempt may wait in the backend's own queue (SLURM's PENDING): its timeout
    starts at the ``started_at`` that :meth:`poll` reports with ``running``."""

    enforces_timeout: bool = False
    """The backend stops an attempt ``launch.timeout_s`` after it really starts and reports
    reason ``"timeout"``; the engine arms no deadline of its own."""

    queue_ahead: float = 0.0
    """A fraction: the engine may book ``ceil(cpus * F)`` CPU slots beyond :meth:`capacity`
    (only with :attr:`enforces_timeout`; attempts honour ``launch.halt_path``)."""

    strict_gpus: bool = False
    """Never hold more GPUs than the engine booked (set when ``--gpus`` caps a run below the
    cluster's GPUs); only an executor that could otherwise take more (SLURM's memory-shared
    launches) looks at it."""

    def capacity(self) -> Machine | None:
        """What the backend offers a run (a cluster's GPUs, CPUs, RAM), or None: this machine's
        own resources, as :func:`rota.machine.detect_machine` finds them (the default)."""
        return None

    def submit(self, launch: Launch) -> Handle:
        raise NotImplementedError

    def submit_many(self, launches: Sequence[Launch]) -> list[Handle]:
        """Every launch of one scheduling round (a backend may batch them: one ``sbatch --array``).
        Default: :meth:`submit` each."""
        return [self.submit(la) for la in launches]

    @property
    def batches_submits(self) -> bool:
        """Whether :meth:`submit_many` is the executor's own (it is overridden): the engine then hands
        it a round's launches at once; otherwise it submits each, so one failure is that task's alone."""
        return type(self).submit_many is not Executor.submit_many

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        raise NotImplementedError

    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        raise NotImplementedError

    def kill_now(self, handles: Sequence[Handle]) -> None:
        """A second Ctrl-C: stop these at once (SIGKILL). Default: nothing more than :meth:`cancel` does."""

    def adopt(self, handle: Handle) -> bool:
        raise NotImplementedError

    def recover(self, state_dir: str, key: str, log_path: str | None, started_at: float = 0.0, *,
                attempt_id: int | None = None) -> Handle | None:
        """The handle of attempt ``key`` whose handle a dead controller never committed, or None.
        Default: None (such executors get their handles committed at once; see :attr:`finds_unrecorded`)."""
        return None

    @property
    def finds_unrecorded(self) -> bool:
        """Whether :meth:`recover` can find an attempt whose handle was never committed (it is
        overridden): the engine may then stage handles and commit them with the next round."""
        return type(self).recover is not Executor.recover

    def stop_unrecorded(self, state_dir: str, key: str, *, attempt_id: int | None = None) -> None:
        """Stop attempt ``key`` if a process of it exists although its handle was never committed.
        Default: nothing (a backend whose attempts cannot outlive an unrecorded submit)."""

    def discard_status(self, handles: Sequence[Handle]) -> None:
        """Forget the exit status of attempts the engine stopped (the next run counts them lost).
        Default: remove a failure's ``<log>.rc`` file (SLURM, Ray)."""
        from rota.executors.common import discard_rc_files  # common imports this module

        discard_rc_files(handles)

    def close(self) -> None:
        """Release the backend's resources at the end of a run."""
