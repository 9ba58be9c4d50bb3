"""Foreign GPU memory and sick GPUs: what the policy must pack around, read from NVML each poll.

Memory that processes outside rota's attempts hold on a GPU (a colleague's
notebook, a hand-started server) becomes a *foreign booking*: the process's
memory plus a safety margin, as a :class:`~rota.core.policy.Running` entry with
a placement on that GPU named ``pid 4242 (bob, python)``, so the pure policy
packs around it with no special case; a whole-GPU task never lands beside it.
When the process leaves, the booking goes.

A GPU that raises a non-application Xid error, whose uncorrectable ECC count
grows during the run, or that stops answering NVML is *unhealthy* for the rest
of the run: a Running entry books all of it (no new placements), and an attempt
that failed on it runs again elsewhere without counting against ``retries``.
The next ``rota run`` probes every GPU afresh: that is how a user puts one back.

Only for the local backend on NVML GPUs; inside a SLURM allocation foreign
memory is not booked (the scheduler owns the GPUs). The decisions are the pure
functions at the top; :class:`GpuWatch` does the reading (a thread, so a GPU
that hangs NVML never stalls the controller).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psutil

from rota.core.policy import Running
from rota.core.resources import Machine, Placement
from rota.engine.hooks import Hook
from rota.executors.base import Status
from rota.nvml import (
    APPLICATION_XIDS,
    GpuProcess,
    GpuReading,
    NvmlReader,
    process_owner,
    write_notes,
)
from rota.units import format_size

DEFAULT_MARGIN_BYTES = 2**30  # a CUDA context grows after it is first seen; 1 GB keeps a neighbour safe
STALL_S = 30.0  # an NVML call that has not returned for this long: the GPU stopped answering
FAILS_IN_A_ROW = 3  # readings that raised (a timeout, an unknown error) before the GPU counts as gone


@dataclass(frozen=True)
class Holder:
    """A process rota did not start, holding memory on one GPU."""

    gpu: int
    pid: int
    used_bytes: int
    user: str = "?"
    command: str = "?"

    @property
    def label(self) -> str:
        return f"pid {self.pid} ({self.user}, {self.command})"

    def describe(self) -> str:
        return f"GPU {self.gpu}: {format_size(self.used_bytes)} held by pid {self.pid}, user {self.user}, {self.command}"


def foreign_bookings(holders: Iterable[Holder], machine: Machine, margin_bytes: int) -> list[Running]:
    """One Running entry per holder: its memory plus ``margin_bytes`` (at least 1 byte, so a
    whole-GPU task never shares its GPU), capped at the GPU's size; no end known."""
    out = []
    for h in holders:
        total = machine.gpu(h.gpu).memory_bytes
        booked = min(max(h.used_bytes + margin_bytes, 1), total)
        out.append(Running(Placement(h.label, (h.gpu,), (booked,), cpus=0, memory_bytes=0), None, outside=True))
    return out


def sick_bookings(sick: Mapping[int, str], machine: Machine) -> list[Running]:
    """An unhealthy GPU booked whole, for ever: no new placements there."""
    return [Running(Placement(f"GPU {i} unhealthy: {why}", (i,), (machine.gpu(i).memory_bytes,), cpus=0,
                              memory_bytes=0), None, outside=True) for i, why in sorted(sick.items()) if _has(machine, i)]


def sickness(reading: GpuReading, ecc_baseline: int | None, xids: Iterable[int]) -> str:
    """Why ``reading``'s GPU is unhealthy ('' if it is not): lost, a GPU Xid, new uncorrectable ECC errors."""
    if reading.lost:
        return reading.lost
    bad = [x for x in xids if x not in APPLICATION_XIDS]
    if bad:
        return f"Xid {bad[0]} error"
    if reading.ecc_uncorrected is not None and ecc_baseline is not None and reading.ecc_uncorrected > ecc_baseline:
        return f"{reading.ecc_uncorrected - ecc_baseline} uncorrectable ECC error(s) during this run"
    return ""


def _has(machine: Machine, index: int) -> bool:
    return any(g.index == index for g in machine.gpus)


class GpuWatch(Hook):
    """Books foreign GPU memory and takes sick GPUs out (see the module's docstring)."""

    def __init__(self, machine: Machine, *, foreign: bool = True, margin_bytes: int = DEFAULT_MARGIN_BYTES,
                 interval_s: float = 1.0, stall_s: float = STALL_S) -> None:
        self.machine = machine
        self.foreign = foreign
        self.margin_bytes = margin_bytes
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.reader: NvmlReader | None = None
        self.state_dir = ""
        self.sick: dict[int, str] = {}
        self.holders: dict[tuple[int, int], Holder] = {}
        self._ecc_base: dict[int, int | None] = {}
        self._readings: dict[int, GpuReading] = {}
        self._xids: list[tuple[int, int]] = []
        self._busy_since: dict[int, float] = {}
        self._version = 0
        self._seen_version = -1
        self._own: dict[int, bool] = {}  # pid -> one of rota's attempts (decided once per pid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ hook
    def start(self, engine: Any) -> None:
        if self.machine.source != "nvml" or not self.machine.gpus or engine.executor.name != "local":
            return
        self.state_dir = str(engine.state_dir)
        if os.environ.get("SLURM_JOB_ID"):
            self.foreign = False  # inside an allocation SLURM owns the GPUs: nothing to book around
        self.reader = NvmlReader.open(self.machine.gpu_indices)
        if self.reader is None:
            return
        for i in self.machine.gpu_indices:
            r = self.reader.read(i)
            self._ecc_base[i] = r.ecc_uncorrected
            self._readings[i] = r
        self._version += 1
        xid = self.reader.watch_xid()
        self._thread = threading.Thread(target=self._loop, args=(xid,), daemon=True, name="rota-gpu-watch")
        self._thread.start()
        self.tick(engine, time.time())

    def stop(self, engine: Any) -> None:
        self._stop.set()
        if self.reader is not None:
            self._write_notes(final=True)
        if self._thread is not None:
            # Not a whole interval: the run's end must not wait for NVML's event wait. A thread
            # still inside NVML keeps the session (shut down with the process).
            self._thread.join(timeout=0.2)
        if self.reader is not None and (self._thread is None or not self._thread.is_alive()):
            self.reader.close()

    def tick(self, engine: Any, now: float) -> None:
        if self.reader is None:
            return
        with self._lock:
            readings, self._xids, xids = dict(self._readings), [], self._xids
            version = self._version
            stalled = [i for i, t in self._busy_since.items() if time.monotonic() - t > self.stall_s]
        changed = self._update_health(engine, readings, xids, stalled)
        if version != self._seen_version:
            self._seen_version = version
            changed |= self._update_foreign(engine, readings)
        if changed:
            self._publish(engine)
        if self.sick and len(self.sick) == len(self.machine.gpus) and not engine.running and engine.ready \
                and all(engine.live[n].task.request.gpus for n in engine.ready):
            engine._halt("", "every GPU is unhealthy")

    def outcome(self, engine: Any, lv: Any, status: Status) -> Status | None:
        """A failed attempt on a GPU that is (or just turned) unhealthy runs again, not counted."""
        if self.reader is None or status.phase != "failed" or lv.placement is None or not lv.placement.gpus:
            return None
        with self._lock:
            busy = set(self._busy_since)
        for i in lv.placement.gpus:  # read now: the attempt may have died before the watch thread saw why
            if i not in self.sick and i not in busy:  # (not one the thread waits on: it may hang)
                why = sickness(self.reader.read(i), self._ecc_base.get(i), ())
                if why:
                    self._mark(engine, i, why)
        with self._lock:
            pending = [x for x in self._xids if x[0] in lv.placement.gpus and x[1] not in APPLICATION_XIDS]
        for i, x in pending:
            self._mark(engine, i, f"Xid {x} error")
        bad = [i for i in lv.placement.gpus if i in self.sick]
        if not bad:
            return None
        why = "; ".join(f"GPU {i} unhealthy ({self.sick[i]})" for i in bad)
        return replace(status, retry_free=True, reason=f"{status.reason or 'failed'}; {why}: runs again elsewhere")

    # --------------------------------------------------------------- helpers
    def notes(self) -> dict[int, tuple[str, str]]:
        """Per GPU: ("unhealthy", why) or ("foreign", who holds memory there), for the dashboard."""
        out: dict[int, tuple[str, str]] = {i: ("unhealthy", why) for i, why in self.sick.items()}
        for h in sorted(self.holders.values(), key=lambda h: (h.gpu, h.pid)):
            prev = out.get(h.gpu)
            if prev is None or prev[0] == "foreign":  # several holders on one GPU: one line, all of them
                text = f"{format_size(h.used_bytes)} held by pid {h.pid}, user {h.user}, {h.command}"
                out[h.gpu] = ("foreign", f"{prev[1]}; {text}" if prev else text)
        return out

    def _write_notes(self, *, final: bool = False) -> None:
        """``rota status``'s GPU lines (rota.nvml.NOTES_FILE), while this controller runs."""
        lines = [] if final else [f"GPU {i} unhealthy: {why} (no new tasks there)" for i, why in sorted(self.sick.items())]
        if not final:
            lines += [f"{h.describe()} (not rota's: booked, tasks pack around it)"
                      for h in sorted(self.holders.values(), key=lambda h: (h.gpu, h.pid)) if h.gpu not in self.sick]
        try:
            write_notes(self.state_dir, lines)
        except OSError:
            pass  # a full state folder: the engine reports it at its next commit

    def _mark(self, engine: Any, index: int, why: str) -> bool:
        if index in self.sick or not _has(self.machine, index):
            return False
        self.sick[index] = why
        engine._event("gpu", "", f"GPU {index} unhealthy: {why}; no new tasks there (the next rota run probes it again)")
        self._publish(engine)
        return True

    def _publish(self, engine: Any) -> None:
        """The bookings to the policy; the notes to the dashboard and to ``rota status``."""
        entries = sick_bookings(self.sick, self.machine)
        entries += foreign_bookings((h for h in self.holders.values() if h.gpu not in self.sick),
                                    self.machine, self.margin_bytes)
        engine.set_outside_bookings(entries)
        if engine.ui is not None:
            notes = engine.ui.gpu_notes
            notes.clear()
            notes.update(self.notes())
        self._write_notes()

    def _update_health(self, engine: Any, readings: dict[int, GpuReading], xids: list[tuple[int, int]],
                       stalled: list[int]) -> bool:
        changed = False
        by_gpu: dict[int, list[int]] = {}
        for i, x in xids:
            by_gpu.setdefault(i, []).append(x)
        for i, r in readings.items():
            if self._ecc_base.get(i) is None and r.ecc_uncorrected is not None and not r.lost:
                self._ecc_base[i] = r.ecc_uncorrected  # the first count read is the baseline
            why = sickness(r, self._ecc_base.get(i), by_gpu.get(i, ()))
            if why:
                changed |= self._mark(engine, i, why)
        for i in stalled:
            changed |= self._mark(engine, i, f"stopped answering (an NVML call has not returned for {self.stall_s:g}s)")
        return changed

    def _update_foreign(self, engine: Any, readings: dict[int, GpuReading]) -> bool:
        if not self.foreign:
            return False
        procs = [p for r in readings.values() for p in r.processes]
        current: dict[tuple[int, int], Holder] = {}
        attempts = _attempt_ids(engine)
        for p in procs:
            if self._is_own(p.pid, attempts):
                continue
            current[(p.gpu, p.pid)] = self._holder(p)
        live_pids = {p.pid for p in procs}
        self._own = {pid: v for pid, v in self._own.items() if pid in live_pids}
        if current.keys() == self.holders.keys() and all(
                abs(current[k].used_bytes - self.holders[k].used_bytes) < self.margin_bytes // 2 for k in current):
            return False
        for k, h in current.items():
            if k not in self.holders:
                engine._event("gpu", "", f"{h.describe()} (not rota's): booked, tasks pack around it")
        for k, h in self.holders.items():
            if k not in current:
                engine._event("gpu", "", f"GPU {h.gpu}: pid {h.pid} left; its {format_size(h.used_bytes)} are free again")
        self.holders = current
        return True

    def _holder(self, p: GpuProcess) -> Holder:
        old = self.holders.get((p.gpu, p.pid))
        used = p.used_bytes if p.used_bytes is not None else 0
        if old is not None:
            return replace(old, used_bytes=used)
        user, command, _task = process_owner(p.pid)
        return Holder(p.gpu, p.pid, used, user, command)

    def _is_own(self, pid: int, attempts: dict[int, str]) -> bool:
        """Whether ``pid`` is (a descendant of) one of the running attempts, or carries one's
        ROTA_ATTEMPT_ID (a child that left the process tree). Decided once per pid."""
        known = self._own.get(pid)
        if known is not None:
            return known
        own = False
        try:
            proc = psutil.Process(pid)
            chain = [pid, *(q.pid for q in proc.parents())]
            own = any(c in attempts for c in chain)
            if not own:
                try:
                    env = proc.environ()
                    # Attempt ids are unique within one state folder only: another run's are not ours.
                    own = env.get("ROTA_STATE_DIR") == self.state_dir and env.get("ROTA_ATTEMPT_ID") in attempts.values()
                except psutil.Error:
                    pass  # another user's process: not ours
        except psutil.Error:
            own = True  # gone already (it ended between the reading and now): nothing to book
        self._own[pid] = own
        return own

    def _loop(self, xid: bool) -> None:
        reader = self.reader
        assert reader is not None
        fails: dict[int, int] = {}
        while not self._stop.is_set():
            if xid:
                got = reader.wait_xid(int(self.interval_s * 1000))  # the wait is the interval
            else:
                got = []
                self._stop.wait(self.interval_s)
            readings: dict[int, GpuReading] = {}
            for i in self.machine.gpu_indices:
                if i in self.sick:
                    continue
                with self._lock:
                    self._busy_since[i] = time.monotonic()
                r = reader.read(i)
                with self._lock:
                    self._busy_since.pop(i, None)
                # One failed call may pass; a GPU that fails FAILS_IN_A_ROW readings stopped answering.
                fails[i] = fails.get(i, 0) + 1 if r.error else 0
                if fails[i] >= FAILS_IN_A_ROW:
                    r = replace(r, lost=f"stopped answering NVML ({r.error}, {fails[i]} times in a row)")
                readings[i] = r
            with self._lock:
                self._xids.extend(got)
                changed = any(self._readings.get(i) != r for i, r in readings.items())
                self._readings.update(readings)
                if changed:
                    self._version += 1


def _attempt_ids(engine: Any) -> dict[int, str]:
    """pid -> ROTA_ATTEMPT_ID of every running attempt's root process."""
    out: dict[int, str] = {}
    for lv in engine.running.values():
        h = lv.handle
        if h is not None and "pid" in h.data:
            out[int(h.data["pid"])] = str(lv.attempt_id)
    return out
