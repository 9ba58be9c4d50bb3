"""Engine part: what happens when an attempt ends (success, retry, failure, skip, Ctrl-C).

The decisions are pure (:func:`rota.engine.runstate_attempt.ended`, :func:`~rota.engine.runstate.released`,
:func:`~rota.engine.runstate_attempt.interrupted`); this part reads what they need (metrics, the log's
tail, fingerprints), applies the transitions, and runs the hooks and the UI around them.
"""

from __future__ import annotations

from rota.engine import attempt as A
from rota.engine import runstate as R
from rota.engine import runstate_attempt as RA
from rota.engine.runstate import Op, Transition
from rota.engine.state import EngineState, Live
from rota.executors.base import Status
from rota.store import base as S


class Finishing(EngineState):
    def _end_attempt(self, lv: Live, st: Status, now: float) -> None:
        t = lv.task
        for hook in self.hooks:  # a hook may reinterpret the end (a sweep trial stopped by its pruner)
            st = hook.outcome(self, lv, st) or st
        metrics = A.read_metrics(lv.log_path, lv.out)
        # It waited in the backend's queue (queue-ahead): its run, and the durations that estimates
        # are learnt from, begin when it really started (the task's own clock; never before it
        # was submitted, in case that node's clock is behind).
        submitted = (lv.handle.data.get("submitted_at") if lv.handle is not None else None) or lv.started_at
        moved = None
        if (self._enforces_timeout and st.started_at is not None and submitted is not None
                and submitted <= st.started_at < now and st.started_at != lv.started_at):
            moved = st.started_at
        if st.phase == "succeeded":
            # Before the commit: a crash between the two reruns a finished task from scratch, never
            # lets a later run of it take the finished folder for checkpoints to resume.
            A.out_succeeded(self.state_dir, t.name, lv.out)
            inputs_fp = A.inputs_fingerprint(list(t.inputs) + self._need_outputs(t)) if t.outputs else None
            end = RA.End("succeeded", st.exit_code, st.reason, now, metrics=metrics, inputs_fp=inputs_fp,
                        started_at=moved)
        else:
            oom = A.is_oom(A.tail(lv.log_path))
            booking = self._bigger_booking(lv) if oom and t.request.gpus else None
            end = RA.End(st.phase, st.exit_code, st.reason, now, retry_free=st.retry_free, metrics=metrics,
                        started_at=moved, oom=oom, oom_booking=booking)
        tr = RA.ended(lv, end, retry_delay_s=self.opt.retry_delay_s, interrupting=bool(self.interrupts))
        self._apply([tr])
        self._finished_hooks(lv, S.SUCCEEDED if tr.kind is Op.SUCCEEDED else S.FAILED, metrics)
        self._settle(tr, now)

    def _finished_hooks(self, lv: Live, state: str, metrics: dict[str, float]) -> None:
        # A hook that acts on the end outside rota's store (a sweep tells its study) sees it committed.
        if any(h.commit_before_finished for h in self.hooks):
            self._flush()
        for hook in self.hooks:
            hook.finished(self, lv, state, metrics)

    def _bigger_booking(self, lv: Live) -> int:
        """After an OOM: double the booking, up to the largest GPU that fits the pool."""
        req = self.request_of(lv)
        pool = [g for g in self.machine.gpus if req.devices is None or g.index in req.devices]
        largest = max(g.memory_bytes for g in pool)
        current = req.gpu_memory_bytes
        if current is None:
            return largest
        return min(max(current * 2, current + 2**30), largest)

    def _settle(self, tr: Transition, now: float) -> None:
        """After a task's end (or cache hit) is applied: its line on the UI, its dependents made
        ready or skipped (or itself ready again for a retry), ``--fail-fast``."""
        self._dirty = True
        self._event(tr.kind.value, tr.task, tr.note)
        follow = R.released(self.rs, tr.task, now)
        if follow:
            self._apply(follow)
            for f in follow:
                if f.kind is Op.SKIPPED:
                    self._event(S.SKIPPED, f.task, f.note)
        if tr.kind is Op.FAILED and self.opt.fail_fast:
            self._halt(tr.task, "failed (--fail-fast)")
