"""``rota status [TARGET] [--state-dir DIR] [--state STATE] [--json]`` without click, rich or pydantic.

``rota status`` is polled during runs (``watch -n1 rota status``) on machines
whose cores the run needs, so this path imports only the standard library's
``sqlite3``/``json`` and :mod:`rota.store.read`. ``python -m rota.cli status``
comes here first (:mod:`rota.cli.__main__`); the click command in
:mod:`rota.cli.main` hands its words to :func:`main` too: one parser
(:func:`parse_args`, from one option list, :data:`OPTIONS`, that ``--help``
prints), so both paths accept, refuse and print the same bytes.

Output contracts:

- ``--json``: :func:`rota.store.read.status_json`, the version-1 object
  two-space indented at the top level with one task per line
  (``rota status --json | grep`` works; a parser sees the documented fields);
- the table: a title line (run id, controller), one header and one line per
  task (task, state, attempts, exit, GPUs, duration, log; columns separated by
  two spaces, the log last so a narrow terminal only wraps the log), then the
  non-zero counts, then each pending task's predicted start and why it waits (``starts in
  ~3m  waiting for its need: prep (running)``). A running task that its backend still holds in its queue
  (SLURM's PENDING) shows ``queued`` with no duration. States are coloured
  only on a terminal without ``NO_COLOR``.

``--state failed`` (repeatable, or ``failed,running``) lists only the tasks in
those states, in both forms; the counts still count every task. ``--state queued``
lists the running tasks that their backend still holds in its queue; ``--state held`` the pending
tasks ``rota hold`` keeps back (``pending`` lists them too: their stored state stays pending).

The process runs at nice +10: when the run needs every core, the run wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TextIO

from rota.errors import RotaError
from rota.store.read import listed, nested_specs, read_status, state_dir_of, status_json

_COLUMNS = ("task", "state", "attempts", "exit", "GPUs", "duration", "log")
_COLORS = {"succeeded": "32", "cached": "32", "failed": "31", "skipped": "33", "running": "36", "queued": "34", "interrupted": "35",
           "cancelled": "35", "held": "33"}


USAGE = "Usage: rota status [OPTIONS] [TARGET]"
SUMMARY = "Every task of a run: state, attempts, exit code, GPUs, times, log. Safe during a run."
OPTIONS: tuple[tuple[tuple[str, ...], str | None, str], ...] = (
    (("--state-dir",), "DIRECTORY", ""),
    (("--state",), "STATE", "Only tasks in this state (repeat, or failed,running; queued: running tasks the backend "
                            "has not started yet; held: pending tasks rota hold keeps back); the counts still count "
                            "all."),
    (("--json",), None, "The documented JSON format (see README)."),
    (("-h", "--help"), None, "Show this message and exit."),
)
"""``rota status``' options: (names, value's metavar or None for a flag, help). The one list that
:func:`parse_args` parses and :func:`help_text` prints; the click command passes its words here."""


class StatusUsage(Exception):
    """A usage error in ``rota status``' words (one line, as :func:`rota.cli.main.usage_line`; exit code 2)."""


class StatusHelp(Exception):
    """``-h``/``--help`` was given."""


def parse_args(argv: Sequence[str]) -> tuple[str | None, str | None, bool, tuple[str, ...]]:
    """``(target, state_dir, as_json, states)`` from the words after ``status``.

    The one parser of ``rota status`` (``python -m rota.cli status`` and the click command both
    come here). Raises :class:`StatusHelp` for ``-h``/``--help`` and :class:`StatusUsage` for an
    unknown option, a missing value, a second target or a file given as ``--state-dir``."""
    takes = {name: metavar for names, metavar, _ in OPTIONS for name in names}
    target: str | None = None
    values: dict[str, list[str]] = {}
    args = list(argv)
    positional_only = False
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if positional_only or not a.startswith("-") or a == "-":
            if target is not None:
                raise StatusUsage(f"Got unexpected extra argument ({a})")
            target = a
            continue
        if a == "--":
            positional_only = True
            continue
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if name not in takes:
            raise StatusUsage(f"No such option '{name}'.")
        if takes[name] is None:
            if eq:
                raise StatusUsage(f"Option '{name}' does not take a value.")
            values.setdefault(name, []).append("")
            continue
        if not eq:
            if i >= len(args):
                raise StatusUsage(f"Option '{name}' requires an argument.")
            value = args[i]
            i += 1
        values.setdefault(name, []).append(value)
    if "-h" in values or "--help" in values:
        raise StatusHelp
    state_dir = values.get("--state-dir", [None])[-1]
    if state_dir is not None and os.path.isfile(state_dir):
        raise StatusUsage(f"Invalid value for '--state-dir': Directory '{state_dir}' is a file.")
    return target, state_dir, "--json" in values, tuple(values.get("--state", ()))


def help_text(width: int = 80) -> str:
    """``rota status --help``: usage, summary and :data:`OPTIONS`, laid out as click lays out help."""
    import textwrap

    heads = [", ".join(names) + (f" {metavar}" if metavar else "") for names, metavar, _ in OPTIONS]
    col = max(map(len, heads)) + 4
    lines = [USAGE, "", *textwrap.wrap(SUMMARY, width - 2, initial_indent="  ", subsequent_indent="  "), "",
             "Options:"]
    for head, (_, _, text) in zip(heads, OPTIONS, strict=True):
        wrapped = textwrap.wrap(text, width - col) or [""]
        lines.append(f"  {head.ljust(col - 2)}{wrapped[0]}".rstrip())
        lines.extend(" " * col + more for more in wrapped[1:])
    return "\n".join(lines) + "\n"


def wanted_states(values: Sequence[str]) -> frozenset[str] | None:
    """``--state`` values (repeated or comma-separated) as a set; None for all. UsageError on a typo."""
    from rota.errors import UsageError
    from rota.store.base import HELD, QUEUED, STATES

    if not values:
        return None
    got = {v.strip() for value in values for v in value.split(",") if v.strip()}
    bad = sorted(got - {*STATES, QUEUED, HELD})
    if bad:
        raise UsageError(f"--state {bad[0]!r} is not a task state; states: {', '.join(STATES)}, {QUEUED}, {HELD}")
    return frozenset(got)


def main(argv: Sequence[str]) -> int:
    """Run ``rota status`` for ``argv`` (the words after ``status``); the exit code."""
    try:
        parsed = parse_args(argv)
    except StatusHelp:
        sys.stdout.write(help_text())
        return 0
    except StatusUsage as e:
        # One line, as rota.cli.main.usage_line writes every other command's usage error.
        sys.stderr.write(f"rota: error: rota status: {e} (see 'rota status --help')\n")
        return 2
    try:
        show(*parsed)
    except RotaError as e:
        print(f"rota: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # `rota status | head`: the reader left; say nothing, and keep the
        # interpreter's final flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def show(target: str | None, state_dir: str | None, as_json: bool, states: Sequence[str] = (),
         out: TextIO | None = None) -> None:
    """Print the status of the run at ``target``/``state_dir`` (rules of
    :func:`rota.store.read.state_dir_of`). Raises RotaError for unusable state.

    Lowers this process's CPU priority first (nice +10): a status reader must
    not take CPU from the run it watches (issue 6: readers in a loop slow a
    run by at most 5%); on an idle core it runs as fast as before."""
    only = wanted_states(states)
    with contextlib.suppress(OSError):
        os.nice(10)
    sd = state_dir_of(target, state_dir)
    out = out or sys.stdout
    if as_json:
        out.write(status_json(sd, only))
    else:
        data = read_status(sd)
        out.write(render_table(data, color=_color_wanted(out), states=only))
        if data["controller"]["alive"]:  # foreign GPU memory and unhealthy GPUs the controller sees
            from rota.nvml import read_notes

            out.write("".join(line + "\n" for line in read_notes(str(sd))))
        others = nested_specs(sd)
        if others:  # rota.yaml's .rota also holds other spec files' state folders
            out.write(f"also here: {', '.join(n + '.yaml' for n in others)} (rota status NAME.yaml)\n")
    out.flush()


def render_table(data: Mapping[str, Any], *, color: bool = False, states: Collection[str] | None = None) -> str:
    """The human table (see the module docstring), ending in a newline; ``states``: only those tasks."""
    from rota.spec.units import format_duration

    c = data["controller"]
    lines = [f"run {data['run_id']}  ({'running, pid ' + str(c['pid']) if c['alive'] else 'no controller running'})"]
    rows = [_COLUMNS]
    for t in data["tasks"]:
        if not listed(t["state"], t["queued"], states, t.get("held")):
            continue
        shown = "queued" if t["queued"] else "held" if t.get("held") and t["state"] == "pending" else t["state"]
        rows.append((t["name"], shown, str(t["attempts"]),
                     "" if t["exit_code"] is None else str(t["exit_code"]),
                     ",".join(map(str, t["gpus"])) or "-", format_duration(t["duration_s"]), t["log_path"] or ""))
    widths = [max(map(len, col)) for col in zip(*rows, strict=True)][:-1]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        if color and n and row[1] in _COLORS:
            cells[1] = f"\x1b[{_COLORS[row[1]]}m{row[1]}\x1b[0m" + cells[1][len(row[1]):]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("  ".join(f"{k} {v}" for k, v in data["counts"].items() if v))
    lines.extend(_waiting(data["tasks"], states, alive=bool(c["alive"])))
    return "\n".join(lines) + "\n"


def _waiting(tasks: Sequence[Mapping[str, Any]], states: Collection[str] | None, *, alive: bool = True) -> list[str]:
    """After the counts, each listed pending task's predicted start and reason, aligned:
    ``  big  starts in ~3m  GPUs reserved for ...`` (what ``rota why TASK`` prints in full).

    Without a live controller nothing starts until the next ``rota run``: the predictions the
    last controller stored are not shown (they said 'starts now' after a drained run ended)."""
    from rota.spec.units import format_duration

    rows = []
    now = time.time()
    for t in tasks:
        if t["state"] != "pending" or not listed("pending", False, states, t.get("held")):
            continue
        p = t.get("predicted_start_s")  # epoch seconds
        if not alive:
            when = "not before 'rota run'"
        else:
            when = "no prediction" if p is None else "starts now" if p <= now else f"starts in ~{format_duration(p - now)}"
        rows.append((t["name"], when, t["reason"] or "not explained yet"))
    if not rows:
        return []
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    head = ("pending, why they wait (rota why TASK):" if alive else
            "pending, no controller running ('rota run' continues them); the last controller's reasons:")
    return [head] + [f"  {a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows]


def _color_wanted(out: TextIO) -> bool:
    try:
        return out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
