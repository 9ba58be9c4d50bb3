"""``rota export mlflow``: every attempt that ended becomes an MLflow run.

Each run carries the task's matrix variables and sweep parameters as params, its metrics (the
task's, on its latest attempt: rota keeps one set per task), and as tags its state, exit code,
GPUs, duration, attempt number and id, task group and the code it ran (``rota.code.*``, and
MLflow's own ``mlflow.source.git.commit``); its log is an artifact (``logs/attempt-N.log``). The
runs of a task group with several tasks (a matrix, shards, a sweep) are nested under one parent
run per group. Exporting again adds only what is new: every run is tagged with its state folder
(a hash of its path, ``rota.source``) and attempt id (``rota.attempt_id``), and the experiment is
searched for them first. Needs ``mlflow`` (or ``mlflow-skinny``): ``pip install 'rota[mlflow]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rota.errors import RotaError, UsageError
from rota.store.records import TaskRecord
from rota.store.sqlite import SqliteStore

INSTALL_HINT = "pip install 'rota[mlflow]'"
_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "cancelled": "KILLED"}
_ACTIVE = ("pending", "launching", "running")
_BATCH = 100  # MLflow accepts at most 100 params and 1,000 metrics per log_batch
_PARAM_CHARS = 6000  # MLflow's longest param value
_TAG_CHARS = 5000  # well under MLflow's longest tag value


@dataclass(frozen=True)
class ExportResult:
    """What one export did: ``added`` runs (attempts), ``kept`` attempts already in the experiment,
    ``parents`` parent runs made, and the experiment's id and name."""

    added: int
    kept: int
    parents: int
    experiment_id: str
    experiment: str


@dataclass(frozen=True)
class _Attempt:
    task: TaskRecord
    number: int
    attempt_id: str
    state: str
    exit_code: int | None
    gpus: list[int]
    started_at: float | None
    ended_at: float
    log_path: str | None
    code: Mapping[str, Any] | None
    latest: bool


def source_id(state_dir: str | os.PathLike[str]) -> str:
    """The tag value that names a state folder (its real path, hashed: safe in a filter string)."""
    return hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:16]


def export_mlflow(state_dir: str | os.PathLike[str], *, tracking_uri: str | None = None,
                  experiment: str | None = None) -> ExportResult:
    """Export ``state_dir``'s ended attempts not yet in ``experiment`` (default: the spec file's
    name, ``rota`` without one) at ``tracking_uri`` (default: MLflow's, ``MLFLOW_TRACKING_URI`` or
    ``./mlruns``). Reads the state read-only; safe during a run (running attempts wait for the next
    export). UsageError when MLflow is not installed."""
    try:
        from mlflow.entities import Metric, Param
    except ImportError:
        raise UsageError(f"rota export mlflow needs MLflow: {INSTALL_HINT}") from None
    from mlflow.exceptions import MlflowException

    attempts, meta = _read(state_dir)
    name = experiment or _default_experiment(meta.get("spec_path"))
    try:
        return _export(attempts, meta, state_dir, tracking_uri, name, Metric, Param)
    except MlflowException as e:  # a bad URI, a refused store, a server that answers an error
        raise RotaError(f"MLflow ({tracking_uri or 'its default tracking URI'}): {_first_line(e)}") from None


def _export(attempts: Sequence[_Attempt], meta: Mapping[str, Any], state_dir: str | os.PathLike[str],
            tracking_uri: str | None, name: str, Metric: Any, Param: Any) -> ExportResult:  # noqa: N803
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    exp_id = found.experiment_id if found is not None else client.create_experiment(name)
    source = source_id(state_dir)
    done, parents = _existing(client, exp_id, source)
    group_sizes: dict[str, int] = {}
    for t in {a.task.name: a.task for a in attempts}.values():
        group_sizes[t.grp] = group_sizes.get(t.grp, 0) + 1
    added = kept = made = 0
    for a in attempts:
        if a.attempt_id in done:
            kept += 1
            continue
        parent = None
        if a.task.grp and group_sizes.get(a.task.grp, 0) > 1:
            parent = parents.get(a.task.grp)
            if parent is None:
                parent = parents[a.task.grp] = _parent(client, exp_id, source, a.task.grp, meta, attempts)
                made += 1
        tags = _tags(a, source, meta)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(exp_id, start_time=_ms(a.started_at or a.ended_at), tags=tags,
                                run_name=f"{a.task.name}#{a.number}")
        rid = run.info.run_id
        params = [Param(k, _text(v)[:_PARAM_CHARS]) for k, v in _params(a.task).items()]
        metrics = [Metric(k, float(v), _ms(a.ended_at), 0) for k, v in _metrics(a, meta).items()]
        try:
            for i in range(0, max(len(params), len(metrics)), _BATCH):
                client.log_batch(rid, metrics=metrics[i:i + _BATCH], params=params[i:i + _BATCH])
            if a.log_path and os.path.isfile(a.log_path):
                client.log_artifact(rid, a.log_path, artifact_path="logs")
            client.set_terminated(rid, _STATUS.get(a.state, "FAILED"), end_time=_ms(a.ended_at))
        except BaseException:
            # Tagged with its attempt id already: a half-made run would stop the next export from
            # making it whole. Gone, the next export adds it again.
            client.delete_run(rid)
            raise
        added += 1
    return ExportResult(added, kept, made, exp_id, name)


def _read(state_dir: str | os.PathLike[str]) -> tuple[list[_Attempt], dict[str, Any]]:
    store = SqliteStore(Path(state_dir), readonly=True)
    try:
        tasks = {t.name: t for t in store.tasks()}
        meta = {"run_id": store.get_meta("run_id") or "", "spec_path": store.get_meta("spec_path") or "",
                "metrics": store.metrics()}
        out = []
        for r in store.attempts():
            t = tasks.get(r["task"])
            if t is None or r.get("ended_at") is None or r["state"] in _ACTIVE:
                continue
            out.append(_Attempt(
                task=t, number=int(r["attempt"]), attempt_id=str(r.get("id") or f"{r['task']}#{r['attempt']}"),
                state=str(r["state"]), exit_code=r.get("exit_code"), gpus=list(r.get("gpus") or []),
                started_at=r.get("started_at"), ended_at=float(r["ended_at"]), log_path=r.get("log_path"),
                code=r.get("code") if isinstance(r.get("code"), dict) else None, latest=int(r["attempt"]) == t.attempt,
            ))
        return out, meta
    finally:
        store.close()


def _default_experiment(spec_path: str | None) -> str:
    """The spec file's name (``train`` for train.yaml); a spec built in Python is recorded as
    ``<dict spec NAME>``: its NAME (``hydra`` for the Hydra launcher's)."""
    if not spec_path:
        return "rota"
    stem = Path(spec_path).name
    if stem.startswith("<dict spec ") and stem.endswith(">"):
        return stem[len("<dict spec "):-1] or "rota"
    return Path(spec_path).stem


def _existing(client: Any, exp_id: str, source: str) -> tuple[set[str], dict[str, str]]:
    """(attempt ids already exported from this state folder, group -> its parent run's id)."""
    done: set[str] = set()
    parents: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=f"tags.`rota.source` = '{source}'",
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get("rota.parent") == "1":
                parents[tags.get("rota.group", "")] = run.info.run_id
            elif "rota.attempt_id" in tags:
                done.add(tags["rota.attempt_id"])
        token = page.token
        if not token:
            return done, parents


def _parent(client: Any, exp_id: str, source: str, group: str, meta: Mapping[str, Any],
            attempts: Sequence[_Attempt]) -> str:
    mine = [a for a in attempts if a.task.grp == group]
    start = min((a.started_at or a.ended_at) for a in mine)
    run = client.create_run(exp_id, start_time=_ms(start), run_name=group, tags={
        "rota.source": source, "rota.parent": "1", "rota.group": group, "rota.run_id": str(meta["run_id"])})
    client.set_terminated(run.info.run_id, "FINISHED", end_time=_ms(max(a.ended_at for a in mine)))
    return str(run.info.run_id)


def _params(t: TaskRecord) -> dict[str, Any]:
    """Matrix variables, then sweep parameters (hook bookkeeping, ``_``-keys, left out)."""
    out: dict[str, Any] = dict(t.vars)
    out.update({k: v for k, v in (t.params or {}).items() if not k.startswith("_")})
    return out


def _metrics(a: _Attempt, meta: Mapping[str, Any]) -> dict[str, float]:
    """The task's metrics, on its latest attempt only (rota keeps the latest attempt's)."""
    return dict(meta["metrics"].get(a.task.name, {})) if a.latest else {}


def _tags(a: _Attempt, source: str, meta: Mapping[str, Any]) -> dict[str, str]:
    tags = {
        "rota.source": source, "rota.attempt_id": a.attempt_id, "rota.task": a.task.name,
        "rota.group": a.task.grp, "rota.attempt": str(a.number), "rota.state": a.state,
        "rota.exit_code": "" if a.exit_code is None else str(a.exit_code),
        "rota.gpus": ",".join(map(str, a.gpus)),
        "rota.duration_s": "" if a.started_at is None else f"{max(a.ended_at - a.started_at, 0.0):.3f}",
        "rota.run_id": str(meta["run_id"]), "rota.command": a.task.command[:_TAG_CHARS],
    }
    if a.log_path:
        tags["rota.log_path"] = a.log_path
    tags.update(code_tags(a.code))
    return tags


def code_tags(code: Mapping[str, Any] | None) -> dict[str, str]:
    """An attempt's code record as tags: ``rota.code.<key>`` for each key, and MLflow's own
    ``mlflow.source.git.commit`` (shown in its UI) for a git record."""
    if not code:
        return {}
    out = {f"rota.code.{k}": _text(v)[:_TAG_CHARS] for k, v in code.items() if v is not None}
    if code.get("kind") == "git" and code.get("commit"):
        out["mlflow.source.git.commit"] = str(code["commit"])
    return out


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)

