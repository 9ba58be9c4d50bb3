"""The rota launcher: a Hydra sweep's jobs run as rota tasks.

Each ``launch`` (one per batch the sweeper asks for: the whole grid of the basic sweeper, a batch
of trials of the Optuna sweeper) writes every job (Hydra's context, the task function, the job's
config: cloudpickle, as hydra-submitit does) to ``SWEEP_DIR/.rota-hydra/job-N.pkl``, runs them
with :func:`rota.run` as tasks ``JOBNAME-N`` of one spec (packing by GPUs and GPU memory,
``CUDA_VISIBLE_DEVICES``, retries, a state folder ``SWEEP_DIR/.rota`` that ``rota status`` and
``rota report`` read afterwards), and returns each job's ``JobReturn`` (return value, working
directory, overrides) as Hydra's own launchers do. The tasks of earlier batches stay in the spec
(``only=`` the new ones), so the state folder keeps the whole sweep.

Each job's overrides are its task's variables (``seed=1 model=a`` -> ``{seed: "1", model: "a"}``,
:func:`override_vars`) and its task group is the Hydra job's name, as a matrix's tasks carry their
values and their template: ``rota status --json`` shows them and ``rota report`` groups the jobs
over seeds (``--by model``), with intervals.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.rota_launcher._job import result_path

log = logging.getLogger(__name__)
JOBS_FOLDER = ".rota-hydra"  # in the sweep folder: job-N.pkl and their results, job-N.pkl.ret
STATE_FOLDER = ".rota"


class RotaLauncher(Launcher):
    """``hydra/launcher=rota``; its fields are :class:`~hydra_plugins.rota_launcher.config.RotaLauncherConf`'s."""

    def __init__(self, **conf: Any) -> None:
        self.conf = conf
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._tasks: dict[str, dict[str, Any]] = {}  # every job's task so far, by name (the spec grows)
        self._vars: dict[str, tuple[tuple[str, str], ...]] = {}  # every job's overrides as its task's vars

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import rota

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        jobs_dir = sweep_dir / JOBS_FOLDER
        jobs_dir.mkdir(parents=True, exist_ok=True)
        state_dir = Path(self.conf.get("state_dir") or sweep_dir / STATE_FOLDER)
        log.info(f"rota: launching {len(job_overrides)} jobs (state: {state_dir})")
        singletons = Singleton.get_state()
        batch: list[tuple[str, str, DictConfig, Sequence[str]]] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            name = f"{self.config.hydra.job.name}-{idx}"
            path = str(jobs_dir / f"job-{idx}.pkl")
            for stale in (path, result_path(path)):  # a job number reused by a new sweep in this folder
                if os.path.exists(stale):
                    os.remove(stale)
            with open(path, "wb") as f:
                cloudpickle.dump({"hydra_context": self.hydra_context, "task_function": self.task_function,
                                  "config": cfg, "singletons": singletons}, f)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))} -> rota task {name}")
            self._tasks[name] = self._task(name, path, overrides)
            self._vars[name] = override_vars(overrides)
            batch.append((name, path, cfg, overrides))
        spec = rota.spec_from_dict({"tasks": list(self._tasks.values())}, root=os.getcwd(), name="hydra")
        # The jobs are one group with variables, as one matrix's tasks are (the spec language has no
        # way to say so for tasks that are not a cartesian product: set on the expanded tasks).
        group = str(self.config.hydra.job.name)
        spec = dataclasses.replace(spec, tasks=tuple(
            dataclasses.replace(t, vars=self._vars.get(t.name, ()), group=group) for t in spec.tasks))
        result = rota.run(
            spec, gpus=self.conf.get("machine_gpus"), cpus=self.conf.get("machine_cpus"),
            memory=self.conf.get("machine_memory"), state_dir=state_dir, only=[n for n, *_ in batch],
            rerun=[n for n, *_ in batch], backend=self.conf.get("backend") or "local", ui=self._ui(),
            retry_delay_s=float(self.conf.get("retry_delay_s", 1.0)),
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if result.exit_code == 130:
            raise KeyboardInterrupt("rota: the sweep was interrupted")
        states = {t["name"]: t for t in rota.status(state_dir)["tasks"]}
        return [self._result(name, path, cfg, overrides, states.get(name)) for name, path, cfg, overrides in batch]

    def _task(self, name: str, path: str, overrides: Sequence[str]) -> dict[str, Any]:
        c = self.conf
        python = c.get("python") or sys.executable
        task: dict[str, Any] = {
            "name": name, "command": f"{shlex.quote(python)} -m hydra_plugins.rota_launcher._job {shlex.quote(path)}",
            "gpus": int(c.get("gpus") or 0), "cpus": int(c["cpus"]) if c.get("cpus") is not None else 1,
            "retries": int(c.get("retries") or 0), "workdir": os.getcwd(),
        }
        for key in ("gpu_memory", "memory", "timeout", "estimate"):
            if c.get(key) is not None:
                task[key] = str(c[key])
        env = {str(k): str(v) for k, v in (c.get("env") or {}).items()}
        # The user's modules, imported by the task function, are found as in the script itself.
        script_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (script_dir, os.environ.get("PYTHONPATH", "")) if p)
        env["ROTA_HYDRA_OVERRIDES"] = " ".join(overrides)
        task["env"] = env
        return task

    def _ui(self) -> Any:
        if self.conf.get("dashboard") and sys.stdout.isatty():
            from rota.ui.dashboard import LiveUI

            return LiveUI()
        from rota.ui.plain import PlainUI

        return PlainUI()

    def _result(self, name: str, path: str, cfg: DictConfig, overrides: Sequence[str],
                status: dict[str, Any] | None) -> JobReturn:
        """The job's own JobReturn; one saying why when it never wrote one (killed, never started)."""
        try:
            with open(result_path(path), "rb") as f:
                ret: JobReturn = cloudpickle.load(f)
            return ret
        except FileNotFoundError:
            pass
        state = status["state"] if status else "unknown"
        reason = (status or {}).get("reason") or ""
        log_path = (status or {}).get("log_path")
        ret = JobReturn()
        ret.overrides = list(overrides)
        ret.cfg = cfg
        ret.hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
        ret.status = JobStatus.FAILED
        ret._return_value = RuntimeError(f"rota task {name} ended {state} without a result"
                                         + (f" ({reason})" if reason else "") + (f"; its log: {log_path}" if log_path else ""))
        return ret


def var_name(key: str) -> str:
    """An override's key as a variable name, an identifier as a matrix variable's is (the engine
    exports each variable as ``ROTA_VAR_<NAME>``, and a SLURM batch script refuses a name that is
    not valid in a shell): ``model.lr`` -> ``model_lr``, ``db@pkg`` -> ``db_pkg``."""
    name = re.sub(r"\W", "_", key, flags=re.ASCII)
    return f"_{name}" if name[:1].isdigit() else name


def override_vars(overrides: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """A job's overrides as task variables, in their order: ``+seed=1 model=a`` -> ``(("seed", "1"),
    ("model", "a"))``. The key without ``+``/``++``, made an identifier (:func:`var_name`: ``model.lr``
    -> ``model_lr``); the value as a matrix value is written (a string as it is, ``true``/``false``,
    ``null``, else Hydra's own text: ``[1,2]``); deletions (``~key``) and ``hydra.*`` overrides are
    left out. An override Hydra cannot parse (it would not have launched the job) is split at its
    first ``=``."""
    out: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - any parse error: the plain split below
        for text in overrides:
            key, sep, value = text.partition("=")
            key = key.lstrip("+")
            if sep and key and not key.startswith(("~", "hydra.")):
                out[var_name(key)] = value
        return tuple(out.items())
    for o in parsed:
        if o.is_delete() or o.is_hydra_override():
            continue
        key = var_name(o.key_or_group + (f"@{o.package}" if o.package else ""))
        v = o.value()
        if isinstance(v, bool):
            out[key] = "true" if v else "false"
        elif v is None:
            out[key] = "null"
        elif isinstance(v, str | int | float):
            out[key] = str(v)
        else:
            out[key] = o.get_value_element_as_str()
    return tuple(out.items())
