"""The engine: the one loop where the policy, the store and an executor meet.

Contract: every state change is committed to the store *before* it is acted
on (``launching`` before a process starts, the end state before dependents are
released). A controller killed at any point leaves a state that the next
``Engine.run()`` continues from: still-running attempts are adopted, attempts
that vanished are run again without counting against ``retries``.
"""

from __future__ import annotations

import math
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from rota.core.policy import Candidate, Running, schedule, sort_key
from rota.core.resources import Machine, Placement, Request
from rota.engine import attempt as A
from rota.engine.finishing import Finishing
from rota.engine.recovery import Recovery
from rota.engine.state import EXIT_FAILED, EXIT_OK, STORAGE_ERRNOS, Live, Options, _mkdir
from rota.engine.wake import Waker
from rota.executors.base import Executor, Handle, Launch, Status
from rota.executors.local import discard_rc_files
from rota.spec.graph import critical_path_ranks
from rota.spec.load import Spec
from rota.spec.model import Task
from rota.store import base as S
from rota.store.sqlite import Change, SqliteStore, storage_error

STAGE_WAIT_S = 0.05  # how long staged transitions may wait for the next commit when the loop is idle


class Engine(Recovery, Finishing):
    """Runs a spec to completion on one executor. Not reentrant."""

    def __init__(
        self,
        spec: Spec,
        machine: Machine,
        store: SqliteStore,
        executor: Executor,
        *,
        options: Options | None = None,
        ui: Any = None,
        hooks: Sequence[Any] = (),
    ) -> None:
        self.spec = spec
        self.machine = machine
        self.store = store
        self.executor = executor
        self.opt = options or Options()
        self.ui = ui
        self.hooks = list(hooks)
        self.state_dir = str(store.state_dir)
        self.run_id = ""
        self.live: dict[str, Live] = {}
        self.users: dict[str, list[str]] = {}
        self.ranks = critical_path_ranks(spec.tasks)
        self.learned: dict[str, float] = {}  # name -> seconds, from history (filled in _sync)
        self.order = {t.name: i for i, t in enumerate(spec.tasks)}
        self.ready: set[str] = set()
        self.delayed: set[str] = set()  # ready but waiting for a retry back-off
        self._sorted: list[Candidate] = []  # candidates of ready tasks, in policy order
        self._sorted_names: set[str] = set()
        self._fresh: set[str] = set()  # ready, not delayed, not yet in _sorted (so a round costs O(changes))
        self._dirty = True  # something changed since the policy was last asked
        self.running: dict[str, Live] = {}
        self._staged: list[Change] = []  # transitions not yet committed (see _stage/_flush)
        self._staged_handles: dict[str, int] = {}
        self.interrupts = 0
        self._wake = Waker()  # set() from signal handlers: must not take a lock
        self.started_at = time.time()
        self.events: list[tuple[float, str, str, str]] = []
        self._queues = bool(getattr(executor, "queues", False))

    # ------------------------------------------------------------------ setup
    def run(self) -> int:
        """Run until every task is final or the user interrupts. Returns the exit code.

        If the state folder cannot be written (disk full, read-only), launching
        stops, running tasks are stopped (SIGTERM, grace, SIGKILL) and a
        :class:`~rota.errors.StateError` says so; what was committed stands and
        the next ``run()`` resumes from it (stopped attempts run again, free).
        """
        try:
            return self._run()
        except (sqlite3.OperationalError, OSError) as e:
            err = self._storage_error(e)
            if err is None:
                raise
            raise err from None

    def _storage_error(self, e: BaseException) -> Exception | None:
        if isinstance(e, OSError) and e.errno not in STORAGE_ERRNOS:
            return None
        return storage_error(self.state_dir, e)

    def _stop_all_for_storage(self, why: str) -> None:
        """Stop every running attempt without writing the store; make them rerun on resume."""
        self._event("state-error", "", f"{why}; stopping running tasks")
        handles = [lv.handle for lv in self.running.values() if lv.handle is not None]
        if handles:
            self.executor.cancel(handles, self.opt.grace_s)
            # An attempt we stopped must not be adopted as failed: drop its exit status
            # (kept only if it succeeded on its own) so the next run counts it as lost.
            getattr(self.executor, "discard_status", discard_rc_files)(handles)
        self.running.clear()
        self._staged.clear()
        self._staged_handles.clear()

    def _run(self) -> int:
        self._sync()
        if self.ui is not None:
            self.ui.start(self)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        old_chld = signal.signal(signal.SIGCHLD, lambda *_: self._wake.set())
        try:
            for hook in self.hooks:
                getattr(hook, "start", lambda *_: None)(self)
            code = self._loop()
        except (sqlite3.OperationalError, OSError) as e:
            err = self._storage_error(e)
            if err is not None:
                self._stop_all_for_storage(str(err))
            raise
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGCHLD, old_chld)
            for hook in self.hooks:
                getattr(hook, "stop", lambda *_: None)(self)
            if self.ui is not None:
                self.ui.stop(self)
            self.executor.close()
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self.interrupts += 1
        self._wake.set()
        if self.interrupts >= 2:
            kill = getattr(self.executor, "kill_now", None)
            handles = [lv.handle for lv in self.running.values() if lv.handle]
            if kill is not None:
                kill(handles)

    def _loop(self) -> int:
        last_ui = 0.0
        while True:
            if self.interrupts:
                return self._interrupt()
            now = time.time()
            if self.running:
                self._poll(now)
            self._timeouts(now)
            self._launch(now)
            for hook in self.hooks:
                getattr(hook, "tick", lambda *_: None)(self, now)
            if not self.running and not self._pending_left():
                break
            if self.ui is not None and now - last_ui > 0.2:
                self.ui.refresh(self)
                last_ui = now
            self._sleep(now)
        self._flush()
        if self.ui is not None:
            self.ui.refresh(self)
        states = [lv.state for lv in self.live.values()]
        return EXIT_OK if all(s in S.DONE_OK for s in states) else EXIT_FAILED

    def _sleep(self, now: float) -> None:
        """Wait for a wake-up (a child exited, a signal) or the next deadline.

        Staged transitions (ends, running handles) ride along with the next
        launch's commit when one follows at once; otherwise they are committed
        after STAGE_WAIT_S, so a busy run pays one commit per round, not three
        per task, and an idle one still shows every change within that delay.
        Nothing waits on them: everything that acts on a change flushes first.
        """
        sleep_s = self._sleep_for(now)
        flush = getattr(self.ui, "flush", None)
        if flush is not None:
            flush()
        if self._staged and sleep_s > STAGE_WAIT_S:
            if self._wake.wait(STAGE_WAIT_S):
                self._wake.clear()
                return
            self._flush()
            sleep_s -= STAGE_WAIT_S
        self._wake.wait(sleep_s)
        self._wake.clear()

    def _pending_left(self) -> bool:
        # Pending tasks are either ready (possibly delayed by a retry back-off) or waiting on
        # needs that are running or pending; when nothing runs and nothing is ready, none can start.
        return bool(self.ready)

    def _sleep_for(self, now: float) -> float:
        t = self.opt.poll_interval_s
        for lv in self.running.values():
            if lv.deadline is not None:
                t = min(t, max(lv.deadline - now, 0.0))
        if self.delayed:
            t = min(t, max(min(self.live[n].not_before for n in self.delayed) - now, 0.0))
        return max(t, 0.001)

    # ---------------------------------------------------------------- launch
    def request_of(self, lv: Live) -> Request:
        r = lv.task.request
        if lv.gpu_override is not None and r.gpus:
            r = replace(r, gpu_memory_bytes=lv.gpu_override)
        return r

    def _candidate(self, lv: Live) -> Candidate:
        return Candidate(lv.task.name, self.request_of(lv), lv.task.priority, self.ranks[lv.task.name],
                         self.estimate_of(lv.task), self.order[lv.task.name])

    def estimate_of(self, t: Task) -> float | None:
        """The spec's estimate, else the median of this command's past successful attempts."""
        return t.estimate_s if t.estimate_s is not None else self.learned.get(t.name)

    def _launch(self, now: float) -> None:
        """Ask the policy for placements, only when something changed since the last ask."""
        if self.delayed and any(self.live[n].not_before <= now for n in self.delayed):
            due = {n for n in self.delayed if self.live[n].not_before <= now}
            self.delayed -= due
            self._fresh |= due
            self._dirty = True
        if not self._dirty or not self.ready:
            return
        self._dirty = False
        if self._fresh:
            names = sorted(self._fresh, key=self.order.__getitem__)
            self._fresh.clear()  # before _cache_hits: a skipped task's dependents become fresh in it
            fresh = self._cache_hits([self.live[n] for n in names])
            self._sorted.extend(self._candidate(lv) for lv in fresh)
            self._sorted.sort(key=sort_key)
            self._sorted_names.update(lv.task.name for lv in fresh)
        gates = [g for g in (getattr(h, "may_launch", None) for h in self.hooks) if g is not None]
        cands = self._sorted
        if gates:
            cands = [c for c in cands if all(g(self, self.live[c.name]) for g in gates)]
        if not cands:
            return
        running = [Running(lv.placement, self._remaining(lv, now)) for lv in self.running.values() if lv.placement]
        placements = schedule(cands, self.machine, running, presorted=True)
        if not placements:
            return
        started = {p.task for p in placements}
        self._sorted = _without(self._sorted, started)
        self._sorted_names -= started
        self._start(placements, now)

    def _make_ready(self, name: str, delay_until: float = 0.0) -> None:
        self.ready.add(name)
        self._dirty = True
        lv = self.live[name]
        lv.not_before = delay_until
        if name in self._sorted_names:  # its request may have changed (OOM re-booking)
            self._sorted = _without(self._sorted, {name})
            self._sorted_names.discard(name)
        if delay_until > time.time():
            self.delayed.add(name)
            self._fresh.discard(name)
        else:
            self._fresh.add(name)

    def _unready(self, name: str) -> None:
        self.ready.discard(name)
        self.delayed.discard(name)
        self._fresh.discard(name)
        if name in self._sorted_names:
            self._sorted = _without(self._sorted, {name})
            self._sorted_names.discard(name)

    def _remaining(self, lv: Live, now: float) -> float | None:
        est = self.estimate_of(lv.task)
        if est is None or lv.started_at is None:
            return None
        return max(est - (now - lv.started_at), 1.0)

    def _cache_hits(self, ready: list[Live]) -> list[Live]:
        keep = []
        for lv in ready:
            t = lv.task
            if t.outputs and t.name not in self.forced and A.outputs_exist(t):
                rec = self.store.task(t.name)
                now_fp = A.inputs_fingerprint(list(t.inputs) + self._need_outputs(t))
                if rec is not None and (rec.inputs_fp is None or rec.inputs_fp == now_fp):
                    self.store.transition(t.name, expect=S.PENDING, event="cached", state=S.CACHED,
                                          reason="outputs exist", inputs_fp=now_fp, ended_at=time.time())
                    self._finish(lv, S.CACHED, "outputs exist; skipped")
                    continue
            keep.append(lv)
        return keep

    def _need_outputs(self, t: Task) -> list[str]:
        out: list[str] = []
        for n in t.needs:
            out.extend(self.live[n].task.outputs)
        return out

    def _start(self, placements: Sequence[Placement], now: float) -> None:
        launches: list[tuple[Live, Launch]] = []
        changes = []
        for p in placements:
            lv = self.live[p.task]
            t = lv.task
            attempt = lv.attempts + 1
            key = f"{t.name}#{attempt}"
            out = A.out_dir(self.state_dir, t.name)
            log = A.log_path(self.state_dir, t.name, attempt)
            params = lv.params
            for hook in self.hooks:
                got = getattr(hook, "params_for", lambda *_: None)(self, lv)
                if got is not None:
                    params = got
            req = self.request_of(lv)
            needs_out = {n: A.out_dir(self.state_dir, n) for n in t.needs}
            # Keys starting with "_" are hook bookkeeping (stored, never shown to the task).
            public = {k: v for k, v in params.items() if not k.startswith("_")} if params else params
            env = A.task_env(
                t, machine=self.machine, gpus=p.gpus, run_id=self.run_id, state_dir=self.state_dir, out=out,
                attempt=attempt, key=key, needs_out=needs_out, params=public,
                gpu_memory_bytes=(p.gpu_bytes[0] if p.gpu_bytes else None),
            )
            command = A.render_command(t, out, public)
            frac = 1.0
            if p.gpus and req.gpu_memory_bytes is not None:
                frac = min(1.0, req.gpu_memory_bytes / self.machine.gpu(p.gpus[0]).memory_bytes)
            launch = Launch(
                key=key, task=t.name, attempt=attempt, command=command, env=env, workdir=t.workdir,
                log_path=log, gpus=p.gpus, gpu_count=req.gpus, gpu_memory_bytes=req.gpu_memory_bytes,
                gpu_fraction=frac, cpus=req.cpus, memory_bytes=req.memory_bytes, timeout_s=t.timeout_s,
                estimate_s=self.estimate_of(t), array_group=t.group,
            )
            # A backend that queues arms the timeout when the attempt really starts (see _poll).
            deadline = now + t.timeout_s if t.timeout_s and not self._queues else None
            changes.append(Change(t.name, S.PENDING, "launching", {
                "state": S.LAUNCHING, "attempts": attempt, "gpus": list(p.gpus), "gpu_bytes": list(p.gpu_bytes),
                "cpus": p.cpus, "memory_bytes": p.memory_bytes, "started_at": now, "deadline": deadline,
                "log_path": log, "out_dir": out, "params": params, "handle": None, "exit_code": None, "reason": "",
                "ended_at": None,
            }, {"attempt": attempt, "state": S.LAUNCHING, "gpus": list(p.gpus), "started_at": now,
                "log_path": log, "command": t.command}))
            lv.attempts, lv.placement, lv.started_at, lv.deadline = attempt, p, now, deadline
            lv.log_path, lv.out, lv.params, lv.timed_out, lv.queued = log, out, params, False, self._queues
            launches.append((lv, launch))
        self._stage(*changes)
        self._flush()  # ends of this round and the launches: one commit, before any process starts
        for lv, _ in launches:
            _mkdir(lv.out or ".")
            self.ready.discard(lv.task.name)
            self.delayed.discard(lv.task.name)
            self._fresh.discard(lv.task.name)
            lv.state = S.LAUNCHING
            self.running[lv.task.name] = lv
        handles = self._submit([la for _, la in launches])
        full = [h for h in handles if isinstance(h, OSError) and h.errno in STORAGE_ERRNOS]
        if full:  # a log could not be written: the state folder's problem, not the tasks'
            for (lv, _la), h in zip(launches, handles, strict=True):
                lv.handle = h if isinstance(h, Handle) else None
            raise full[0]
        changes = []
        for (lv, _launch), h in zip(launches, handles, strict=True):
            if isinstance(h, Exception):
                changes.append(Change(lv.task.name, S.LAUNCHING, "submit-failed", {
                    "state": S.RUNNING, "handle": None}))
                lv.handle = None
                lv.reason = f"could not start: {h}"
                continue
            lv.handle = h
            changes.append(Change(lv.task.name, S.LAUNCHING, "running", {"state": S.RUNNING, "handle": h.to_json()},
                                  {"attempt": lv.attempts, "state": S.RUNNING, "handle": h.to_json()}))
        # Staged, not committed now: a controller that dies first leaves these attempts "launching"
        # without a handle, and recovery finds them again (executor.recover: by environment, or
        # by their exit-status file). Executors that cannot do that get their handles committed now.
        self._stage(*changes)
        if getattr(self.executor, "recover", None) is None:
            self._flush()
        for lv, launch in launches:
            lv.state = S.RUNNING
            gp = f" on GPU {','.join(map(str, launch.gpus))}" if launch.gpus else ""
            self._event("start", lv.task.name, f"attempt {lv.attempts}{gp}")
            if lv.handle is None:
                self._end_attempt(lv, Status("failed", None, lv.reason), time.time())

    def _submit(self, launches: list[Launch]) -> list[Handle | Exception]:
        many = getattr(self.executor, "submit_many", None)
        if many is not None and len(launches) > 1:
            try:
                return list(many(launches))
            except Exception as e:  # noqa: BLE001 - reported per task
                return [e] * len(launches)
        out: list[Handle | Exception] = []
        for la in launches:
            try:
                out.append(self.executor.submit(la))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out

    # ------------------------------------------------------------- finishing
    def _poll(self, now: float) -> None:
        handles = [lv.handle for lv in self.running.values() if lv.handle is not None]
        if not handles:
            return
        statuses = self.executor.poll(handles)
        by_key = {lv.handle.key: lv for lv in self.running.values() if lv.handle is not None}
        for key, st in statuses.items():
            lv = by_key.get(key)
            if lv is None:
                continue
            if st.phase != "running":
                self._end_attempt(lv, st, now)
            elif lv.queued and st.started_at is not None:
                self._started(lv, st.started_at)

    def _started(self, lv: Live, started_at: float) -> None:
        """A queued attempt began: its run (status, report) and its timeout count from now on."""
        lv.queued = False
        lv.started_at = started_at
        if lv.task.timeout_s:
            lv.deadline = started_at + lv.task.timeout_s
        self._stage(Change(lv.task.name, S.ACTIVE, "started", {"started_at": started_at, "deadline": lv.deadline},
                           {"attempt": lv.attempts, "state": S.RUNNING, "started_at": started_at}))

    def _timeouts(self, now: float) -> None:
        for lv in list(self.running.values()):
            if lv.deadline is not None and now >= lv.deadline and not lv.timed_out and lv.handle is not None:
                lv.timed_out = True
                self._event("timeout", lv.task.name, f"ran past its timeout of {lv.task.timeout_s:g}s; stopping it")
                threading.Thread(target=self.executor.cancel, args=([lv.handle], self.opt.grace_s), daemon=True).start()

    def _hook(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            fn: Callable[..., Any] | None = getattr(hook, name, None)
            if fn is not None:
                fn(self, *args)

    def _event(self, kind: str, task: str, text: str) -> None:
        ev = (time.time(), kind, task, text)
        self.events.append(ev)
        if len(self.events) > 500:
            del self.events[:250]
        if self.ui is not None:
            self.ui.event(self, ev)

    # --------------------------------------------------------------- queries
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in S.STATES}
        for lv in self.live.values():
            out[lv.state] += 1
        return out

    def eta_s(self, now: float) -> float | None:
        """Rough ETA: remaining estimated work over the machine's parallel capacity."""
        work = 0.0
        known = False
        for lv in self.live.values():
            est = self.estimate_of(lv.task)
            if est is None:
                continue
            if lv.state == S.PENDING:
                work += est
                known = True
            elif lv.state in S.ACTIVE:
                work += max(est - (now - (lv.started_at or now)), 0.0)
                known = True
        if not known:
            return None
        slots = max(len(self.running), 1)
        return work / slots if math.isfinite(work) else None


def _without(cands: list[Candidate], names: set[str]) -> list[Candidate]:
    """``cands`` less ``names``, in order; stops looking once all are found (they sit near the front)."""
    left = len(names)
    out: list[Candidate] = []
    for i, c in enumerate(cands):
        if c.name in names:
            left -= 1
            if not left:
                out.extend(cands[i + 1:])
                return out
        else:
            out.append(c)
    return out
