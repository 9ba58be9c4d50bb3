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

``submit_many(launches) -> [Handle]`` is optional: when an executor has it, the
engine hands it every launch decided in one scheduling round, so a backend can
batch (one ``sbatch --array`` for many tasks of one matrix).

``adopt(handle) -> bool`` is called on a handle left by a dead controller: it
returns True when the attempt can be followed again (still running or its
result is readable), False when it is gone without a trace.

``queues = True`` (optional attribute) says a submitted attempt may wait in the
backend's own queue (SLURM's PENDING): the engine then starts a task's
``timeout`` at the ``started_at`` that ``poll`` reports with ``running``, not
at submission, so time spent queued never counts against it.

``enforces_timeout = True`` (optional attribute) says the backend itself stops
an attempt ``launch.timeout_s`` after it really starts (SIGTERM to its group,
``launch.grace_s``, SIGKILL) and reports that end with reason ``"timeout"``; the
engine then arms no deadline of its own (Ray: the task's wrapper does it).

``queue_ahead = F`` (optional attribute, a fraction) lets the engine book
``ceil(cpus * F)`` CPU slots beyond the backend's capacity (GPUs and RAM never):
the backend's own queue holds those attempts and starts each as soon as a CPU
frees, without a round trip through the controller. Only an executor that also
enforces timeouts may set it (time spent in that queue must not count). Such an
executor must also honour ``launch.halt_path``: once that file exists (the run
launches nothing more: ``--fail-fast``, ``rota stop --drain``), an attempt that
has not started yet must not start; it ends ``lost`` ("not started").

Every executor passes ``tests/contract/test_executor_contract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

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

    ``key`` is unique per attempt (``"<task>#<attempt>"``) and doubles as the
    token the local executor uses to find processes after a crash.
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


@runtime_checkable
class Executor(Protocol):
    name: str

    def submit(self, launch: Launch) -> Handle: ...

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]: ...

    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None: ...

    def adopt(self, handle: Handle) -> bool: ...

    def close(self) -> None: ...
