"""Sweep figures from ``optuna.visualization``: optimisation history, parallel
coordinates and parameter importances, per study (plotly figures, as Optuna draws them).

:func:`study_figures` takes a loaded ``optuna.Study`` (what a live view has);
:func:`sweep_figures` opens the state folder's ``optuna.db`` read-only and
returns the figures of each sweep's current study, by study name.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from rota.report.figures import esc

FIGURE_TITLES = {
    "history": "Optimisation history",
    "parallel": "Parallel coordinates",
    "importance": "Parameter importances",
}


def study_figures(study: Any) -> dict[str, Any]:
    """``{"history", "parallel", "importance"}`` -> plotly figure, for the figures Optuna can
    draw from this study's complete trials (importances need two of them and a parameter
    that varies); a figure Optuna cannot draw is left out, not faked."""
    from optuna import visualization as vis
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out: dict[str, Any] = {}
    if not done:
        return out
    metric = study.user_attrs.get("rota_metric") or "value"
    with warnings.catch_warnings():  # Optuna warns that plotting is experimental, and on few trials
        warnings.simplefilter("ignore")
        for key, draw in (("history", vis.plot_optimization_history),
                          ("parallel", vis.plot_parallel_coordinate),
                          ("importance", vis.plot_param_importances)):  # fmt: skip
            if key == "parallel" and not any(t.params for t in done):
                continue
            try:
                fig = draw(study, target_name=metric)
            except (ValueError, RuntimeError, ZeroDivisionError, ImportError):
                continue  # e.g. importances of one trial, or without a parameter that varies
            # three side by side: the tool bar stands upright at the right, clear of the title,
            # which names the study (figures on their own: --figures files, rota serve's page)
            fig.update_layout(title=f"{esc(study.study_name)}: {FIGURE_TITLES[key]}", height=380, margin={"l": 60, "r": 56, "t": 50, "b": 40},
                              modebar={"orientation": "v"})  # fmt: skip
            out[key] = fig
    return out


def sweep_figures(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{study name: study_figures(study)}`` for each sweep's current study; ``{}`` without sweeps.

    Raises :class:`RotaError` when the studies exist but Optuna (or plotly) is not installed.
    """
    sd = Path(state_dir)
    if not (sd / "optuna.db").exists():
        return {}
    from rota.report.sweeps import open_studies
    from rota.studies.names import group_studies

    out: dict[str, dict[str, Any]] = {}
    with open_studies(sd) as (optuna, storage):
        studies = group_studies((s.study_name, s.user_attrs) for s in storage.get_all_studies())
        for group in sorted(studies):
            name = sorted(studies[group])[-1][1]
            out[name] = study_figures(optuna.load_study(study_name=name, storage=storage))
    return out
