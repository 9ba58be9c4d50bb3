"""Which Optuna study a sweep uses now, how its sampler is seeded, and reusing trials never launched.

**Study names.** The first study of sweep ``hpo`` is named ``hpo``; when a new
run of the sweep starts (``--rerun`` of all its slots, or a changed command,
which makes rota rerun every slot), the next one is ``hpo@2``, then ``hpo@3``.
Older studies stay in ``optuna.db`` under their own names. Each study records
``rota_sweep`` (the sweep's name) and ``rota_generation`` as user attributes;
a study without them (made by an older rota) is generation 1 of the sweep it
is named after.

**A new run** is recognised from durable state only, so a controller killed
at any instant decides the same way on the next start: the current study has
results (COMPLETE or PRUNED trials) and no slot in rota's store refers to any
of them (rota resets a slot's row, trial number included, exactly when it runs
the slot again from scratch). A crash-resumed run always keeps its succeeded
slots, so it continues its study.

**Seeds.** A fresh sampler with ``seed: S`` replays the same sequence, so a
resumed study re-seeded with ``S`` would ask the parameter sets of its first
trials again. A study that already holds trials gets a sampler seeded with
:func:`resumed_seed` ``(S, number of trials)``: deterministic, and different
for every resume point (the trial count only grows). A new study starts from
``S`` itself, so an uninterrupted run and a rerun ask the same sequence.

**Trials asked but never launched.** ``study.ask()`` commits before rota
commits the launch, so a controller killed in between leaves a RUNNING trial
no slot refers to (possibly with only some parameters set). It was never
evaluated, so it is not a failure: the next launch of a slot of that sweep
takes it over (its missing parameters are sampled then), as Optuna itself does
with an enqueued trial. Only what no slot will ever take (the study was
replaced, the search space changed, fewer slots than such trials) is told FAIL
with user attributes ``rota_not_run: true`` and ``rota_fail_reason``; reports
do not count those as failed trials.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rota.spec.model import Task

STUDY_KEY = "_optuna_study"  # in a slot's stored params: the Optuna study its trial is in
TRIAL_KEY = "_optuna_trial"  # in a slot's stored params: its trial's number in that study
NOT_RUN_ATTR = "rota_not_run"
_GEN_SUFFIX = re.compile(r"^(?P<base>.+)@(?P<gen>[0-9]+)$")


def study_name(task: Task) -> str:
    """The sweep a slot task (``<name>-trial-<i>``) belongs to: its name without ``-trial-<i>``."""
    suffix = f"-trial-{task.trial}"
    return task.name[: -len(suffix)] if task.name.endswith(suffix) else task.name


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed for a study that already holds ``n_trials`` trials (``seed`` when it holds none)."""
    if n_trials <= 0:
        return seed
    digest = hashlib.sha256(f"rota-sweep-resume:{seed}:{n_trials}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # numpy's RandomState takes 0 .. 2**32 - 1


def sweep_of_study(name: str, user_attrs: Mapping[str, Any], sweeps: Iterable[str]) -> tuple[str, int]:
    """``(sweep name, generation)`` of a study.

    From its ``rota_sweep``/``rota_generation`` attributes; without them (made
    by an older rota, or a controller killed right after creating it) from its
    name: ``hpo@3`` of a sweep ``hpo`` is generation 3, any other name is
    generation 1 of the sweep it names.
    """
    sweep = user_attrs.get("rota_sweep")
    gen = user_attrs.get("rota_generation")
    if isinstance(sweep, str) and isinstance(gen, int):
        return sweep, gen
    return base_of(name, sweeps) or name, generation_of(name, sweeps)


def generation_of(name: str, sweeps: Iterable[str]) -> int:
    """The number after ``@`` in a study name of one of ``sweeps``; 1 for a sweep's first study."""
    if name in set(sweeps):
        return 1
    m = _GEN_SUFFIX.match(name)
    return int(m.group("gen")) if m is not None else 1


def generations(summaries: Iterable[tuple[str, Mapping[str, Any]]], sweep: str,
                sweeps: Iterable[str]) -> list[tuple[int, str]]:
    """``(generation, study name)`` of every stored study of ``sweep``, oldest first.

    ``summaries``: ``(study name, user attributes)`` of every study in the storage.
    """
    names = list(sweeps)
    return sorted((gen, name) for name, attrs in summaries
                  for s, gen in [sweep_of_study(name, attrs, names)] if s == sweep)


def group_studies(summaries: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[tuple[int, str]]]:
    """Every stored study by sweep: sweep -> ``(generation, study name)``, oldest first (no spec needed)."""
    items = [(n, a) for n, a in summaries]
    sweeps = {str(a["rota_sweep"]) for _, a in items if "rota_sweep" in a}
    plain = {n for n, a in items if "rota_sweep" not in a}
    # A study without attributes named like "<a sweep>@<n>" is that sweep's; any other names a sweep.
    sweeps |= {n for n in plain if base_of(n, (sweeps | plain) - {n}) is None}
    out: dict[str, list[tuple[int, str]]] = {}
    for name, attrs in items:
        sweep, gen = sweep_of_study(name, attrs, sweeps)
        out.setdefault(sweep, []).append((gen, name))
    return {k: sorted(v) for k, v in out.items()}


def next_study_name(sweep: str, after: int, taken: set[str]) -> str:
    """``<sweep>@<n>`` for the first ``n > after`` whose name is not used yet (``<sweep>`` when n is 1)."""
    gen = after + 1
    name = sweep if gen <= 1 else f"{sweep}@{gen}"
    while name in taken:
        gen += 1
        name = f"{sweep}@{gen}"
    return name


def base_of(study: str, sweeps: Iterable[str]) -> str | None:
    """The sweep a study name belongs to, by name alone (``hpo@2`` -> ``hpo``); None if no such sweep."""
    names = set(sweeps)
    if study in names:
        return study
    m = _GEN_SUFFIX.match(study)
    if m is not None and m.group("base") in names:
        return m.group("base")
    return None


def trial_ref(params: Mapping[str, Any] | None, sweep: str, trial_key: str) -> tuple[str, int] | None:
    """``(study name, trial number)`` a slot's stored params refer to (older params: the sweep's first study)."""
    if not params:
        return None
    n = params.get(trial_key)
    if not isinstance(n, int):
        return None
    study = params.get(STUDY_KEY)
    return (study if isinstance(study, str) else sweep), n


def take_over(optuna: Any, study: Any, trial_id: int, dists: Mapping[str, Any]) -> Any | None:
    """The RUNNING trial ``trial_id`` as ``study.ask(dists)`` would return it, or None if it cannot be.

    Parameters it already has are kept; missing ones are sampled now (this is
    what ``Study.ask`` itself does with an enqueued trial). None when its
    parameters do not fit ``dists`` (the search space changed since).
    """
    frozen = study._storage.get_trial(trial_id)
    if set(frozen.params) - set(dists):
        return None
    for name, d in frozen.distributions.items():
        try:
            optuna.distributions.check_distribution_compatibility(d, dists[name])
        except ValueError:
            return None
        if not dists[name]._contains(d.to_internal_repr(frozen.params[name])):
            return None
    trial = optuna.trial.Trial(study, trial_id)
    for name, d in dists.items():
        trial._suggest(name, d)  # as Study.ask does: an already-set parameter is returned as it is
    return trial
