"""How the SLURM executor groups launches into sbatch units, and splits a cancel (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from rota.executors import slurm_text as T
from rota.executors.base import Handle, Launch


def is_shared(launch: Launch) -> bool:
    """A launch that books part of one GPU by memory."""
    return (launch.gpu_count == 1 and launch.gpu_memory_bytes is not None and launch.gpu_fraction < 1.0
            and len(launch.gpus) == 1)


def plan_units(launches: Sequence[Launch]) -> list[tuple[str, list[int]]]:
    """Split launches into sbatch units: ("shared"|"array"|"single", indices), in first-seen order."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, la in enumerate(launches):
        if is_shared(la):
            key: tuple[object, ...] = ("shared", la.gpus)
        elif la.array_group is not None:
            key = ("array", la.array_group, *T.resource_key(la))
        else:
            key = ("single", i)
        groups.setdefault(key, []).append(i)
    return [(str(k[0]) if len(v) > 1 else "single", v) for k, v in groups.items()]


def split_cancel(handles: Sequence[Handle]) -> tuple[set[str], list[Handle]]:
    """SLURM ids to scancel, and shared members to stop one by one (their job goes on)."""
    shared_asked: dict[str, set[str]] = {}
    whole: set[str] = set()
    for h in handles:
        if h.data.get("kind") == "shared":
            shared_asked.setdefault(h.external_id, set()).add(h.key)
        else:
            whole.add(h.external_id)
    partial: list[Handle] = []
    for job, keys in shared_asked.items():
        members = next(h.data.get("members") for h in handles if h.external_id == job)
        if members is not None and set(members) <= keys:
            whole.add(job)
        else:
            partial.extend(h for h in handles if h.external_id == job)
    return whole, partial
