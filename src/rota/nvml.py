"""Reading NVML for what rota did not start and for sick GPUs: compute processes, ECC, Xid events.

The only I/O of the foreign-memory and GPU-health features (the decisions are in
:mod:`rota.engine.gpu_watch`). Works with nvidia-ml-py's ``pynvml``, or the
stand-in the tests put first on the path. Every call is guarded: a GPU that
answers with ``NVMLError_GpuIsLost`` is reported as lost, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Xid codes that an application causes (its own fault, or rota killing it), not the GPU:
# 13 graphics engine exception, 31 MMU fault, 43 GPU stopped processing, 45 preemptive
# cleanup (a process was killed). Any other Xid takes the GPU out (79 fell off the bus,
# 48/94/95 ECC, 63/64 row remapping, 74 NVLink, 119/120 GSP, ...).
APPLICATION_XIDS = frozenset({13, 31, 43, 45})


@dataclass(frozen=True)
class GpuProcess:
    """One compute process on one GPU. ``used_bytes`` None: the driver cannot say."""

    gpu: int
    pid: int
    used_bytes: int | None


@dataclass(frozen=True)
class GpuReading:
    """One GPU read once: its compute processes, its uncorrectable ECC count (None: not
    supported), ``lost``: why it is gone (NVMLError_GpuIsLost, a reset needed; empty: it is
    not), ``error``: a failure that may pass (a timeout, an unknown error; empty: none)."""

    index: int
    processes: tuple[GpuProcess, ...] = ()
    ecc_uncorrected: int | None = None
    lost: str = ""
    error: str = ""


class NvmlReader:
    """An open NVML session on some GPUs (by NVML index). ``open`` returns None without NVML."""

    def __init__(self, nvml: Any, handles: dict[int, Any]) -> None:
        self.nv = nvml
        self.handles = handles
        self._events: Any = None
        self._by_handle_index: dict[int, int] = {}

    @classmethod
    def open(cls, indices: tuple[int, ...]) -> NvmlReader | None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no NVML (ImportError, NVMLError, a broken driver)
            return None
        handles: dict[int, Any] = {}
        for i in indices:
            try:
                handles[i] = pynvml.nvmlDeviceGetHandleByIndex(i)
            except Exception:  # noqa: BLE001 - a GPU that will not even give a handle is read as lost
                handles[i] = None
        return cls(pynvml, handles)

    def watch_xid(self) -> bool:
        """Register for Xid events on every GPU; False where the driver offers none."""
        nv = self.nv
        try:
            self._events = nv.nvmlEventSetCreate()
        except Exception:  # noqa: BLE001
            return False
        ok = False
        for h in self.handles.values():
            if h is None:
                continue
            try:
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, self._events)
                ok = True
            except Exception:  # noqa: BLE001 - NotSupported on some GPUs (and in some containers)
                continue
        return ok

    def wait_xid(self, timeout_ms: int) -> list[tuple[int, int]]:
        """``(gpu index, xid)`` of the events that arrive within ``timeout_ms`` (at least the first)."""
        if self._events is None:
            return []
        nv = self.nv
        out: list[tuple[int, int]] = []
        wait_ms = timeout_ms
        while True:
            try:
                data = nv.nvmlEventSetWait(self._events, wait_ms)
            except Exception:  # noqa: BLE001 - NVMLError_Timeout: nothing (more) came
                return out
            if data.eventType & nv.nvmlEventTypeXidCriticalError:
                try:
                    idx = int(nv.nvmlDeviceGetIndex(data.device))
                except Exception:  # noqa: BLE001
                    continue
                out.append((idx, int(data.eventData)))
            wait_ms = 0  # drain what else is queued, then return

    def read(self, index: int, *, ecc: bool = True) -> GpuReading:
        nv, h = self.nv, self.handles.get(index)
        if h is None:
            return GpuReading(index, lost="NVML gives no handle for it")
        try:
            procs = tuple(GpuProcess(index, int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                          for p in nv.nvmlDeviceGetComputeRunningProcesses(h))
        except Exception as e:  # noqa: BLE001
            return _failed(nv, index, (), e)
        count: int | None = None
        if ecc:
            try:
                count = int(nv.nvmlDeviceGetTotalEccErrors(h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                                           nv.NVML_VOLATILE_ECC))
            except Exception as e:  # noqa: BLE001 - NotSupported: a GPU without ECC
                if not isinstance(e, getattr(nv, "NVMLError_NotSupported", ())):
                    return _failed(nv, index, procs, e)
        return GpuReading(index, procs, count)

    def close(self) -> None:
        try:
            if self._events is not None:
                self.nv.nvmlEventSetFree(self._events)
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _failed(nv: Any, index: int, procs: tuple[GpuProcess, ...], e: Exception) -> GpuReading:
    """A reading that raised: the GPU is lost (GpuIsLost, ResetRequired), or it failed this once."""
    if isinstance(e, getattr(nv, "NVMLError_GpuIsLost", ())):
        return GpuReading(index, procs, lost="GPU is lost (NVML)")
    if isinstance(e, getattr(nv, "NVMLError_ResetRequired", ())):
        return GpuReading(index, procs, lost="GPU needs a reset (NVML)")
    return GpuReading(index, procs, error=f"{type(e).__name__}: {e}")


def probe(indices: tuple[int, ...]) -> dict[int, GpuReading] | None:
    """Each GPU read once (``rota machine``), or None without NVML."""
    r = NvmlReader.open(indices)
    if r is None:
        return None
    try:
        return {i: r.read(i) for i in indices}
    finally:
        r.close()


def process_owner(pid: int) -> tuple[str, str, str | None]:
    """``(user, command name, rota task or None)`` of a process; ``?`` where it cannot be read
    (another container's pid, one that just left). The task is read from its ROTA_TASK, where
    this user may read its environment."""
    import psutil

    try:
        proc = psutil.Process(pid)
        user, command = proc.username(), proc.name()
    except psutil.Error:
        return "?", "?", None
    try:
        task = proc.environ().get("ROTA_TASK")
    except psutil.Error:
        task = None
    return user, command, task


NOTES_FILE = "gpu-notes.txt"
"""In a state folder while a controller runs: one line per foreign holder or unhealthy GPU
(written by :class:`rota.engine.gpu_watch.GpuWatch`, shown by ``rota status``)."""


def write_notes(state_dir: str, lines: list[str]) -> None:
    """Replace the state folder's GPU notes (none: the file goes)."""
    import os

    path = os.path.join(state_dir, NOTES_FILE)
    if not lines:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def read_notes(state_dir: str) -> list[str]:
    """The GPU notes a running controller left (empty without any)."""
    import os

    try:
        with open(os.path.join(state_dir, NOTES_FILE)) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return []
