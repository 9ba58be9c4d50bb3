"""Sweeps: an Optuna study whose trials run as rota tasks.

A task with ``sweep: {trials: N, ...}`` expands into N *slots*
(``<name>-trial-<i>``). Each launch of a slot asks the study for one Optuna
trial; the slot's exit and metric are told back. This module is the only place
that imports Optuna (the ``sweep`` extra).

Storage: Optuna's RDB storage on SQLite, ``<state_dir>/optuna.db``. SQLite
commits are atomic and durable, so a controller killed with SIGKILL at any
instant leaves either the whole ``ask``/``tell`` or none of it; the controller
is the only writer (readers such as ``rota report`` only read).

Contract with the engine (hook methods, see :mod:`rota.engine.loop`):

- ``params_for``: ``study.ask()`` with the spec's distributions; returns the
  sampled values plus ``_optuna_trial`` (the trial number). The engine commits
  that dict with the ``launching`` state, so the slot attempt <-> Optuna trial
  mapping is durable; keys starting with ``_`` are never put into the command
  or the environment. The trial also records ``rota_task``/``rota_attempt``
  user attributes.
- ``finished``: succeeded with the metric -> ``tell(value)``; succeeded
  without it -> ``tell(FAIL)`` with user attribute ``rota_fail_reason`` and an
  engine event; failed, interrupted -> ``tell(FAIL)``. A retried slot asks a
  new trial.
- ``lost``: the attempt vanished with the previous controller -> ``FAIL``;
  the engine runs the slot again, which asks a new trial.
- ``adopted``: nothing; the adopted attempt keeps its trial and tells it later.
- ``start`` (after adoption): reconcile trials a killed controller left
  ``RUNNING``: told from the rota store when the slot's attempt ended
  (succeeded -> its stored metric), kept when the slot is still running,
  ``FAIL`` otherwise (asked but never launched).
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

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from rota.engine.sweep_prune import ReportReader
from rota.engine.sweep_space import distributions, make_pruner, make_sampler, study_name
from rota.errors import RotaError
from rota.executors.base import Status
from rota.spec.model import SweepSpec
from rota.store import base as S

if TYPE_CHECKING:  # pragma: no cover
    import optuna

DB_NAME = "optuna.db"
TRIAL_KEY = "_optuna_trial"
INSTALL_HINT = "sweeps need Optuna: pip install 'rota[sweep]'"


def import_optuna() -> Any:
    """Import Optuna quietly, or raise RotaError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise RotaError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def storage_errors(state_dir: str) -> Iterator[None]:
    """Turn Optuna/SQLAlchemy storage failures into what the engine understands.

    A SQLite error underneath (disk full, read-only) is re-raised as the
    ``sqlite3.OperationalError`` itself, so the engine stops cleanly with its
    "nothing is lost" StateError; anything else becomes a StateError naming
    ``optuna.db``.
    """
    try:
        yield
    except RotaError:
        raise
    except Exception as e:
        optuna = import_optuna()
        import sqlalchemy.exc

        if not isinstance(e, optuna.exceptions.StorageInternalError | sqlalchemy.exc.SQLAlchemyError):
            raise
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, sqlite3.OperationalError):
                raise cause from None
            cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
        from rota.errors import StateError

        raise StateError(f"sweep studies in {os.path.join(state_dir, DB_NAME)}: {e}") from None


def _guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: SweepHook, *args: Any, **kwargs: Any) -> Any:
        with storage_errors(self.state_dir):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def storage_url(state_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{os.path.join(os.fspath(state_dir), DB_NAME)}"


def open_storage(state_dir: str | os.PathLike[str], *, readonly: bool = False) -> Any:
    """The RDB storage in ``state_dir``. ``readonly`` skips table creation (for reports)."""
    optuna = import_optuna()
    return optuna.storages.RDBStorage(
        storage_url(state_dir),
        engine_kwargs={"connect_args": {"timeout": 60}},
        skip_table_creation=readonly,
        skip_compatibility_check=readonly,
    )


class SweepHook:
    """Engine hook that drives one Optuna study per sweep (see the module docstring)."""

    commit_before_finished = True  # tells the study: the engine commits the attempt's end first

    def __init__(self, spec: Any, state_dir: str) -> None:
        self.optuna = import_optuna()
        self.state_dir = state_dir
        self.sweeps: dict[str, SweepSpec] = {}
        self.dists: dict[str, dict[str, Any]] = {}
        self.samplers: dict[str, Any] = {}
        for t in spec.tasks:
            if t.sweep is None:
                continue
            name = study_name(t)
            if name not in self.sweeps:
                self.sweeps[name] = t.sweep
                self.dists[name] = distributions(self.optuna, t.sweep, file=spec.path, task=t.group)
                self.samplers[name] = make_sampler(self.optuna, t.sweep, file=spec.path, task=t.group)
        self._storage: Any = None
        self._studies: dict[str, optuna.Study] = {}
        self._allowed: dict[str, set[str]] | None = None
        self._reports = ReportReader()
        self._pruned: set[str] = set()  # attempt keys stopped by the pruner
        self._last_scan = 0.0

    # -------------------------------------------------------------- studies
    def study(self, name: str) -> optuna.Study:
        """The study for sweep ``name``, created on first use. Raises StateError on a direction change."""
        st = self._studies.get(name)
        if st is not None:
            return st
        if self._storage is None:
            self._storage = open_storage(self.state_dir)
        sw = self.sweeps[name]
        st = self.optuna.create_study(
            study_name=name, storage=self._storage, direction=sw.direction, sampler=self.samplers[name],
            pruner=make_pruner(self.optuna, sw), load_if_exists=True,
        )
        if st.direction.name.lower() != sw.direction:
            from rota.errors import StateError

            raise StateError(
                f"sweep {name!r}: the study in {os.path.join(self.state_dir, DB_NAME)} was made with "
                f"direction {st.direction.name.lower()}, the spec now says {sw.direction}; "
                "use a new --state-dir to start a new study"
            )
        attrs = st.user_attrs
        if attrs.get("rota_metric") != sw.metric:
            st.set_user_attr("rota_metric", sw.metric)
        self._studies[name] = st
        return st

    def _tell(self, name: str, number: int, value: float | None, reason: str = "") -> None:
        """Tell a trial once: a value -> COMPLETE, None -> FAIL (with ``rota_fail_reason``)."""
        st = self.study(name)
        trial = self._trial(st, number)
        if trial is None or trial.state.is_finished():
            return
        if value is None:
            if reason:
                st._storage.set_trial_user_attr(trial._trial_id, "rota_fail_reason", reason)
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
        """Settle trials a killed controller left RUNNING (runs after adoption)."""
        records = {r.name: r for r in engine.store.tasks()}
        metrics = engine.store.metrics()
        for name, sw in self.sweeps.items():
            st = self.study(name)
            owners: dict[int, Any] = {}
            for rec in records.values():
                n = (rec.params or {}).get(TRIAL_KEY)
                lv = engine.live.get(rec.name)
                if isinstance(n, int) and lv is not None and lv.task.sweep is not None and study_name(lv.task) == name:
                    owners[n] = rec
            running = st.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,))
            for tr in running:
                rec = owners.get(tr.number)
                if rec is not None and rec.state in S.ACTIVE:
                    continue  # adopted; it will be told when it ends
                if rec is not None and rec.state == S.SUCCEEDED:
                    value = metrics.get(rec.name, {}).get(sw.metric)
                    why = "" if value is not None else f"succeeded without reporting metric {sw.metric!r}"
                    self._tell(name, tr.number, value, why)
                    continue
                why = (f"{rec.state} ({rec.reason})" if rec is not None and rec.state in S.FINAL
                       else "asked but never launched (controller stopped)")
                self._tell(name, tr.number, None, why)

    @_guarded
    def tick(self, engine: Any, now: float) -> None:
        self._allowed = None  # recompute the parallel caps on the next launch pass
        if now - self._last_scan >= 0.5 and any(sw.pruner != "none" for sw in self.sweeps.values()):
            self._last_scan = now
            for lv in list(engine.running.values()):
                self._scan_reports(engine, lv)

    def _scan_reports(self, engine: Any, lv: Any) -> None:
        """Report a running trial's new intermediate values; stop it if the pruner says so."""
        number = self._number(lv)
        if number is None or lv.handle is None:
            return
        name = study_name(lv.task)
        key = f"{lv.task.name}#{lv.attempts}"
        if self.sweeps[name].pruner == "none" or key in self._pruned:
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
        reports = self._reports.new_reports(f"{lv.task.name}#{lv.attempts}", lv.log_path)
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
        number = self._number(lv)
        if number is None or self.sweeps[study_name(lv.task)].pruner == "none":
            return False
        if f"{lv.task.name}#{lv.attempts}" in self._pruned:
            return True
        trial = self._trial(self.study(study_name(lv.task)), number)  # decided by a previous controller?
        return trial is not None and "rota_pruned_at" in trial.user_attrs

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
        """Ask the study for a new trial for this slot's next attempt."""
        if lv.task.sweep is None:
            return None
        name = study_name(lv.task)
        old = (lv.params or {}).get(TRIAL_KEY)
        if isinstance(old, int):  # never leave an earlier attempt's trial RUNNING
            self._tell(name, old, None, "replaced by a new attempt")
        st = self.study(name)
        trial = st.ask(self.dists[name])
        trial.set_user_attr("rota_task", lv.task.name)
        trial.set_user_attr("rota_attempt", lv.attempts + 1)
        params: dict[str, Any] = dict(trial.params)
        params[TRIAL_KEY] = trial.number
        return params

    @_guarded
    def finished(self, engine: Any, lv: Any, state: str, metrics: Mapping[str, float]) -> None:
        number = self._number(lv)
        if number is None:
            return
        name = study_name(lv.task)
        sw = self.sweeps[name]
        key = f"{lv.task.name}#{lv.attempts}"
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
        number = self._number(lv)
        if number is not None:
            self._tell(study_name(lv.task), number, None, "lost with the previous controller")

    def adopted(self, engine: Any, lv: Any) -> None:
        """Nothing to do: the attempt keeps its trial and tells it when it ends."""

    def stop(self, engine: Any) -> None:
        if self._storage is not None:
            try:
                self._storage.engine.dispose()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    @staticmethod
    def _number(lv: Any) -> int | None:
        if lv.task.sweep is None:
            return None
        n = (lv.params or {}).get(TRIAL_KEY)
        return n if isinstance(n, int) else None
