"""The Hydra launcher (``hydra/launcher=rota``) with real Hydra (hydra-core, its test runner, and
the Optuna sweeper from PyPI) on declared GPUs: each job of a sweep is a rota task (packed by GPU
memory, pinned with CUDA_VISIBLE_DEVICES, retried, in a state folder rota status reads) and its
JobReturn comes back to Hydra."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hydra", reason="the hydra extra: pip install 'rota[hydra]'")
cloudpickle = pytest.importorskip("cloudpickle")

from hydra.core.utils import JobStatus  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from hydra_plugins.rota_launcher.rota_launcher import override_vars  # noqa: E402
from tests.helpers import by_name, rota  # noqa: E402

# The task functions below run in rota's task processes: pickled by value, as a user's script's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LAUNCHER = ["hydra/launcher=rota", "hydra.launcher.gpus=1", "hydra.launcher.gpu_memory=20GB",
            "hydra.launcher.machine_gpus=2x40GB", "hydra.launcher.machine_cpus=8", "hydra.launcher.retry_delay_s=0"]


def grid_job(cfg: Any) -> dict[str, Any]:
    marker = Path(cfg.marker_dir) / f"{cfg.seed}-{cfg.model}"
    if cfg.seed == 3 and cfg.model == "medium" and not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails")  # rota retries it (hydra.launcher.retries=1)
    time.sleep(1.5)  # long enough for the first four to run side by side, two per 40GB GPU
    return {"seed": cfg.seed, "model": cfg.model, "cvd": os.environ["CUDA_VISIBLE_DEVICES"], "score": cfg.seed * 0.5}


def test_a_grid_sweep_runs_as_rota_tasks_and_returns_each_job(hydra_sweep_runner, tmp_path: Path):
    sweep_dir = tmp_path / "multirun"
    with hydra_sweep_runner(
        calling_file=None, calling_module="tests.integration.test_hydra_launcher", task_function=grid_job,
        config_path=None, config_name=None, temp_dir=sweep_dir,
        overrides=[*LAUNCHER, "hydra.launcher.retries=1", "+seed=1,2,3", "+model=small,medium",
                   f"+marker_dir={tmp_path}"],
    ) as sweep:  # the runner removes the sweep folder on leaving: everything is checked inside
        returns = sweep.returns[0]
        assert len(returns) == 6
        for ret in returns:
            assert ret.status == JobStatus.COMPLETED
            seed, model = (o.split("=", 1)[1] for o in ret.overrides[:2])
            value = ret.return_value
            assert (value["seed"], value["model"]) == (int(seed), model) and value["cvd"] in ("0", "1")
            hydra_dir = Path(ret.working_dir) / ".hydra"  # the job's own folder, as Hydra's launchers make it
            assert Path(ret.working_dir).parent == sweep_dir and ret.task_name == "test_hydra_launcher"
            assert OmegaConf.load(hydra_dir / "overrides.yaml") == OmegaConf.create(list(ret.overrides))
            assert OmegaConf.load(hydra_dir / "config.yaml").seed == int(seed)

        tasks = by_name(sweep_dir / ".rota")  # rota status reads the sweep's state folder
        assert sorted(tasks) == [f"test_hydra_launcher-{i}" for i in range(6)]
        assert all(t["state"] == "succeeded" and len(t["gpus"]) == 1 for t in tasks.values())
        retried = [t for t in tasks.values() if t["attempts"] == 2]
        assert len(retried) == 1 and retried[0]["metrics"] == {"seed": 3.0, "score": 1.5}
        # packing by GPU memory: two 20GB jobs at once on one 40GB GPU, never three
        spans = [(t["started_at"], t["ended_at"], t["gpus"][0]) for t in tasks.values()]
        most = max(sum(1 for s, e, g in spans if g == gpu and s <= at < e) for at, _, gpu in spans)
        assert most == 2

        # each job's overrides are its task's variables, as a matrix's values are: the report
        # groups the six jobs by model over the three seeds, with intervals
        combos = {(t["vars"]["seed"], t["vars"]["model"]) for t in tasks.values()}
        assert combos == {(s, m) for s in ("1", "2", "3") for m in ("small", "medium")}
        assert all(t["vars"]["marker_dir"] == str(tmp_path) for t in tasks.values())
        rep = json.loads(rota("report", "--state-dir", sweep_dir / ".rota", "--json", check=True).stdout)
        score = {g["vars"]["model"]: g for g in rep["groups"] if g["metric"] == "score"}
        assert set(score) == {"small", "medium"} and "seed" not in rep["by"]
        for g in score.values():
            assert g["base"] == "test_hydra_launcher" and g["n"] == 3 and g["mean"] == pytest.approx(1.0)
            assert g["ci_low"] < 1.0 < g["ci_high"]


def test_overrides_become_variables_as_matrix_values_are_written():
    assert override_vars(["+seed=1", "model=a", "++opt.lr=0.01", "~db", "hydra.launcher.gpus=1", "msg='a b'",
                          "db@pkg=mysql", "l=[1,2]", "x=null", "flag=true"]) == (
        ("seed", "1"), ("model", "a"), ("opt_lr", "0.01"), ("msg", "a b"), ("db_pkg", "mysql"), ("l", "[1,2]"),
        ("x", "null"), ("flag", "true"))
    # names a shell (a SLURM batch script's export lines) takes, as a matrix variable's
    assert all(k.isidentifier() for k, _ in override_vars(["a.b-c=1", "+1x=2", "bad override"]))


def quadratic(cfg: Any) -> float:
    return float((cfg.x - 0.5) ** 2)


def test_the_optuna_sweeper_runs_its_trials_through_rota(hydra_sweep_runner, tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper from PyPI")
    sweep_dir = tmp_path / "opt"
    with hydra_sweep_runner(
        calling_file=None, calling_module="tests.integration.test_hydra_launcher", task_function=quadratic,
        config_path=None, config_name=None, temp_dir=sweep_dir,
        overrides=[*LAUNCHER, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=1", "+x=interval(-2.0,2.0)"],
    ):
        tasks = by_name(sweep_dir / ".rota")
        assert len(tasks) == 4 and all(t["state"] == "succeeded" and len(t["gpus"]) == 1 for t in tasks.values())
        best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
        # the value each trial returned reached the sweeper: its best is the least of rota's recorded values
        assert best.best_value == pytest.approx(min(t["metrics"]["value"] for t in tasks.values()))
        # each batch of two trials (n_jobs=2) ran side by side, each on its own GPU
        for a, b in ((0, 1), (2, 3)):
            ta, tb = tasks[f"test_hydra_launcher-{a}"], tasks[f"test_hydra_launcher-{b}"]
            assert ta["gpus"] != tb["gpus"]
            assert ta["started_at"] < tb["ended_at"] and tb["started_at"] < ta["ended_at"]


def test_the_plugin_ships_in_the_package_as_a_namespace_package():
    """Hydra finds plugins in the ``hydra_plugins`` namespace: the folder has no __init__.py, and
    setuptools' discovery (pyproject's packages.find, namespaces on) includes the launcher."""
    from setuptools import find_namespace_packages

    src = Path(__file__).resolve().parents[2] / "src"
    assert not (src / "hydra_plugins" / "__init__.py").exists()
    assert "hydra_plugins.rota_launcher" in find_namespace_packages(where=str(src))
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from hydra_plugins.rota_launcher.rota_launcher import RotaLauncher

    assert RotaLauncher in Plugins.instance().discover(Launcher)
