"""The ``rota`` command: a thin click layer over :mod:`rota.api`.

Exit codes: 0 all succeeded, 1 some failed or were skipped, 2 bad input,
130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from rota.errors import RotaError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RotaError as e:
            click.echo(f"rota: error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="rota")
def cli() -> None:
    """rota: run a declared set of ML jobs on every GPU and CPU, crash-safe."""


def machine_options(f: Any) -> Any:
    f = click.option("--memory", help="RAM rota may book, e.g. 200GB (default: detected).")(f)
    f = click.option("--cpus", type=int, help="CPU slots rota may book (default: usable CPUs).")(f)
    f = click.option(
        "--gpus",
        help="'0,2' restricts to detected GPUs; '4x80GB' or '80GB,80GB,24GB' declares GPUs; 'none'.",
    )(f)
    return f


@cli.command(context_settings=CONTEXT)
@click.argument("spec", type=click.Path())  # a folder: load_spec says which file
@machine_options
@click.option("--state-dir", type=click.Path(file_okay=False), help="State folder (default: .rota beside SPEC; .rota/specs/NAME for a spec file NAME.yaml other than rota.yaml).")
@click.option("--rerun", multiple=True, metavar="PATTERN",
              help="Run these tasks again even if done (glob); the tasks that use them run again after them.")
@click.option("--rerun-dependents/--no-rerun-dependents", default=True, show_default=True,
              help="A task that runs again (--rerun, changed command, failed before) reruns the done tasks "
                   "that need it, transitively; --no-rerun-dependents keeps them as done.")
@click.option("--only", multiple=True, metavar="PATTERN",
              help="Run only these tasks (glob) and the tasks they need; leave the others as they are.")
@click.option("--fail-fast", is_flag=True,
              help="Once a task fails for good, launch nothing more (running tasks finish; the rest stays pending).")
@click.option("--backend", type=click.Choice(["local", "slurm", "ray"]), default="local", show_default=True)
@click.option("--address", help="Ray cluster address (--backend ray), e.g. auto or ray://host:10001.")
@click.option("--partition", help="SLURM partition (--backend slurm).")
@click.option("--plain", is_flag=True, help="One line per event even on a terminal.")
@click.option("--grace", "grace_s", type=float, default=10.0, show_default=True, help="Seconds between SIGTERM and SIGKILL.")
@click.option("--retry-delay", "retry_delay_s", type=float, default=1.0, show_default=True,
              help="First retry delay in seconds; doubles on each retry.")
@click.option("--foreign-gpu-memory", type=click.Choice(["respect", "ignore"]), default=None,
              help="GPU memory held by processes rota did not start: book it and pack around it (respect), "
                   "or not (ignore). Default: the spec's foreign_gpu_memory:, respect.")
def run(spec: str, gpus: str | None, cpus: int | None, memory: str | None, state_dir: str | None,
        rerun: tuple[str, ...], rerun_dependents: bool, only: tuple[str, ...], fail_fast: bool, backend: str,
        address: str | None, partition: str | None, plain: bool, grace_s: float, retry_delay_s: float,
        foreign_gpu_memory: str | None = None) -> None:
    """Run (or continue) every task of SPEC."""
    from rota import api
    from rota.spec.load import load_spec
    from rota.ui.plain import PlainUI

    loaded = load_spec(spec)
    _check_rerun(rerun, [t.name for t in loaded.tasks])
    ui: Any = PlainUI()
    if sys.stdout.isatty() and not plain:
        from rota.ui.dashboard import LiveUI

        ui = LiveUI()
    options: dict[str, Any] = {}
    if backend == "ray":
        options["address"] = address or "auto"
    if backend == "slurm":
        options.update(_slurm_options(loaded, partition, state_dir))
    if backend != "local" and gpus:
        # SLURM and Ray do not know GPU memory: --gpus NxSIZE says it.
        from rota.machine import parse_gpus_flag

        declared = parse_gpus_flag(gpus, []) if not gpus.replace(",", "").isdigit() else []
        if declared:
            options["gpu_memory_bytes"] = max(g.memory_bytes for g in declared)
    with _no_control_echo(not isinstance(ui, PlainUI)):
        result = api.run(
            loaded, gpus=gpus, cpus=cpus, memory=memory, state_dir=state_dir, rerun=rerun, only=only,
            fail_fast=fail_fast, backend=backend, rerun_dependents=rerun_dependents,
            backend_options=options, ui=ui, grace_s=grace_s, retry_delay_s=retry_delay_s,
            foreign_gpu_memory=foreign_gpu_memory,
        )
    if result.handed_over is not None:  # a controller runs this spec: it took the edit (its dashboard goes on)
        click.echo(f"rota: handed to the running controller ({result.state_dir}):")
        for line in result.handed_over.splitlines():
            click.echo(f"  {line}")
        sys.exit(0)
    same = [] if backend == "local" else ["--backend", backend, *(["--address", address] if address else []),
                                           *(["--partition", partition] if partition else [])]
    for line in _run_end(result, spec, state_dir, same):
        click.echo(line)
    sys.exit(result.exit_code)


def _check_rerun(patterns: tuple[str, ...], names: list[str]) -> None:
    """Refuse (UsageError, exit 2, nothing started) a ``--rerun`` pattern that matches no task.

    The run matches ``--rerun`` on task names (``fnmatchcase``, as ``--only``); a misspelt one
    was ignored without a word, and the run reported 'nothing ran' as if the task were done."""
    import fnmatch

    from rota.errors import UsageError

    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UsageError(f"--rerun {pattern!r} matches no task; the tasks are named {shown} "
                             "(a glob: quote it so the shell does not expand it)")


@contextlib.contextmanager
def _no_control_echo(active: bool) -> Iterator[None]:
    """While the live dashboard draws, the terminal does not echo Ctrl-C as ``^C``.

    The echo lands after the dashboard's last line (a full-width border), wraps the
    cursor to a new line, and every later frame was drawn one line too low: a
    stray box border was left behind. ECHOCTL off, the key still sends SIGINT.
    """
    fd = sys.stdin.fileno() if active and sys.stdin is not None and sys.stdin.isatty() else -1
    saved = None
    # Only from the terminal's foreground: tcsetattr from `rota run ... &` would stop rota (SIGTTOU).
    if fd >= 0 and _foreground(fd):
        import termios

        try:
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] &= ~termios.ECHOCTL
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        except termios.error:
            saved = None
    try:
        yield
    finally:
        if saved is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSANOW, saved)


def _foreground(fd: int) -> bool:
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


def _run_end(result: Any, spec: str, state_dir: str | None, same: Sequence[str] = ()) -> list[str]:
    """The lines after a run: what it did when it did nothing, where its files are, what to run next.

    Paths are absolute (as the first line's state folder); commands name the spec as it was given;
    ``same``: the flags that keep a next ``rota run`` on this run's backend (``--backend slurm``...).
    """
    import shlex

    c = result.counts
    sd = result.state_dir
    where = shlex.quote(spec) + (f" --state-dir {shlex.quote(state_dir)}" if state_dir else "")
    again = " ".join([where, *map(shlex.quote, same)])  # a run goes on on the backend it started on
    if result.exit_code == 130:
        return [f"rota: stopped; 'rota run {again}' continues where this run stopped"]
    if result.ran == 0 and result.exit_code == 0:
        n = sum(c.values())
        why = (f"all {n} tasks succeeded in an earlier run with the same commands" if result.kept >= n else
               f"of {n} tasks, {result.kept} succeeded in an earlier run and {n - result.kept} found their outputs")
        return [f"rota: nothing ran: {why} (state {sd}); 'rota run {again} --rerun PATTERN' runs tasks again"]
    lines = [f"rota: outputs in {os.path.join(sd, 'out', 'TASK')}, logs in {os.path.join(sd, 'logs', 'TASK', '')}"]
    nxt = [f"'rota report {where}'"]
    failed = result.failed[:1]
    nxt.append(f"'rota logs {shlex.quote(failed[0])} {where}'" if failed else f"'rota logs TASK {where}'")
    lines.append("rota: next: " + ", ".join(nxt))
    return lines


def _slurm_options(spec: Any, partition: str | None, state_dir: str | None) -> dict[str, Any]:
    from rota import api

    s = spec.file.slurm
    opts: dict[str, Any] = {"spec_slurm": s, "state_dir": state_dir or api.default_state_dir(spec)}
    if partition:
        opts["partition"] = partition
    return opts


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True, "help_option_names": []},
             add_help_option=False)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def status(words: tuple[str, ...]) -> None:
    """Every task of a run: state, attempts, exit code, GPUs, times, log. Safe during a run."""
    # One parser: rota.cli.status_fast's (what `python -m rota.cli status` runs), options and help included.
    from rota.cli.status_fast import main as status_main

    sys.exit(status_main(words))


@cli.command(context_settings=CONTEXT)
@click.argument("task")
@click.argument("target", required=False, type=click.Path())
@click.option("--state-dir", type=click.Path(file_okay=False))
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows (until the task ends).")
@click.option("--attempt", type=int, help="Which attempt (default: the latest).")
def logs(task: str, target: str | None, state_dir: str | None, follow: bool, attempt: int | None) -> None:
    """Print a task's log."""
    from rota import api
    from rota.errors import UsageError
    from rota.store.sqlite import SqliteStore

    sd = api.resolve_state_dir(target, state_dir)
    store = SqliteStore(sd, readonly=True)
    try:
        rec = store.task(task)
        if rec is None:
            raise UsageError(f"no task named {task!r} in {sd}; see 'rota status'")
        path = rec.log_path
        if attempt is not None:
            rows = [a for a in store.attempts(task) if a["attempt"] == attempt]
            if not rows:
                raise UsageError(f"task {task!r} has no attempt {attempt}")
            path = rows[0]["log_path"]
        if not path:
            raise UsageError(f"task {task!r} has not started yet (state {rec.state})")
        with open(path, "rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                    continue
                if not follow:
                    break
                rec = store.task(task)
                if rec is None or rec.state not in ("running", "launching") or rec.log_path != path:
                    rest = f.read()
                    sys.stdout.buffer.write(rest)
                    break
                time.sleep(0.25)
    except FileNotFoundError:
        raise UsageError(f"log file of {task!r} is missing") from None
    finally:
        store.close()


@cli.command(context_settings=CONTEXT)
@click.argument("target", required=False, type=click.Path())
@click.option("--state-dir", type=click.Path(file_okay=False))
@click.option("--drain", is_flag=True, help="Launch nothing more; let the running tasks finish.")
@click.option("--now", is_flag=True, help="Kill the running tasks at once (no grace period).")
@click.option("--wait", "wait_s", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the controller to be gone.")
def stop(target: str | None, state_dir: str | None, drain: bool, now: bool, wait_s: float) -> None:
    """Stop the run going on SPEC's state from any terminal, as Ctrl-C in its own would."""
    from rota import api
    from rota.errors import UsageError

    if drain and now:
        raise UsageError("--drain lets running tasks finish and --now kills them: choose one")
    got = api.stop(target, state_dir=state_dir, drain=drain, now=now, wait_s=wait_s)
    pid = got["pid"]
    if drain:
        click.echo(f"rota: the controller (pid {pid}) launches nothing more; its running tasks finish "
                   "('rota status' shows them; 'rota run' continues the rest)")
    elif got["stopped"]:
        click.echo(f"rota: stopped the controller (pid {pid}); its tasks are recorded as interrupted; "
                   "'rota run' continues")
    else:
        click.echo(f"rota: the controller (pid {pid}) is still stopping after {wait_s:g}s "
                   "(its tasks' grace period); 'rota stop --now' kills them at once", err=True)
        sys.exit(1)


@cli.command(context_settings=CONTEXT)
@machine_options
@click.option("--json", "as_json", is_flag=True)
def machine(gpus: str | None, cpus: int | None, memory: str | None, as_json: bool) -> None:
    """Print what rota sees: GPUs (NVML or declared), CPUs, RAM."""
    from rota.machine import (
        describe,
        describe_health,
        detect_machine,
        gpu_health,
        visible_without_nvml,
    )

    m = detect_machine(gpus=gpus, cpus=cpus, memory=memory)
    unseen = visible_without_nvml(m, gpus)  # GPUs CUDA_VISIBLE_DEVICES lists that NVML cannot read
    if unseen:
        click.echo(f"rota: {unseen}", err=True)
    health = gpu_health(m)  # NVML GPUs only: health, and who holds memory on each
    if as_json:
        click.echo(json.dumps({
            "source": m.source, "cpus": m.cpus, "memory_bytes": m.memory_bytes,
            "gpus": [{"index": g.index, "name": g.name, "memory_bytes": g.memory_bytes, "uuid": g.uuid,
                      "cuda_visible_devices": g.cuda_id, **health.get(g.index, {})} for g in m.gpus],
        }, indent=2))
        return
    for line in describe(m) + describe_health(health):
        click.echo(line)
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        click.echo(f"(inherited CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})")


def _register_optional() -> None:
    for mod in ("rota.cli.plan_cmd", "rota.cli.report_cmd", "rota.cli.control_cmd", "rota.cli.serve_cmd",
                "rota.cli.why_cmd", "rota.cli.export_cmd"):
        try:
            m = __import__(mod, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        m.register(cli)


_register_optional()


def usage_line(e: click.UsageError) -> str:
    """A click usage error (unknown flag, bad value, missing argument) as rota's one line.

    Click prints four lines (usage, a hint, a blank, the error); every other bad input is one
    line, ``rota: error: ...``, so a usage error names its command and points to its help."""
    path = e.ctx.command_path if e.ctx is not None else "rota"
    return f"rota: error: {path}: {' '.join(e.format_message().split())} (see '{path} --help')"


def main() -> None:
    try:
        rv = cli.main(prog_name="rota", standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("rota: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        click.echo(usage_line(e), err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except RotaError as e:
        click.echo(f"rota: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(1)
