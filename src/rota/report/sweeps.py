"""Best trials of every sweep, for ``rota report``.

Reads the Optuna study storage (``<state_dir>/optuna.db``) without writing to
it, joined with rota's store for the slot task names, so it is safe while a
controller is running. Optuna is imported through :mod:`rota.engine.sweep`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rota.errors import RotaError


def _task_names(state_dir: Path) -> dict[tuple[str, int], str]:
    """(sweep, trial number) -> rota task name, from the store's committed params."""
    from rota.engine.sweep import TRIAL_KEY
    from rota.store.sqlite import DB_NAME, SqliteStore

    if not (state_dir / DB_NAME).exists():
        return {}
    store = SqliteStore(state_dir, readonly=True)
    try:
        out: dict[tuple[str, int], str] = {}
        for r in store.tasks():
            n = (r.params or {}).get(TRIAL_KEY)
            if isinstance(n, int) and r.trial is not None:
                sweep = (
                    r.name[: -len(f"-trial-{r.trial}")]
                    if r.name.endswith(f"-trial-{r.trial}")
                    else r.name
                )
                out[(sweep, n)] = r.name
        return out
    finally:
        store.close()


def best_trials(state_dir: str | os.PathLike[str], top: int = 5) -> list[dict[str, Any]]:
    """One dict per sweep (study), sorted by sweep name; ``[]`` when there are no sweeps.

    Each dict: ``sweep`` (study name), ``metric``, ``direction`` ("minimize" or
    "maximize"), ``counts`` ({"complete", "fail", "running", "pruned"}: Optuna
    trial counts) and ``best``: at most ``top`` COMPLETE trials, best first,
    each ``{"rank", "number" (Optuna trial number), "task" (the rota slot task
    that ran it), "params" (name -> value), "value", "duration_s"}``.

    Raises RotaError when a study exists but Optuna is not installed.
    """
    sd = Path(state_dir)
    if not (sd / "optuna.db").exists():
        return []
    from rota.engine.sweep import import_optuna, open_storage

    optuna = import_optuna()
    try:
        storage = open_storage(sd, readonly=True)
    except RotaError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise RotaError(f"cannot read the sweep studies in {sd / 'optuna.db'}: {e}") from None
    names = _task_names(sd)
    TS = optuna.trial.TrialState
    out: list[dict[str, Any]] = []
    try:
        for summary in sorted(
            optuna.get_all_study_summaries(storage, include_best_trial=False),
            key=lambda s: s.study_name,
        ):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
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
                task = names.get((summary.study_name, t.number)) or t.user_attrs.get("rota_task")
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
                    "sweep": summary.study_name,
                    "metric": study.user_attrs.get("rota_metric"),
                    "direction": direction,
                    "counts": {
                        "complete": sum(1 for t in trials if t.state == TS.COMPLETE),
                        "fail": sum(1 for t in trials if t.state == TS.FAIL),
                        "running": sum(1 for t in trials if t.state == TS.RUNNING),
                        "pruned": sum(1 for t in trials if t.state == TS.PRUNED),
                    },
                    "best": best,
                }
            )
    finally:
        try:
            storage.engine.dispose()
        except Exception:  # noqa: BLE001 - best effort
            pass
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
        if not s["best"]:
            lines.append("  no complete trial yet")
        for b in s["best"]:
            params = " ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            lines.append(f"  {b['rank']:>2}. {_fmt(b['value']):>10}  {b['task'] or '#' + str(b['number'])}  {params}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
