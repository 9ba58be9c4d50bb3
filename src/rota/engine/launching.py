"""Engine part: from ready tasks to started attempts (the policy's placements, committed, then submitted).

Every launch is committed as ``launching`` (one transaction per round, with the
round's ends) before any process starts; the handles that come back are staged
for the next commit, and recovery finds an attempt whose handle was never
committed (see :mod:`rota.engine.recovery`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rota.core.policy import Candidate, Running, schedule, sort_key
from rota.core.resources import Placement
from rota.engine import attempt as A
from rota.engine import runstate_attempt as RA
from rota.engine.codever import CodeVersions
from rota.engine.finishing import Finishing
from rota.engine.runstate import Transition
from rota.engine.state import STORAGE_ERRNOS, Live
from rota.executors.base import Handle, Launch, Status
from rota.spec.model import Task


class Launching(Finishing):
    # What rota did not start but must pack around (foreign GPU memory, unhealthy GPUs: see
    # engine/gpu_watch.py), as Running entries the policy books like any other; set through
    # set_outside_bookings only.
    outside_bookings: tuple[Running, ...] = ()

    def set_outside_bookings(self, entries: Sequence[Running]) -> None:
        """Replace the outside bookings; the policy is asked again when they changed."""
        new = tuple(entries)
        if new != self.outside_bookings:
            self.outside_bookings = new
            self._dirty = True

    _gpus_given_back: frozenset[int] = frozenset()  # GPUs live limits took out of the machine (Engine.set_machine)
    _codes: CodeVersions | None = None  # the code behind attempts, per working directory (made at the first launch)

    def _code_of(self, t: Task) -> str | None:
        """The code record of ``t``'s new attempt (JSON text): git is asked once per folder per run."""
        if self._codes is None:
            self._codes = CodeVersions(self.state_dir)
        return self._codes.record(t.workdir, t.command)

    def _candidate(self, lv: Live) -> Candidate:
        prio = lv.task.priority if lv.priority is None else lv.priority  # rota priority's live override
        return Candidate(lv.task.name, self.request_of(lv), prio, self.ranks[lv.task.name],
                         self.estimate_of(lv.task), self.order[lv.task.name])

    def estimate_of(self, t: Task) -> float | None:
        """The spec's estimate, else the median of this command's past successful attempts."""
        return t.estimate_s if t.estimate_s is not None else self.learned.get(t.name)

    def _launch(self, now: float) -> None:
        """Ask the policy for placements, only when something changed since the last ask."""
        if self.halted:
            return
        if self.delayed and any(self.live[n].not_before <= now for n in self.delayed):
            due = {n for n in self.delayed if self.live[n].not_before <= now}
            self.rs.delayed -= due
            self.rs.fresh |= due
            self._dirty = True
        if not self._dirty or not self.ready:
            return
        self._dirty = False
        if self.rs.fresh:
            names = sorted(self.rs.fresh, key=self.order.__getitem__)
            self.rs.fresh.clear()  # before _cache_hits: a skipped task's dependents become fresh in it
            again = [n for n in names if n in self._sorted_names]  # ready again (an OOM retry's new request)
            if again:
                self._drop_sorted(set(again))
            fresh = self._cache_hits([self.live[n] for n in names])
            new = [self._candidate(lv) for lv in fresh]
            self._sorted.extend(new)
            self._sorted.sort(key=sort_key)
            for c in new:
                self._sorted_names[c.name] = c.request
                self._requests[c.request] += 1
        gates = [h for h in self.hooks if h.gates]
        cands = self._sorted
        if self.rs.held:  # rota hold: not launched, still offered once released
            cands = [c for c in cands if c.name not in self.rs.held]
        if gates:
            for g in gates:
                g.begin_gating(self)
            cands = [c for c in cands if all(g.may_launch(self, self.live[c.name]) for g in gates)]
        if not cands:
            return
        running = [Running(lv.placement, self._remaining(lv, now)) for lv in self.running.values() if lv.placement]
        running += self.outside_bookings
        if self._gpus_given_back:  # live limits gave GPUs back: what still runs there is not the policy's
            running = _within(running, self._gpus_given_back)
        placements = schedule(cands, self.launch_machine, running, presorted=True, requests=self._requests.keys())
        if not placements:
            return
        self._drop_sorted({p.task for p in placements})
        self._start(placements, now)

    def _drop_sorted(self, names: set[str]) -> None:
        """Take ``names`` (all in it) out of the policy's ready list and its count of requests."""
        self._sorted = _without(self._sorted, names)
        for n in names:
            req = self._sorted_names.pop(n)
            left = self._requests[req] - 1
            if left:
                self._requests[req] = left
            else:
                del self._requests[req]

    def _remaining(self, lv: Live, now: float) -> float | None:
        est = self.estimate_of(lv.task)
        if est is None or lv.started_at is None:
            return None
        return max(est - (now - lv.started_at), 1.0)

    def _cache_hits(self, ready: list[Live]) -> list[Live]:
        keep = []
        for lv in ready:
            t = lv.task
            if t.outputs and t.name not in self.forced and t.name not in self.stale and A.outputs_exist(t):
                rec = self.store.task(t.name)
                now_fp = A.inputs_fingerprint(list(t.inputs) + self._need_outputs(t))
                if rec is not None and (rec.inputs_fp is None or rec.inputs_fp == now_fp):
                    now = time.time()
                    tr = RA.cached(t.name, now_fp, now)
                    self._apply([tr], commit_now=True)
                    self._settle(tr, now)
                    continue
            keep.append(lv)
        return keep

    def _start(self, placements: Sequence[Placement], now: float) -> None:
        launches: list[tuple[Live, Launch]] = []
        placed: list[Transition] = []
        for p in placements:
            lv = self.live[p.task]
            t = lv.task
            # Numbers never restart (a reset keeps lv.attempt): attempt-N.log is one attempt's alone;
            # the id, from the store, is unique in the state folder (executors find attempts by it).
            attempt, attempt_id = lv.attempt + 1, self.store.new_attempt_id()
            key = f"{t.name}#{attempt}"
            out = A.out_dir(self.state_dir, t.name)
            log = A.log_path(self.state_dir, t.name, attempt)
            params = lv.params
            for hook in self.hooks:
                got = hook.params_for(self, lv)
                if got is not None:
                    params = got
            req = self.request_of(lv)
            needs_out = {n: A.out_dir(self.state_dir, n) for n in t.needs}
            # Keys starting with "_" are hook bookkeeping (stored, never shown to the task).
            public = {k: v for k, v in params.items() if not k.startswith("_")} if params else params
            env = A.task_env(
                t, machine=self.machine, gpus=p.gpus, run_id=self.run_id, state_dir=self.state_dir, out=out,
                attempt=attempt, attempt_id=attempt_id, key=key, needs_out=needs_out, params=public,
                gpu_memory_bytes=(p.gpu_bytes[0] if p.gpu_bytes else None),
            )
            command = A.render_command(t, out, public, run_id=self.run_id, attempt=attempt)
            env["ROTA_COMMAND"] = t.command  # what made its checkpoints (rota.shard records it)
            frac = 1.0
            if p.gpus and req.gpu_memory_bytes is not None:
                frac = min(1.0, req.gpu_memory_bytes / self.machine.gpu(p.gpus[0]).memory_bytes)
            launch = Launch(
                key=key, task=t.name, attempt=attempt, attempt_id=attempt_id, command=command, env=env,
                workdir=t.workdir,
                log_path=log, gpus=p.gpus, gpu_count=req.gpus, gpu_memory_bytes=req.gpu_memory_bytes,
                gpu_fraction=frac, cpus=req.cpus, memory_bytes=req.memory_bytes, timeout_s=t.timeout_s,
                grace_s=self.opt.grace_s, halt_path=self._halt_path,
                estimate_s=self.estimate_of(t), array_group=t.group,
            )
            # A backend that queues arms the timeout when the attempt really starts (see _poll);
            # one that enforces timeouts itself needs no deadline here.
            deadline = now + t.timeout_s if t.timeout_s and not (self._queues or self._enforces_timeout) else None
            placed.append(RA.placed(lv, p, attempt=attempt, attempt_id=attempt_id, now=now, deadline=deadline,
                                   log_path=log, out=out, params=params, code=self._code_of(t)))
            launches.append((lv, launch))
        self._apply(placed)
        self._flush()  # ends of this round and the launches: one commit, before any process starts
        for lv, _ in launches:
            self._prepare_out(lv)
        handles = self._submit([la for _, la in launches])
        full = [h for h in handles if isinstance(h, OSError) and h.errno in STORAGE_ERRNOS]
        if full:  # a log could not be written: the state folder's problem, not the tasks'
            for (lv, _la), h in zip(launches, handles, strict=True):
                lv.handle = h if isinstance(h, Handle) else None
            raise full[0]
        queued_in = self.executor.name if self._queues else ""
        self._apply([RA.submitted(lv, h, queued_in=queued_in) for (lv, _la), h in zip(launches, handles, strict=True)])
        # Staged, not committed now: a controller that dies first leaves these attempts "launching"
        # without a handle, and recovery finds them again (executor.recover: by environment, or
        # by their exit-status file). Executors that cannot do that get their handles committed now.
        if not self.executor.finds_unrecorded:
            self._flush()
        for lv, launch in launches:
            gp = f" on GPU {','.join(map(str, launch.gpus))}" if launch.gpus else ""
            self._event("start", lv.task.name, f"attempt {lv.attempt}{gp}")
            if lv.handle is None:
                self._end_attempt(lv, Status("failed", None, lv.reason), time.time())

    def _prepare_out(self, lv: Live) -> None:
        """The attempt's output folder: kept for a retry, a fresh one for a new run (see A.prepare_out)."""
        t, out = lv.task, lv.out or "."
        paths = list(t.inputs) + self._need_outputs(t)
        made = {"key": A.output_key(t), "inputs": A.inputs_fingerprint(paths) if paths else None,
                "needs": {n: A.out_id(A.out_dir(self.state_dir, n)) for n in t.needs}}
        why = A.prepare_out(self.state_dir, t.name, out, made)
        if why is not None:
            self._event("fresh", t.name, f"{why}; the old folder waits in "
                        f"{A.previous_dir(self.state_dir, t.name)} until this run succeeds")

    def _submit(self, launches: list[Launch]) -> list[Handle | Exception]:
        if len(launches) > 1 and self.executor.batches_submits:
            try:
                return list(self.executor.submit_many(launches))
            except Exception as e:  # noqa: BLE001 - reported per task
                return [e] * len(launches)
        out: list[Handle | Exception] = []
        for la in launches:
            try:
                out.append(self.executor.submit(la))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


def _within(running: list[Running], gone: frozenset[int]) -> list[Running]:
    """``running`` with the bookings on GPUs in ``gone`` (no longer the machine's) left out."""
    out = []
    for r in running:
        p = r.placement
        if gone.intersection(p.gpus):
            kept = [(g, b) for g, b in zip(p.gpus, p.gpu_bytes, strict=True) if g not in gone]
            p = Placement(p.task, tuple(g for g, _ in kept), tuple(b for _, b in kept), p.cpus, p.memory_bytes)
            r = Running(p, r.remaining_s, r.outside)
        out.append(r)
    return out


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
