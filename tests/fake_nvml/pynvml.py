"""A stand-in for nvidia-ml-py's ``pynvml`` (13.x), for tests on machines without a GPU.

Same names as the real module for everything rota calls: the functions, the
constants and the ``NVMLError`` class tree (one ``NVMLError_<Name>`` subclass per
``NVML_ERROR_*`` code, generated as the real module does; ``NVMLError(code)``
returns the subclass). Put this folder first on ``sys.path`` (``PYTHONPATH`` for
a controller subprocess) and point ``ROTA_FAKE_NVML`` at a JSON script, re-read
on every call so a test can rewrite it while rota runs::

    {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0000", "memory_bytes": 85899345920,
               "util": 0, "ecc_uncorrected": 0, "lost": false}],
     "processes": {"0": [{"pid": 4242, "used_bytes": 21474836480}]},
     "process_dir": "/tmp/x/procs",
     "xid": [{"gpu": 0, "xid": 79}]}

``process_dir`` (optional): every file ``<gpu index>-<pid>`` there is a compute
process holding the file's number of bytes (a test's task writes one for its own
pid). ``xid``: each event is delivered once to each event set that registered
its GPU. A GPU with ``lost: true`` answers every call with ``NVMLError_GpuIsLost``.
Without ``ROTA_FAKE_NVML``, ``nvmlInit`` fails as it does without a driver.
"""

from __future__ import annotations

import json
import os
import string
import sys
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1

nvmlEventTypeSingleBitEccError = 0x0000000000000001
nvmlEventTypeDoubleBitEccError = 0x0000000000000002
nvmlEventTypePState = 0x0000000000000004
nvmlEventTypeXidCriticalError = 0x0000000000000008
nvmlEventTypeNone = 0x0000000000000000

_STANDIN = True  # lets a test tell this module from the real one


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(typ, value: int) -> NVMLError:  # noqa: N804 - the real module's signature
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value  # type: ignore[attr-defined]
        return obj

    def __str__(self) -> str:
        return f"NVML Error with code {self.value}"  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", None)  # type: ignore[attr-defined]

    __hash__ = Exception.__hash__


def _extractNVMLErrorsAsClasses() -> None:  # noqa: N802 - the real module's name
    """As the real module: NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost, and so on."""
    this_module = sys.modules[__name__]
    for err_name in [x for x in dir(this_module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = getattr(this_module, err_name)

        def gen_new(val: int) -> Any:
            def new(typ: type, *args: Any) -> NVMLError:
                return NVMLError.__new__(typ, val)  # type: ignore[arg-type]
            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        setattr(this_module, class_name, cls)
        NVMLError._valClassMapping[err_val] = cls


_extractNVMLErrorsAsClasses()


class _Struct:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


_initialised = 0
_event_sets: list[_EventSet] = []


class _EventSet:
    def __init__(self) -> None:
        self.gpus: set[int] = set()
        self.seen = 0  # events of the script's list already delivered


def _script() -> dict[str, Any]:
    path = os.environ.get("ROTA_FAKE_NVML")
    if not path:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    for _ in range(50):  # a test rewriting the file: it is replaced whole, but read again if torn
        try:
            with open(path) as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            continue
    raise NVMLError(NVML_ERROR_UNKNOWN)


def _check() -> dict[str, Any]:
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _script()


def _gpu(handle: _Handle) -> dict[str, Any]:
    s = _check()
    gpus = s.get("gpus", [])
    if handle.index >= len(gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    g = dict(gpus[handle.index])
    if g.get("lost"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    if g.get("fail"):  # e.g. "TIMEOUT", "UNKNOWN": every call on it raises that NVMLError
        raise NVMLError(getattr(sys.modules[__name__], "NVML_ERROR_" + str(g["fail"]).upper()))
    return g


def nvmlInit() -> None:
    global _initialised
    _script()
    _initialised += 1


def nvmlInitWithFlags(flags: int) -> None:
    nvmlInit()


def nvmlShutdown() -> None:
    global _initialised
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    _initialised -= 1


def nvmlSystemGetDriverVersion() -> str:
    return str(_check().get("driver", "550.00-standin"))


def nvmlDeviceGetCount() -> int:
    return len(_check().get("gpus", []))


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if index < 0 or index >= nvmlDeviceGetCount():
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _check()
    return handle.index


def nvmlDeviceGetName(handle: _Handle) -> str:
    return str(_gpu(handle).get("name", "NVIDIA Stand-in GPU"))


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return str(_gpu(handle).get("uuid", f"GPU-standin-{handle.index:04d}"))


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: Any = None) -> _Struct:
    g = _gpu(handle)
    total = int(g["memory_bytes"])
    used = sum(int(p.used_bytes or 0) for p in _procs(handle.index))
    return _Struct(total=total, free=max(total - used, 0), used=used)


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> _Struct:
    return _Struct(gpu=int(_gpu(handle).get("util", 0)), memory=0)


def _procs(index: int) -> list[_Struct]:
    s = _script()
    out = [_Struct(pid=int(p["pid"]), used_bytes=p.get("used_bytes"))
           for p in s.get("processes", {}).get(str(index), [])]
    folder = s.get("process_dir")
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            gpu, _, pid = name.partition("-")
            if gpu == str(index) and pid.isdigit():
                try:
                    with open(os.path.join(folder, name)) as f:
                        out.append(_Struct(pid=int(pid), used_bytes=int(f.read().strip() or 0)))
                except (OSError, ValueError):
                    continue
    return out


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Struct]:
    _gpu(handle)
    # As the real one: usedGpuMemory is None where the driver cannot say (the script's null).
    return [_Struct(pid=p.pid, usedGpuMemory=None if p.used_bytes is None else int(p.used_bytes),
                    gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF) for p in _procs(handle.index)]


def nvmlDeviceGetTotalEccErrors(handle: _Handle, errorType: int, counterType: int) -> int:  # noqa: N803
    g = _gpu(handle)
    if "ecc_uncorrected" not in g:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if errorType != NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
        return int(g.get("ecc_corrected", 0))
    return int(g["ecc_uncorrected"])


def nvmlEventSetCreate() -> _EventSet:
    _check()
    es = _EventSet()
    _event_sets.append(es)
    return es


def nvmlDeviceRegisterEvents(handle: _Handle, eventTypes: int, eventSet: _EventSet) -> None:  # noqa: N803
    _gpu(handle)
    if eventTypes & nvmlEventTypeXidCriticalError:
        eventSet.gpus.add(handle.index)


def nvmlEventSetWait(eventSet: _EventSet, timeoutms: int) -> _Struct:
    """The next Xid event of a registered GPU, or NVMLError_Timeout after ``timeoutms``."""
    import time

    deadline = time.monotonic() + timeoutms / 1000.0
    while True:
        events = _check().get("xid", [])
        while eventSet.seen < len(events):
            ev = events[eventSet.seen]
            eventSet.seen += 1
            if int(ev["gpu"]) in eventSet.gpus:
                return _Struct(device=_Handle(int(ev["gpu"])), eventType=nvmlEventTypeXidCriticalError,
                               eventData=int(ev["xid"]), gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
        if time.monotonic() >= deadline:
            raise NVMLError(NVML_ERROR_TIMEOUT)
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))


nvmlEventSetWait_v2 = nvmlEventSetWait


def nvmlEventSetFree(eventSet: _EventSet) -> None:
    if eventSet in _event_sets:
        _event_sets.remove(eventSet)
