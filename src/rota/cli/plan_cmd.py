"""``rota plan``: simulate a spec before running it; compare machines.

Registered by :mod:`rota.cli.main` through :func:`register`. Bad input (spec,
flags, unknown ``--machine``, a ``--gantt`` file that is neither .html nor
.png), and a task that can never run on this machine (no ``--machine``: the same
verdict and line as ``rota run``) exit 2 with one line; nothing is run and nothing
is written except the ``--gantt`` file.
"""

from __future__ import annotations

import gc
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from rota.errors import UsageError
from rota.store.read import state_dir_for_spec

GANTT_SUFFIXES = (".html", ".htm", ".png")
PRETTY_JSON_MAX_TASKS = 2000  # above this, compact JSON (rota.plan.jsontext): 100,000 tasks in under a second


def _gantt_paths(path: str, names: list[str]) -> list[Path]:
    """One file per machine: ``plan.html`` for one, ``plan-t4.html``, ``plan-l4.html`` for several."""
    p = Path(path)
    if p.suffix.lower() not in GANTT_SUFFIXES:
        raise UsageError(f"--gantt {path}: expected a file ending in .html or .png")
    if len(names) == 1:
        return [p]
    safe = ["".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in n) for n in names]
    return [p.with_name(f"{p.stem}-{s}{p.suffix}") for s in safe]


def _duration(value: str | None) -> float:
    from rota.plan.estimates import DEFAULT_DURATION_S
    from rota.spec.units import parse_duration

    if value is None:
        return DEFAULT_DURATION_S
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise UsageError(f"--default-estimate {value}: {e}") from None
    if seconds <= 0:
        raise UsageError(f"--default-estimate {value}: expected a positive duration such as 60s or 5m")
    return seconds


def plan_command(
    spec: str, gpus: str | None, cpus: int | None, memory: str | None, machines: tuple[str, ...],
    as_json: bool, gantt: str | None, use_history: bool, state_dir: str | None, default_estimate: str | None,
    width: int | None, only: tuple[str, ...] = (),
) -> None:
    """Simulate SPEC on a virtual clock with rota's scheduling policy (nothing runs)."""
    # Imported here, and the text renderers (rich) only for text: startup counts at scale.
    from rota.machine import detect_machine
    from rota.plan.compare import machine_options, plan
    from rota.plan.estimates import load_history, resolve_durations
    from rota.spec.load import load_spec

    default_s = _duration(default_estimate)
    # A one-shot command that allocates millions of small acyclic objects: the cyclic GC
    # would only re-scan them (about 40% of the time on 100,000 tasks).
    gc.disable()
    loaded = load_spec(spec)
    if only:
        loaded = loaded.only(only)
    base = detect_machine(gpus=gpus, cpus=cpus, memory=memory)
    if not machines:
        # Planned for this machine: the verdict of `rota run` on it (a task that can never
        # run here is bad input: exit 2, the same line). Machines named with --machine are
        # hypothetical; what cannot run on them is shown in the plan instead.
        from rota.api import check_fits, check_visible_gpus

        check_visible_gpus(loaded, base, gpus)
        check_fits(loaded, base)
    options = machine_options(list(machines), loaded.file.machines, base)
    paths = _gantt_paths(gantt, [o.name for o in options]) if gantt else []
    sd = Path(state_dir) if state_dir else Path(state_dir_for_spec(loaded.path))
    wanted = [t.command for t in loaded.tasks if use_history or t.estimate_s is None]
    history = load_history(sd, wanted) if wanted else {}
    durations = resolve_durations(loaded.tasks, history, use_history=use_history, default_s=default_s)
    plans = [plan(loaded.tasks, o, durations) for o in options]
    for p, path in zip(plans, paths, strict=False):
        from rota.plan.render import lanes
        from rota.report.html import render_gantt_file

        render_gantt_file(lanes(p, {t.name: t.group or t.name for t in loaded.tasks}), path, title=f"rota plan: {Path(loaded.path).name} on {p.option.name}")
    if as_json:
        from rota.plan.jsontext import plan_json_chunks

        pretty = len(loaded.tasks) <= PRETTY_JSON_MAX_TASKS
        # Straight to stdout, piece by piece: the text is ASCII JSON (no ANSI codes for
        # click.echo to strip, which scans all of it: 0.5 s at 100,000 tasks).
        for chunk in plan_json_chunks(loaded.path, plans, durations, indent=2 if pretty else None):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return
    from rich.console import Console

    from rota.plan import render

    w = width or min(shutil.get_terminal_size((100, 24)).columns, 140)
    if len(plans) > 1:
        Console(width=max(w, 150), highlight=False).print(render.comparison_table(plans))
    for i, p in enumerate(plans):
        if i or len(plans) > 1:  # a blank line between plans and after the table, none before the output
            click.echo("")
        click.echo(render.summary(p))
        click.echo("")
        click.echo(render.gantt(p, width=w))
    click.echo("")
    click.echo(render.estimates_line(durations))
    for path in paths:
        click.echo(f"Gantt chart written to {path}")
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    """Add the ``plan`` command to ``cli``."""
    from rota.cli.main import CONTEXT, machine_options

    @cli.command("plan", context_settings=CONTEXT)
    @click.argument("spec", type=click.Path())  # a folder: load_spec says which file
    @machine_options
    @click.option("--machine", "machines", multiple=True, metavar="NAME",
                  help="A machine from the spec's 'machines:' section; repeat to compare side by side.")
    @click.option("--json", "as_json", is_flag=True, help="The documented JSON object (see rota.plan.compare).")
    @click.option("--gantt", type=click.Path(dir_okay=False), metavar="FILE.html|FILE.png",
                  help="Write the Gantt chart (one file per machine, named FILE-<machine>, when comparing).")
    @click.option("--use-history", is_flag=True,
                  help="Prefer durations of past runs (same command) over the spec's estimates.")
    @click.option("--state-dir", type=click.Path(file_okay=False),
                  help="Where past runs are recorded (default: SPEC's state folder, as rota run).")
    @click.option("--default-estimate", metavar="DURATION",
                  help="Duration assumed for tasks with no estimate and no history (default 60s).")
    @click.option("--width", type=click.IntRange(30, 400), help="Width of the text Gantt chart.")
    @click.option("--only", multiple=True, metavar="PATTERN",
                  help="Plan only these tasks (glob) and the tasks they need, as 'rota run --only' runs them.")
    def plan(spec: str, gpus: str | None, cpus: int | None, memory: str | None, machines: tuple[str, ...],
             as_json: bool, gantt: str | None, use_history: bool, state_dir: str | None,
             default_estimate: str | None, width: int | None, only: tuple[str, ...]) -> Any:
        """Simulate SPEC on a virtual clock with rota's scheduling policy (nothing runs).

        Prints the makespan, sequential time, lower bound, speedup, utilisation,
        critical path, cost and a Gantt chart; compares machines with --machine.
        """
        plan_command(spec, gpus, cpus, memory, machines, as_json, gantt, use_history, state_dir,
                     default_estimate, width, only)
