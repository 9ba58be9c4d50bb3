"""One Hydra job inside a rota task: ``python -m hydra_plugins.rota_launcher._job JOB.pkl``.

``JOB.pkl`` (cloudpickle, written by the launcher) holds the Hydra context, the task function, the
job's config and Hydra's global state; the job runs as Hydra's own launchers run it
(``hydra.core.utils.run_job``: its working directory, its ``.hydra/`` folder, its log) and its
``JobReturn`` is written beside, ``JOB.pkl.ret``, for the launcher. A return value that is a number,
or a mapping of names to numbers, is also printed as ``ROTA_METRIC`` lines, so ``rota report``
shows it. Exit status: 0 when the job completed, 1 when it raised (rota retries it, if asked).
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals


def result_path(job_path: str) -> str:
    return f"{job_path}.ret"


def main(job_path: str) -> int:
    with open(job_path, "rb") as f:
        job = cloudpickle.load(f)
    Singleton.set_state(job["singletons"])
    setup_globals()
    ret = run_job(hydra_context=job["hydra_context"], task_function=job["task_function"], config=job["config"],
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    ok = ret.status == JobStatus.COMPLETED
    if ok:
        _print_metrics(ret.return_value)
    _write(job_path, ret)
    return 0 if ok else 1


def _print_metrics(value: Any) -> None:
    items = value.items() if isinstance(value, Mapping) else [("value", value)]
    for name, v in items:
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)):
            print(f"ROTA_METRIC {name}={float(v)!r}", flush=True)


def _write(job_path: str, ret: JobReturn) -> None:
    """The JobReturn, whole or absent (a temporary file renamed); a return value or exception that
    cannot be pickled is replaced by a RuntimeError that says what it was."""
    try:
        data = cloudpickle.dumps(ret)
    except Exception as e:  # noqa: BLE001 - any value the user's function returned
        why = repr(ret._return_value)[:2000]
        ret._return_value = RuntimeError(f"the job's result could not be pickled ({e}): {why}")
        ret.status = JobStatus.FAILED
        data = pickle.dumps(ret)
    tmp = f"{result_path(job_path)}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, result_path(job_path))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
