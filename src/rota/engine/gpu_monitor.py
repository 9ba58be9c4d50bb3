"""GPU sampler (NVML): per-GPU utilisation and memory over time, per-task peak memory.

A background thread samples NVML once a second into memory; the controller
thread (the only writer) flushes one averaged row per GPU every ``window_s``
(10 s: a 24-hour run on 8 GPUs stays under 70,000 rows), records each
attempt's peak GPU memory (summed over its processes) when it ends, and after
a task ends checks that none of its processes still hold memory on its GPUs
before that memory is booked again (stragglers are reported and killed).
Without NVML this hook does nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil

from rota.core.resources import Machine
from rota.engine.hooks import Hook


class GpuMonitor(Hook):
    def __init__(self, machine: Machine, interval_s: float = 1.0, window_s: float = 10.0) -> None:
        self.machine = machine
        self.interval_s = interval_s
        self.window_s = window_s
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}
        self._acc: dict[int, list[tuple[float, int, int]]] = {}
        self._pid_mem: dict[int, int] = {}
        self._peaks: dict[str, int] = {}
        self._pgids: dict[str, int] = {}  # task -> process group, kept past the handle (retries clear it)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = time.time()
        self.live: dict[int, tuple[float, int]] = {}

    def start(self, engine: Any) -> None:
        if self.machine.source != "nvml":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = {g.index: pynvml.nvmlDeviceGetHandleByIndex(g.index) for g in self.machine.gpus}
        except Exception:
            self._nvml = None
            return
        if engine.ui is not None:
            self.live = engine.ui.gpu_live
        self._thread = threading.Thread(target=self._sample_loop, daemon=True, name="rota-gpu-sampler")
        self._thread.start()

    def _sample_loop(self) -> None:
        nv = self._nvml
        while not self._stop.wait(self.interval_s):
            pid_mem: dict[int, int] = {}
            for idx, h in self._handles.items():
                try:
                    util = nv.nvmlDeviceGetUtilizationRates(h).gpu
                    mem = nv.nvmlDeviceGetMemoryInfo(h)
                    procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                except Exception:
                    continue
                for p in procs:
                    used = getattr(p, "usedGpuMemory", None) or 0
                    pid_mem[p.pid] = pid_mem.get(p.pid, 0) + int(used)
                with self._lock:
                    self._acc.setdefault(idx, []).append((float(util), int(mem.used), int(mem.total)))
                    self.live[idx] = (float(util), int(mem.used))
            with self._lock:
                self._pid_mem = pid_mem

    def tick(self, engine: Any, now: float) -> None:
        if self._nvml is None:
            return
        with self._lock:
            pid_mem = dict(self._pid_mem)
        for lv in engine.running.values():
            h = lv.handle
            if h is None or "pid" not in h.data:
                continue
            self._pgids[lv.task.name] = int(h.data.get("pgid", 0) or 0)
            total = sum(pid_mem.get(pid, 0) for pid in _tree_pids(int(h.data["pid"])))
            if total > self._peaks.get(lv.task.name, 0):
                self._peaks[lv.task.name] = total
        if now - self._last_flush >= self.window_s:
            self._flush(engine, now)

    def _flush(self, engine: Any, now: float) -> None:
        with self._lock:
            acc, self._acc = self._acc, {}
        rows = []
        for idx, samples in acc.items():
            if samples:
                util = sum(s[0] for s in samples) / len(samples)
                used = max(s[1] for s in samples)
                rows.append((now, idx, util, used, samples[-1][2]))
        if rows:
            engine.store.add_gpu_samples(rows)
        self._last_flush = now

    def finished(self, engine: Any, lv: Any, state: str, metrics: Any) -> None:
        peak = self._peaks.pop(lv.task.name, None)
        if peak:
            engine.store.set_peak_gpu_memory(lv.task.name, lv.attempt, peak)
        pgid = self._pgids.pop(lv.task.name, 0)
        if lv.handle is not None:
            pgid = int(lv.handle.data.get("pgid", 0) or 0)
        if self._nvml is not None and lv.placement is not None:
            # On a retry (e.g. after an OOM) the engine has already dropped the handle;
            # the group recorded while it ran still names the processes to check.
            self._check_released(engine, lv, pgid)

    def _check_released(self, engine: Any, lv: Any, pgid: int) -> None:
        """Processes of a finished task that still hold GPU memory: report and kill."""
        if pgid <= 1:
            return
        for idx in lv.placement.gpus:
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handles[idx])
            except Exception:
                continue
            for p in procs:
                try:
                    import os

                    if os.getpgid(p.pid) == pgid:
                        engine._event("straggler", lv.task.name, f"pid {p.pid} still holds GPU {idx} memory; killing it")
                        os.kill(p.pid, 9)
                except OSError:
                    continue

    def stop(self, engine: Any) -> None:
        self._stop.set()
        if self._nvml is not None:
            try:
                self._flush(engine, time.time())
            except Exception:
                pass


def _tree_pids(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []
