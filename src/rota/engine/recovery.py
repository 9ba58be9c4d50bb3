"""Engine part: bring the store in line with the spec; recover a dead controller's attempts."""

from __future__ import annotations

import fnmatch
import json
import os
import statistics
import time
from typing import Any

from rota.core.dag import blocked
from rota.core.resources import Placement
from rota.engine import attempt as A
from rota.engine import runstate as R
from rota.engine import runstate_attempt as RA
from rota.engine import runstate_control as RC
from rota.engine.launching import Launching
from rota.engine.state import Live
from rota.executors.base import Handle
from rota.spec.graph import critical_path_ranks
from rota.spec.model import Task
from rota.store import base as S


class Recovery(Launching):
    def _sync(self) -> None:
        """Bring the store in line with the spec; recover attempts of a dead controller."""
        self.run_id = self.store.get_meta("run_id") or time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        m = self.machine
        machine_json = json.dumps({
            "gpus": [{"index": g.index, "memory_bytes": g.memory_bytes, "name": g.name, "uuid": g.uuid} for g in m.gpus],
            "cpus": m.cpus, "memory_bytes": m.memory_bytes, "source": m.source, "cpus_from": m.cpus_from,
            # rota why without a controller explains on what the run books: + slots booked ahead (Ray)
            "memory_from": m.memory_from, "cpus_ahead": self.launch_machine.cpus_ahead,
            "executor": self.executor.name,
        })
        self.store.set_meta({"run_id": self.run_id, "spec_path": self.spec.path, "app": "rota", "machine": machine_json})
        existing = {r.name: r for r in self.store.tasks()}
        rows = []
        adopt: list[tuple[Task, Any]] = []
        self.forced = {t.name for t in self.spec.tasks if any(fnmatch.fnmatchcase(t.name, p) for p in self.opt.rerun)}
        for t in self.spec.tasks:
            fp = A.fingerprint(t)
            rec = existing.get(t.name)
            forced = t.name in self.forced
            lv = Live(t, S.PENDING)
            if rec is not None:
                lv.attempt = rec.attempt  # numbers go on from its latest attempt, whatever is reset
            if rec is not None and rec.state in S.ACTIVE:
                adopt.append((t, rec))
                lv.state = rec.state
            elif rec is not None and rec.state in S.DONE_OK and rec.fingerprint == fp and not forced and (
                rec.state == S.SUCCEEDED or A.outputs_exist(t)
            ):
                lv.state = rec.state
                lv.attempts = rec.attempts
                lv.exit_code, lv.reason = rec.exit_code, rec.reason
                lv.started_at, lv.ended_at, lv.log_path = rec.started_at, rec.ended_at, rec.log_path
            elif rec is not None and rec.state == S.CANCELLED and rec.fingerprint == fp and not forced:
                # rota cancel stands until rota retry, --rerun or a changed command (control.start skips its users)
                lv.state, lv.attempts, lv.reason, lv.ended_at = rec.state, rec.attempts, rec.reason, rec.ended_at
            else:
                rows.append(self._row(t, fp, S.PENDING))
            self.live[t.name] = lv
        for t in self.spec.tasks:
            for n in t.needs:
                self.rs.dependents.setdefault(n, []).append(t.name)
        if self.opt.rerun_dependents:
            rows.extend(self._stale_dependents())
        self.kept = {t.name for t in self.spec.tasks if self.live[t.name].state in S.DONE_OK}
        # One write for the whole sync; each task that existed and goes back to pending gets a
        # RESET event (runstate.reset: what its rewritten row means) for the journal.
        self.store.upsert_tasks(rows, event="sync", resets=[r["name"] for r in rows if r["name"] in existing])
        for t, rec in adopt:
            self._recover(t, rec)
        self._learn_estimates()
        self.rs.count_unmet()
        self._apply([R.made_ready(t.name) for t in self.spec.tasks
                     if self.live[t.name].state == S.PENDING and self.live[t.name].unmet == 0])

    def _stale_dependents(self) -> list[dict[str, Any]]:
        """Rows that send back to pending every task kept as done whose needs run again (as make does).

        A task runs again in this run when it is not kept as done (``--rerun``, a
        changed command, a failure before); whatever used its output is stale, so
        each transitive dependent that had succeeded (or was cached) runs again
        after it, even where its declared outputs exist (what it read has changed).
        """
        stays = S.DONE_OK | {S.CANCELLED}  # a kept cancelled task does not run again: nothing it made changes
        again = [t.name for t in self.spec.tasks if self.live[t.name].state not in stays]
        users, live = self.rs.dependents, self.live
        rows: list[dict[str, Any]] = []
        for name, because in blocked(lambda n: users.get(n, ()), again, lambda u: live[u].state in S.DONE_OK):
            lv = live[name]
            lv.state, lv.attempts, lv.exit_code = S.PENDING, 0, None
            lv.started_at = lv.ended_at = lv.log_path = None
            lv.reason = f"needs {because}, which runs again"
            self.stale.add(name)
            row = self._row(lv.task, A.fingerprint(lv.task), S.PENDING)
            row["reason"] = lv.reason
            rows.append(row)
        if rows:
            names = ", ".join(r["name"] for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
            self._event("rerun", "", f"{len(rows)} task(s) that use what runs again run again too: {names}")
        return rows

    def _learn_estimates(self) -> None:
        """Tasks without an estimate use their command's history (as ``rota plan`` does)."""
        missing = [t for t in self.spec.tasks if t.estimate_s is None]
        if not missing:
            return
        history = self.store.durations_by_command()
        if not history:
            return
        for t in missing:
            past = history.get(t.command)
            if past:
                self.learned[t.name] = statistics.median(past)
        if self.learned:
            self.ranks = critical_path_ranks(self.spec.tasks, estimates=self.learned)

    def _row(self, t: Task, fp: str, state: str) -> dict[str, Any]:
        return {
            "name": t.name, "grp": t.group, "fingerprint": fp, "state": state, "attempts": 0,
            "free_attempts": 0, "reason": "", "gpus": [], "gpu_bytes": [], "cpus": t.request.cpus,
            "memory_bytes": t.request.memory_bytes, "vars": t.vars_dict, "estimate_s": t.estimate_s,
            "command": t.command, "trial": t.trial,
        }

    def _recover(self, t: Task, rec: Any) -> None:
        lv = self.live[t.name]
        lv.attempts, lv.free_attempts = rec.attempts, rec.free_attempts
        lv.attempt, lv.attempt_id = rec.attempt, self.store.attempt_id(t.name, rec.attempt)
        lv.started_at, lv.deadline, lv.log_path, lv.out = rec.started_at, rec.deadline, rec.log_path, rec.out_dir
        lv.gpu_override, lv.params = rec.gpu_memory_override, rec.params
        # Its reason says "queued in ..." until its start was seen (Engine._started clears it).
        lv.queued = self._queues and S.is_queued(rec.state, rec.reason or "")
        lv.cancelling = rec.reason == RC.CANCELLING_REASON  # rota cancel begun by the dead controller
        h = Handle.from_json(rec.handle) if rec.handle else self._recover_handle(t.name, rec)
        if h is not None:
            if self.executor.adopt(h):
                placement = Placement(t.name, tuple(rec.gpus), tuple(rec.gpu_bytes), rec.cpus, rec.memory_bytes)
                tr = RA.adopted(lv, h, placement)
                if rec.handle:
                    R.apply(self.rs, [tr])  # its row already says so
                else:
                    self._apply([tr], commit_now=True)
                self._event("adopted", t.name, tr.note)
                for hook in self.hooks:
                    hook.adopted(self, lv)
                return
        else:
            self._stop_unrecorded(t.name, rec.attempt, lv.attempt_id)
        # Vanished with the old controller: run again, not counted against retries.
        tr = RA.lost(lv, time.time())
        self._apply([tr], commit_now=True)
        for hook in self.hooks:
            hook.lost(self, lv)
        self._event("lost", t.name, tr.note)

    def _recover_handle(self, name: str, rec: Any) -> Handle | None:
        """The handle of an attempt that started but whose handle was not committed yet."""
        if not self.executor.finds_unrecorded or rec.state != S.LAUNCHING:
            return None
        h: Handle | None = self.executor.recover(self.state_dir, f"{name}#{rec.attempt}", rec.log_path, rec.started_at or 0.0,
                                attempt_id=self.live[name].attempt_id)
        return h

    def _stop_unrecorded(self, name: str, attempt: int, attempt_id: int | None) -> None:
        """A process may exist whose handle was never committed: find (by its attempt id) and stop it."""
        self.executor.stop_unrecorded(self.state_dir, f"{name}#{attempt}", attempt_id=attempt_id)

    # ------------------------------------------------------------------- run
