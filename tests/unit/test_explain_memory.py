"""A task waiting for RAM is told where the RAM figure comes from (``rota why``, ``rota status``):
the run's ``--memory``, this machine's RAM, the SLURM allocation's (``SLURM_MEM_PER_NODE``), a Ray
cluster's ``memory`` resource, a SLURM node's. It always said "(the run's --memory)", also with no
``--memory`` given, locally and on Ray.

The GPU reason is checked too: it lists each GPU's free memory and names no flag, whether the GPUs
were declared with ``--gpus``, read through NVML, under ``CUDA_VISIBLE_DEVICES`` or a Ray cluster's.
"""

from __future__ import annotations

from rota.core.explain import explain
from rota.core.policy import Candidate, Running
from rota.core.resources import Gpu, Machine, Placement, Request
from rota.engine.respec import limited_machine
from rota.executors.cluster_limits import apply_limits, parse_limits
from rota.machine import apply_visible_devices, detect_machine
from rota.units import format_size

GB = 2**30


def _why_waiting(machine: Machine) -> str:
    """The reason of a task that asks for all of ``machine``'s RAM while another holds 1GB of it."""
    running = [Running(Placement("busy", (), (), 0, GB), 60.0)]
    reasons = explain([Candidate("wait", Request(cpus=0, memory_bytes=machine.memory_bytes), 0, 0, None, 0)],
                      machine, running, now=0.0)
    assert reasons["wait"].kind == "memory", reasons
    return reasons["wait"].text


def test_a_local_machine_names_its_ram_the_flag_or_the_slurm_allocation() -> None:
    mine = detect_machine(gpus="none", environ={})
    text = _why_waiting(mine)
    size = format_size(mine.memory_bytes)
    assert f"of {size} free (this machine's {size} RAM)" in text, text
    assert "--memory" not in text, text
    assert "16GB free (the run's --memory 16GB)" in _why_waiting(detect_machine(gpus="none", memory="16GB", environ={}))
    slurm = detect_machine(gpus="none", environ={"SLURM_MEM_PER_NODE": "8192"})
    assert "7GB of 8GB free (the SLURM allocation's 8GB)" in _why_waiting(slurm)


def test_a_ray_cluster_names_its_memory_resource_and_a_binding_cap_the_flag() -> None:
    cluster = Machine((), 4, 16 * GB, source="ray", cpus_from="ray", memory_from="ray")  # RayExecutor.capacity
    text = _why_waiting(cluster)
    assert "15GB of 16GB free (the Ray cluster's 16GB memory resource)" in text, text
    assert "--memory" not in text, text
    capped = apply_limits(cluster, parse_limits("ray", memory="8GB"))
    assert "7GB of 8GB free (the run's --memory 8GB)" in _why_waiting(capped)
    # A cap above the cluster, or another flag alone, leaves the cluster's figure, and says so.
    for limits in (parse_limits("ray", memory="64GB"), parse_limits("ray", cpus=2)):
        text = _why_waiting(apply_limits(cluster, limits))
        assert "(the Ray cluster's 16GB memory resource)" in text and "--memory" not in text, text


def test_a_slurm_node_names_slurm() -> None:
    node = Machine((), 8, 16 * GB, source="slurm:n1", cpus_from="slurm", memory_from="slurm")  # SlurmExecutor.capacity
    text = _why_waiting(apply_limits(node, parse_limits("slurm", memory="1TB")))
    assert "(16GB RAM from SLURM)" in text and "--memory" not in text, text


def test_a_live_memory_limit_names_the_flag() -> None:
    """``rota run SPEC --memory 4GB`` on a live run replaces the figure: the flag it names is the user's."""
    live = limited_machine(detect_machine(gpus="none", environ={}), detect_machine(gpus="none", environ={}),
                           memory="4GB")
    assert "3GB of 4GB free (the run's --memory 4GB)" in _why_waiting(live)


def test_a_machine_stored_by_an_older_rota_names_no_flag_it_cannot_know() -> None:
    """``rota why`` without a controller rebuilds the machine from the state; one stored before
    ``memory_from`` existed: a local one says nothing of where its RAM comes from, a cluster's
    is read from its source."""
    text = _why_waiting(Machine((), 8, 16 * GB, source="nvml"))
    assert text.startswith("no 16GB RAM free: 15GB of 16GB free;"), text
    assert "(the Ray cluster's 16GB memory resource)" in _why_waiting(Machine((), 4, 16 * GB, source="ray"))
    capped = Machine((), 4, 8 * GB, source="ray, this run capped by --memory 8GB")
    assert "(the run's --memory 8GB)" in _why_waiting(capped)
    assert "(16GB RAM from SLURM)" in _why_waiting(Machine((), 8, 16 * GB, source="slurm:n1"))


def _gpu_reason(machine: Machine, req: Request) -> str:
    running = [Running(Placement("busy", (g.index,), (g.memory_bytes // 2,), 0, 0), 60.0) for g in machine.gpus]
    reasons = explain([Candidate("wait", req, 0, 0, None, 0)], machine, running, now=0.0)
    assert reasons["wait"].kind == "gpu", reasons
    return reasons["wait"].text


def test_the_gpu_reason_names_no_flag_wherever_the_gpus_come_from() -> None:
    nvml = [Gpu(0, 80 * GB, "H100", "GPU-aaaa"), Gpu(1, 80 * GB, "H100", "GPU-bbbb")]
    machines = [
        detect_machine(gpus="2x80GB", environ={}),  # declared with --gpus
        Machine(tuple(nvml), 8, 64 * GB, source="nvml"),  # read through NVML
        Machine(tuple(apply_visible_devices(nvml, "GPU-bbbb")), 8, 64 * GB, source="nvml"),  # CUDA_VISIBLE_DEVICES
        Machine((Gpu(0, 80 * GB, "Ray GPU"), Gpu(1, 80 * GB, "Ray GPU")), 4, 64 * GB, source="ray"),  # a Ray cluster
    ]
    for m in machines:
        for req in (Request(gpus=1, cpus=0), Request(gpus=1, gpu_memory_bytes=60 * GB, cpus=0),
                    Request(gpus=1, cpus=0, devices=(m.gpus[0].index,))):
            text = _gpu_reason(m, req)
            assert "--" not in text, (m.source, req, text)
            assert f"GPU {m.gpus[0].index} 40GB" in text, text
