"""Resources: the machine, what a task asks for, and what it was given.

Pure data and arithmetic, no I/O. GPU memory is a *ledger of declared
reservations* per GPU, never free memory measured at launch (which races).
A task without ``gpu_memory`` books the whole GPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from rota.units import format_size


@dataclass(frozen=True)
class Gpu:
    """One GPU as rota sees it. ``index`` is what goes into CUDA_VISIBLE_DEVICES."""

    index: int
    memory_bytes: int
    name: str = "GPU"
    uuid: str | None = None
    visible_id: str | None = None  # what goes into a task's CUDA_VISIBLE_DEVICES; default str(index)

    @property
    def cuda_id(self) -> str:
        return self.visible_id if self.visible_id is not None else str(self.index)


@dataclass(frozen=True)
class Node:
    """One host of a cluster backend (a Ray node): a task runs on one, never across several."""

    name: str
    gpus: int
    cpus: int
    memory_bytes: int


CPUS_FROM = ("flag", "machine", "slurm-allocation", "ray", "slurm")
"""What :attr:`Machine.cpus_from` may say: the run's ``--cpus``, this machine's usable CPUs, the
SLURM allocation it runs in (``SLURM_CPUS_ON_NODE``), a Ray cluster's CPUs, a SLURM node's.
:attr:`Machine.memory_from` says the same of RAM (``--memory``, this machine's RAM,
``SLURM_MEM_PER_NODE``, Ray's ``memory`` resource, a SLURM node's memory)."""


@dataclass(frozen=True)
class Machine:
    """Everything rota may book: GPUs, CPU slots and RAM.

    ``nodes``: where the machine is a cluster summed up (Ray), its hosts; a task
    must fit on one of them. Empty: the machine is one host.

    ``cpus_from``: where ``cpus`` comes from, one of :data:`CPUS_FROM` ("" when not
    known: then ``source`` may say), so that a task waiting for CPU slots is told what
    limits them. ``cpus_ahead``: how many of ``cpus`` are slots booked ahead of that
    capacity, whose attempts wait in the backend's queue (:func:`with_cpu_headroom`).
    ``memory_from``: where ``memory_bytes`` comes from, in the same words ("" when not known).
    """

    gpus: tuple[Gpu, ...]
    cpus: int
    memory_bytes: int
    source: str = "declared"
    nodes: tuple[Node, ...] = ()
    cpus_from: str = ""
    cpus_ahead: int = 0
    memory_from: str = ""

    def gpu(self, index: int) -> Gpu:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(index)

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)


@dataclass(frozen=True)
class Request:
    """What one task asks for.

    ``gpu_memory_bytes`` is per GPU; ``None`` means the whole GPU.
    ``devices`` restricts which GPU indices may be used (a resource pool).
    """

    gpus: int = 0
    gpu_memory_bytes: int | None = None
    cpus: int = 1
    memory_bytes: int = 0
    devices: tuple[int, ...] | None = None


@dataclass(frozen=True, init=False)
class Placement:
    """Where a task runs: GPU indices, bytes booked on each, CPUs and RAM booked."""

    task: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: tuple[int, ...] = ()
    cpus: int = 1
    memory_bytes: int = 0

    def __init__(
        self, task: str, gpus: tuple[int, ...] = (), gpu_bytes: tuple[int, ...] = (), cpus: int = 1,
        memory_bytes: int = 0,
    ) -> None:
        # The generated __init__ of a frozen dataclass calls object.__setattr__ per field,
        # twice as slow; a plan makes one of these per task (tests/unit/test_records.py).
        d = self.__dict__
        d["task"], d["gpus"], d["gpu_bytes"], d["cpus"], d["memory_bytes"] = task, gpus, gpu_bytes, cpus, memory_bytes


@dataclass
class Ledger:
    """Free resources; mutable working copy used inside one policy decision."""

    gpu_free: dict[int, int]
    gpu_total: dict[int, int]
    cpus: int
    memory_bytes: int
    _order: tuple[int, ...] = field(default=())

    @classmethod
    def for_machine(cls, machine: Machine, running: Iterable[Placement] = ()) -> Ledger:
        led = cls(
            gpu_free={g.index: g.memory_bytes for g in machine.gpus},
            gpu_total={g.index: g.memory_bytes for g in machine.gpus},
            cpus=machine.cpus,
            memory_bytes=machine.memory_bytes,
            _order=machine.gpu_indices,
        )
        for p in running:
            led.book(p)
        return led

    def copy(self) -> Ledger:
        return Ledger(dict(self.gpu_free), self.gpu_total, self.cpus, self.memory_bytes, self._order)

    def book(self, p: Placement) -> None:
        gpus, gpu_bytes = p.gpus, p.gpu_bytes
        if len(gpus) == 1 == len(gpu_bytes):  # the common case, without building a zip
            self.gpu_free[gpus[0]] -= gpu_bytes[0]
        elif gpus or gpu_bytes:
            free = self.gpu_free
            for idx, b in zip(gpus, gpu_bytes, strict=True):
                free[idx] -= b
        self.cpus -= p.cpus
        self.memory_bytes -= p.memory_bytes

    def release(self, p: Placement) -> None:
        gpus, gpu_bytes = p.gpus, p.gpu_bytes
        if len(gpus) == 1 == len(gpu_bytes):
            self.gpu_free[gpus[0]] += gpu_bytes[0]
        elif gpus or gpu_bytes:
            free = self.gpu_free
            for idx, b in zip(gpus, gpu_bytes, strict=True):
                free[idx] += b
        self.cpus += p.cpus
        self.memory_bytes += p.memory_bytes

    def fit(self, task: str, req: Request, also: Ledger | None = None) -> Placement | None:
        """Placement of ``req`` in this ledger (and in ``also`` if given), or None.

        Spread, then best fit: an idle GPU is taken before a shared one, so jobs
        do not compete for one GPU's compute while another sits idle; once every
        candidate GPU is busy, the one with the least free memory that fits is
        taken, so big holes stay open for big tasks. Ties: the lowest index.
        Pure: neither ledger changes (the caller books the placement).
        """
        cpus, mem = req.cpus, req.memory_bytes
        if cpus > self.cpus or mem > self.memory_bytes:
            return None
        if also is not None and (cpus > also.cpus or mem > also.memory_bytes):
            return None
        n = req.gpus
        if n == 0:
            return Placement(task, (), (), cpus, mem)
        want, devices = req.gpu_memory_bytes, req.devices
        free_of, total_of = self.gpu_free, self.gpu_total
        also_free = None if also is None else also.gpu_free
        if n == 1 and devices is None and also_free is None:
            best = self._fit_one(want)
            if best is None:
                return None
            return Placement(task, (best,), (total_of[best] if want is None else want,), cpus, mem)
        # Rank GPUs by (busy, free, index): the sort key of the rule above.
        cands: list[tuple[bool, int, int, int]] = []
        for idx in self._order:
            if devices is not None and idx not in devices:
                continue
            total = total_of[idx]
            need = total if want is None else want
            free = free_of[idx]
            if free < need or need > total:
                continue
            if also_free is not None and also_free[idx] < need:
                continue
            cands.append((free != total, free, idx, need))
        if len(cands) < n:
            return None
        cands.sort()
        chosen = sorted(cands[:n], key=lambda c: c[2])
        return Placement(task, tuple(c[2] for c in chosen), tuple(c[3] for c in chosen), cpus, mem)

    def _fit_one(self, want: int | None) -> int | None:
        """The GPU :meth:`fit` picks for one GPU from any, without ``also``: the hot path
        of big plans. Idle GPUs first (least memory, then lowest index); else the busy
        GPU with the least free memory that fits (then the lowest index)."""
        free_of, total_of = self.gpu_free, self.gpu_total
        idle = busy = None
        idle_total = busy_free = 0
        if want is None:  # a whole GPU: one with nothing booked (or, oddly, more than its size free)
            for idx in self._order:
                free, total = free_of[idx], total_of[idx]
                if free == total:
                    if idle is None or total < idle_total or (total == idle_total and idx < idle):
                        idle, idle_total = idx, total
                elif free > total and idle is None and (
                        busy is None or free < busy_free or (free == busy_free and idx < busy)):
                    busy, busy_free = idx, free
            return idle if idle is not None else busy
        for idx in self._order:
            free = free_of[idx]
            if free < want:
                continue
            total = total_of[idx]
            if want > total:
                continue
            if free == total:
                if idle is None or total < idle_total or (total == idle_total and idx < idle):
                    idle, idle_total = idx, total
            elif idle is None and (busy is None or free < busy_free or (free == busy_free and idx < busy)):
                busy, busy_free = idx, free
        return idle if idle is not None else busy


def with_cpu_headroom(machine: Machine, extra: float) -> Machine:
    """``machine`` with ``ceil(cpus * extra)`` more CPU slots (each node's likewise); GPUs and RAM unchanged.

    For a backend with its own queue (Ray): the engine books attempts on these
    slots ahead of capacity, the backend holds them until a CPU frees and starts
    the next at once, without a round trip through the controller; ``cpus_ahead``
    counts them. ``extra <= 0`` returns ``machine`` itself.
    """
    if extra <= 0:
        return machine
    ahead = math.ceil(machine.cpus * extra)
    return replace(machine, cpus=machine.cpus + ahead, cpus_ahead=machine.cpus_ahead + ahead,
                   nodes=tuple(replace(n, cpus=n.cpus + math.ceil(n.cpus * extra)) for n in machine.nodes))


def _n(count: int, noun: str) -> str:
    """``1 GPU``, ``2 GPUs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def fits_machine(req: Request, machine: Machine) -> str | None:
    """Why ``req`` can never run on ``machine`` (empty), or None if it can."""
    if req.cpus > machine.cpus:
        return f"asks for {_n(req.cpus, 'CPU')} but the machine has {machine.cpus}"
    if req.memory_bytes > machine.memory_bytes:

        return (
            f"asks for {format_size(req.memory_bytes)} RAM but the machine has "
            f"{format_size(machine.memory_bytes)}"
        )
    if req.gpus == 0:
        return _fits_a_node(req, machine.nodes)
    pool: Sequence[Gpu] = machine.gpus
    if req.devices is not None:
        missing = [d for d in req.devices if d not in machine.gpu_indices]
        if missing:
            return f"devices {missing} are not among the machine's GPUs {list(machine.gpu_indices)}"
        pool = [g for g in machine.gpus if g.index in req.devices]
    if req.gpus > len(pool):
        return (f"asks for {_n(req.gpus, 'GPU')} but {'its devices pool' if req.devices else 'the machine'} has "
                f"{len(pool) or 'none'}")
    if req.gpu_memory_bytes is not None:
        big = [g for g in pool if g.memory_bytes >= req.gpu_memory_bytes]
        if len(big) < req.gpus:

            largest = max((g.memory_bytes for g in pool), default=0)
            return (
                f"asks for {format_size(req.gpu_memory_bytes)} per GPU on {_n(req.gpus, 'GPU')} "
                f"but the largest GPU has {format_size(largest)}"
            )
    return _fits_a_node(req, machine.nodes)


_CLUSTER_FROM = {"ray": "add nodes to the Ray cluster (or start it with more: ray start --num-cpus, --memory)",
                 "slurm": "run where SLURM has larger nodes (another --partition)",
                 "slurm-allocation": "ask SLURM for more (salloc/sbatch --cpus-per-task, --mem)"}
"""A cluster's own figures (``cpus_from``/``memory_from``): ``--cpus``/``--memory`` only lower them,
so the fix is on the cluster's side."""


def how_to_fit(req: Request, machine: Machine) -> str:
    """The fix for a request that :func:`fits_machine` refuses on the machine of this run
    (declared with ``rota run``/``rota plan`` flags): raise the flag, or lower the task's key."""

    if req.cpus > machine.cpus:
        if machine.cpus_from in _CLUSTER_FROM:  # --cpus only lowers a cluster's figure: no fix to offer
            return f"lower the task's 'cpus:' to {machine.cpus}, or {_CLUSTER_FROM[machine.cpus_from]}"
        return f"run with --cpus {req.cpus} if this machine has them, or lower the task's 'cpus:' to {machine.cpus}"
    if req.memory_bytes > machine.memory_bytes:
        if machine.memory_from in _CLUSTER_FROM:
            return (f"lower the task's 'memory:' to {format_size(machine.memory_bytes)}, or "
                    f"{_CLUSTER_FROM[machine.memory_from]}")
        return (f"run with --memory {format_size(req.memory_bytes)} if this machine has it, or lower the task's "
                f"'memory:' to {format_size(machine.memory_bytes)}")
    if req.devices is not None and any(d not in machine.gpu_indices for d in req.devices):
        return "list only GPUs this machine has in 'devices:', or declare them with --gpus"
    pool = [g for g in machine.gpus if req.devices is None or g.index in req.devices]
    if req.gpus > len(pool):
        if req.devices is not None:
            return f"widen 'devices:', or lower the task's 'gpus:' to {len(pool)}"
        size = format_size(req.gpu_memory_bytes) if req.gpu_memory_bytes is not None else "24GB"
        fix = (f"declare {_n(req.gpus, 'GPU')} with --gpus (e.g. --gpus {req.gpus}x{size}) if this machine has "
               f"{'it' if req.gpus == 1 else 'them'}")
        # 'gpus: 0' is no fix for a task written for a GPU: offered only when some GPUs are there
        return f"{fix}, or lower the task's 'gpus:' to {len(pool)}" if pool else fix
    if req.gpus and req.gpu_memory_bytes is not None:
        return (f"declare larger GPUs with --gpus {req.gpus}x{format_size(req.gpu_memory_bytes)}, or lower the "
                "task's 'gpu_memory:'")
    return "lower the task's 'gpus:', 'cpus:' or 'memory:' to what one node has"


def _fits_a_node(req: Request, nodes: Sequence[Node]) -> str | None:
    """Why no single node of a cluster can take ``req`` (the sums may, but a task never spans nodes)."""
    if not nodes or any(n.gpus >= req.gpus and n.cpus >= req.cpus and n.memory_bytes >= req.memory_bytes
                        for n in nodes):
        return None

    most_gpus, most_cpus = max(n.gpus for n in nodes), max(n.cpus for n in nodes)
    most_memory = max(n.memory_bytes for n in nodes)
    if req.gpus > most_gpus:
        return f"asks for {_n(req.gpus, 'GPU')} but the largest node has {most_gpus} (a task runs on one node)"
    if req.cpus > most_cpus:
        return f"asks for {_n(req.cpus, 'CPU')} but the largest node has {most_cpus} (a task runs on one node)"
    if req.memory_bytes > most_memory:
        return (f"asks for {format_size(req.memory_bytes)} RAM but the largest node has "
                f"{format_size(most_memory)} (a task runs on one node)")
    return (f"asks for {_n(req.gpus, 'GPU')}, {_n(req.cpus, 'CPU')} and {format_size(req.memory_bytes)} together but no "
            f"node has all of them: " + ", ".join(
                f"{n.name}: {n.gpus} GPUs, {n.cpus} CPUs, {format_size(n.memory_bytes)}" for n in nodes[:8]))
