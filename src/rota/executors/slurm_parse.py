"""Reading what SLURM prints: squeue, sacct (with slurmdbd or ``-c``), scontrol.

Pure functions, no I/O; tested against real output saved in ``tests/data/slurm/``.
``parse_squeue`` reads ``squeue --noheader --array --format=SQUEUE_FORMAT``;
``parse_sacct`` reads ``sacct --parsable2 --noheader --format=SACCT_FORMAT``
(with slurmdbd: ``123_4`` ids and ``.batch``/``.extern`` step lines) and the
``sacct -c`` (job-completion file) form of the same fields (raw job ids only,
no steps, a killed job's signal in ``0:9``). ``status_of`` maps a SLURM state
to a :class:`Status`: PENDING/RUNNING/CONFIGURING/COMPLETING (and the other
live states) -> running; COMPLETED -> succeeded; FAILED/OUT_OF_MEMORY/CANCELLED
-> failed; TIMEOUT -> failed "timeout"; PREEMPTED/NODE_FAIL/BOOT_FAIL/REQUEUED
-> failed with ``retry_free=True``. Exit codes ``N:M``: N the exit status, M
the signal; rota reports a signal M as exit code 128+M, like bash.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime

from rota.executors.base import Status
from rota.executors.common import status_from_code

SQUEUE_FORMAT = "%i|%A|%T|%r|%S|%e"
SACCT_FORMAT = "JobID,State,ExitCode,Start,End"

RUNNING_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED",
})
#: failures that are the cluster's fault, not the task's: never count against retries
RETRY_FREE = {
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node boot failure",
    "REQUEUED": "requeued by SLURM",
}
FAILED_REASONS = {
    "TIMEOUT": "timeout",
    "CANCELLED": "cancelled",
    "OUT_OF_MEMORY": "out of memory (SLURM)",
    "DEADLINE": "deadline reached",
    "REVOKED": "revoked",
    "SPECIAL_EXIT": "special exit",
}


@dataclass(frozen=True)
class JobState:
    """One job (or array element) as squeue or sacct printed it.

    ``job_id`` is the id as printed first (``"123"``, ``"123_4"``); ``raw_id``
    is SLURM's own id of that element when known (squeue ``%A``).
    ``state`` is the bare state name (``"CANCELLED by 0"`` -> ``"CANCELLED"``).
    ``exit_code``/``signal`` come from ``N:M`` (None when not printed).
    """

    job_id: str
    state: str
    raw_id: str | None = None
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    start: float | None = None
    end: float | None = None

# ------------------------------------------------------------------ parsing
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
_EMPTY_TIMES = {"", "N/A", "NONE", "UNKNOWN", "NONE ASSIGNED"}


def expand_array_id(job_id: str) -> list[str]:
    """``"12_[0-2,5%2]"`` -> ``["12_0", "12_1", "12_2", "12_5"]``; other ids unchanged."""
    m = _ARRAY_RANGE.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            out.append(f"{m.group(1)}_{i}")
    return out


def parse_time(text: str) -> float | None:
    """SLURM timestamps are local time, ``2026-11-23T14:01:13``; N/A/None/Unknown -> None."""
    t = text.strip()
    if t.upper() in _EMPTY_TIMES:
        return None
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        return None


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """``"3:0"`` -> (3, 0); ``"0:9"`` -> (0, 9); anything else -> (None, None)."""
    code, _, sig = text.strip().partition(":")
    try:
        return int(code), (int(sig) if sig else 0)
    except ValueError:
        return None, None


def _bare_state(text: str) -> str:
    # "CANCELLED by 0" -> "CANCELLED"; "COMPLETED+" (sacct truncation) -> "COMPLETED"
    return text.strip().split(" ")[0].rstrip("+*").upper()


def parse_squeue(text: str) -> dict[str, JobState]:
    """Rows of ``squeue --noheader [--array] --format=SQUEUE_FORMAT`` by printed job id.

    Collapsed pending array ranges (``12_[3-9]``, printed without ``--array``)
    are expanded into one entry per element.
    """
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        jid, raw, state = parts[0], parts[1], _bare_state(parts[2])
        reason = parts[3] if len(parts) > 3 else ""
        start = parse_time(parts[4]) if len(parts) > 4 else None
        end = parse_time(parts[5]) if len(parts) > 5 and state not in RUNNING_STATES else None
        ids = expand_array_id(jid)
        # a pending array element shows its array's id, not its own (it has none yet)
        own_raw = raw if len(ids) == 1 and not (state == "PENDING" and "_" in jid) else None
        for one in ids:
            out[one] = JobState(one, state, own_raw, reason, None, None, start, end)
    return out


def parse_sacct(text: str) -> dict[str, JobState]:
    """Rows of ``sacct [-c] --parsable2 --noheader --format=SACCT_FORMAT`` by job id.

    Step lines (``123.batch``, ``123.extern``, ``123.0``) are skipped; a later
    line for the same id (a requeued job's newer record) wins.
    """
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0] or "." in parts[0]:
            continue
        jid, state = parts[0], _bare_state(parts[1])
        code, sig = parse_exit_code(parts[2])
        start = parse_time(parts[3]) if len(parts) > 3 else None
        end = parse_time(parts[4]) if len(parts) > 4 and state not in RUNNING_STATES else None
        for one in expand_array_id(jid):
            out[one] = JobState(one, state, None, "", code, sig, start, end)
    return out


def status_from_rc(code: int, start: float | None = None, end: float | None = None) -> Status:
    """The status of a launch whose rc file holds ``code`` (bash: 128+N = signal N): the one rule
    every executor uses, :func:`rota.executors.common.status_from_code`."""
    return status_from_code(code, start, end)


def status_of(js: JobState) -> Status:
    """Map one SLURM job state to rota's :class:`Status` (exit code 128+M for signal M)."""
    s, t0, t1 = js.state, js.start, js.end
    if s in RUNNING_STATES:
        return Status("running", started_at=t0 if s != "PENDING" else None)
    code: int | None = js.exit_code
    if js.signal:
        code = 128 + js.signal
    if s == "COMPLETED":
        return Status("succeeded", 0, "exit 0", started_at=t0, ended_at=t1)
    if s in RETRY_FREE:
        return Status("failed", code, RETRY_FREE[s], retry_free=True, started_at=t0, ended_at=t1)
    if s in FAILED_REASONS:
        return Status("failed", code, FAILED_REASONS[s], started_at=t0, ended_at=t1)
    if s == "FAILED":
        if js.signal:
            return Status("failed", code, f"signal {js.signal}", started_at=t0, ended_at=t1)
        if js.exit_code is not None:
            return Status("failed", code, f"exit {js.exit_code}", started_at=t0, ended_at=t1)
        return Status("failed", None, "failed (SLURM)", started_at=t0, ended_at=t1)
    return Status("failed", code, f"SLURM state {s}", started_at=t0, ended_at=t1)


@dataclass(frozen=True)
class NodeInfo:
    """One node from ``scontrol show node --oneliner``."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: tuple[str, ...]
    state: str


_GRES_GPU = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")


def gres_gpu_count(gres: str) -> int:
    """GPUs in a ``Gres=`` value: ``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2`` -> 4, 4; ``(null)`` -> 0."""
    return sum(int(n) for n in _GRES_GPU.findall(gres))


def _field(line: str, key: str) -> str:
    m = re.search(rf"(?:^|\s){key}=(\S*)", line)
    return m.group(1) if m else ""


def parse_nodes(text: str) -> list[NodeInfo]:
    """Nodes of ``scontrol show node --oneliner`` (one node a line)."""
    out = []
    for line in text.splitlines():
        name = _field(line, "NodeName")
        if not name:
            continue
        cpus = _field(line, "CPUTot") or _field(line, "CPUEfctv") or "0"
        mem = _field(line, "RealMemory") or "0"
        parts = _field(line, "Partitions")
        out.append(NodeInfo(
            name=name,
            cpus=int(cpus) if cpus.isdigit() else 0,
            memory_mb=int(mem) if mem.isdigit() else 0,
            gpus=gres_gpu_count(_field(line, "Gres")),
            partitions=tuple(p for p in parts.split(",") if p and p != "(null)"),
            state=_field(line, "State"),
        ))
    return out


JOB_SCRIPTS_FORMAT = "%F|%o"  # squeue: the (array) job id and its batch script
_ARRAY_LABEL = re.compile(r"^(\d+)\)")
_KEY_EXPORT = re.compile(r"^\s*export ROTA_ATTEMPT_KEY=(.+)$")


def parse_job_scripts(text: str) -> list[tuple[str, str]]:
    """``(job id, batch script path)`` of each line of ``squeue -h -o JOB_SCRIPTS_FORMAT`` (deduplicated)."""
    out: dict[tuple[str, str], None] = {}
    for line in text.splitlines():
        job, sep, script = line.strip().partition("|")
        if sep and job.isdigit() and script:
            out[(job, script)] = None
    return list(out)


def attempts_in_script(text: str) -> list[tuple[str, int | None]]:
    """The attempts a batch script rota rendered runs: ``(attempt key, array index or None)``.

    Read from each launch's ``export ROTA_ATTEMPT_KEY=...`` line; in an array
    script the ``i)`` label above it is the element. A script of another
    program yields nothing.
    """
    out: list[tuple[str, int | None]] = []
    index: int | None = None
    for line in text.splitlines():
        label = _ARRAY_LABEL.match(line)
        if label:
            index = int(label.group(1))
            continue
        m = _KEY_EXPORT.match(line)
        if m:
            try:
                words = shlex.split(m.group(1))
            except ValueError:
                continue
            if len(words) == 1:
                out.append((words[0], index))
    return out
