"""``rota cancel``, ``retry``, ``hold``, ``release``, ``priority``: steer a run from any terminal.

Registered by :mod:`rota.cli.main` through :func:`register`; each is a thin layer over the
function of :mod:`rota.api` with the same name. The request is committed to the state folder
before the command returns; it prints the controller's answer (what changed). A pattern that
matches no task, or a state folder that holds no run, is bad input: one line, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def register(cli: click.Group) -> None:
    for cmd in (cancel, retry, hold, release, priority):
        cli.add_command(cmd)


def _where(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every control shares: which run (as ``rota status``), how long to wait."""
    f = click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
                     help="Seconds to wait for the live controller's answer.")(f)
    f = click.option("--state-dir", type=click.Path(file_okay=False), help="The run's state folder.")(f)
    f = click.option("--spec", "target", type=click.Path(),
                     help="The run's spec file or folder (default: the one in this folder, as 'rota status').")(f)
    return f


def _say(answer: str) -> None:
    for line in answer.splitlines():
        click.echo(f"rota: {line}")


@click.command(context_settings=CONTEXT)
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@_where
@click.option("--grace", "grace_s", type=click.FloatRange(min=0), default=None,
              help="Seconds between SIGTERM and SIGKILL for a running task (default: the run's --grace).")
def cancel(patterns: tuple[str, ...], target: str | None, state_dir: str | None, wait_s: float,
           grace_s: float | None) -> None:
    """Cancel tasks (names or globs): running ones are stopped, pending ones never start; their
    dependents are skipped. Not retried; 'rota retry' brings them back."""
    from rota import api

    _say(api.cancel(patterns, target, state_dir=state_dir, grace_s=grace_s, wait_s=wait_s))


@click.command(context_settings=CONTEXT)
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@_where
@click.option("--force", is_flag=True, help="Also succeeded tasks; the done tasks that used them run again after them.")
def retry(patterns: tuple[str, ...], target: str | None, state_dir: str | None, wait_s: float, force: bool) -> None:
    """Send failed, cancelled, skipped or interrupted tasks back to pending with a fresh retry
    budget; the tasks skipped because of them come back too."""
    from rota import api

    _say(api.retry(patterns, target, state_dir=state_dir, force=force, wait_s=wait_s))


@click.command(context_settings=CONTEXT)
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@_where
def hold(patterns: tuple[str, ...], target: str | None, state_dir: str | None, wait_s: float) -> None:
    """Keep pending tasks from starting until 'rota release' (running ones are untouched)."""
    from rota import api

    _say(api.hold(patterns, target, state_dir=state_dir, wait_s=wait_s))


@click.command(context_settings=CONTEXT)
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...")
@_where
def release(patterns: tuple[str, ...], target: str | None, state_dir: str | None, wait_s: float) -> None:
    """Let held tasks start again."""
    from rota import api

    _say(api.release(patterns, target, state_dir=state_dir, wait_s=wait_s))


@click.command(context_settings={**CONTEXT, "ignore_unknown_options": True})  # N may be negative: -5
@click.argument("pattern", metavar="PATTERN")
@click.argument("value", type=int, metavar="N")
@_where
def priority(pattern: str, value: int, target: str | None, state_dir: str | None, wait_s: float) -> None:
    """Set the priority of tasks (higher starts first), overriding the spec's from now on."""
    from rota import api

    _say(api.priority([pattern], value, target, state_dir=state_dir, wait_s=wait_s))
