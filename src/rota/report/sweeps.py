"""Best trials of every sweep, for ``rota report``.

Reads the Optuna study storage (``<state_dir>/optuna.db``) without writing to
it, joined with rota's store for the slot task names, so it is safe while a
controller is running. Optuna is imported through :mod:`rota.engine.sweep`.
A sweep run again from scratch (``--rerun``, a changed command) has a new
study (``hpo@2``, see :mod:`rota.studies.names`); the report shows each
sweep's current study and names the earlier ones.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rota.errors import RotaError


def _task_names(state_dir: Path) -> dict[tuple[str, int], str]:
    """(sweep, trial number) -> rota task name, from the store's committed params."""
    from rota.store.schema import DB_NAME
    from rota.store.sqlite import SqliteStore
    from rota.studies.names import TRIAL_KEY, trial_ref

    if not (state_dir / DB_NAME).exists():
        return {}
    store = SqliteStore(state_dir, readonly=True)
    try:
        out: dict[tuple[str, int], str] = {}
        for r in store.tasks():
            if r.trial is None:
                continue
            sweep = r.name[: -len(f"-trial-{r.trial}")] if r.name.endswith(f"-trial-{r.trial}") else r.name
            ref = trial_ref(r.params, sweep, TRIAL_KEY)
            if ref is not None:
                out[ref] = r.name
        return out
    finally:
        store.close()


def best_trials(state_dir: str | os.PathLike[str], top: int = 5) -> list[dict[str, Any]]:
    """One dict per sweep (its current study), sorted by sweep name; ``[]`` when there are no sweeps.

    Each dict: ``sweep`` (the current study's name: ``hpo``, or ``hpo@2`` after
    the sweep was run again from scratch), ``group`` (the sweep task's name),
    ``earlier`` (names of the sweep's earlier studies, oldest first), ``metric``,
    ``direction`` ("minimize" or "maximize"), ``counts`` ({"complete", "fail",
    "running", "pruned", "not_run"}: Optuna trial counts; ``fail`` leaves out
    the ``not_run`` trials, asked by a killed controller and never launched)
    and ``best``: at most ``top`` COMPLETE trials, best first, each ``{"rank",
    "number" (Optuna trial number), "task" (the rota slot task that ran it),
    "params" (name -> value), "value", "duration_s"}``.

    Raises RotaError when a study exists but Optuna is not installed.
    """
    sd = Path(state_dir)
    if not (sd / "optuna.db").exists():
        return []
    from rota.studies.names import NOT_RUN_ATTR, group_studies

    names = _task_names(sd)
    out: list[dict[str, Any]] = []
    with open_studies(sd) as (optuna, storage):
        TS = optuna.trial.TrialState
        studies = group_studies((s.study_name, s.user_attrs) for s in storage.get_all_studies())
        for group in sorted(studies):
            gens = sorted(studies[group])
            name = gens[-1][1]
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            direction = study.direction.name.lower()
            done = [t for t in trials if t.state == TS.COMPLETE and t.value is not None]
            done.sort(key=lambda t: (t.value if direction == "minimize" else -t.value, t.number))
            best = []
            for rank, t in enumerate(done[: max(top, 0)], 1):
                dur = (
                    (t.datetime_complete - t.datetime_start).total_seconds()
                    if (t.datetime_complete and t.datetime_start)
                    else None
                )
                task = names.get((name, t.number)) or t.user_attrs.get("rota_task")
                best.append(
                    {
                        "rank": rank,
                        "number": t.number,
                        "task": task,
                        "params": dict(t.params),
                        "value": float(t.value),
                        "duration_s": dur,
                    }
                )
            out.append(
                {
                    "sweep": name,
                    "group": group,
                    "earlier": [n for _, n in gens[:-1]],
                    "metric": study.user_attrs.get("rota_metric"),
                    "direction": direction,
                    "counts": {
                        "complete": sum(1 for t in trials if t.state == TS.COMPLETE),
                        "fail": sum(1 for t in trials if t.state == TS.FAIL and not t.user_attrs.get(NOT_RUN_ATTR)),
                        "running": sum(1 for t in trials if t.state == TS.RUNNING),
                        "pruned": sum(1 for t in trials if t.state == TS.PRUNED),
                        "not_run": sum(1 for t in trials if t.state == TS.FAIL and t.user_attrs.get(NOT_RUN_ATTR)),
                    },
                    "best": best,
                }
            )
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def best_trials_text(sweeps: list[dict[str, Any]]) -> str:
    """Plain-text tables of :func:`best_trials` output (one block per sweep); ``""`` when empty."""
    blocks = []
    for s in sweeps:
        c = s["counts"]
        head = (
            f"sweep {s['sweep']}: best {s['metric'] or 'value'} ({s['direction']}); "
            f"{c['complete']} complete, {c['fail']} failed, {c['pruned']} pruned, {c['running']} running"
        )
        lines = [head]
        if s.get("earlier"):
            lines.append(f"  (earlier studies of this sweep, kept in optuna.db: {', '.join(s['earlier'])})")
        if not s["best"]:
            lines.append("  no complete trial yet")
        for b in s["best"]:
            params = " ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            lines.append(f"  {b['rank']:>2}. {_fmt(b['value']):>10}  {b['task'] or '#' + str(b['number'])}  {params}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


@contextlib.contextmanager
def open_studies(sd: Path) -> Iterator[tuple[Any, Any]]:
    """Optuna and the state folder's study storage, read-only (``optuna.db`` must exist), its
    connections closed on leaving. A corrupt or foreign file is one RotaError line; so is a
    missing Optuna."""
    from rota.studies.storage import import_optuna, open_storage

    optuna = import_optuna()
    try:
        storage = open_storage(sd, readonly=True)
    except RotaError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise RotaError(f"cannot read the sweep studies in {sd / 'optuna.db'}: {e}") from None
    try:
        yield optuna, storage
    finally:
        try:
            storage.engine.dispose()
        except Exception:  # noqa: BLE001 - best effort
            pass
