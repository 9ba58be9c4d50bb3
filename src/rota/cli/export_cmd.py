"""``rota export``: a state folder's results into other tools. ``rota export mlflow [SPEC]
[--tracking-uri URI] [--experiment NAME]``: every attempt that ended becomes an MLflow run
(:mod:`rota.export.mlflow`); exporting again adds only what is new."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    cli.add_command(export)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def export() -> None:
    """Export a run's results to other tools (MLflow)."""


@export.command("mlflow", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False, type=click.Path())
@click.option("--state-dir", type=click.Path(file_okay=False))
@click.option("--tracking-uri", metavar="URI",
              help="MLflow tracking URI (sqlite:///mlflow.db, file:///path/mlruns, http://host:5000); "
                   "default: MLflow's own (MLFLOW_TRACKING_URI, else ./mlruns).")
@click.option("--experiment", metavar="NAME", help="MLflow experiment (made if missing); default: the spec's name.")
def mlflow_cmd(target: str | None, state_dir: str | None, tracking_uri: str | None, experiment: str | None) -> None:
    """Every attempt that ended becomes an MLflow run (params, metrics, tags, its log); a task
    group's runs nest under one parent run. Run it again to add only what is new."""
    from rota import api
    from rota.export.mlflow import export_mlflow

    sd = api.resolve_state_dir(target, state_dir)
    res = export_mlflow(sd, tracking_uri=tracking_uri, experiment=experiment)
    click.echo(f"exported {res.added} new run(s) to MLflow experiment {res.experiment!r} (id {res.experiment_id}); "
               f"{res.kept} already there, {res.parents} new parent run(s)")
