"""The executors (local, SLURM, Ray) behind :class:`rota.executors.base.Executor`, and the one
place that builds one by its backend name (the concrete modules are imported only when asked: Ray
and SLURM need what the local backend does not)."""

from __future__ import annotations

from typing import Any

from rota.errors import SpecError


def make_executor(backend: str, **options: Any) -> Any:
    """The executor of ``backend`` (``local``, ``slurm``, ``ray``) built with ``options``;
    SpecError for any other name."""
    if backend == "local":
        from rota.executors.local import LocalExecutor

        return LocalExecutor()
    if backend == "slurm":
        from rota.executors import slurm

        return slurm.SlurmExecutor(**options)
    if backend == "ray":
        from rota.executors import ray as ray_exec

        return ray_exec.RayExecutor(**options)
    raise SpecError(f"unknown backend {backend!r}; expected local, slurm or ray")
