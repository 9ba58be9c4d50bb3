"""``--gpus``/``--cpus``/``--memory`` on a cluster backend (SLURM, Ray): caps on this run.

On a workstation the flags describe the machine. On a shared cluster the
machine is what the cluster reports (:meth:`capacity` of the executor), and the
flags say how much of it this run may hold at once:

- ``--cpus N``: at most N CPUs booked by running tasks at once;
- ``--memory SIZE``: at most SIZE of RAM booked at once;
- ``--gpus NxSIZE`` (or ``SIZE,SIZE,...``): at most N GPUs at once, each of
  SIZE (SLURM and Ray know GPU counts, not their memory);
- ``--gpus none``: no GPU; a task that asks for one can never run (exit 2).

A cap above what the cluster has changes nothing (the cluster's own figure
stands). ``--gpus 0,2`` names device indices, which mean nothing on a cluster
(the backend picks each task's devices): refused, exit 2, with the form to use.

Pure functions but :func:`limited_capacity`, which asks the executor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rota.core.resources import Gpu, Machine
from rota.errors import MachineError
from rota.executors.base import Executor
from rota.units import format_size, parse_size


@dataclass(frozen=True)
class ClusterLimits:
    """What this run may take from a cluster. ``None``: no cap from that flag.

    ``gpu_memory_bytes``: one size per GPU this run may hold (``()``: no GPU).
    """

    gpu_memory_bytes: tuple[int, ...] | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    flags: str = ""  # the flags as given, for the machine's description


def parse_limits(backend: str, gpus: str | None = None, cpus: int | None = None,
                 memory: str | None = None) -> ClusterLimits:
    """The caps ``--gpus``/``--cpus``/``--memory`` set on ``backend``; MachineError (exit 2) for a bad one."""
    from rota.machine import parse_gpus_flag

    sizes: tuple[int, ...] | None = None
    flags: list[str] = []
    if gpus is not None:
        parts = [p.strip() for p in gpus.split(",")]
        if all(p.isdigit() for p in parts):
            n = len(parts)
            raise MachineError(
                f"--gpus {gpus}: GPU indices have no meaning with --backend {backend} ({backend} picks the devices "
                f"each task gets); to let this run use at most {n} GPU{'s' if n > 1 else ''} at once, give a count "
                f"and each GPU's memory, e.g. --gpus {n}x80GB (or --gpus none for no GPU)"
            )
        sizes = tuple(g.memory_bytes for g in parse_gpus_flag(gpus, []))
        flags.append(f"--gpus {gpus.strip()}")
    if cpus is not None:
        if cpus < 1:
            raise MachineError(f"--cpus {cpus}: expected a positive number of CPUs")
        flags.append(f"--cpus {cpus}")
    memory_bytes: int | None = None
    if memory is not None:
        try:
            memory_bytes = parse_size(memory)
        except ValueError as e:
            raise MachineError(f"--memory {memory}: {e}") from None
        flags.append(f"--memory {format_size(memory_bytes)}")
    return ClusterLimits(sizes, cpus, memory_bytes, " ".join(flags))


def apply_limits(cluster: Machine, limits: ClusterLimits) -> Machine:
    """``cluster`` cut down to ``limits``: each figure the smaller of the two; nodes kept (a task must fit one)."""
    if not limits.flags:
        return cluster
    gpus = cluster.gpus
    if limits.gpu_memory_bytes is not None:
        gpus = tuple(Gpu(g.index, size, name=g.name)
                     for g, size in zip(cluster.gpus, limits.gpu_memory_bytes, strict=False))
    cpus = cluster.cpus if limits.cpus is None else min(cluster.cpus, limits.cpus)
    memory = cluster.memory_bytes if limits.memory_bytes is None else min(cluster.memory_bytes, limits.memory_bytes)
    # What a task waiting for CPUs or RAM is told: the flag only where its cap binds.
    cpus_from = "flag" if cpus < cluster.cpus else cluster.cpus_from
    memory_from = "flag" if memory < cluster.memory_bytes else cluster.memory_from
    return replace(cluster, gpus=gpus, cpus=cpus, memory_bytes=memory, cpus_from=cpus_from, memory_from=memory_from,
                   source=f"{cluster.source}, this run capped by {limits.flags}")


def limited_capacity(executor: Executor, limits: ClusterLimits) -> Machine:
    """The executor's capacity under ``limits``.

    An executor that books CPU slots ahead of its capacity (``queue_ahead``,
    Ray) stops doing so when ``--cpus`` caps the run below the cluster: the
    cluster would start those attempts at once, beyond the cap. One that may
    hold more GPUs than the engine booked (SLURM: a memory-shared launch placed
    beside a running shared job gets a GPU of its own) is made ``strict_gpus``
    when ``--gpus`` caps the run below the cluster's GPUs.
    """
    cluster = executor.capacity()
    if cluster is None:
        raise ValueError(f"the {executor.name} executor has no capacity of its own to cap")
    machine = apply_limits(cluster, limits)
    if machine.cpus < cluster.cpus and executor.queue_ahead > 0:
        executor.queue_ahead = 0.0
    if len(machine.gpus) < len(cluster.gpus):
        executor.strict_gpus = True  # SLURM: never hold more GPUs than the engine booked under the cap
    return machine
