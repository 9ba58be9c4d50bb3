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
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False),
              help="Also write each figure of the HTML report to this folder, one file each.")
@click.option("--figure-format", type=click.Choice(["html", "json"]), default="html", show_default=True,
              help="--figures files: self-contained HTML pages, or plotly JSON (for Plotly.newPlot).")
@click.option("--plotlyjs", type=click.Choice(["inline", "cdn"]), default="inline", show_default=True,
              help="HTML: plotly.js inlined once (works offline), or loaded from plotly's CDN (smaller).")
def report(target: str | None, state_dir: str | None, by: tuple[str, ...], as_json: bool, as_csv: bool,
           html_path: str | None, top: int, figures_dir: str | None = None, figure_format: str = "html",
           plotlyjs: str = "inline") -> None:
    """Report on a run: tasks, metrics across seeds with 95% CIs, GPU use, best sweep trials."""
    from rota import api
    from rota.report.load import load_report
    from rota.report.stats import default_by

    _check_writable_file("--html", html_path)  # before the render: a typo'd folder is one line, exit 2
    sd = api.resolve_state_dir(target, state_dir)
    data = load_report(sd)
    keys = [k.strip() for item in by for k in item.split(",") if k.strip()]
    if keys:
        _check_by(keys, data.tasks)
    else:
        keys = default_by(data.tasks)
    sweeps = _sweeps(sd, top)
    from rota.report.code import code_by_task, code_warnings

    codes = code_by_task(sd)
    for line in code_warnings(data.tasks, codes, keys):  # on stderr: --json and --csv stay parseable
        click.echo(line, err=True)
    if html_path or figures_dir:
        _write_html(sd, data, keys, sweeps, html_path, figures_dir, figure_format, plotlyjs)
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


def _check_writable_file(flag: str, path: str | None) -> None:
    """Refuse (UsageError, exit 2) a file path whose folder does not exist or is not a folder.

    Without this check the report was rendered first and ``write_text`` then ended in a
    FileNotFoundError traceback (exit 1)."""
    from rota.errors import UsageError

    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise UsageError(f"{flag} {path}: {parent} {why}; create the folder first or choose another path")


def _check_by(keys: list[str], tasks: Any) -> None:
    """Warn (one line on stderr) about a ``--by`` name that no task of the run has as a variable.

    Before, ``--by sed`` (for ``seed``) grouped every task under '-' without a word: a typo
    looked like a result. A warning, not a refusal: such a name groups nothing, the report
    is still right, and commands that passed one (``--by model,task`` where ``model`` is in
    the task names, not a variable) keep working; stdout (``--json``, ``--csv``) is unchanged."""
    known: dict[str, None] = {}
    for t in tasks:
        for k in t.vars:
            known.setdefault(k, None)
    unknown = [k for k in keys if k not in known]
    if unknown:
        have = ", ".join(known) if known else "none (no task has a matrix variable)"
        click.echo(f"rota: warning: --by {','.join(unknown)}: no task of this run has that variable, so it "
                   f"groups nothing; its variables: {have}", err=True)


def _sweeps(state_dir: Path, top: int) -> list[dict[str, Any]]:
    if not (state_dir / "optuna.db").exists() and not any(state_dir.glob("optuna*")):
        return []
    try:
        from rota.report.sweeps import best_trials
    except ImportError:
        return []
    return best_trials(state_dir, top=top)


def _write_html(state_dir: Path, data: Any, keys: list[str], sweeps: list[dict[str, Any]], html_path: str | None,
                figures_dir: str | None, figure_format: str, plotlyjs: str) -> None:
    """The HTML report and/or its figures as files (``--html``, ``--figures``)."""
    from rota.report.html import render_html, report_figures
    from rota.report.sweep_figures import sweep_figures

    figs = sweep_figures(state_dir) if sweeps else {}
    if html_path:
        Path(html_path).write_text(render_html(data, keys, sweeps=sweeps, sweep_figs=figs,
                                               plotlyjs="cdn" if plotlyjs == "cdn" else "inline"),
                                   encoding="utf-8")  # fmt: skip
        click.echo(f"wrote {html_path}", err=True)
    if figures_dir:
        from rota.report.page import figure_written

        out = Path(figures_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [figure_written(fig, out / f"{name}.{figure_format}", "cdn" if plotlyjs == "cdn" else "inline")
                   for name, fig in report_figures(data, keys, figs).items()]  # fmt: skip
        click.echo(f"wrote {len(written)} figures to {out}", err=True)
