"""The engine: the one loop where the policy, the store and an executor meet.

Contract: every state change is committed to the store *before* it is acted
on (``launching`` before a process starts, the end state before dependents are
released). A controller killed at any point leaves a state that the next
``Engine.run()`` continues from: still-running attempts are adopted, attempts
that vanished are run again without counting against ``retries``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence

from rota.core.policy import Candidate
from rota.core.resources import Machine, Request, with_cpu_headroom
from rota.engine import control, drain
from rota.engine import runstate_attempt as RA
from rota.engine.hooks import UI, Hook
from rota.engine.recovery import Recovery
from rota.engine.runstate import RunState
from rota.engine.state import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, STORAGE_ERRNOS, Live, Options
from rota.engine.wake import Waker
from rota.executors.base import Executor
from rota.spec.graph import critical_path_ranks
from rota.spec.load import Spec
from rota.store import base as S
from rota.store.sqlite import Change, SqliteStore, storage_error

__all__ = ["Engine", "Options"]

STAGE_WAIT_S = 0.05  # how long staged transitions may wait for the next commit when the loop is idle


class Engine(Recovery):
    """Runs a spec to completion on one executor. Not reentrant."""

    def __init__(
        self,
        spec: Spec,
        machine: Machine,
        store: SqliteStore,
        executor: Executor,
        *,
        options: Options | None = None,
        ui: UI | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.spec = spec
        self.machine = machine
        self.base_machine = machine  # what live limits' --gpus indices pick from (rota.engine.respec)
        self.store = store
        self.executor = executor
        self.opt = options or Options()
        self.ui = ui
        self.hooks = list(hooks)
        self.state_dir = str(store.state_dir)
        self.run_id = ""
        self._queues = executor.queues
        self._enforces_timeout = executor.enforces_timeout
        # The run's state (tasks, dependents, ready, running attempts): filled by _sync, changed by
        # runstate.apply only.
        self.rs = RunState(queues=self._queues)
        self.ranks = critical_path_ranks(spec.tasks)
        self.learned: dict[str, float] = {}  # name -> seconds, from history (filled in _sync)
        self.kept: set[str] = set()
        self.stale: set[str] = set()
        self.order = {t.name: i for i, t in enumerate(spec.tasks)}
        self._sorted: list[Candidate] = []  # candidates of ready tasks, in policy order
        self._sorted_names: dict[str, Request] = {}  # the tasks in _sorted, with their requests
        self._requests: Counter[Request] = Counter()  # how many of _sorted ask for each request
        self._dirty = True  # something changed since the policy was last asked
        self._staged: list[Change] = []  # transitions not yet committed (see _stage/_flush)
        self._staged_handles: dict[str, int] = {}
        self.interrupts = 0
        self.stop_signal = 0  # the first stop signal: SIGINT is Ctrl-C, SIGTERM 'rota stop' (or kill)
        self.halted = False
        self._wake = Waker()  # set() from signal handlers: must not take a lock
        self.control_woken = False  # SIGUSR1: a control request was committed (rota cancel, ...)
        self.controls_at = 0.0  # when requests were last looked for (engine.control.tick)
        self._staged_batch = (0, 0.0)  # id of the staged list and when _sleep first saw it (see _sleep)
        self.started_at = time.time()
        self.events: list[tuple[float, str, str, str]] = []
        ahead = float(executor.queue_ahead or 0.0) if self._enforces_timeout else 0.0
        self.launch_machine = with_cpu_headroom(self.machine, ahead)
        # Attempts booked ahead may still wait in the backend's queue when the run halts: this marker
        # (written by _halt) tells them not to start.
        self._halt_path = drain.halt_path(self.state_dir, os.getpid()) if ahead > 0 else None

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
            self.executor.discard_status(handles)
        self.running.clear()
        self._staged.clear()
        self._staged_handles.clear()

    def _run(self) -> int:
        drain.discard_stale(self.state_dir, os.getpid())
        drain.clear_halt_markers(self.state_dir)
        self._sync()
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        old_chld = signal.signal(signal.SIGCHLD, lambda *_: self._wake.set())
        old_usr1 = signal.signal(signal.SIGUSR1, self._on_control)
        try:
            if self.ui is not None:  # under the engine's handlers: a Ctrl-C never cuts a frame short
                self.ui.start(self)
            for hook in self.hooks:
                hook.start(self)
            control.start(self)  # after the handler: a request committed from now on wakes the loop
            code = self._loop()
        except (sqlite3.OperationalError, OSError) as e:
            err = self._storage_error(e)
            if err is not None:
                self._stop_all_for_storage(str(err))
            raise
        finally:
            try:
                for hook in self.hooks:
                    hook.stop(self)
                if self.ui is not None:
                    # Still under the engine's handlers: a Ctrl-C now must not raise KeyboardInterrupt
                    # inside the dashboard's last frame (it left a half-drawn box border behind).
                    self.ui.stop(self)
                self.executor.close()
            finally:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
                signal.signal(signal.SIGCHLD, old_chld)
                signal.signal(signal.SIGUSR1, old_usr1)
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self.interrupts += 1
        self.stop_signal = self.stop_signal or signum
        self._wake.set()
        if self.interrupts >= 2:
            self.executor.kill_now([lv.handle for lv in self.running.values() if lv.handle])

    def _on_control(self, signum: int, frame: object) -> None:
        self.control_woken = True
        self._wake.set()

    def _loop(self) -> int:
        last_ui = 0.0
        while True:
            if self.interrupts:
                return self._interrupt()
            if not self.halted and drain.take(self.state_dir, os.getpid()):
                self._halt("", "asked to drain (rota stop --drain)")
            now = time.time()
            control.tick(self, now)
            if self.running:
                self._poll(now)
            self._timeouts(now)
            self._launch(now)
            for hook in self.hooks:
                hook.tick(self, now)
            if not self.running and (self.halted or not self._pending_left()):
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
        if self.ui is not None:
            self.ui.flush()
        if self._staged and sleep_s > STAGE_WAIT_S:
            # Wake-ups cut the wait short (a backend's squeue exiting sends SIGCHLD every round): a
            # batch that already waited STAGE_WAIT_S is committed anyway, or a busy loop would hold it
            # back until the run's end. (A batch is its list: _flush starts a new one. Were a new list
            # to reuse the old one's id, it would only be committed early.)
            if self._staged_batch[0] != id(self._staged):
                self._staged_batch = (id(self._staged), now)
            waited = now - self._staged_batch[1]
            if waited < STAGE_WAIT_S and self._wake.wait(STAGE_WAIT_S - waited):
                self._wake.clear()
                return
            self._flush()
            sleep_s -= STAGE_WAIT_S
        self._wake.wait(sleep_s)
        self._wake.clear()

    def set_machine(self, machine: Machine) -> None:
        """Live limits (``rota run --cpus/--gpus/--memory`` on a live run): the policy books against
        ``machine`` from the next round; attempts on GPUs it leaves out finish there, untouched."""
        ahead = float(self.executor.queue_ahead or 0.0) if self._enforces_timeout else 0.0
        self.machine = machine
        self.launch_machine = with_cpu_headroom(machine, ahead)
        self._gpus_given_back = frozenset(self.base_machine.gpu_indices) - frozenset(machine.gpu_indices)
        self._dirty = True

    def _pending_left(self) -> bool:
        # Pending tasks are either ready (possibly delayed by a retry back-off) or waiting on
        # needs that are running or pending; when nothing runs and nothing is ready, none can start.
        # Held tasks (rota hold) do not keep a run going: with only them left it ends, they stay held.
        return bool(self.ready) and not (self.rs.held and self.ready <= self.rs.held)

    def _sleep_for(self, now: float) -> float:
        t = self.opt.poll_interval_s
        for lv in self.running.values():
            if lv.deadline is not None:
                t = min(t, max(lv.deadline - now, 0.0))
        if self.delayed:
            t = min(t, max(min(self.live[n].not_before for n in self.delayed) - now, 0.0))
        return max(t, 0.001)

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
        deadline = started_at + lv.task.timeout_s if lv.task.timeout_s and not self._enforces_timeout else lv.deadline
        self._apply([RA.started(lv, started_at, deadline)])

    def _timeouts(self, now: float) -> None:
        for lv in list(self.running.values()):
            if lv.deadline is not None and now >= lv.deadline and not lv.timed_out and lv.handle is not None:
                tr = RA.timed_out(lv)
                self._apply([tr], commit_now=True)  # recorded before it is stopped
                self._event("timeout", lv.task.name, tr.note)
                threading.Thread(target=self.executor.cancel, args=([lv.handle], self.opt.grace_s), daemon=True).start()

    # ------------------------------------------------------------- interrupt
    def _interrupt(self) -> int:
        if self.stop_signal == signal.SIGINT:
            how = "Ctrl-C again to kill them at once"
        else:  # 'rota stop' sends SIGTERM; 'rota stop --now' a second one, which kills at once
            how = "SIGTERM: 'rota stop'; 'rota stop --now' or a second SIGTERM kills them at once"
        self._event("interrupt", "", f"stopping: terminating running tasks, SIGKILL after {self.opt.grace_s:g}s ({how})")
        if self.running:
            self._poll(time.time())  # attempts that already ended keep their real outcome (not "interrupted")
        self._flush()
        handles = [lv.handle for lv in self.running.values() if lv.handle is not None]
        if handles:
            self.executor.cancel(handles, self.opt.grace_s)
            if self.interrupts >= 2:  # the handler of the second signal killed them (kill_now)
                self._event("interrupt", "", "killed the running tasks at once (a second stop signal)")
        stopped = list(self.running.values())
        self._apply(RA.interrupted(self.rs, time.time()), commit_now=True)
        for lv in stopped:
            for hook in self.hooks:
                hook.finished(self, lv, S.INTERRUPTED, {})
        return EXIT_INTERRUPTED
