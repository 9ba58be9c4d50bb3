"""Engine part: what happens when an attempt ends (success, retry, failure, skip, Ctrl-C)."""

from __future__ import annotations

import time
from typing import Any

from rota.engine import attempt as A
from rota.engine.state import EXIT_INTERRUPTED, EngineState, Live
from rota.executors.base import Status
from rota.store import base as S
from rota.store.sqlite import Change


class Finishing(EngineState):
    def _end_attempt(self, lv: Live, st: Status, now: float) -> None:
        t = lv.task
        for hook in self.hooks:  # a hook may reinterpret the end (a sweep trial stopped by its pruner)
            st = getattr(hook, "outcome", lambda *_: None)(self, lv, st) or st
        self.running.pop(t.name, None)
        metrics = A.read_metrics(lv.log_path, lv.out)
        attempt_row: dict[str, Any] = {"attempt": lv.attempts, "ended_at": now, "exit_code": st.exit_code}
        moved: dict[str, Any] = {}  # the task row's start, rewritten only when it moved (not on the common path)
        # It waited in the backend's queue (queue-ahead): its run, and the durations that estimates
        # are learnt from, begin when it really started (the task's own clock; never before it
        # was submitted, in case that node's clock is behind).
        submitted = (lv.handle.data.get("submitted_at") if lv.handle is not None else None) or lv.started_at
        if (self._enforces_timeout and st.started_at is not None and submitted is not None
                and submitted <= st.started_at < now and st.started_at != lv.started_at):
            lv.started_at = attempt_row["started_at"] = moved["started_at"] = st.started_at
        if st.phase == "succeeded":
            # Before the commit: a crash between the two reruns a finished task from scratch, never
            # lets a later run of it take the finished folder for checkpoints to resume.
            A.out_succeeded(self.state_dir, t.name, lv.out)
            inputs_fp = A.inputs_fingerprint(list(t.inputs) + self._need_outputs(t)) if t.outputs else None
            attempt_row.update(state=S.SUCCEEDED, reason=st.reason)
            self._stage(Change(t.name, S.ACTIVE, "succeeded", {
                "state": S.SUCCEEDED, "exit_code": 0, "reason": "", "ended_at": now, "handle": None,
                "inputs_fp": inputs_fp, **moved}, attempt_row, metrics))
            lv.exit_code, lv.reason, lv.ended_at = 0, "", now
            self._finished_hooks(lv, S.SUCCEEDED, metrics)
            self._finish(lv, S.SUCCEEDED, f"done in {now - (lv.started_at or now):.1f}s")
            return
        reason = "timeout" if lv.timed_out else (st.reason or "failed")
        log_tail = A.tail(lv.log_path)
        oom = A.is_oom(log_tail)
        if oom:
            reason = "cuda out of memory"
        free = st.retry_free or st.phase == "lost"
        counted = lv.attempts - lv.free_attempts - (1 if free else 0)
        retry = free or counted <= t.retries
        attempt_row.update(state="lost" if st.phase == "lost" else S.FAILED, reason=reason)
        if self.interrupts:
            retry = False
        if retry:
            delay = 0.0 if free else min(self.opt.retry_delay_s * 2 ** max(counted - 1, 0), 300.0)
            override = lv.gpu_override
            if oom and t.request.gpus:
                override = self._bigger_booking(lv)
            fields: dict[str, Any] = {"state": S.PENDING, "exit_code": st.exit_code, "reason": reason, "ended_at": now,
                                      "handle": None, "not_before": now + delay, "gpu_memory_override": override}
            if free:
                fields["free_attempts"] = lv.free_attempts + 1
            self._stage(Change(t.name, S.ACTIVE, "retry", fields, attempt_row, metrics))
            lv.state, lv.handle, lv.gpu_override = S.PENDING, None, override
            lv.exit_code, lv.reason = st.exit_code, reason
            if free:
                lv.free_attempts += 1
            self._finished_hooks(lv, S.FAILED, metrics)
            self._make_ready(t.name, now + delay)
            extra = f"; booking {override / 2**30:.0f}GB per GPU" if oom and override else ""
            self._event("retry", t.name, f"{reason}; retry in {delay:.0f}s{extra} ({lv.log_path})")
            return
        self._stage(Change(t.name, S.ACTIVE, "failed", {
            "state": S.FAILED, "exit_code": st.exit_code, "reason": reason, "ended_at": now, "handle": None,
            **moved},
            attempt_row, metrics))
        lv.exit_code, lv.reason, lv.ended_at = st.exit_code, reason, now
        self._finished_hooks(lv, S.FAILED, metrics)
        self._finish(lv, S.FAILED, f"{reason} ({lv.log_path})")

    def _finished_hooks(self, lv: Live, state: str, metrics: dict[str, float]) -> None:
        # A hook that acts on the end outside rota's store (a sweep tells its study) sees it committed.
        if any(getattr(h, "commit_before_finished", False) for h in self.hooks):
            self._flush()
        self._hook("finished", lv, state, metrics)

    def _bigger_booking(self, lv: Live) -> int:
        """After an OOM: double the booking, up to the largest GPU that fits the pool."""
        req = self.request_of(lv)
        pool = [g for g in self.machine.gpus if req.devices is None or g.index in req.devices]
        largest = max(g.memory_bytes for g in pool)
        current = req.gpu_memory_bytes
        if current is None:
            return largest
        return min(max(current * 2, current + 2**30), largest)

    def _finish(self, lv: Live, state: str, text: str) -> None:
        lv.state = state
        self._unready(lv.task.name)
        self._dirty = True
        self._event(state, lv.task.name, text)
        if state in S.DONE_OK:
            for u in self.users.get(lv.task.name, []):
                ul = self.live[u]
                ul.unmet -= 1
                if ul.unmet == 0 and ul.state == S.PENDING:
                    self._make_ready(u)
        else:
            self._skip_dependents(lv.task.name)
            if state == S.FAILED and self.opt.fail_fast:
                self._halt(lv.task.name, "failed (--fail-fast)")

    def _skip_dependents(self, name: str) -> None:
        stack = list(self.users.get(name, []))
        changes = []
        while stack:
            u = stack.pop()
            ul = self.live[u]
            if ul.state != S.PENDING:
                continue
            ul.state = S.SKIPPED
            ul.reason = f"needs {name}, which did not succeed"
            self._unready(u)
            changes.append(Change(u, S.PENDING, "skipped", {"state": S.SKIPPED, "reason": ul.reason}))
            self._event(S.SKIPPED, u, ul.reason)
            stack.extend(self.users.get(u, []))
        self._stage(*changes)

    # ------------------------------------------------------------- interrupt
    def _interrupt(self) -> int:
        self._event("interrupt", "", "stopping: terminating running tasks (Ctrl-C again to kill at once)")
        if self.running:
            self._poll(time.time())  # attempts that already ended keep their real outcome (not "interrupted")
        self._flush()
        handles = [lv.handle for lv in self.running.values() if lv.handle is not None]
        if handles:
            self.executor.cancel(handles, self.opt.grace_s)
        now = time.time()
        changes = [
            Change(lv.task.name, S.ACTIVE, "interrupted", {"state": S.INTERRUPTED, "reason": "interrupted",
                                                          "ended_at": now, "handle": None},
                   {"attempt": lv.attempts, "state": S.INTERRUPTED, "ended_at": now, "reason": "interrupted"})
            for lv in self.running.values()
        ]
        if changes:
            self.store.apply(changes)
        for lv in self.running.values():
            lv.state = S.INTERRUPTED
            self._hook("finished", lv, S.INTERRUPTED, {})
        self.running.clear()
        return EXIT_INTERRUPTED

