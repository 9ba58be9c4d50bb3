"""Sweeps: an Optuna study whose trials run as rota tasks.

A task with ``sweep: {trials: N, ...}`` expands into N *slots*
(``<name>-trial-<i>``). Each launch of a slot asks the study for one Optuna
trial; the slot's exit and metric are told back. Optuna (the ``sweep`` extra) is
imported through :mod:`rota.studies.storage` only.

Storage: Optuna's RDB storage on SQLite, ``<state_dir>/optuna.db``. Each
commit is atomic and durable; a ``tell`` is one, an ``ask`` several (the
trial, each parameter, the user attributes), so a controller killed inside an
ask leaves a RUNNING trial with some parameters, which the next launch takes
over (see :mod:`rota.studies.names`). The controller is the only
writer (readers such as ``rota report`` only read).

Contract with the engine (hook methods, see :mod:`rota.engine.loop`):

- ``params_for``: ``study.ask()`` with the spec's distributions (or a trial a
  killed controller asked but never launched, see :mod:`rota.studies.names`);
  returns the sampled values plus ``_optuna_trial`` (the trial number) and
  ``_optuna_study`` (the study's name). The engine commits that dict with the
  ``launching`` state, so the slot attempt <-> Optuna trial mapping is durable;
  keys starting with ``_`` are never put into the command or the environment.
  The trial also records ``rota_task``/``rota_attempt`` user attributes.
- ``finished``: succeeded with the metric -> ``tell(value)``; succeeded
  without it -> ``tell(FAIL)`` with user attribute ``rota_fail_reason`` and an
  engine event; failed, interrupted -> ``tell(FAIL)``. A retried slot asks a
  new trial.
- ``lost``: the attempt vanished with the previous controller -> ``FAIL``;
  the engine runs the slot again, which asks a new trial.
- ``adopted``: nothing; the adopted attempt keeps its trial and tells it later.
- ``start`` (after adoption): pick each sweep's current study (a new one,
  ``<name>@2`` ..., when the run starts the sweep over; see
  :mod:`rota.studies.names`, which also says how a resumed study is
  re-seeded so it never asks the same parameters again), then reconcile trials
  a killed controller left ``RUNNING``: told from the rota store when the
  slot's attempt ended (succeeded -> its stored metric), kept when the slot is
  still running, kept for the next launch when no slot refers to them (asked
  but never launched).
- ``may_launch``: at most ``parallel`` running slots per sweep, lowest slot
  numbers first.
- Pruning (``pruner: median|hyperband``): ``tick`` reads new
  ``ROTA_REPORT step=<int> value=<float>`` lines from running trials' logs,
  reports them to Optuna and, when the pruner says so, records
  ``rota_pruned_at`` on the trial (durable) and stops the attempt;
  ``outcome`` turns that stopped attempt into a final success of the slot
  (no retry, no failed run) and ``finished`` tells ``PRUNED``.

So after any crash the study holds exactly one COMPLETE-or-FAIL trial per
finished attempt and no trial is told twice; slots that already succeeded are
not rerun (the engine skips them).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from rota.engine.hooks import Hook
from rota.engine.sweep_prune import ReportReader
from rota.engine.sweep_space import distributions, make_pruner, make_sampler
from rota.executors.base import Status
from rota.spec.model import SweepSpec
from rota.store import base as S
from rota.studies import names as G
from rota.studies.names import TRIAL_KEY, study_name
from rota.studies.storage import (  # noqa: F401 - INSTALL_HINT, storage_url: re-exported, as before
    DB_NAME,
    INSTALL_HINT,
    import_optuna,
    open_storage,
    storage_errors,
    storage_url,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: SweepHook, *args: Any, **kwargs: Any) -> Any:
        with storage_errors(self.state_dir):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SweepHook(Hook):
    """Engine hook that drives one Optuna study per sweep (see the module docstring)."""

    commit_before_finished = True  # tells the study: the engine commits the attempt's end first

    def __init__(self, spec: Any, state_dir: str) -> None:
        self.optuna = import_optuna()
        self.state_dir = state_dir
        self.sweeps: dict[str, SweepSpec] = {}
        self.dists: dict[str, dict[str, Any]] = {}
        for t in spec.tasks:
            if t.sweep is None:
                continue
            name = study_name(t)
            if name not in self.sweeps:
                self.sweeps[name] = t.sweep
                self.dists[name] = distributions(self.optuna, t.sweep, file=spec.path, task=t.group)
                make_sampler(self.optuna, t.sweep, file=spec.path, task=t.group)  # bad input: raised now
        self._storage: Any = None
        self._studies: dict[str, optuna.Study] = {}  # by Optuna study name
        self._current: dict[str, str] = {}  # sweep -> the name of the study it asks trials from
        self._unlaunched: dict[str, list[int]] = {}  # sweep -> trials asked but never launched, to reuse
        self._allowed: dict[str, set[str]] | None = None
        self._reports = ReportReader()
        self._pruned: set[str] = set()  # attempt keys stopped by the pruner
        self._last_scan = 0.0

    # -------------------------------------------------------------- studies
    def study(self, name: str) -> optuna.Study:
        """The Optuna study ``name`` (a sweep's, or an earlier study of it), created on first use.

        A study that already holds trials gets a sampler seeded from the spec's
        ``seed`` and its trial count, so a resumed study never replays the
        parameters it asked before. Raises StateError on a direction change.
        """
        st = self._studies.get(name)
        if st is not None:
            return st
        if self._storage is None:
            self._storage = open_storage(self.state_dir)
        sweep = G.base_of(name, self.sweeps) or name
        sw = self.sweeps[sweep]
        st = cast("optuna.Study", self.optuna.create_study(  # self.optuna: the module, imported at run time
            study_name=name, storage=self._storage, direction=sw.direction, sampler=make_sampler(self.optuna, sw),
            pruner=make_pruner(self.optuna, sw), load_if_exists=True,
        ))
        if st.direction.name.lower() != sw.direction:
            from rota.errors import StateError

            raise StateError(
                f"sweep {sweep!r}: the study {name!r} in {os.path.join(self.state_dir, DB_NAME)} was made with "
                f"direction {st.direction.name.lower()}, the spec now says {sw.direction}; "
                "use a new --state-dir to start a new study"
            )
        n_trials = len(st.get_trials(deepcopy=False))
        if sw.seed is not None and n_trials:
            st.sampler = make_sampler(self.optuna, sw, seed=G.resumed_seed(sw.seed, n_trials))
        attrs = st.user_attrs
        wanted = {"rota_metric": sw.metric, "rota_sweep": sweep,
                  "rota_generation": G.generation_of(name, self.sweeps)}
        for k, v in wanted.items():
            if attrs.get(k) != v:
                st.set_user_attr(k, v)
        self._studies[name] = st
        return st

    def _new_study(self, sweep: str, summaries: list[tuple[str, dict[str, Any]]]) -> optuna.Study:
        """Start the next study of ``sweep`` (``<sweep>@<n>``)."""
        gens = G.generations(summaries, sweep, self.sweeps)
        name = G.next_study_name(sweep, gens[-1][0] if gens else 0, {n for n, _ in summaries})
        return self.study(name)

    def _tell(self, name: str, number: int, value: float | None, reason: str = "", *, not_run: bool = False) -> None:
        """Tell a trial of study ``name`` once: a value -> COMPLETE, None -> FAIL (with ``rota_fail_reason``)."""
        st = self.study(name)
        trial = self._trial(st, number)
        if trial is None or trial.state.is_finished():
            return
        if value is None:
            if reason:
                st._storage.set_trial_user_attr(trial._trial_id, "rota_fail_reason", reason)
            if not_run:
                st._storage.set_trial_user_attr(trial._trial_id, G.NOT_RUN_ATTR, True)
            st.tell(number, state=self.optuna.trial.TrialState.FAIL, skip_if_finished=True)
        else:
            st.tell(number, value, skip_if_finished=True)

    @staticmethod
    def _trial(st: optuna.Study, number: int) -> Any:
        try:
            tid = st._storage.get_trial_id_from_study_id_trial_number(st._study_id, number)
        except KeyError:
            return None
        return st._storage.get_trial(tid)

    # ---------------------------------------------------------------- hooks
    @_guarded
    def start(self, engine: Any) -> None:
        """Pick each sweep's current study; settle trials a killed controller left RUNNING (after adoption)."""
        records = list(engine.store.tasks())
        metrics = engine.store.metrics()
        if self._storage is None:
            self._storage = open_storage(self.state_dir)
        summaries = [(s.study_name, dict(s.user_attrs)) for s in self._storage.get_all_studies()]
        for sweep, sw in self.sweeps.items():
            refs: dict[tuple[str, int], Any] = {}
            for rec in records:
                if rec.trial is not None and rec.name.endswith(f"-trial-{rec.trial}") and \
                        rec.name[: -len(f"-trial-{rec.trial}")] == sweep:
                    ref = G.trial_ref(rec.params, sweep, TRIAL_KEY)
                    if ref is not None:
                        refs[ref] = rec
            gens = G.generations(summaries, sweep, self.sweeps)
            current = gens[-1][1] if gens else sweep
            st = self.study(current)
            results = {t.number for t in st.get_trials(deepcopy=False, states=(
                self.optuna.trial.TrialState.COMPLETE, self.optuna.trial.TrialState.PRUNED))}
            if results and not any((current, n) in refs for n in results):
                # Every slot that produced a result here is being run again: a new run of the sweep.
                self._settle(current, sw, refs, metrics, keep_unlaunched=0, engine=engine)
                st = self._new_study(sweep, summaries)
                current = st.study_name
            self._current[sweep] = current
            will_launch = sum(
                1 for lv in engine.live.values()
                if lv.task.sweep is not None and study_name(lv.task) == sweep
                and lv.state not in S.DONE_OK and lv.state not in S.ACTIVE
            )
            self._unlaunched[sweep] = self._settle(current, sw, refs, metrics, keep_unlaunched=will_launch,
                                                   engine=engine)

    def _settle(self, name: str, sw: SweepSpec, refs: Mapping[tuple[str, int], Any], metrics: Mapping[str, Any],
                *, keep_unlaunched: int, engine: Any) -> list[int]:
        """Tell study ``name``'s RUNNING trials what became of them; return the unlaunched ones kept for reuse."""
        st = self.study(name)
        kept: list[int] = []
        for tr in st.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            rec = refs.get((name, tr.number))
            if rec is None:  # asked, never launched: the next launch takes it over
                if len(kept) < keep_unlaunched:
                    kept.append(tr.number)
                else:
                    self._tell(name, tr.number, None, "asked but never launched (no slot left to run it)",
                               not_run=True)
                continue
            if rec.state in S.ACTIVE and rec.name in engine.running:
                continue  # adopted; it will be told when it ends
            if rec.state == S.SUCCEEDED:
                value = metrics.get(rec.name, {}).get(sw.metric)
                why = "" if value is not None else f"succeeded without reporting metric {sw.metric!r}"
                self._tell(name, tr.number, value, why)
                continue
            self._tell(name, tr.number, None, f"{rec.state} ({rec.reason})" if rec.state in S.FINAL
                       else "ended while the controller was stopped")
        return kept

    @_guarded
    def tick(self, engine: Any, now: float) -> None:
        self._allowed = None  # recompute the parallel caps on the next launch pass
        if now - self._last_scan >= 0.5 and any(sw.pruner != "none" for sw in self.sweeps.values()):
            self._last_scan = now
            for lv in list(engine.running.values()):
                self._scan_reports(engine, lv)

    def _scan_reports(self, engine: Any, lv: Any) -> None:
        """Report a running trial's new intermediate values; stop it if the pruner says so."""
        ref = self._ref(lv)
        if ref is None or lv.handle is None:
            return
        name, number = ref
        key = f"{lv.task.name}#{lv.attempt}"
        if self.sweeps[study_name(lv.task)].pruner == "none" or key in self._pruned:
            return
        trial = self._record_reports(lv, name, number)
        st = self.study(name)
        if trial is None or not st.pruner.prune(st, trial):
            return
        storage = st._storage
        step = trial.last_step
        storage.set_trial_user_attr(trial._trial_id, "rota_pruned_at", step)
        self._pruned.add(key)
        engine._event("pruned", lv.task.name, f"Optuna trial {number} pruned at step {step}; stopping it")
        threading.Thread(target=engine.executor.cancel, args=([lv.handle], engine.opt.grace_s), daemon=True).start()

    def _record_reports(self, lv: Any, name: str, number: int) -> Any:
        """Store the attempt's new intermediate values; the updated running trial, or None if nothing new."""
        reports = self._reports.new_reports(f"{lv.task.name}#{lv.attempt}", lv.log_path)
        if not reports:
            return None
        st = self.study(name)
        trial = self._trial(st, number)
        if trial is None or trial.state.is_finished():
            return None
        for step, value in reports:
            st._storage.set_trial_intermediate_value(trial._trial_id, step, value)
        return st._storage.get_trial(trial._trial_id)

    @_guarded
    def outcome(self, engine: Any, lv: Any, status: Status) -> Status | None:
        """A pruned trial's stopped attempt is a final success of its slot, not a failure."""
        if status.phase == "succeeded" or not self._was_pruned(lv):
            return None
        return Status("succeeded", status.exit_code, "pruned", started_at=status.started_at,
                      ended_at=status.ended_at)

    def _was_pruned(self, lv: Any) -> bool:
        ref = self._ref(lv)
        if ref is None or self.sweeps[study_name(lv.task)].pruner == "none":
            return False
        if f"{lv.task.name}#{lv.attempt}" in self._pruned:
            return True
        trial = self._trial(self.study(ref[0]), ref[1])  # decided by a previous controller?
        return trial is not None and "rota_pruned_at" in trial.user_attrs

    def begin_gating(self, engine: Any) -> None:
        # Caps cached by another pass (the predictor's, between two launches) would keep a slot
        # that became free waiting for good: each pass computes them again, once.
        self._allowed = None

    def may_launch(self, engine: Any, lv: Any) -> bool:
        sw: SweepSpec | None = lv.task.sweep
        if sw is None or sw.parallel is None:
            return True
        if self._allowed is None:
            self._allowed = self._compute_allowed(engine)
        return lv.task.name in self._allowed.get(study_name(lv.task), set())

    def _compute_allowed(self, engine: Any) -> dict[str, set[str]]:
        """Per sweep: the lowest-numbered ready slots that fit under ``parallel``."""
        running: dict[str, int] = {}
        for lv in engine.running.values():
            if lv.task.sweep is not None:
                key = study_name(lv.task)
                running[key] = running.get(key, 0) + 1
        ready: dict[str, list[Any]] = {}
        now = time.time()
        for n in engine.ready:
            lv = engine.live[n]
            if lv.task.sweep is not None and lv.not_before <= now:
                ready.setdefault(study_name(lv.task), []).append(lv)
        out: dict[str, set[str]] = {}
        for key, lvs in ready.items():
            cap = (self.sweeps[key].parallel or len(lvs)) - running.get(key, 0)
            lvs.sort(key=lambda x: x.task.trial or 0)
            out[key] = {x.task.name for x in lvs[: max(cap, 0)]}
        return out

    @_guarded
    def params_for(self, engine: Any, lv: Any) -> dict[str, Any] | None:
        """A trial for this slot's next attempt: one asked but never launched, else a new one."""
        if lv.task.sweep is None:
            return None
        sweep = study_name(lv.task)
        old = self._ref(lv)
        if old is not None:  # never leave an earlier attempt's trial RUNNING
            self._tell(old[0], old[1], None, "replaced by a new attempt")
        name = self._current.get(sweep, sweep)
        st = self.study(name)
        trial = None
        waiting = self._unlaunched.get(sweep, [])
        while trial is None and waiting:
            number = waiting.pop(0)
            frozen = self._trial(st, number)
            if frozen is None or frozen.state != self.optuna.trial.TrialState.RUNNING:
                continue
            trial = G.take_over(self.optuna, st, frozen._trial_id, self.dists[sweep])
            if trial is None:
                self._tell(name, number, None, "asked but never launched; its parameters no longer fit the "
                           "search space", not_run=True)
        if trial is None:
            trial = st.ask(self.dists[sweep])
        trial.set_user_attr("rota_task", lv.task.name)
        trial.set_user_attr("rota_attempt", lv.attempt + 1)
        params: dict[str, Any] = dict(trial.params)
        params[TRIAL_KEY] = trial.number
        params[G.STUDY_KEY] = name
        return params

    @_guarded
    def finished(self, engine: Any, lv: Any, state: str, metrics: Mapping[str, float]) -> None:
        ref = self._ref(lv)
        if ref is None:
            return
        name, number = ref
        sw = self.sweeps[study_name(lv.task)]
        key = f"{lv.task.name}#{lv.attempt}"
        if sw.pruner != "none":
            self._record_reports(lv, name, number)  # the last values, so later trials compare against them
        self._reports.forget(key)
        if sw.pruner != "none" and self._was_pruned(lv):
            self._pruned.discard(key)
            self.study(name).tell(number, state=self.optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            return
        if state == S.SUCCEEDED:
            value = metrics.get(sw.metric)
            if value is not None:
                self._tell(name, number, float(value))
                return
            why = f"succeeded without reporting metric {sw.metric!r} (print 'ROTA_METRIC {sw.metric}=<value>')"
            self._tell(name, number, None, why)
            engine._event("sweep", lv.task.name, f"Optuna trial {number} marked FAIL: {why}")
            engine.store.log_event(lv.task.name, "sweep-missing-metric", {"trial": number, "metric": sw.metric})
            return
        self._tell(name, number, None, f"{state}: {lv.reason}" if lv.reason else state)

    @_guarded
    def lost(self, engine: Any, lv: Any) -> None:
        ref = self._ref(lv)
        if ref is not None:
            self._tell(ref[0], ref[1], None, "lost with the previous controller")

    def adopted(self, engine: Any, lv: Any) -> None:
        """Nothing to do: the attempt keeps its trial and tells it when it ends."""

    def stop(self, engine: Any) -> None:
        if self._storage is not None:
            try:
                self._storage.engine.dispose()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    @staticmethod
    def _ref(lv: Any) -> tuple[str, int] | None:
        """``(study name, trial number)`` of the slot's current attempt, or None."""
        if lv.task.sweep is None:
            return None
        return G.trial_ref(lv.params, study_name(lv.task), TRIAL_KEY)
