"""``rota status [TARGET] [--state-dir DIR] [--state STATE] [--json]`` without click, rich or pydantic.

``rota status`` is polled during runs (``watch -n1 rota status``) on machines
whose cores the run needs, so this path imports only the standard library's
``sqlite3``/``json`` and :mod:`rota.store.read`. ``python -m rota.cli status``
comes here first (:mod:`rota.cli.__main__`); the click command in
:mod:`rota.cli.main` renders through the same functions, so both print the
same bytes.

Output contracts:

- ``--json``: :func:`rota.store.read.status_json`, the version-1 object
  two-space indented at the top level with one task per line
  (``rota status --json | grep`` works; a parser sees the documented fields);
- the table: a title line (run id, controller), one header and one line per
  task (task, state, attempts, exit, GPUs, duration, log; columns separated by
  two spaces, the log last so a narrow terminal only wraps the log), then the
  non-zero counts. A running task that its backend still holds in its queue
  (SLURM's PENDING) shows ``queued`` with no duration. States are coloured
  only on a terminal without ``NO_COLOR``.

``--state failed`` (repeatable, or ``failed,running``) lists only the tasks in
those states, in both forms; the counts still count every task. ``--state queued``
lists the running tasks that their backend still holds in its queue.

The process runs at nice +10: when the run needs every core, the run wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TextIO

from rota.errors import RotaError
from rota.store.read import listed, nested_specs, read_status, state_dir_of, status_json

_COLUMNS = ("task", "state", "attempts", "exit", "GPUs", "duration", "log")
_COLORS = {"succeeded": "32", "cached": "32", "failed": "31", "skipped": "33", "running": "36", "queued": "34", "interrupted": "35"}


def parse_args(argv: Sequence[str]) -> tuple[str | None, str | None, bool, tuple[str, ...]] | None:
    """``(target, state_dir, as_json, states)``, or None for anything else (help,
    unknown options, a file given as --state-dir): the caller falls back to the
    click command, which prints its usual help or usage error."""
    target: str | None = None
    state_dir: str | None = None
    as_json = False
    states: list[str] = []
    args = list(argv)
    positional_only = False
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if positional_only or not a.startswith("-") or a == "-":
            if target is not None:
                return None
            target = a
        elif a == "--":
            positional_only = True
        elif a == "--json":
            as_json = True
        elif a == "--state-dir" and i < len(args):
            state_dir = args[i]
            i += 1
        elif a == "--state" and i < len(args):
            states.append(args[i])
            i += 1
        elif a.startswith("--state-dir="):
            state_dir = a.split("=", 1)[1]
        elif a.startswith("--state="):
            states.append(a.split("=", 1)[1])
        else:
            return None
    if state_dir is not None and os.path.isfile(state_dir):
        return None
    return target, state_dir, as_json, tuple(states)


def wanted_states(values: Sequence[str]) -> frozenset[str] | None:
    """``--state`` values (repeated or comma-separated) as a set; None for all. UsageError on a typo."""
    from rota.errors import UsageError
    from rota.store.base import QUEUED, STATES

    if not values:
        return None
    got = {v.strip() for value in values for v in value.split(",") if v.strip()}
    bad = sorted(got - {*STATES, QUEUED})
    if bad:
        raise UsageError(f"--state {bad[0]!r} is not a task state; states: {', '.join(STATES)}, {QUEUED}")
    return frozenset(got)


def main(argv: Sequence[str]) -> int | None:
    """Run ``rota status`` for ``argv`` (the words after ``status``); the exit
    code, or None when :func:`parse_args` leaves it to the click command."""
    parsed = parse_args(argv)
    if parsed is None:
        return None
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
        out.write(render_table(read_status(sd), color=_color_wanted(out), states=only))
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
        if not listed(t["state"], t["queued"], states):
            continue
        rows.append((t["name"], "queued" if t["queued"] else t["state"], str(t["attempts"]),
                     "" if t["exit_code"] is None else str(t["exit_code"]),
                     ",".join(map(str, t["gpus"])) or "-", format_duration(t["duration_s"]), t["log_path"] or ""))
    widths = [max(map(len, col)) for col in zip(*rows, strict=True)][:-1]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        if color and n and row[1] in _COLORS:
            cells[1] = f"\x1b[{_COLORS[row[1]]}m{row[1]}\x1b[0m" + cells[1][len(row[1]):]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("  ".join(f"{k} {v}" for k, v in data["counts"].items() if v))
    return "\n".join(lines) + "\n"


def _color_wanted(out: TextIO) -> bool:
    try:
        return out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
