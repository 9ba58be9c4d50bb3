"""``rota report``: what happened in a run (tables, groups over seeds, JSON/CSV/HTML)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def register(cli: click.Group) -> None:
    cli.add_command(report)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False, type=click.Path())
@click.option("--state-dir", type=click.Path(file_okay=False))
@click.option("--by", "by", multiple=True, metavar="VAR",
              help="Group by these matrix variables; metrics aggregate over the others (e.g. seeds). Repeatable "
                   "or comma-separated.")
@click.option("--json", "as_json", is_flag=True, help="The documented JSON format (rota-report/1).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: the groups table with --by, else the tasks table.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write ONE self-contained HTML file.")
@click.option("--top", type=int, default=5, show_default=True, help="Best trials shown per sweep.")
def report(target: str | None, state_dir: str | None, by: tuple[str, ...], as_json: bool, as_csv: bool,
           html_path: str | None, top: int) -> None:
    """Report on a run: tasks, metrics across seeds with 95% CIs, GPU use, best sweep trials."""
    from rota import api
    from rota.report.load import load_report
    from rota.report.stats import default_by

    sd = api.resolve_state_dir(target, state_dir)
    data = load_report(sd)
    keys = [k.strip() for item in by for k in item.split(",") if k.strip()]
    if not keys:
        keys = default_by(data.tasks)
    sweeps = _sweeps(sd, top)
    from rota.report.code import code_by_task, code_warnings

    codes = code_by_task(sd)
    for line in code_warnings(data.tasks, codes, keys):  # on stderr: --json and --csv stay parseable
        click.echo(line, err=True)
    if html_path:
        from rota.report.html import render_html

        Path(html_path).write_text(render_html(data, keys), encoding="utf-8")
        click.echo(f"wrote {html_path}", err=True)
        if not (as_json or as_csv):
            return
    if as_json:
        from rota.report.render import to_json

        out: dict[str, Any] = to_json(data, keys)
        out["sweeps"] = sweeps
        out["code"] = codes  # task -> its latest attempt's code record (rota.engine.codever)
        click.echo(json.dumps(out, indent=2, allow_nan=False, default=str))
        return
    if as_csv:
        from rota.report.render import to_csv

        sys.stdout.write(to_csv(data, keys))
        return
    from rich.console import Console

    from rota.report.render import to_rich_tables

    console = Console()
    for part in to_rich_tables(data, keys):
        console.print(part)
    if sweeps:
        from rota.report.sweeps import best_trials_text

        console.print(best_trials_text(sweeps), soft_wrap=True, markup=False, highlight=False)


def _sweeps(state_dir: Path, top: int) -> list[dict[str, Any]]:
    if not (state_dir / "optuna.db").exists() and not any(state_dir.glob("optuna*")):
        return []
    try:
        from rota.report.sweeps import best_trials
    except ImportError:
        return []
    return best_trials(state_dir, top=top)
