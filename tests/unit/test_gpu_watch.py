"""Foreign GPU bookings and GPU health: the pure parts, the policy property, the stand-in's interface."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.policy import Candidate, schedule
from rota.core.resources import Gpu, Machine, Request
from rota.engine.gpu_watch import Holder, foreign_bookings, sick_bookings, sickness
from rota.nvml import GpuReading

GB = 2**30
FAKE = Path(__file__).resolve().parents[1] / "fake_nvml" / "pynvml.py"


def machine(sizes_gb: list[int], cpus: int = 64) -> Machine:
    return Machine(tuple(Gpu(i, s * GB) for i, s in enumerate(sizes_gb)), cpus, 512 * GB, source="nvml")


def test_a_foreign_holder_is_booked_with_its_margin_and_named():
    m = machine([80, 80])
    (r,) = foreign_bookings([Holder(1, 4242, 21 * GB, "bob", "python")], m, margin_bytes=GB)
    assert r.placement.task == "pid 4242 (bob, python)"
    assert r.placement.gpus == (1,) and r.placement.gpu_bytes == (22 * GB,)
    assert r.placement.cpus == 0 and r.placement.memory_bytes == 0 and r.remaining_s is None
    assert Holder(1, 4242, 21 * GB, "bob", "python").describe() == "GPU 1: 21GB held by pid 4242, user bob, python"
    # Never more than the GPU; never nothing (a whole-GPU task must not share its GPU).
    (big,) = foreign_bookings([Holder(0, 1, 100 * GB)], m, margin_bytes=GB)
    assert big.placement.gpu_bytes == (80 * GB,)
    (tiny,) = foreign_bookings([Holder(0, 1, 0)], m, margin_bytes=0)
    assert tiny.placement.gpu_bytes == (1,)


def test_packing_around_foreign_memory():
    m = machine([80])
    running = foreign_bookings([Holder(0, 7, 50 * GB)], m, margin_bytes=GB)
    ready = [Candidate(f"t{i}", Request(gpus=1, gpu_memory_bytes=20 * GB), order=i) for i in range(3)]
    assert [p.task for p in schedule(ready, m, running)] == ["t0"]  # 29 GB left: one of three
    assert len(schedule(ready, m, [])) == 3
    assert schedule([Candidate("whole", Request(gpus=1))], m, running) == []


def test_an_unhealthy_gpu_gets_nothing():
    m = machine([80, 80])
    running = sick_bookings({0: "Xid 79 error"}, m)
    assert running[0].placement.task == "GPU 0 unhealthy: Xid 79 error"
    placed = schedule([Candidate(f"t{i}", Request(gpus=1, gpu_memory_bytes=GB), order=i) for i in range(4)], m, running)
    assert {p.gpus for p in placed} == {(1,)}
    assert sick_bookings({5: "gone"}, m) == []  # a GPU the run does not use (--gpus 0,1) is not booked


def test_sickness():
    ok = GpuReading(0, (), ecc_uncorrected=3)
    assert sickness(ok, 3, ()) == ""
    assert sickness(ok, 3, [45, 13, 31, 43]) == ""  # what applications (or a killed process) cause
    assert sickness(ok, 3, [45, 79]) == "Xid 79 error"
    assert sickness(GpuReading(0, (), ecc_uncorrected=5), 3, ()) == "2 uncorrectable ECC error(s) during this run"
    assert sickness(GpuReading(0, (), ecc_uncorrected=5), None, ()) == ""  # no baseline yet
    assert sickness(GpuReading(0, lost="GPU is lost (NVML)"), 0, ()) == "GPU is lost (NVML)"


holders_st = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 90), st.booleans()), max_size=6)
requests_st = st.lists(
    st.tuples(st.integers(1, 3), st.one_of(st.none(), st.integers(1, 80))), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.sampled_from([16, 24, 40, 80]), min_size=1, max_size=4), holders=holders_st,
       requests=requests_st, margin_gb=st.integers(0, 4), sick=st.sets(st.integers(0, 3), max_size=2))
def test_the_policy_never_places_into_foreign_booked_memory(sizes, holders, requests, margin_gb, sick):
    """Whatever holds memory outside rota, what the policy places plus the foreign bookings stays
    within every GPU; a whole-GPU task never lands on a GPU with a foreign process; an
    unhealthy GPU gets nothing."""
    m = machine(sizes)
    hs = [Holder(g, 1000 + i, used * GB) for i, (g, used, _) in enumerate(holders) if g < len(sizes)]
    outside = sick_bookings({i: "sick" for i in sick}, m) + foreign_bookings(
        [h for h in hs if h.gpu not in sick], m, margin_gb * GB)
    ready = [Candidate(f"t{i}", Request(gpus=min(n, len(sizes)), gpu_memory_bytes=None if gb is None else gb * GB),
                       order=i) for i, (n, gb) in enumerate(requests)]
    placed = schedule(ready, m, outside)
    foreign: dict[int, int] = {}
    for r in outside:
        for g, b in zip(r.placement.gpus, r.placement.gpu_bytes, strict=True):
            foreign[g] = foreign.get(g, 0) + b
    used = dict(foreign)
    for p in placed:
        for g, b in zip(p.gpus, p.gpu_bytes, strict=True):
            used[g] = used.get(g, 0) + b
            assert g not in sick
    for g in range(len(sizes)):
        # Foreign bookings alone may exceed a GPU (two holders, their margins); placements never add to that.
        assert used.get(g, 0) <= max(m.gpu(g).memory_bytes, foreign.get(g, 0))
        if foreign.get(g, 0) >= m.gpu(g).memory_bytes:
            assert used.get(g, 0) == foreign.get(g, 0)
    whole = {p.task for p in placed if ready[int(p.task[1:])].request.gpu_memory_bytes is None}
    holder_gpus = {h.gpu for h in hs}
    for p in placed:
        if p.task in whole:
            assert not holder_gpus.intersection(p.gpus)


def _load_fake():
    spec = importlib.util.spec_from_file_location("rota_test_fake_pynvml", FAKE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its error classes are generated from the module, as the real one's
    spec.loader.exec_module(mod)
    return mod


NAMES = [
    "nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetIndex",
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetTotalEccErrors", "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents", "nvmlEventSetWait", "nvmlEventSetFree", "nvmlSystemGetDriverVersion",
    "NVMLError", "NVMLError_GpuIsLost", "NVMLError_Timeout", "NVMLError_NotSupported", "NVMLError_Uninitialized",
    "NVMLError_ResetRequired", "NVMLError_Unknown", "NVMLError_LibraryNotFound",
]
CONSTANTS = [
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_VOLATILE_ECC",
    "NVML_AGGREGATE_ECC", "nvmlEventTypeXidCriticalError", "nvmlEventTypeNone", "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_TIMEOUT", "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_UNINITIALIZED", "NVML_SUCCESS",
]


def test_the_stand_in_has_the_real_modules_interface():
    real = pytest.importorskip("pynvml")
    if getattr(real, "_STANDIN", False):
        pytest.skip("the stand-in is first on the path")
    fake = _load_fake()
    for name in NAMES:
        assert hasattr(real, name), f"nvidia-ml-py has no {name}: the stand-in follows a name that is gone"
        assert hasattr(fake, name), f"the stand-in lacks {name}"
    for name in CONSTANTS:
        assert getattr(fake, name) == getattr(real, name), name
    # NVMLError(code) gives the code's subclass, in both.
    for mod in (real, fake):
        e = mod.NVMLError(mod.NVML_ERROR_GPU_IS_LOST)
        assert isinstance(e, mod.NVMLError_GpuIsLost) and e.value == mod.NVML_ERROR_GPU_IS_LOST
        assert issubclass(mod.NVMLError_Timeout, mod.NVMLError)


def test_the_stand_in_without_a_script_fails_as_without_a_driver(monkeypatch):
    fake = _load_fake()
    monkeypatch.delenv("ROTA_FAKE_NVML", raising=False)
    with pytest.raises(fake.NVMLError):
        fake.nvmlInit()


def test_the_dashboard_draws_a_sick_gpu_red_and_a_foreign_holders_line():
    from rich.console import Console

    from rota.ui.dashboard import render
    from rota.ui.snapshot import GpuView, Snapshot

    gpus = (GpuView(0, "H100", 80 * GB, 80 * GB, ()), GpuView(1, "H100", 80 * GB, 20 * GB, ("t1",)))
    snap = Snapshot(now=10.0, started_at=0.0, gpus=gpus, cpus_total=8, cpus_booked=1, memory_total=GB,
                    memory_booked=0, running=(), counts={}, total=1, eta_s=None, failures=(), recent=())
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=160, color_system="standard").print(
        render(snap, {0: ("unhealthy", "Xid 79 error"), 1: ("foreign", "21GB held by pid 4242, user bob, python")}))
    lines = buf.getvalue().splitlines()
    sick = [ln for ln in lines if "Xid 79 error" in ln]
    assert sick and "\x1b[1;31mGPU 0" in sick[0] and "\x1b[31mXid 79 error" in sick[0], lines
    assert any("not rota's" in ln and "21GB held by pid 4242, user bob, python" in ln for ln in lines), lines
    plain = Console(record=True, width=160)
    plain.print(render(snap))
    assert "unhealthy" not in plain.export_text()


def test_the_dashboard_notes_name_every_holder_of_a_gpu():
    from rota.engine.gpu_watch import GpuWatch

    w = GpuWatch(machine([80, 80]))
    w.holders = {(1, 7): Holder(1, 7, 2 * GB, "ann", "python"), (1, 9): Holder(1, 9, 3 * GB, "bob", "vllm"),
                 (0, 5): Holder(0, 5, GB, "cy", "jupyter")}
    w.sick = {0: "Xid 79 error"}
    assert w.notes() == {0: ("unhealthy", "Xid 79 error"),
                         1: ("foreign", "2GB held by pid 7, user ann, python; 3GB held by pid 9, user bob, vllm")}
