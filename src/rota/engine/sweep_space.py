"""A sweep's search space, sampler and pruner (naming: :mod:`rota.studies.names`).

``check_param`` says why one ``params:`` entry is invalid; ``grid_values``
lists the points ``sampler: grid`` walks. The Optuna builders take the
imported ``optuna`` module as an argument: this module never imports it (only
:mod:`rota.engine.sweep` does).
"""

from __future__ import annotations

from typing import Any

from rota.errors import RotaError, SpecError
from rota.spec.model import SweepSpec, check_param


def grid_values(sweep: SweepSpec, *, file: str | None, task: str | None) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, p in sweep.params.items():
        if p.type == "categorical":
            grid[name] = list(p.choices or [])
        elif p.type == "int":
            grid[name] = list(range(int(p.low or 0), int(p.high or 0) + 1, int(p.step or 1)))
        elif p.step is not None:
            n = int(round(((p.high or 0.0) - (p.low or 0.0)) / p.step))
            grid[name] = [(p.low or 0.0) + i * p.step for i in range(n + 1)]
        else:
            raise SpecError("sampler: grid needs 'step' on float parameters (or choices)", file=file, task=task,
                            field=f"sweep.params.{name}")
    return grid


def distributions(optuna: Any, sweep: SweepSpec, *, file: str | None = None, task: str | None = None) -> dict[str, Any]:
    """Optuna distributions for a sweep's ``params`` (``optuna``: the imported module). Raises SpecError."""
    d = optuna.distributions
    out: dict[str, Any] = {}
    for name, p in sweep.params.items():
        why = check_param(name, p)
        if why is not None:
            raise SpecError(why, file=file, task=task, field=f"sweep.params.{name}")
        if p.type == "categorical":
            out[name] = d.CategoricalDistribution(list(p.choices or []))
        elif p.type == "int":
            out[name] = d.IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log, step=int(p.step or 1))
        else:
            out[name] = d.FloatDistribution(float(p.low or 0.0), float(p.high or 0.0), log=p.log, step=p.step)
    return out


_SPEC_SEED: Any = object()  # "the spec's seed"


def make_sampler(optuna: Any, sweep: SweepSpec, *, file: str | None = None, task: str | None = None,
                 seed: int | None = _SPEC_SEED) -> Any:
    """The sampler the spec names (TPE by default, with a constant liar for parallel trials).

    ``seed`` overrides the spec's ``seed`` (a resumed study is re-seeded, see
    :mod:`rota.studies.names`).
    """
    s = sweep.seed if seed is _SPEC_SEED else seed
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s)
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(grid_values(sweep, file=file, task=task), seed=s)
    if sweep.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise RotaError("sampler: cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=s)
    return optuna.samplers.TPESampler(seed=s, constant_liar=True)


def make_pruner(optuna: Any, sweep: SweepSpec) -> Any:
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner()
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()
