"""Tell people when it matters: apprise notifications and hook commands, off the run's path.

:class:`NotifyHook` is the engine hook for a spec's ``notify:`` (apprise URLs and the events
to send: ``failed``, a task failed for good; ``finished``, the run ended by itself;
``stopped``, it was stopped) and its hook commands: a task's ``on_success``/``on_failure``/
``on_finish`` (after its end, with the environment its attempt had) and the run's (after the
run's end, with ``ROTA_RUN_*``).

Contract: nothing here slows or stops the run. The engine's thread only puts jobs on two
queues (notifications, hook commands), each emptied by its own daemon thread: a send runs
in a thread of its own and is given up after ``notify: timeout:``; a hook command is
killed (its process group) after :data:`HOOK_TIMEOUT_S`. What fails is reported back to
the engine's thread, which writes it to the run's log (the store's events, kinds
``notify-error`` and ``hook-error``, and the UI's line) at its next round. At the run's end
the engine waits at most :data:`FLUSH_S` for what is still queued; a hook command still
running then is left to finish on its own (its output goes to ``STATE/hooks.log``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rota.engine import attempt as A
from rota.engine.hooks import Hook
from rota.engine.runstate import Live
from rota.errors import SpecError
from rota.executors.base import inherited_env
from rota.spec.load import Spec
from rota.spec.model import NotifySpec
from rota.store import base as S

FLUSH_S = 5.0  # the run's end waits at most this long for queued notifications and hooks
HOOK_TIMEOUT_S = 60.0  # a hook command still running after this is killed (while the run goes on)
MAX_FAILED_MESSAGES = 20  # "failed" messages a run sends one by one; the rest are counted at its end
INSTALL_HINT = "pip install 'rota[notify]'"
HOOK_KEYS = ("on_success", "on_failure", "on_finish")

Job = Callable[[], str | None]
"""A queued send or hook command: runs on a worker thread, returns an error text or None."""


@dataclass(frozen=True)
class TaskHooks:
    """A spec task's hook commands (``defaults:`` merged in)."""

    on_success: str | None = None
    on_failure: str | None = None
    on_finish: str | None = None


def wanted(spec: Spec) -> bool:
    """Whether ``spec`` asks for notifications or hook commands (so a run needs this hook)."""
    f = spec.file
    if f.notify is not None or any(getattr(f, k) for k in HOOK_KEYS):
        return True
    return bool(task_hooks(spec))


def task_hooks(spec: Spec) -> dict[str, TaskHooks]:
    """Spec task name (an expanded task's ``group``) -> its hook commands, for those that have any.

    SpecError when two spec tasks share a name but not their hook commands (which would run
    for their tasks is then ambiguous)."""
    f = spec.file
    out: dict[str, TaskHooks] = {}
    for item in f.tasks:
        values = {k: item[k] if k in item else getattr(f.defaults, k) for k in HOOK_KEYS}
        hooks = TaskHooks(**values)
        if hooks == TaskHooks():
            continue
        name = str(item.get("name"))
        if out.get(name, hooks) != hooks:
            raise SpecError("two tasks share this name but not their hook commands; give them distinct names",
                            file=spec.path, task=name, field="on_failure")
        out[name] = hooks
    return out


def notifiers(cfg: NotifySpec, file: str) -> list[Any]:
    """One apprise service object per URL of ``notify:``. SpecError without apprise or for a URL
    apprise does not know (its secrets are not repeated in the message)."""
    try:
        import apprise
    except ImportError:
        raise SpecError(f"sending notifications needs apprise: {INSTALL_HINT}", file=file, field="notify") from None
    out = []
    for i, url in enumerate(cfg.urls):
        service = apprise.Apprise.instantiate(url)
        if service is None:
            scheme = url.split("://", 1)[0]
            raise SpecError(f"apprise cannot use this URL (scheme {scheme!r}://; see apprise's list of "
                            "services for its form)", file=file, field=f"notify.urls.{i}")
        # A hung endpoint gives up at the send's limit, also inside apprise's own socket calls.
        for attr in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(service, attr):
                setattr(service, attr, cfg.timeout)
        out.append(service)
    return out


class _Worker:
    """A queue of jobs run one at a time on a daemon thread; errors go to ``errors``."""

    def __init__(self, name: str, errors: queue.SimpleQueue[tuple[str, str, str]], kind: str) -> None:
        self.q: queue.Queue[tuple[str, Job]] = queue.Queue()
        self.errors, self.kind = errors, kind
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self._thread.start()

    def put(self, task: str, job: Job) -> None:
        self.q.put((task, job))

    def _loop(self) -> None:
        while True:
            task, job = self.q.get()
            try:
                why = job()
            except Exception as e:  # noqa: BLE001 - a notifier's failure is reported, never raised
                why = f"{type(e).__name__}: {e}"
            if why:
                self.errors.put((self.kind, task, why))
            self.q.task_done()

    def wait(self, deadline: float) -> int:
        """Wait until the queue is done or ``deadline`` (monotonic); how many jobs are left."""
        with self.q.all_tasks_done:
            while self.q.unfinished_tasks and (left := deadline - time.monotonic()) > 0:
                self.q.all_tasks_done.wait(left)
            return self.q.unfinished_tasks


class _ApprisePhrases(logging.Handler):
    """Keeps apprise's last warning per thread: why a send failed (it returns only False)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.last[record.thread or 0] = record.getMessage()[:300]


class NotifyHook(Hook):
    """Sends a spec's ``notify:`` messages and runs its hook commands (see the module's contract)."""

    def __init__(self, spec: Spec, state_dir: str) -> None:
        """SpecError (bad input, before anything runs) without apprise or for a URL it cannot use."""
        self.spec, self.state_dir = spec, state_dir
        cfg = spec.file.notify
        self.events = frozenset(cfg.events) if cfg is not None else frozenset()
        self.timeout_s = cfg.timeout if cfg is not None else 0.0
        self.services = notifiers(cfg, spec.path) if cfg is not None and cfg.events else []
        self.hooks = task_hooks(spec)
        self._hooks_of = spec
        self.failed_sent = 0
        self.failed_unsent = 0
        self._errors: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()
        self._sends: _Worker | None = None
        self._cmds: _Worker | None = None
        self._phrases = _ApprisePhrases()
        self.hooks_log = str(Path(state_dir) / "hooks.log")

    # ----------------------------------------------------------------- the engine's side
    def start(self, engine: Any) -> None:
        self._sends = _Worker("rota-notify", self._errors, "notify-error") if self.services else None
        self._cmds = _Worker("rota-hooks", self._errors, "hook-error")
        if self.services:
            logging.getLogger("apprise").addHandler(self._phrases)

    def tick(self, engine: Any, now: float) -> None:
        if not self._errors.empty():
            self._report(engine)

    def finished(self, engine: Any, lv: Live, state: str, metrics: Mapping[str, float]) -> None:
        try:
            self._finished(engine, lv, state)
        except Exception as e:  # noqa: BLE001 - a notification's failure never stops the run
            self._log(engine, "notify-error", lv.task.name, f"{type(e).__name__}: {e}")

    def _finished(self, engine: Any, lv: Live, state: str) -> None:
        # An attempt that will be retried leaves the task pending: only a final end counts.
        if lv.state not in (S.SUCCEEDED, S.FAILED) or state not in (S.SUCCEEDED, S.FAILED):
            return
        name = lv.task.name
        if lv.state == S.FAILED and "failed" in self.events:
            if self.failed_sent < MAX_FAILED_MESSAGES:
                self.failed_sent += 1
                self._send(name, *self._failed_text(engine, lv), "failure")
            else:
                self.failed_unsent += 1
        hooks = self._task_hooks(engine).get(lv.task.group or name)
        if hooks is None:
            return
        cmds = [hooks.on_success if lv.state == S.SUCCEEDED else hooks.on_failure, hooks.on_finish]
        if any(cmds):
            env = attempt_env(engine, lv)
            env.update(ROTA_TASK_STATE=lv.state, ROTA_TASK_EXIT_CODE="" if lv.exit_code is None else str(lv.exit_code),
                       ROTA_TASK_REASON=lv.reason, ROTA_TASK_LOG=lv.log_path or "")
            for cmd in cmds:
                if cmd:
                    self._run_cmd(name, cmd, env, os.path.abspath(lv.task.workdir))

    def _task_hooks(self, engine: Any) -> dict[str, TaskHooks]:
        # A spec edited during the run (the controller took a new one) brings its tasks' hooks.
        spec = engine.spec
        if spec is not self._hooks_of:
            self._hooks_of = spec
            try:
                self.hooks = task_hooks(spec)
            except SpecError as e:  # two tasks of the new spec share a name: keep the hooks known
                self._log(engine, "hook-error", e.task or "", e.detail)
        return self.hooks

    def stop(self, engine: Any) -> None:
        try:
            self._stop(engine)
        except Exception as e:  # noqa: BLE001 - nor its end
            self._log(engine, "notify-error", "", f"{type(e).__name__}: {e}")
        finally:
            logging.getLogger("apprise").removeHandler(self._phrases)

    def _stop(self, engine: Any) -> None:
        code, outcome = run_outcome(engine)
        counts = {k: v for k, v in engine.counts().items() if v}
        if outcome in self.events:
            self._send("", *self._end_text(engine, code, outcome, counts), "success" if code == 0 else "failure")
        f = engine.spec.file  # the run's hooks as its spec says now (edited or not)
        cmds = [f.on_success if code == 0 else f.on_failure, f.on_finish]
        if any(cmds):
            env = inherited_env(os.environ)
            env.update(ROTA_RUN=engine.run_id, ROTA_STATE_DIR=self.state_dir, ROTA_RUN_SPEC=self.spec.path,
                       ROTA_RUN_EXIT_CODE=str(code), ROTA_RUN_OUTCOME=outcome, ROTA_RUN_COUNTS=json.dumps(counts))
            for cmd in cmds:
                if cmd:
                    self._run_cmd("", cmd, env, self.spec.root)
        deadline = time.monotonic() + FLUSH_S
        left = sum(w.wait(deadline) for w in (self._sends, self._cmds) if w is not None)
        self._report(engine)
        if left:
            self._log(engine, "notify-error", "", f"{left} notification(s) or hook command(s) not done after "
                      f"{FLUSH_S:g}s at the run's end: left behind (a running hook command goes on by itself)")

    def _report(self, engine: Any) -> None:
        while not self._errors.empty():
            self._log(engine, *self._errors.get())

    def _log(self, engine: Any, kind: str, task: str, text: str) -> None:
        try:
            engine._event(kind, task, text)
            engine.store.log_event(task or None, kind, {"error": text})
        except Exception:  # noqa: BLE001 - the run's own writes report a broken state folder
            pass

    # ----------------------------------------------------------------- messages
    def _title(self) -> str:
        return f"rota: {self.spec.file.name or Path(self.spec.path).name}"

    def _failed_text(self, engine: Any, lv: Live) -> tuple[str, str]:
        code = "" if lv.exit_code is None else f", exit code {lv.exit_code}"
        body = (f"Task {lv.task.name!r} failed for good after {lv.attempts} attempt(s): {lv.reason or 'failed'}"
                f"{code}.\nLog: {lv.log_path}\nRun {engine.run_id} on {socket.gethostname()}, "
                f"state {self.state_dir}")
        return f"{self._title()}: task {lv.task.name} failed", body

    def _end_text(self, engine: Any, code: int, outcome: str, counts: Mapping[str, int]) -> tuple[str, str]:
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        took_s = time.time() - engine.started_at
        more = (f"\n{self.failed_unsent} more task failure(s) were not sent one by one."
                if self.failed_unsent else "")
        body = (f"The run {outcome} after {took_s:.0f}s with exit code {code}: {summary or 'no tasks'}.{more}\n"
                f"Run {engine.run_id} on {socket.gethostname()}, state {self.state_dir}")
        return f"{self._title()}: run {outcome} ({summary})", body

    # ----------------------------------------------------------------- jobs
    def _send(self, task: str, title: str, body: str, kind: str) -> None:
        if self._sends is None:
            return
        for service in self.services:
            self._sends.put(task, functools.partial(self._send_one, service, title, body, kind))

    def _send_one(self, service: Any, title: str, body: str, kind: str) -> str | None:
        """Send on a thread of its own, given up after the timeout (a hung service never returns)."""
        import apprise

        result: list[bool] = []
        errors: list[str] = []

        def send() -> None:
            try:
                result.append(bool(service.notify(body=body, title=title, notify_type=getattr(
                    apprise.NotifyType, kind.upper(), apprise.NotifyType.INFO))))
            except Exception as e:  # noqa: BLE001 - reported as this send's error
                errors.append(f"{type(e).__name__}: {e}")
            if result == [False]:
                errors.append(self._phrases.last.pop(threading.get_ident(), "it reported a failure"))

        th = threading.Thread(target=send, daemon=True, name="rota-notify-send")
        th.start()
        th.join(self.timeout_s)
        where = _private_url(service)
        if th.is_alive():
            return f"{where}: no answer within {self.timeout_s:g}s; given up (the run goes on)"
        return f"{where}: {errors[0]}" if errors else None

    def _run_cmd(self, task: str, cmd: str, env: dict[str, str], cwd: str) -> None:
        if self._cmds is not None:
            self._cmds.put(task, lambda: run_hook(cmd, env, cwd, self.hooks_log, task))


def run_outcome(engine: Any) -> tuple[int, str]:
    """The run's exit code (as the engine returns it) and ``finished`` or ``stopped``."""
    if engine.interrupts:
        return 130, "stopped"
    ok = all(lv.state in S.DONE_OK for lv in engine.live.values())
    return (0 if ok else 1), ("stopped" if engine.halted else "finished")


def attempt_env(engine: Any, lv: Live) -> dict[str, str]:
    """The environment ``lv``'s latest attempt ran with (as the engine's launch builds it), for its hooks."""
    t, p = lv.task, lv.placement
    public = {k: v for k, v in lv.params.items() if not k.startswith("_")} if lv.params else lv.params
    env = inherited_env(os.environ)
    env.update(A.task_env(
        t, machine=engine.machine, gpus=p.gpus if p is not None else (), run_id=engine.run_id,
        state_dir=engine.state_dir, out=lv.out or A.out_dir(engine.state_dir, t.name), attempt=lv.attempt,
        attempt_id=lv.attempt_id, key=f"{t.name}#{lv.attempt}",
        needs_out={n: A.out_dir(engine.state_dir, n) for n in t.needs}, params=public,
        gpu_memory_bytes=p.gpu_bytes[0] if p is not None and p.gpu_bytes else None,
    ))
    env["ROTA_COMMAND"] = t.command
    env["ROTA_WORKDIR"] = os.path.abspath(t.workdir)
    return env


def run_hook(cmd: str, env: Mapping[str, str], cwd: str, log_path: str, task: str,
             timeout_s: float = HOOK_TIMEOUT_S) -> str | None:
    """Run one hook command (``bash -c``) to its end, its output appended to ``log_path``; the
    error text if it failed, timed out (its process group is killed) or could not start."""
    label = f"{task}: " if task else ""
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {label}{cmd}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, start_new_session=True)
        except OSError as e:
            return f"hook command {cmd!r} could not start: {e.strerror or e}"
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return f"hook command {cmd!r} ran past {timeout_s:g}s and was killed (output in {log_path})"
    if rc != 0:
        return f"hook command {cmd!r} exited with code {rc} (output in {log_path})"
    return None


def _private_url(service: Any) -> str:
    try:
        return str(service.url(privacy=True))
    except Exception:  # noqa: BLE001 - any service object still names its kind
        return type(service).__name__
