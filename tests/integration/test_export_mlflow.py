"""``rota export mlflow`` against a real SQLite tracking store with the real MLflow client, and the
sweep's Optuna study opened with Optuna's own storage API (what ``optuna-dashboard`` opens)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from rota.export.mlflow import export_mlflow, source_id
from tests.helpers import rota, write_spec

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'rota[mlflow]'")
optuna = pytest.importorskip("optuna")

PY = sys.executable


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A SQLite tracking store keeps artifacts in ./mlruns (MLflow's default artifact root): here.
    monkeypatch.chdir(tmp_path)
SPEC = """\
defaults:
  retries: 1
tasks:
  - name: train-{seed}
    matrix: {seed: [1, 2]}
    command: bash train.sh {seed}
  - name: flaky
    command: test -e {out}/tried && echo ROTA_METRIC loss=3 || (touch {out}/tried; exit 3)
  - name: hpo
    command: echo ROTA_METRIC loss={x}
    sweep:
      trials: 2
      metric: loss
      sampler: random
      seed: 3
      params:
        x: {type: float, low: 0.0, high: 1.0}
"""


def _runs(client, exp_id: str) -> list:
    return client.search_runs([exp_id], max_results=1000)


def test_each_ended_attempt_becomes_one_run_nested_by_group_and_only_new_ones_are_added(tmp_path: Path):
    spec = write_spec(tmp_path / "proj", SPEC)
    (tmp_path / "proj" / "train.sh").write_text('echo "ROTA_METRIC acc=0.$1"\n')
    sd = tmp_path / "proj" / ".rota"
    p = rota("run", spec, "--cpus", "2", "--plain", "--retry-delay", "0",
             env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})  # no git: the script's hash is the code record
    assert p.returncode == 0, p.stdout + p.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    res = export_mlflow(sd, tracking_uri=uri)
    # attempts: train-1, train-2, flaky #1 (failed) and #2, hpo-trial-0, hpo-trial-1; parents: train-{seed}, hpo
    assert (res.added, res.kept, res.parents, res.experiment) == (6, 0, 2, "rota")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = _runs(client, res.experiment_id)
    parents = {r.data.tags["rota.group"]: r.info.run_id for r in runs if r.data.tags.get("rota.parent") == "1"}
    assert set(parents) == {"train-{seed}", "hpo"}
    by = {(r.data.tags["rota.task"], r.data.tags["rota.attempt"]): r for r in runs if "rota.task" in r.data.tags}
    assert len(by) == 6

    t1 = by[("train-1", "1")]
    assert t1.data.params == {"seed": "1"} and t1.data.metrics == {"acc": 0.1}
    assert t1.info.status == "FINISHED" and t1.data.tags["mlflow.parentRunId"] == parents["train-{seed}"]
    assert t1.data.tags["rota.state"] == "succeeded" and t1.data.tags["rota.exit_code"] == "0"
    assert t1.data.tags["rota.source"] == source_id(sd) and float(t1.data.tags["rota.duration_s"]) >= 0
    assert t1.data.tags["rota.code.kind"] == "script" and t1.data.tags["rota.code.sha256"] == hashlib.sha256(
        (tmp_path / "proj" / "train.sh").read_bytes()).hexdigest()
    log = client.download_artifacts(t1.info.run_id, "logs/attempt-1.log", str(tmp_path / "dl"))
    assert "ROTA_METRIC acc=0.1" in Path(log).read_text()

    first, second = by[("flaky", "1")], by[("flaky", "2")]
    assert first.info.status == "FAILED" and first.data.tags["rota.exit_code"] == "3" and first.data.metrics == {}
    assert second.info.status == "FINISHED" and second.data.metrics == {"loss": 3.0}
    assert "mlflow.parentRunId" not in first.data.tags  # a task alone in its group is not nested
    trial = by[("hpo-trial-0", "1")]
    assert set(trial.data.params) == {"x"} and trial.data.metrics["loss"] == pytest.approx(float(trial.data.params["x"]))
    assert trial.data.tags["mlflow.parentRunId"] == parents["hpo"]

    # again, through the CLI: nothing new
    p = rota("export", "mlflow", spec, "--tracking-uri", uri, check=True)
    assert "exported 0 new run(s)" in p.stdout and "6 already there" in p.stdout
    assert len(_runs(client, res.experiment_id)) == 8

    # a rerun adds its new attempt only, under the existing parent
    rota("run", spec, "--cpus", "2", "--plain", "--rerun", "train-2", check=True,
         env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    res = export_mlflow(sd, tracking_uri=uri)
    assert (res.added, res.kept, res.parents) == (1, 6, 0)
    new = [r for r in _runs(client, res.experiment_id) if r.data.tags.get("rota.attempt") == "2"
           and r.data.tags.get("rota.task") == "train-2"]
    assert len(new) == 1 and new[0].data.tags["mlflow.parentRunId"] == parents["train-{seed}"]

    # the sweep's study opens with Optuna's own storage API, as optuna-dashboard opens it
    storage = optuna.storages.RDBStorage(f"sqlite:///{sd / 'optuna.db'}")
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["hpo"] and summaries[0].n_trials == 2
    study = optuna.load_study(study_name="hpo", storage=storage)
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}


def test_a_missing_state_or_a_refused_store_is_one_line(tmp_path: Path):
    p = rota("export", "mlflow", "--state-dir", tmp_path / "none", "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
    assert p.returncode == 2 and p.stderr.startswith("rota: error: no rota state") and "Traceback" not in p.stderr


def test_the_default_experiment_is_the_spec_name():
    from rota.export.mlflow import _default_experiment

    assert _default_experiment("/p/rota.yaml") == "rota" and _default_experiment("/p/train.yml") == "train"
    assert _default_experiment("/p/<dict spec hydra>") == "hydra" and _default_experiment(None) == "rota"
