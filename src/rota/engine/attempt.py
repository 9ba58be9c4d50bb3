"""Pure helpers for one attempt: paths, environment, fingerprints, log reading.

File names derive from task names through :func:`slug`, which keeps every path
inside the state folder whatever a name contains (``../../x``, ``/etc``, NUL).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rota.core.resources import Machine
from rota.logtail import tail as tail  # re-exported: the engine reads log tails as A.tail
from rota.spec.model import Task

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
METRIC_PREFIX = "ROTA_METRIC"
_METRIC_LINE = re.compile(r"^ROTA_METRIC\s+([A-Za-z0-9_.:/-]+)\s*=\s*(\S+)\s*$")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

OOM_PATTERNS = (
    re.compile(r"CUDA out of memory", re.I),
    re.compile(r"torch\.(cuda\.)?OutOfMemoryError"),
    re.compile(r"CUDA_ERROR_OUT_OF_MEMORY"),
    re.compile(r"RESOURCE_EXHAUSTED:? *Out of memory", re.I),
    re.compile(r"OOM when allocating tensor"),
    re.compile(r"cudaErrorMemoryAllocation"),
    re.compile(r"XlaRuntimeError: RESOURCE_EXHAUSTED"),
    re.compile(r"HIP out of memory", re.I),
)


def slug(name: str) -> str:
    """A file-name-safe, collision-free, bounded form of a task name."""
    s = _SAFE.sub("_", name).strip("._") or "task"
    if s != name or len(s) > 80:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        s = f"{s[:80]}-{digest}"
    return s


def fingerprint(task: Task) -> str:
    """Identity of what a task does: command, resources, env, workdir."""
    r = task.request
    payload = {
        "command": task.command,
        "gpus": r.gpus,
        "gpu_memory": r.gpu_memory_bytes,
        "cpus": r.cpus,
        "memory": r.memory_bytes,
        "env": list(task.env),
        "workdir": task.workdir,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def inputs_fingerprint(paths: Sequence[str]) -> str:
    """Size and mtime of each input file (missing files count as such)."""
    parts = []
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def outputs_exist(task: Task) -> bool:
    return bool(task.outputs) and all(os.path.exists(p) for p in task.outputs)


def out_dir(state_dir: str, task_name: str) -> str:
    return os.path.join(state_dir, "out", slug(task_name))


# ----------------------------------------------------------- output folders
# A task's output folder records what made it (``{out}/.rota/made-by.json``): the
# identity of its command, its inputs, the runs of the tasks it needs, and whether
# it succeeded. A retry (within a run, or after a crash or Ctrl-C) finds the same
# record and resumes from whatever the folder holds (shard checkpoints); a new run
# of the task (it succeeded before and runs again: --rerun, a need that ran again;
# or its command or inputs changed) starts in an empty folder, the old one set
# aside in ``<state>/out/.previous/<task>`` until the new run succeeds.
MADE_BY = os.path.join(".rota", "made-by.json")
SUCCEEDED_MARK = os.path.join(".rota", "succeeded")  # empty: created when a run of the task succeeds
PREVIOUS = ".previous"  # no task's slug starts with "." (see slug): never a task's folder


def output_key(task: Task) -> str:
    """Identity of what makes a task's outputs: its command, env and workdir (not its resources)."""
    payload = {"command": task.command, "env": list(task.env), "workdir": task.workdir}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def previous_dir(state_dir: str, task_name: str) -> str:
    """Where a task's former output folder waits while a new run of it has not succeeded."""
    return os.path.join(state_dir, "out", PREVIOUS, slug(task_name))


def made_by(out: str) -> dict[str, Any] | None:
    """The record of what made ``out`` (None: none, or unreadable), with ``succeeded`` from its mark."""
    try:
        with open(os.path.join(out, MADE_BY), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data["succeeded"] = os.path.exists(os.path.join(out, SUCCEEDED_MARK))
    return data


def _why_new_run(old: dict[str, Any] | None, made: Mapping[str, Any], out: str) -> str | None:
    """Why ``out`` cannot be resumed by an attempt that ``made`` describes (None: it can)."""
    if old is None:
        try:
            empty = not os.listdir(out)
        except OSError:
            empty = True
        return None if empty else "its output folder was made by an earlier rota that did not record by what"
    if old.get("succeeded"):
        return "it succeeded before: a new run of it starts in an empty output folder"
    if old.get("key") != made["key"]:
        return "its command changed since its output folder was made"
    if old.get("inputs") != made["inputs"]:
        return "its inputs changed since its output folder was made"
    if old.get("needs") != made["needs"]:
        return "a task it needs ran again since its output folder was made"
    return None


def prepare_out(state_dir: str, task_name: str, out: str, made: Mapping[str, Any]) -> str | None:
    """Make ``out`` ready for an attempt of ``task_name``; return why an old folder was set aside.

    ``made``: ``key`` (:func:`output_key`), ``inputs`` (fingerprint), ``needs``
    (each need's output ``id``). A folder whose record matches and which has no
    success mark is kept as it is (a retry resumes from its checkpoints); any
    other is set aside (see :func:`previous_dir`: the last one that succeeded is
    kept there) and the attempt gets an empty folder with a fresh record.
    """
    why: str | None = None
    try:
        os.mkdir(out)
    except FileNotFoundError:
        os.makedirs(out, exist_ok=True)
    except FileExistsError:
        old = made_by(out)
        why = _why_new_run(old, made, out)
        if why is None:
            if old is not None:
                return None  # a retry: resume
        else:
            _set_aside(state_dir, task_name, out, bool(old and old.get("succeeded")))
            os.mkdir(out)
    # Written once per run of the task, in a folder nothing else uses yet: no temp file. A record
    # torn by a crash reads as "unrecorded", and a non-empty folder with one is set aside (safe side).
    record = json.dumps({**made, "task": task_name, "id": os.urandom(8).hex()}, sort_keys=True)
    path = os.path.join(out, MADE_BY)
    try:
        f = open(path, "w")
    except FileNotFoundError:
        os.mkdir(os.path.dirname(path))
        f = open(path, "w")
    with f:
        f.write(record)
    return why


def _set_aside(state_dir: str, task_name: str, out: str, succeeded: bool) -> None:
    """Move ``out`` to its previous-folder; keep there the newest folder that succeeded."""
    import shutil

    prev = previous_dir(state_dir, task_name)
    if os.path.lexists(prev):
        if not succeeded:  # a partial folder of a failed new run: the one that succeeded stays aside
            shutil.rmtree(out)
            return
        shutil.rmtree(prev)
    os.makedirs(os.path.dirname(prev), exist_ok=True)
    os.rename(out, prev)


def out_succeeded(state_dir: str, task_name: str, out: str | None) -> None:
    """Mark ``out`` as a finished run's output; drop the folder set aside for it."""
    if not out:
        return
    try:
        os.close(os.open(os.path.join(out, SUCCEEDED_MARK), os.O_WRONLY | os.O_CREAT, 0o644))
    except FileNotFoundError:  # the task removed its .rota/ (or its folder): mark it all the same
        os.makedirs(os.path.join(out, ".rota"), exist_ok=True)
        os.close(os.open(os.path.join(out, SUCCEEDED_MARK), os.O_WRONLY | os.O_CREAT, 0o644))
    prev = previous_dir(state_dir, task_name)
    if os.path.lexists(prev):
        import shutil

        shutil.rmtree(prev, ignore_errors=True)


def out_id(out: str) -> str | None:
    """The id of the run that made ``out`` (None: unrecorded): a dependent's record names it."""
    try:
        with open(os.path.join(out, MADE_BY), "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    got = record.get("id") if isinstance(record, dict) else None
    return got if isinstance(got, str) else None


def log_path(state_dir: str, task_name: str, attempt: int) -> str:
    """``logs/<task>/attempt-<attempt>.log``: one attempt's alone (attempt numbers never restart)."""
    return os.path.join(state_dir, "logs", slug(task_name), f"attempt-{attempt}.log")


def render_command(
    task: Task, out: str, params: Mapping[str, object] | None = None, *, run_id: str = "", attempt: int = 1
) -> str:
    """The command an attempt runs: the launch-time placeholders filled, shell-quoted
    (``{out}``, ``{task}``, ``{run}``, ``{attempt}``, their ``{rota.*}`` forms, a sweep
    trial's ``{param}``: a parameter wins over a bare built-in of its name) and
    ``{{name}}`` escapes made literal (see :mod:`rota.spec.placeholders`)."""
    from rota.spec.expand import value_text
    from rota.spec.placeholders import launch_values, render

    texts = {k: value_text(v) for k, v in params.items()} if params else None
    return render(task.command, launch_values(task.name, out, run_id, str(attempt), texts))


def task_env(
    task: Task,
    *,
    machine: Machine,
    gpus: Sequence[int],
    run_id: str,
    state_dir: str,
    out: str,
    attempt: int,
    key: str,
    needs_out: Mapping[str, str],
    params: Mapping[str, object] | None = None,
    gpu_memory_bytes: int | None = None,
    attempt_id: int | None = None,
) -> dict[str, str]:
    """rota's additions to a task's environment (on top of the inherited one).

    ``attempt``: the attempt's number (``ROTA_ATTEMPT``, never restarts); ``attempt_id``: its id
    in the state folder (``ROTA_ATTEMPT_ID``, given by the store), by which executors find it."""
    cuda_ids = []
    for i in gpus:
        try:
            cuda_ids.append(machine.gpu(i).cuda_id)
        except KeyError:
            cuda_ids.append(str(i))
    threads = str(max(task.request.cpus, 1))
    env: dict[str, str] = {
        "CUDA_VISIBLE_DEVICES": ",".join(cuda_ids),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "ROTA_TASK": task.name,
        "ROTA_RUN": run_id,
        "ROTA_OUT": out,
        "ROTA_ATTEMPT": str(attempt),
        "ROTA_ATTEMPT_KEY": key,
        **({"ROTA_ATTEMPT_ID": str(attempt_id)} if attempt_id is not None else {}),
        "ROTA_STATE_DIR": state_dir,
        "ROTA_CPUS": threads,
        "ROTA_GPUS": ",".join(cuda_ids),
        "ROTA_NEEDS_OUT": json.dumps(dict(needs_out)),
    }
    for v in THREAD_VARS:
        env[v] = threads
    if gpu_memory_bytes is not None:
        env["ROTA_GPU_MEMORY_BYTES"] = str(gpu_memory_bytes)
    for k, v in task.vars:
        env[f"ROTA_VAR_{k.upper()}"] = v
        if k not in os.environ and k.isidentifier():
            env[k] = v
    if params:
        from rota.spec.expand import value_text

        for pk, pv in params.items():
            env[f"ROTA_PARAM_{pk.upper()}"] = value_text(pv)
        env["ROTA_PARAMS"] = json.dumps(dict(params))
    if task.trial is not None:
        env["ROTA_TRIAL"] = str(task.trial)
    if task.enforce_gpu_memory and gpu_memory_bytes is not None and gpus:
        total = machine.gpu(gpus[0]).memory_bytes
        frac = min(1.0, gpu_memory_bytes / total) if total else 1.0
        env["ROTA_GPU_MEMORY_FRACTION"] = f"{frac:.4f}"
        # Picked up by rota's sitecustomize shim (rota/_enforce) to cap PyTorch's allocator.
        shim = str(Path(__file__).resolve().parent.parent / "_enforce")
        env["PYTHONPATH"] = shim + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    user_path = dict(task.env).get("PYTHONPATH")
    env.update(task.env)
    if user_path is not None and "PYTHONPATH" in env and "ROTA_GPU_MEMORY_FRACTION" in env:
        # The spec's own PYTHONPATH must not drop the enforcement shim.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "_enforce") + os.pathsep + user_path
    return env


def read_metrics(log: str | None, out: str | None, max_bytes: int = 2**34) -> dict[str, float]:
    """``ROTA_METRIC name=value`` lines from the log, then ``$ROTA_OUT/metrics.json``.

    Reads the log in 1 MB chunks and splits into lines only the chunks that
    mention ``ROTA_METRIC``: memory stays bounded (lines longer than 64 KB are
    skipped, never held) and a 1 GB log without a metric costs one C-speed scan.
    """
    metrics: dict[str, float] = {}
    if log:
        try:
            if not os.stat(log).st_size:  # the common short task: nothing to open
                raise FileNotFoundError
            with open(log, "rb") as f:
                for line in _metric_lines(f, max_bytes):
                    m = _METRIC_LINE.match(line.decode("utf-8", "replace").strip())
                    if m:
                        try:
                            val = float(m.group(2))
                        except ValueError:
                            continue
                        if math.isfinite(val):
                            metrics[m.group(1)] = val
        except OSError:
            pass
    if out:
        try:
            with open(os.path.join(out, "metrics.json"), "rb") as f:
                data = json.loads(f.read())
            if isinstance(data, dict):
                for k, v in data.items():
                    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                        metrics[str(k)] = float(v)
        except (OSError, ValueError):
            pass
    return metrics


_CHUNK = 2**20
_MAX_LINE = 2**16


def _metric_lines(f: Any, max_bytes: int) -> Iterator[bytes]:
    """Complete lines of ``f`` that start with ROTA_METRIC, in bounded memory."""
    pending = b""  # the current incomplete line (at most _MAX_LINE bytes)
    skipping = False  # inside a line too long to be a metric: drop up to its newline
    read = 0
    while read < max_bytes:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        read += len(chunk)
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            chunk, skipping = chunk[nl + 1:], False
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        body, pending = data[:cut], data[cut:]
        if len(pending) > _MAX_LINE:
            pending, skipping = b"", True
        if METRIC_PREFIX.encode() in body:
            for line in body.split(b"\n"):
                if line.startswith(b"ROTA_METRIC"):
                    yield line
    if pending.startswith(b"ROTA_METRIC") and not skipping:
        yield pending


def is_oom(log_tail: str) -> bool:
    return any(p.search(log_tail) for p in OOM_PATTERNS)


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
