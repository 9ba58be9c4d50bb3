"""What this machine offers: GPUs (NVML or declared), usable CPUs, RAM.

Detection is the only I/O here; parsing ``--gpus``/``--cpus``/``--memory`` is
pure. Inside a SLURM allocation (or any parent that set CUDA_VISIBLE_DEVICES)
rota sees exactly what it was given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import psutil

from rota.core.resources import Gpu, Machine
from rota.errors import MachineError
from rota.units import format_size, parse_size

_DECL = re.compile(r"^\s*(?:(\d+)\s*[xX]\s*)?(\d+(?:\.\d+)?\s*[A-Za-z]*)\s*$")
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def detect_gpus_nvml() -> list[Gpu] | None:
    """GPUs through NVML in PCI bus order, or None when NVML is unavailable."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                uuid = pynvml.nvmlDeviceGetUUID(h)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
            except pynvml.NVMLError:
                continue  # a GPU that does not answer (lost, needs a reset) is not offered at all
            gpus.append(
                Gpu(
                    index=i,
                    memory_bytes=int(mem),
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def apply_visible_devices(gpus: list[Gpu], cvd: str | None) -> list[Gpu]:
    """Keep the GPUs named by an inherited CUDA_VISIBLE_DEVICES (indices or UUIDs).

    Tasks then get the parent's own identifiers, so nested pinning stays correct.
    """
    if cvd is None:
        return gpus
    tokens = [t.strip() for t in cvd.split(",") if t.strip()]
    kept = []
    for tok in tokens:
        for g in gpus:
            if tok == str(g.index) or (g.uuid and (tok == g.uuid or g.uuid.startswith(tok))):
                kept.append(Gpu(g.index, g.memory_bytes, g.name, g.uuid, visible_id=tok))
                break
    return kept


def parse_gpus_flag(value: str, detected: list[Gpu]) -> list[Gpu]:
    """``none`` | ``0,2`` (restrict) | ``4x80GB`` | ``80GB,80GB,24GB`` (declare)."""
    v = value.strip().lower()
    if v in ("none", "0x", "", "cpu"):
        return []
    parts = [p.strip() for p in v.split(",")]
    if all(p.isdigit() for p in parts):
        wanted = [int(p) for p in parts]
        by_index = {g.index: g for g in detected}
        missing = [w for w in wanted if w not in by_index]
        if missing:
            have = ", ".join(str(g.index) for g in detected) or "none"
            raise MachineError(
                f"--gpus {value}: GPU(s) {missing} not detected (detected: {have}); "
                "to declare GPUs on a machine without them use e.g. --gpus 4x80GB"
            )
        return [by_index[w] for w in wanted]
    gpus: list[Gpu] = []
    for p in (p.strip() for p in value.split(",")):  # the user's own text, for messages
        m = _DECL.match(p)
        if not m:
            raise MachineError(f"--gpus {value}: expected 'none', indices like '0,2', or sizes like '4x80GB', found {p!r}")
        count = int(m.group(1) or 1)
        size_text = m.group(2)
        try:
            size = parse_size(size_text)
        except ValueError as e:
            if _BARE_NUMBER.match(size_text):
                example = f"{m.group(1) + 'x' if m.group(1) else ''}{size_text.strip()}GB"
                raise MachineError(f"--gpus {value}: GPU memory needs a unit, found {p!r}; write e.g. {example!r}") from None
            raise MachineError(f"--gpus {value}: {e}") from None
        if count > 1024 or count < 1 or size <= 0:
            raise MachineError(f"--gpus {value}: expected 1-1024 GPUs of a positive size, found {p!r}")
        for _ in range(count):
            gpus.append(Gpu(index=len(gpus), memory_bytes=size, name=f"declared {format_size(size)}"))
    return gpus


def _declared_under_visible_devices(gpus: list[Gpu], cvd: str, flag: str) -> list[Gpu]:
    """Declared GPUs inside a parent's CUDA_VISIBLE_DEVICES (a SLURM allocation on a
    machine without NVML, say): GPU i is the parent's i-th visible device."""
    tokens = [t.strip() for t in cvd.split(",") if t.strip()]
    if len(tokens) < len(gpus):
        raise MachineError(
            f"--gpus {flag} declares {len(gpus)} GPUs but the inherited CUDA_VISIBLE_DEVICES={cvd!r} "
            f"gives {len(tokens)}; declare at most {len(tokens)}"
        )
    return [Gpu(g.index, g.memory_bytes, g.name, g.uuid, visible_id=tok) for g, tok in zip(gpus, tokens, strict=False)]


def usable_cpus(environ: Mapping[str, str]) -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    slurm = environ.get("SLURM_CPUS_ON_NODE")
    if slurm and slurm.isdigit():
        n = int(slurm)  # SLURM's grant is the contract, even where it claims more than nproc
    return max(n, 1)


def usable_memory(environ: Mapping[str, str]) -> int:
    total = int(psutil.virtual_memory().total)
    slurm = environ.get("SLURM_MEM_PER_NODE")
    if slurm and slurm.isdigit():
        return int(slurm) * 2**20
    return total


def detect_machine(
    gpus: str | None = None,
    cpus: int | None = None,
    memory: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Machine:
    """The machine rota will book, from detection and the CLI flags."""
    env = os.environ if environ is None else environ
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    no_gpus = gpus is not None and gpus.strip().lower() == "none"
    declared = gpus is not None and not all(p.strip().isdigit() for p in gpus.split(",")) and not no_gpus
    detected: list[Gpu] = []
    source = "none" if no_gpus else "declared"
    if not declared and not no_gpus:  # --gpus none needs no detection (and no NVML import)
        nvml = detect_gpus_nvml()
        if nvml is not None:
            detected = apply_visible_devices(nvml, cvd)
            source = "nvml"
        else:
            source = "none"
    chosen = detected if gpus is None else parse_gpus_flag(gpus, detected)
    if declared and cvd is not None:
        chosen = _declared_under_visible_devices(chosen, cvd, gpus or "")
    if cpus is not None and cpus < 1:
        raise MachineError(f"--cpus {cpus}: expected a positive number")
    n_cpus = cpus if cpus is not None else usable_cpus(env)
    slurm_cpus = env.get("SLURM_CPUS_ON_NODE", "").isdigit()
    cpus_from = "flag" if cpus is not None else "slurm-allocation" if slurm_cpus else "machine"
    if memory is not None:
        try:
            mem = parse_size(memory)
        except ValueError as e:
            raise MachineError(f"--memory {memory}: {e}") from None
    else:
        mem = usable_memory(env)
    slurm_mem = env.get("SLURM_MEM_PER_NODE", "").isdigit()  # as usable_memory reads it
    memory_from = "flag" if memory is not None else "slurm-allocation" if slurm_mem else "machine"
    return Machine(gpus=tuple(chosen), cpus=n_cpus, memory_bytes=mem, source=source, cpus_from=cpus_from,
                   memory_from=memory_from)


_CUDA_ID = re.compile(r"^(?:\d+|(?:GPU|MIG)-[0-9A-Za-z-]+)$")
_ASSUMED_SIZE = "80GB"  # only the example in the message: the real size is the user's to say


def visible_without_nvml(machine: Machine, gpus: str | None = None,
                         environ: Mapping[str, str] | None = None) -> str | None:
    """One line (no ``rota:`` prefix) when ``CUDA_VISIBLE_DEVICES`` lists GPUs that ``machine`` has
    none of because NVML could not be read (no ``--gpus`` given, :func:`detect_machine` found no
    NVML): e.g. inside a SLURM allocation (``--gres=gpu:2``) on a node without NVML, where rota
    would otherwise book no GPU at all, silently. Says how many are visible, why their memory is
    unknown and how to declare them. None otherwise (NVML read, ``--gpus`` given, nothing listed:
    ``""``, ``-1`` or SLURM's ``NoDevFiles``)."""
    if gpus is not None or machine.gpus or machine.source != "none":
        return None
    env = os.environ if environ is None else environ
    cvd = env.get("CUDA_VISIBLE_DEVICES") or ""
    ids = []
    for tok in (t.strip() for t in cvd.split(",")):
        if not _CUDA_ID.match(tok):
            break  # CUDA stops at the first id it cannot use ("-1": none)
        ids.append(tok)
    if not ids:
        return None
    n = len(ids)
    where = f" (SLURM job {env['SLURM_JOB_ID']})" if env.get("SLURM_JOB_ID") else ""
    return (f"{n} GPU{'s are' if n > 1 else ' is'} visible through CUDA_VISIBLE_DEVICES={cvd}{where} but "
            f"{'their' if n > 1 else 'its'} memory is unknown without NVML (pynvml missing or not "
            f"initialised), so rota books no GPU; declare {'them' if n > 1 else 'it'} with "
            f"--gpus {n}x{_ASSUMED_SIZE} (each GPU's memory)")


def describe(machine: Machine) -> list[str]:
    lines = []
    if not machine.gpus:
        why = {"none": "", "declared": " (declared)", "nvml": " (NVML sees none)"}.get(machine.source, f" ({machine.source})")
        lines.append(f"GPUs: none{why}")
    for g in machine.gpus:
        uuid = f" {g.uuid}" if g.uuid else ""
        lines.append(f"GPU {g.index}: {g.name}, {format_size(g.memory_bytes)}{uuid} (CUDA_VISIBLE_DEVICES={g.cuda_id})")
    lines.append(f"CPUs: {machine.cpus}")
    lines.append(f"RAM: {format_size(machine.memory_bytes)}")
    return lines


def gpu_health(machine: Machine) -> dict[int, dict[str, object]]:
    """Per NVML GPU, read now: ``health`` (``ok`` or why not), ``ecc_uncorrected`` (volatile
    count, None: no ECC) and ``processes`` (pid, used_bytes, user, command, rota task or None).
    Empty for declared GPUs or without NVML."""
    if machine.source != "nvml" or not machine.gpus:
        return {}
    from rota.nvml import probe, process_owner

    readings = probe(machine.gpu_indices)
    if readings is None:
        return {}
    out: dict[int, dict[str, object]] = {}
    for i, r in readings.items():
        procs = []
        for p in r.processes:
            user, command, task = process_owner(p.pid)
            procs.append({"pid": p.pid, "used_bytes": p.used_bytes, "user": user, "command": command, "rota_task": task})
        health = r.lost or (f"not answering: {r.error}" if r.error else "ok" if not r.ecc_uncorrected else
                            f"{r.ecc_uncorrected} uncorrectable ECC error(s) since the driver loaded")
        out[i] = {"health": health, "ecc_uncorrected": r.ecc_uncorrected, "processes": procs}
    return out


def describe_health(health: Mapping[int, Mapping[str, object]]) -> list[str]:
    """``rota machine``'s lines for :func:`gpu_health`: each GPU's health, who holds memory there."""
    lines = []
    for i, h in sorted(health.items()):
        lines.append(f"GPU {i} health: {h['health']}")
        procs = h["processes"]
        assert isinstance(procs, list)
        for p in procs:
            used = "?" if p["used_bytes"] is None else format_size(int(p["used_bytes"]))
            whose = f"rota task {p['rota_task']}" if p["rota_task"] else "not rota's"
            lines.append(f"GPU {i}: {used} held by pid {p['pid']}, user {p['user']}, {p['command']} ({whose})")
    return lines
