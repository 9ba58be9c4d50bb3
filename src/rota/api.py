"""rota's public Python API; the CLI is a thin layer over it.

    import rota
    spec = rota.load_spec("rota.yaml")          # validate and expand (raises SpecError)
    result = rota.run(spec, gpus="4x80GB")       # run to completion (or resume)
    for t in rota.status(result.state_dir)["tasks"]:
        print(t["name"], t["state"])

Tasks can also be built in Python: ``rota.spec_from_dict({"tasks": [...]}, name="NAME")`` (state in
``.rota/dicts/NAME``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rota.core.resources import Machine, fits_machine, how_to_fit
from rota.errors import SpecError, StateError, UsageError
from rota.executors import make_executor as make_executor
from rota.store.read import (
    STATUS_VERSION as STATUS_VERSION,  # the status format's version, re-exported
)
from rota.store.read import read_status, state_dir_for_spec, state_dir_of

if TYPE_CHECKING:  # the spec machinery (pydantic) is imported only where a spec is loaded
    from rota.spec.load import Spec


@dataclass(frozen=True)
class RunResult:
    """What a run did. ``counts``: tasks per state at its end; ``ran``: tasks that started an
    attempt in this run; ``kept``: tasks done in an earlier run and left as they were."""

    exit_code: int
    state_dir: str
    counts: Mapping[str, int]
    ran: int = 0
    kept: int = 0
    handed_over: str | None = None  # a controller was running: it took the spec (its answer); nothing ran here
    failed: tuple[str, ...] = ()  # the tasks that ended failed, in the spec's order


_DICT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DICT_PATH = re.compile(r"^<dict spec ([A-Za-z0-9][A-Za-z0-9._-]{0,99})>$")
DICT_SPECS_FOLDER = "dicts"  # inside .rota: one state folder per spec built with spec_from_dict


def spec_from_dict(data: Mapping[str, Any], root: str | os.PathLike[str] = ".", name: str | None = None) -> Spec:
    """Validate a spec given as a Python mapping; its relative paths (workdir, inputs) resolve in ``root``.

    Such a spec has a state folder of its own, ``root/.rota/dicts/NAME/`` (never a
    spec file's): NAME is ``name``, else ``dict-`` and 12 hex digits of the
    mapping's content (a changed mapping is then a new spec: give ``name`` to
    continue one state across changes). Errors name it ``<dict spec NAME>``.
    A ``name`` ending in ``.yaml`` or ``.yml`` means "as if it were the file
    ``root/name``", sharing that file's state folder.
    """
    import hashlib

    import yaml

    from rota.spec.load import load_spec

    try:
        text = yaml.safe_dump(dict(data), sort_keys=False)
        canonical = yaml.safe_dump(dict(data), sort_keys=True)
    except yaml.YAMLError as e:
        raise SpecError(f"spec_from_dict: the mapping holds a value YAML cannot represent ({e})") from None
    if name is not None and name.endswith((".yaml", ".yml")):
        return load_spec(Path(root) / name, text=text)
    if name is None:
        name = "dict-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    elif not isinstance(name, str) or not _DICT_NAME.match(name):
        raise SpecError(f"spec_from_dict: name {name!r} must be 1 to 100 letters, digits, '.', '_' or '-' "
                        "(it names the spec's state folder), e.g. name='sweep-v2'")
    return load_spec(Path(root) / f"<dict spec {name}>", text=text)


def default_state_dir(spec: Spec) -> str:
    """Where ``spec``'s state lives without ``--state-dir``: a spec file's, see
    :func:`rota.store.read.state_dir_for_spec`; a dict spec's, ``.rota/dicts/NAME`` in its root."""
    m = _DICT_PATH.match(os.path.basename(spec.path))
    if m is not None:
        return os.path.join(os.path.dirname(spec.path), ".rota", DICT_SPECS_FOLDER, m.group(1))
    return state_dir_for_spec(spec.path)


def check_fits(spec: Spec, machine: Machine) -> None:
    """Raise SpecError for the first task that can never run on ``machine``."""
    for t in spec.tasks:
        why = fits_machine(t.request, machine)
        if why is not None:
            field = "gpus" if "GPU" in why else "cpus" if "CPU" in why else "memory" if "RAM" in why else "devices"
            if "per GPU" in why:
                field = "gpu_memory"
            raise SpecError(f"can never run here: {why}; {how_to_fit(t.request, machine)}", file=_as_typed(spec.path),
                            task=t.name, field=field)


def check_visible_gpus(spec: Spec, machine: Machine, gpus: str | None) -> None:
    """GPUs listed by ``CUDA_VISIBLE_DEVICES`` that NVML cannot read (a SLURM allocation's GPUs on a
    node without NVML; ``gpus``: the ``--gpus`` flag, None when not given) are never ignored in
    silence: a spec with a task that needs GPUs is bad input (SpecError, exit 2, nothing started)
    naming them and ``--gpus NxSIZE``, instead of 'the machine has none'; otherwise the same line
    goes to stderr and the tasks run on CPUs."""
    from rota.machine import visible_without_nvml

    note = visible_without_nvml(machine, gpus)
    if note is None:
        return
    t = next((t for t in spec.tasks if t.request.gpus), None)
    if t is not None:
        raise SpecError(f"can never run here: asks for {t.request.gpus} GPU{'s' if t.request.gpus > 1 else ''}; {note}",
                        file=_as_typed(spec.path), task=t.name, field="gpus")
    print(f"rota: {note}", file=sys.stderr)


def _as_typed(path: str) -> str:
    """A spec's path as the user most likely typed it (relative to here when below here), as the
    spec's other errors show it; ``Spec.path`` is resolved."""
    try:
        rel = os.path.relpath(path)
    except (ValueError, OSError):  # another drive; the working folder is gone
        return path
    return path if rel.startswith(os.pardir) else rel


def _backend_defaults(backend: str, spec: Spec, state_dir: str | os.PathLike[str] | None, gpus: str | None,
                      options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``backend_options`` completed as ``rota run --backend`` completes them, so ``run(spec,
    backend="slurm")`` works as the CLI does: SLURM's scripts in the run's state folder and the
    spec's ``slurm:`` section; on both, the GPU size of ``--gpus NxSIZE``
    (SLURM and Ray know GPU counts, not sizes). What the caller gives wins."""
    out = dict(options or {})  # Ray's address is "auto" by default already
    if backend == "slurm":
        out.setdefault("state_dir", str(state_dir or default_state_dir(spec)))
        if "options" not in out:
            out.setdefault("spec_slurm", spec.file.slurm)
    if gpus and not gpus.replace(",", "").isdigit() and "gpu_memory_bytes" not in out:
        from rota.machine import parse_gpus_flag

        declared = parse_gpus_flag(gpus, [])
        if declared:
            out["gpu_memory_bytes"] = max(g.memory_bytes for g in declared)
    return out


def _refuse_other_backend(store: Any, backend: str) -> None:
    """Bad input (exit 2, nothing started) when a killed controller left attempts running on
    another backend: this run's executor cannot follow them, so it would take them for lost and
    run each task again beside its first attempt (a SLURM job or a Ray task outlives its
    controller on purpose). Continue with the backend that started them."""
    import json

    from rota.store.base import ACTIVE

    rows = store.tasks(tuple(ACTIVE))
    if not rows:
        return
    try:  # the dead controller's backend, for an attempt it never recorded a handle of
        last = json.loads(store.get_meta("machine") or "{}").get("executor")
    except (ValueError, AttributeError):
        last = None
    others: dict[str, list[str]] = {}
    for r in rows:
        theirs = (r.handle or {}).get("executor") or last
        if theirs and theirs != backend:
            others.setdefault(str(theirs), []).append(r.name)
    if others:
        theirs, names = next(iter(others.items()))
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise UsageError(f"{shown} still run on --backend {theirs} from a controller that was stopped without "
                         f"ending them; run again with --backend {theirs} to adopt them (this run uses {backend})")


def run(
    spec: Spec | str | os.PathLike[str],
    *,
    gpus: str | None = None,
    cpus: int | None = None,
    memory: str | None = None,
    machine: Machine | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    rerun: Sequence[str] = (),
    rerun_dependents: bool = True,
    only: Sequence[str] = (),
    fail_fast: bool = False,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    ui: Any = None,
    grace_s: float = 10.0,
    retry_delay_s: float = 1.0,
    foreign_gpu_memory: str | None = None,
) -> RunResult:
    """Run (or continue) a spec. Validation errors raise before anything is written.

    ``only`` (globs, ``--only``): run just the matching tasks and the tasks they
    need; the others are left as they are (not run, not skipped). Attempts that a
    killed controller left running are adopted whether they match or not.
    ``rerun`` (globs, ``--rerun``): run these tasks again even if done. A task
    that runs again (rerun, changed command, failed before) sends the done tasks
    that need it, transitively, back to pending, unless ``rerun_dependents`` is
    False (``--no-rerun-dependents``).
    ``foreign_gpu_memory``: ``respect`` or ``ignore`` GPU memory held by processes rota did not
    start (``--foreign-gpu-memory``; default: the spec's ``foreign_gpu_memory:``, ``respect``).
    ``fail_fast``: once a task has failed for good (its retries spent), launch
    nothing more; running tasks finish, the rest stays pending for the next run.
    """
    from rota.engine.lock import StateLock
    from rota.engine.loop import Engine, Options
    from rota.machine import detect_machine
    from rota.spec.load import Spec, load_spec
    from rota.store.sqlite import SqliteStore

    if foreign_gpu_memory not in (None, "respect", "ignore"):
        raise UsageError(f"foreign_gpu_memory={foreign_gpu_memory!r}: expected 'respect' or 'ignore'")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    full = spec
    if only:
        spec = full.only(only)  # a pattern that matches nothing is bad input: before anything (Ray, SLURM, state)
    answer = hand_over(spec, state_dir, rerun=rerun, only=only, gpus=gpus, cpus=cpus, memory=memory)
    if answer is not None:
        return RunResult(0, str(Path(state_dir or default_state_dir(spec)).resolve()), {}, handed_over=answer)
    executor = None
    if backend != "local":
        from rota.executors.cluster_limits import limited_capacity, parse_limits

        # On a cluster --gpus/--cpus/--memory cap what this run takes; a bad one is refused before connecting.
        limits = parse_limits(backend, gpus=gpus, cpus=cpus, memory=memory)
        executor = make_executor(backend, **_backend_defaults(backend, spec, state_dir, gpus, backend_options))
        if machine is None and executor.capacity() is not None:
            machine = limited_capacity(executor, limits)
    if machine is None:
        machine = detect_machine(gpus=gpus, cpus=cpus, memory=memory)
        check_visible_gpus(spec, machine, gpus)
    check_fits(spec, machine)
    sd = Path(state_dir) if state_dir is not None else Path(default_state_dir(spec))
    try:
        sd.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StateError(f"cannot create state folder {sd}: {e.strerror}") from None
    sd = sd.resolve()
    hooks = _hooks(spec, sd, machine, foreign_gpu_memory)  # a bad sweep is bad input: raised before the store is written
    with StateLock(sd):
        store = SqliteStore(sd)
        try:
            if only:
                from rota.store.base import ACTIVE

                # Never leave a dead controller's attempt unwatched (its GPU would be booked twice).
                chosen = {t.name for t in spec.tasks}
                unwatched = [r.name for r in store.tasks(tuple(ACTIVE)) if r.name not in chosen]
                if unwatched:
                    spec = full.only(only, also=unwatched)
                    hooks = _hooks(spec, sd, machine, foreign_gpu_memory)
            if executor is None:
                executor = make_executor("local")
            _refuse_other_backend(store, executor.name)
            engine = Engine(
                spec, machine, store, executor,
                options=Options(rerun=tuple(rerun), rerun_dependents=rerun_dependents, grace_s=grace_s,
                                retry_delay_s=retry_delay_s,
                                fail_fast=fail_fast),
                ui=ui, hooks=hooks,
            )
            code = engine.run()
            return RunResult(code, str(sd), engine.counts(), ran=len(engine.ran), kept=len(engine.kept),
                             failed=engine.failed_names())
        finally:
            store.close()


def hand_over(
    spec: Spec, state_dir: str | os.PathLike[str] | None = None, *, rerun: Sequence[str] = (),
    only: Sequence[str] = (), gpus: str | None = None, cpus: int | None = None, memory: str | None = None,
) -> str | None:
    """Edit a live run: when a controller runs on ``spec``'s state folder, hand it the spec file
    (it loads and validates it again, then adds new tasks, redefines or drops pending ones, and
    runs done ones again where ``rerun`` names them) and, if given, new limits (``gpus``, ``cpus``,
    ``memory``, as ``rota run``'s flags: ``gpus='0,1,2'`` gives GPU 3 back). Returns the
    controller's answer (what changed); None when no controller runs there (nothing was sent).
    SpecError (exit 2) when the controller refuses: the run is unchanged. A spec not read from a
    file (:func:`spec_from_dict`) cannot be handed over: it is refused as a second controller."""
    from rota.engine import control, respec
    from rota.store.read import controller

    sd = Path(state_dir) if state_dir is not None else Path(default_state_dir(spec))
    if not controller(sd)["alive"] or not os.path.isfile(spec.path) or not _same_spec(sd, spec.path):
        return None  # no live run of this file: run it here (or be refused as a second controller)
    if cpus is not None and cpus < 1:
        raise UsageError(f"--cpus {cpus}: expected a positive number")
    answers = []
    if gpus is not None or cpus is not None or memory is not None:
        answers.append(control.request(sd, "limits", (), {"gpus": gpus, "cpus": cpus, "memory": memory}))
    if not answers or not answers[0].startswith(respec.REFUSED):
        answers.append(control.request(sd, "spec", (), {"path": os.path.abspath(spec.path), "rerun": list(rerun),
                                                        "only": list(only)}))
    if any(a in respec.OFFLINE for a in answers):
        return None  # the controller ended meanwhile: this call runs the spec itself
    refused = [a for a in answers if a.startswith(respec.REFUSED)]
    if refused:
        raise SpecError("the running controller refused the change: " + refused[0][len(respec.REFUSED):])
    return "\n".join(answers)


def _same_spec(state_dir: Path, path: str) -> bool:
    """Whether the run in ``state_dir`` is the spec file ``path``'s (another file sharing a
    ``--state-dir`` is refused as a second controller, never taken as an edit of that run)."""
    from rota.store.sqlite import SqliteStore

    try:
        store = SqliteStore(state_dir, readonly=True)
    except StateError:
        return False
    try:
        recorded = store.get_meta("spec_path")
    finally:
        store.close()
    return recorded is not None and os.path.realpath(recorded) == os.path.realpath(path)


def _hooks(spec: Spec, state_dir: Path, machine: Machine, foreign_gpu_memory: str | None = None) -> list[Any]:
    """The engine hooks a run of ``spec`` needs: its sweeps (Optuna), GPU monitoring, its
    notifications and hook commands (``notify:``, ``on_failure``, ...), the pending tasks'
    reasons and predicted starts."""
    from rota.engine.gpu_monitor import GpuMonitor

    hooks: list[Any] = []
    if any(t.sweep is not None for t in spec.tasks):
        from rota.engine.sweep import SweepHook

        hooks.append(SweepHook(spec, str(state_dir)))
    hooks.append(GpuMonitor(machine))
    from rota.engine.gpu_watch import DEFAULT_MARGIN_BYTES, GpuWatch

    foreign = (foreign_gpu_memory or spec.file.foreign_gpu_memory) == "respect"
    margin = spec.file.foreign_gpu_margin
    hooks.append(GpuWatch(machine, foreign=foreign, margin_bytes=DEFAULT_MARGIN_BYTES if margin is None else margin))
    from rota.engine import notify

    if notify.wanted(spec):  # no apprise, or a URL it cannot use: bad input, before the store is written
        hooks.append(notify.NotifyHook(spec, str(state_dir)))
    from rota.engine.predict import Predictor

    hooks.append(Predictor())  # why each pending task waits and when it starts, in the store
    return hooks


def stop(
    target: str | os.PathLike[str] | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    drain: bool = False,
    now: bool = False,
    wait_s: float = 120.0,
) -> dict[str, Any]:
    """Ask the controller running on a state folder to stop; return ``{"pid", "stopped"}``.

    Default: as Ctrl-C in its terminal (SIGTERM): it stops launching, terminates
    every running task (grace, then kill), records them as interrupted and exits
    130; this waits up to ``wait_s`` for it to be gone (``stopped``). ``now``: a
    second SIGTERM, as a second Ctrl-C, kills the tasks at once. ``drain``: it
    launches nothing more and exits once its running tasks have finished (not
    waited for). The next ``rota run`` continues whatever is left. Raises
    NoControllerError when no controller runs there, StateError when it runs on
    another host.
    """
    import signal
    import socket
    import time

    from rota.engine import drain as drain_request
    from rota.errors import NoControllerError
    from rota.store.read import controller

    sd = Path(state_dir_of(target, state_dir))
    ctl = controller(sd)
    pid = ctl.get("pid")
    if not ctl["alive"] or not isinstance(pid, int):
        raise NoControllerError(f"no rota controller is running on {sd}; nothing to stop")
    if ctl.get("host") not in (None, socket.gethostname()):
        raise StateError(f"the controller on {sd} runs on {ctl['host']} (pid {pid}): run 'rota stop' there")
    if drain:
        drain_request.request(sd, pid)
        return {"pid": pid, "stopped": False}
    try:
        os.kill(pid, signal.SIGTERM)
        if now:
            time.sleep(0.3)  # two signals sent together may arrive as one: the second is the "kill now"
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return {"pid": pid, "stopped": True}
    deadline = time.monotonic() + wait_s
    while controller(sd)["alive"]:
        if time.monotonic() >= deadline:
            return {"pid": pid, "stopped": False}
        time.sleep(0.1)
    return {"pid": pid, "stopped": True}


def resolve_state_dir(target: str | os.PathLike[str] | None, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where to read: ``--state-dir`` wins; else a spec file's own state folder; else a folder holding state.db; else
    that folder's (or ./) .rota, or the one spec's state under it (see :func:`rota.store.read.state_dir_of`)."""
    return Path(state_dir_of(target, state_dir))


def status(target: str | os.PathLike[str] | None = None, *, state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The documented ``rota status --json`` object (version 1). Read-only; safe during a run.

    One short read transaction (a consistent picture; the controller never
    waits for it). Raises StateError when the state is missing or unusable.
    """
    return read_status(state_dir_of(target, state_dir))


# Steering a run (rota cancel, retry, hold, release, priority): rota.steer, part of this API.
from rota.steer import cancel as cancel  # noqa: E402
from rota.steer import hold as hold  # noqa: E402
from rota.steer import offline_executor as offline_executor  # noqa: E402
from rota.steer import priority as priority  # noqa: E402
from rota.steer import release as release  # noqa: E402
from rota.steer import retry as retry  # noqa: E402
