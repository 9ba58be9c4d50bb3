"""SLURM text in and out: sbatch scripts rendered, squeue/sacct output parsed.

Pure functions, no I/O, so every line SLURM sees or says is unit-tested
against real output saved in ``tests/data/slurm/``.

Scripts. Every launch runs as ``bash -c COMMAND`` in its ``workdir`` with its
``env`` exported (except ``CUDA_VISIBLE_DEVICES`` of a GPU launch: inside a job
SLURM sets it from the GPUs it granted; a CPU launch gets it empty, as on the
other backends, so that it never sees a GPU of its node it did not book, nor
one named by the submitting shell), stdout+stderr appended to its ``log_path``, and its
exit status written to ``rc_path`` (``<log_path>.rc``) when the command ends,
so a finished attempt's exit code is known without accounting.  Three shapes:

- ``render_single``: one launch, one job (``--output`` = the launch's log).
- ``render_array``: launches of one ``array_group`` with identical resource
  requests, one ``sbatch --array=0-(n-1)``; element *i* picks launch *i*'s
  command/env/workdir with ``case $SLURM_ARRAY_TASK_ID``.  ``--output`` is a
  pattern ending in ``%a`` (the executor points ``<dir>/<i>`` at launch *i*'s
  log with a symlink, so SLURM's own messages also land in the right log).
- ``render_shared``: launches that share one GPU by memory, one job with
  ``--gres=gpu:1``, the commands run concurrently (``&`` + ``wait``), each to
  its own log and rc file.

Every job gets ``--no-requeue``: rota retries attempts itself; a job that
SLURM re-ran under the same id would race the new attempt.

Parsing lives in :mod:`rota.executors.slurm_parse` and is re-exported here
(``parse_squeue``, ``parse_sacct``, ``status_of``, ``parse_nodes``...), so
this module is the one place for SLURM text in both directions.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rota.errors import ExecutorError
from rota.executors.base import Launch
from rota.executors.common import rc_path_for
from rota.executors.slurm_parse import (
    FAILED_REASONS,
    JOB_SCRIPTS_FORMAT,
    RETRY_FREE,
    RUNNING_STATES,
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    JobState,
    NodeInfo,
    attempts_in_script,
    expand_array_id,
    gres_gpu_count,
    parse_exit_code,
    parse_job_scripts,
    parse_nodes,
    parse_sacct,
    parse_squeue,
    parse_time,
    status_from_rc,
    status_of,
)

__all__ = [
    "FAILED_REASONS", "JOB_SCRIPTS_FORMAT", "RETRY_FREE", "RUNNING_STATES", "SACCT_FORMAT", "SQUEUE_FORMAT", "JobState", "NodeInfo",
    "SlurmOptions", "attempts_in_script", "cancel_path_for", "expand_array_id", "exports", "format_time", "gres_gpu_count",
    "job_name", "launch_exports", "needs_output_link", "parse_exit_code", "parse_job_scripts", "parse_nodes", "parse_sacct", "parse_sbatch_parsable", "parse_squeue",
    "parse_time", "rc_path_for", "render_array", "render_shared", "render_single", "resource_key",
    "status_from_rc", "status_of", "time_limit_minutes",
]

SHEBANG = "#!/bin/bash"
#: minutes added to twice a task's estimate when it has no timeout
ESTIMATE_SLACK_MIN = 10

@dataclass(frozen=True)
class SlurmOptions:
    """Site options added to every job.

    ``extra`` holds raw sbatch options (``"--constraint=a100"``), one per item.
    ``gpu_flag``: ``"gres"`` renders ``--gres=gpu:N``, ``"gpus"`` renders
    ``--gpus=N`` (clusters that track GPUs as TRES).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: tuple[str, ...] = ()
    gpu_flag: Literal["gres", "gpus"] = "gres"


# ------------------------------------------------------------------ rendering
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.+-]")

RUN_FUNCTION = """\
rota_run() {  # rota_run RC_PATH WORKDIR COMMAND: the exit status lands in RC_PATH
  local rc
  if cd -- "$2"; then bash -c "$3"; rc=$?; else rc=1; fi
  printf '%s\\n' "$rc" >"$1.tmp" && mv -f -- "$1.tmp" "$1"
  return "$rc"
}"""


def time_limit_minutes(launch: Launch) -> int | None:
    """``--time`` in minutes: the timeout rounded up, else 2x the estimate + 10 min, else None."""
    if launch.timeout_s:
        return max(1, math.ceil(launch.timeout_s / 60))
    if launch.estimate_s:
        return max(1, math.ceil(2 * launch.estimate_s / 60) + ESTIMATE_SLACK_MIN)
    return None


def format_time(minutes: int) -> str:
    """SLURM ``D-HH:MM:SS``."""
    d, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def job_name(launch: Launch) -> str:
    return "rota-" + (_NAME_BAD.sub("_", launch.task)[:60] or "task")


def resource_key(launch: Launch) -> tuple[object, ...]:
    """Launches with equal keys may share one ``sbatch --array``."""
    return (launch.gpu_count, launch.cpus, launch.memory_bytes, time_limit_minutes(launch))


def _directives(
    opts: SlurmOptions, *, name: str, output: str, gpus: int, cpus: int, memory_bytes: int,
    minutes: int | None, array: str | None = None, workdir: str | None = None,
) -> list[str]:
    d = [f"--job-name={name}", f"--output={output}", "--open-mode=append", "--no-requeue",
         "--nodes=1", "--ntasks=1", f"--cpus-per-task={max(1, cpus)}"]
    if memory_bytes > 0:  # never --mem=0: that means "all the node's memory"
        d.append(f"--mem={max(1, math.ceil(memory_bytes / 2**20))}M")
    if gpus > 0:
        d.append(f"--gres=gpu:{gpus}" if opts.gpu_flag == "gres" else f"--gpus={gpus}")
    if minutes is not None:
        d.append(f"--time={format_time(minutes)}")
    if array is not None:
        d.append(f"--array={array}")
    if workdir is not None:
        d.append(f"--chdir={workdir}")
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos)):
        if value:
            d.append(f"--{flag}={value}")
    d.extend(opts.extra)
    for x in d:
        if "\n" in x:
            raise ExecutorError(f"sbatch option {x!r} contains a newline")
    return [f"#SBATCH {x}" for x in d]


#: a CPU launch's line: the job inherits the submitting shell's environment and SLURM sets
#: CUDA_VISIBLE_DEVICES only for jobs that asked for GPUs, so without it a CPU task could see every GPU
CPU_ONLY_DEVICES = "export CUDA_VISIBLE_DEVICES=''"


def exports(env: Mapping[str, str]) -> list[str]:
    """``export K=V`` lines for a launch's env, without CUDA_VISIBLE_DEVICES (see :func:`launch_exports`)."""
    out = []
    for k in sorted(env):
        if k == "CUDA_VISIBLE_DEVICES":
            continue
        if not _ENV_NAME.match(k):
            raise ExecutorError(f"environment variable name {k!r} is not valid in a shell")
        out.append(f"export {k}={shlex.quote(str(env[k]))}")
    return out


def launch_exports(launch: Launch) -> list[str]:
    """A launch's ``export`` lines: its env, and for a CPU launch an empty CUDA_VISIBLE_DEVICES.

    A GPU launch keeps the CUDA_VISIBLE_DEVICES SLURM sets from its ``--gres``/``--gpus``
    (``launch.gpus`` are the engine's bookkeeping, not the node's device ids).
    """
    lines = exports(launch.env)
    if launch.gpu_count == 0:
        lines.insert(0, CPU_ONLY_DEVICES)
    return lines


def _run_line(launch: Launch) -> str:
    q = shlex.quote
    return f"rota_run {q(rc_path_for(launch.log_path))} {q(launch.workdir)} {q(launch.command)}"


def needs_output_link(path: str) -> bool:
    """SLURM reads ``%`` (``%j``...) and ``\\`` in ``--output`` as patterns: such a log needs a symlink."""
    return "%" in path or "\\" in path


def render_single(launch: Launch, opts: SlurmOptions, output: str | None = None) -> str:
    """The sbatch script for one launch in one job; ``--output`` is ``output`` or the launch's log."""
    lines = [SHEBANG, *_directives(
        opts, name=job_name(launch), output=output or launch.log_path, gpus=launch.gpu_count, cpus=launch.cpus,
        memory_bytes=launch.memory_bytes, minutes=time_limit_minutes(launch), workdir=launch.workdir,
    ), f"# rota launch {launch.key}", RUN_FUNCTION, *launch_exports(launch), _run_line(launch)]
    return "\n".join(lines) + "\n"


def render_array(launches: Sequence[Launch], opts: SlurmOptions, output_pattern: str) -> str:
    """One ``--array=0-(n-1)`` job; element i runs ``launches[i]``.

    All launches must have the same :func:`resource_key`. ``output_pattern``
    must contain ``%a`` (the array index).
    """
    if not launches:
        raise ExecutorError("an array job needs at least one launch")
    if len({resource_key(la) for la in launches}) != 1:
        raise ExecutorError("launches of one array job must ask for the same resources")
    if "%a" not in output_pattern:
        raise ExecutorError(f"array output pattern {output_pattern!r} lacks %a")
    first = launches[0]
    lines = [SHEBANG, *_directives(
        opts, name=job_name(first), output=output_pattern, gpus=first.gpu_count, cpus=first.cpus,
        memory_bytes=first.memory_bytes, minutes=time_limit_minutes(first),
        array=f"0-{len(launches) - 1}",
    ), f"# rota array {first.array_group or ''}: {len(launches)} launches", RUN_FUNCTION,
        'case "$SLURM_ARRAY_TASK_ID" in']
    for i, la in enumerate(launches):
        lines.append(f"{i})  # {la.key}")
        lines.extend("  " + e for e in launch_exports(la))
        lines.append("  " + _run_line(la))
        lines.append("  ;;")
    lines += ['*) echo "rota: no launch for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
    return "\n".join(lines) + "\n"


def cancel_path_for(log_path: str) -> str:
    """A file whose appearance (content: a signal name) stops one member of a shared job."""
    return log_path + ".cancel"


SHARED_WATCH = """\
while :; do  # until every member has ended; signal members whose cancel file appeared
  alive=0
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      alive=1
      [ -s "${cancels[$i]}" ] && kill -s "$(head -c 8 "${cancels[$i]}")" -- "-${pids[$i]}" 2>/dev/null
    elif [ -s "${cancels[$i]}" ] && [ ! -e "${rcs[$i]}" ]; then
      printf '%s\\n' "$((128 + $(kill -l "$(head -c 8 "${cancels[$i]}")")))" >"${rcs[$i]}"
    fi
  done
  [ "$alive" = 1 ] || break
  sleep 0.5
done
wait
for i in "${!pids[@]}"; do  # a member stopped by its cancel file never wrote its rc
  if [ -s "${cancels[$i]}" ] && [ ! -e "${rcs[$i]}" ]; then
    printf '%s\\n' "$((128 + $(kill -l "$(head -c 8 "${cancels[$i]}")")))" >"${rcs[$i]}"
  fi
done
exit 0"""


def render_shared(launches: Sequence[Launch], opts: SlurmOptions, output: str) -> str:
    """One job on one GPU running ``launches`` side by side (memory-shared GPU).

    CPUs and memory are the sums of the launches', the time limit the largest.
    Each launch logs to its own ``log_path`` and writes its own rc file; the
    job's own ``output`` only gets what the script itself prints. Members run
    in their own process groups (``set -m``); writing a signal name (``TERM``,
    ``KILL``) to a member's :func:`cancel_path_for` file stops only that
    member (its rc file then says 128+signal), the others go on.
    """
    if not launches:
        raise ExecutorError("a shared-GPU job needs at least one launch")
    limits = [time_limit_minutes(la) for la in launches]
    minutes = None if any(m is None for m in limits) else max(m for m in limits if m is not None)
    q = shlex.quote
    lines = [SHEBANG, *_directives(
        opts, name=job_name(launches[0]) + f"+{len(launches) - 1}", output=output, gpus=1,
        cpus=sum(max(1, la.cpus) for la in launches), memory_bytes=sum(la.memory_bytes for la in launches),
        minutes=minutes,
    ), f"# rota shared GPU: {' '.join(la.key for la in launches)}", RUN_FUNCTION,
        "set -m  # each member in its own process group", "pids=(); cancels=(); rcs=()"]
    for la in launches:
        lines.append(f"(  # {la.key}")
        lines.extend("  " + e for e in launch_exports(la))  # GPU launches: SLURM's one GPU
        lines.append("  " + _run_line(la))
        lines.append(f") >>{q(la.log_path)} 2>&1 &")
        lines.append(f"pids+=($!); cancels+=({q(cancel_path_for(la.log_path))}); "
                     f"rcs+=({q(rc_path_for(la.log_path))})")
    lines.append(SHARED_WATCH)
    return "\n".join(lines) + "\n"


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    job = line.split(";")[0].strip()
    if not job.isdigit():
        raise ExecutorError(f"sbatch printed no job id: {text.strip()[:200]!r}")
    return job
