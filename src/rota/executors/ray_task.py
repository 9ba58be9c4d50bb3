"""The body of each attempt's Ray task (on a worker), for :mod:`rota.executors.ray`.

:func:`run_attempt` runs ``bash -c COMMAND`` in its own session/process group
with the launch env on top of the worker's and the CUDA_VISIBLE_DEVICES that
Ray granted; output appended to the log; exit status written to ``<log>.rc``
and returned. It enforces the attempt's timeout from its real start.
``ray.cancel(ref, force=False)`` arrives as KeyboardInterrupt: SIGTERM to the
group, the grace period (asked from the supervisor), then SIGKILL. The task
makes no Ray call of its own unless cancelled or timed out: its end reaches the
supervisor (:mod:`rota.executors.ray_supervisor`) as the task's return value.

Imported by Ray workers (by reference), so rota must be installed on every node.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rota.errors import ExecutorError
from rota.executors.base import TASK_VAR_PREFIXES

ray: Any  # typed Any: Ray's own stubs do not know what ray.remote makes of a class
rex: Any
try:  # optional extra: pip install 'rota[ray]'
    ray = importlib.import_module("ray")
    rex = importlib.import_module("ray.exceptions")
except ImportError:  # pragma: no cover - exercised where ray is absent
    ray = rex = None

DEFAULT_GRACE_S = 10.0
INTERRUPT_CHECK_S = 0.1  # ray.cancel's KeyboardInterrupt is only raised between bytecodes: wake this often


def need_ray() -> Any:
    if ray is None:
        raise ExecutorError("the Ray backend needs Ray: pip install 'rota[ray]' (or 'ray[default]')")
    return ray


_SUP_CACHE: dict[tuple[str, str], Any] = {}


def _supervisor(name: str, namespace: str) -> Any:
    key = (name, namespace)
    if key not in _SUP_CACHE:
        _SUP_CACHE[key] = ray.get_actor(name, namespace=namespace)
    return _SUP_CACHE[key]


def _grace(spec: Mapping[str, Any]) -> float:
    """The grace the supervisor holds for this attempt (``DEFAULT_GRACE_S`` if it cannot say).

    Never through ``ray.get``/``ray.wait``: a task blocked in either gives its CPUs back to
    Ray until the call returns, and Ray starts a queued task on them beside this one, whose
    process still runs (a cancelled ``cpus: 4`` task on a 4-CPU cluster ran beside the next
    one). The reply's future is answered on Ray's I/O thread without telling the raylet
    that this task blocks."""
    try:
        sup = _supervisor(spec["supervisor"], spec["namespace"])
        return float(sup.grace_for.remote(spec["id"]).future().result(timeout=5))
    except Exception:  # noqa: BLE001 - fall back to the default grace
        return DEFAULT_GRACE_S


def _grace_through_interrupts(spec: Mapping[str, Any]) -> float:
    """:func:`_grace`, asked again when a repeated cancellation interrupts the asking."""
    while True:
        try:
            return _grace(spec)
        except KeyboardInterrupt:
            continue


def _killpg(pgid: int, sig: signal.Signals) -> None:
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float, grace_now: Any = None, *, termed: bool = False) -> int:
    """SIGTERM the group (unless ``termed``: the caller sent it), wait ``grace_s``, SIGKILL.

    A further interrupt cuts the grace short only if ``grace_now()`` (the supervisor's
    current grace) says 0, as ``kill_now`` sets it: Ray may deliver one cancellation
    more than once, which must not turn a SIGTERM into a SIGKILL.
    """
    if not termed:
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


# The worker's environment less rota's task variables, and the raw environment it was made from: a pooled
# worker runs many attempts, and comparing two dicts is far cheaper than filtering again.
_BASE_ENV: list[tuple[dict[bytes, bytes], dict[str, str]]] = []


def _base_env() -> dict[str, str]:
    raw = getattr(os.environ, "_data", None)  # CPython's encoded environment: a plain dict, compared in C
    if _BASE_ENV and raw is not None and _BASE_ENV[0][0] == raw:
        return dict(_BASE_ENV[0][1])
    # rota's own task variables only (a worker started inside a rota task must not pass its task's
    # on); the user's ROTA_* settings pass through, as on the local and SLURM backends
    env = {k: v for k, v in os.environ.items() if not k.startswith(TASK_VAR_PREFIXES)}
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


@contextlib.contextmanager
def _cancel_deferred() -> Iterator[list[bool]]:
    """While the block runs, a ``ray.cancel`` (Ray raises it through the SIGINT handler,
    ``_thread.interrupt_main``) is noted in the list it yields instead of raised. One raised inside
    ``Popen`` left the child started and running to its end, with no ``proc`` to stop (a cancel
    right after the start, on a loaded machine). Off the main thread: nothing deferred."""
    seen: list[bool] = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield seen  # (a handler not set from Python could not be put back)
        return
    old = signal.signal(signal.SIGINT, lambda *_: seen.append(True))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, old)


def run_attempt(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: run one attempt, write ``<log>.rc``, return the outcome.

    ``spec["halt_path"]`` (optional): if that file exists the command is not run
    (the attempt waited in Ray's queue while its run halted) and the outcome is
    ``lost``, so the next run starts it, free. ``spec["timeout_s"]`` (optional)
    counts from here, the attempt's real start:
    past it the group gets SIGTERM, ``spec["grace_s"]``, then SIGKILL, and the
    outcome's error is ``"timeout"``.
    """
    started = time.time()
    halt = spec.get("halt_path")
    if halt and os.path.exists(halt):  # booked ahead, and the run stopped launching while it was queued
        # its log says why it never ran (its controller may have ended already: no one else would)
        try:
            with _open_log(spec["log_path"]) as out:
                out.write(b"rota: its run launched nothing more (rota stop --drain, --fail-fast) while it waited"
                          b" in Ray's queue: this attempt never started; the next 'rota run' runs the task\n")
        except OSError:
            pass
        return {"code": None, "error": "not started: the run launches nothing more", "lost": True,
                "started_at": started, "ended_at": started, "host": _HOST}
    log, rc_path = spec["log_path"], spec["rc_path"]
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    error = ""
    try:
        try:
            os.unlink(rc_path)  # a stale status must not pass for this attempt's
        except FileNotFoundError:
            pass
        with _open_log(log) as out, _cancel_deferred() as cancelled:
            os.utime(out.fileno())  # the controller sees the start by this time (a rerun appends to a log that exists)
            proc = subprocess.Popen(
                ["bash", "-c", spec["command"]], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=spec["workdir"], env=_task_env(spec),
                start_new_session=True, close_fds=True,
            )
        if cancelled:  # it came while the process started: now it can be stopped
            raise KeyboardInterrupt
        code = _wait(proc, spec.get("timeout_s"))
    except _TimedOut:  # the engine leaves timeouts to the task (the time it waited in Ray's queue is not counted)
        assert proc is not None
        code = _stop_group(proc, float(spec.get("grace_s", DEFAULT_GRACE_S)), lambda: _grace(spec))
        error = "timeout"
    except KeyboardInterrupt:  # ray.cancel(force=False)
        if proc is not None:
            # SIGTERM first: the grace is asked from the supervisor (a Ray call, slow on a loaded
            # machine), and a cancel repeated meanwhile must not skip the stop.
            _killpg(proc.pid, signal.SIGTERM)
            code = _stop_group(proc, _grace_through_interrupts(spec), lambda: _grace(spec), termed=True)
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
            "host": _HOST}


_HOST = socket.gethostname()
_TASK: list[Any] = []


def _task_fn() -> Any:
    if not _TASK:
        _TASK.append(ray.remote(max_retries=0, retry_exceptions=False)(run_attempt))
    return _TASK[0]
