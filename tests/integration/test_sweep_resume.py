"""Sweeps across controller deaths and reruns (issue 17, items 1 and 13).

- A seeded sweep killed with SIGKILL and run again never asks the same parameters twice:
  a resumed study's sampler is re-seeded from the seed and the trials already asked.
- A trial asked just before the kill but never launched is launched on resume, not told
  FAIL: `rota report` counts no failed trial.
- A rerun of every slot (`--rerun`, a changed command) starts a new study (`<name>@2`);
  the old one stays readable; `rota report` shows the current one.

Kill points are reached deterministically: by polling the study's SQLite file, and, for the
window between Optuna's ask and rota's launch commit, by holding SQLite write locks that
stop the controller exactly there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import rota, start_rota, wait_for, write_spec

optuna = pytest.importorskip("optuna")

TS = optuna.trial.TrialState


def _spec(tmp_path: Path, *, trials: int, parallel: int, sleep: float = 0.3, name: str = "s",
          echo: str = "ROTA_METRIC loss={x}") -> Path:
    return write_spec(tmp_path, f"""
        tasks:
          - name: {name}
            command: sleep {sleep}; echo "{echo}"
            sweep:
              trials: {trials}
              parallel: {parallel}
              seed: 7
              metric: loss
              params:
                x: {{type: float, low: -2, high: 2}}
    """)


def _run(spec: Path, sd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    p = rota("run", spec, "--gpus", "none", "--cpus", "4", "--plain", "--state-dir", sd, *extra, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def _start(spec: Path, sd: Path, *extra: str) -> subprocess.Popen[str]:
    return start_rota("run", spec, "--gpus", "none", "--cpus", "4", "--plain", "--state-dir", sd, *extra)


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _q(db: Path, sql: str, *args: object) -> list[tuple]:
    """A read of a SQLite file the controller is writing (empty while it does not exist yet)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def _count(sd: Path, state: str, study: str = "s") -> int:
    rows = _q(sd / "optuna.db", "SELECT count(*) FROM trials t JOIN studies s USING(study_id) "
              "WHERE s.study_name=? AND t.state=?", study, state)
    return rows[0][0] if rows else 0


@contextlib.contextmanager
def _write_lock(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``db``: a controller writing it waits (busy timeout) until released."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def _trials(sd: Path, study: str = "s") -> list:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{sd / 'optuna.db'}").trials


def _report(sd: Path) -> list[dict]:
    p = rota("report", "--json", "--state-dir", sd, check=True)
    return json.loads(p.stdout)["sweeps"]


def _check_study(sd: Path, trials: int, study: str = "s") -> list:
    """Exactly ``trials`` COMPLETE trials, every one with its own x, nothing FAIL or RUNNING."""
    all_trials = _trials(sd, study)
    done = [t for t in all_trials if t.state == TS.COMPLETE]
    assert [t.state for t in all_trials].count(TS.FAIL) == 0, [(t.number, t.user_attrs) for t in all_trials]
    assert len(done) == trials == len(all_trials)
    xs = [t.params["x"] for t in done]
    assert len(set(xs)) == trials, f"parameters asked twice: {sorted(xs)}"
    return all_trials


@pytest.mark.parametrize("kills", [(1,), (3,), (5,), (2, 5)])
def test_killed_seeded_sweep_never_repeats_parameters(tmp_path, kills):
    """SIGKILL after k trials completed (twice for (2, 5)), run again: 8 trials, 8 distinct x, no failure."""
    spec = _spec(tmp_path, trials=8, parallel=2)
    sd = tmp_path / "st"
    for k in kills:
        proc = _start(spec, sd)
        try:
            wait_for(lambda k=k: _count(sd, "COMPLETE") >= k, timeout=60, interval=0.02)
        finally:
            _kill(proc)
        assert _count(sd, "COMPLETE") < 8
    _run(spec, sd)
    _check_study(sd, 8)
    (rep,) = _report(sd)
    assert rep["counts"] == {"complete": 8, "fail": 0, "running": 0, "pruned": 0, "not_run": 0}


def test_unkilled_runs_with_one_seed_ask_the_same_parameters(tmp_path):
    """The re-seeding only touches resumed studies: two fresh runs with `seed: 7` ask the same x."""
    xs = []
    for i in range(2):
        spec = _spec(tmp_path / str(i), trials=3, parallel=1, sleep=0)
        _run(spec, tmp_path / str(i) / "st")
        xs.append([t.params["x"] for t in _check_study(tmp_path / str(i) / "st", 3)])
    assert xs[0] == xs[1]


def _launched_running(sd: Path) -> bool:
    """Exactly one trial RUNNING, and its slot's launch committed (it runs; no ask is under way)."""
    running = _q(sd / "optuna.db", "SELECT number FROM trials WHERE state='RUNNING'")
    if len(running) != 1:
        return False
    launched = _q(sd / "state.db", "SELECT params FROM tasks WHERE state='running' AND params IS NOT NULL")
    return [json.loads(p)["_optuna_trial"] for (p,) in launched] == [running[0][0]]


@contextlib.contextmanager
def _lock_while_a_launched_trial_runs(sd: Path) -> Iterator[None]:
    """Hold optuna.db's write lock, taken while one launched trial runs and nothing else is under way."""
    while True:
        wait_for(lambda: _count(sd, "COMPLETE") >= 1 and _launched_running(sd), timeout=60, interval=0.02)
        lock = _write_lock(sd / "optuna.db")
        lock.__enter__()
        if _launched_running(sd):  # still so now that the controller cannot write: it cannot change
            break
        lock.__exit__(None, None, None)  # the trial ended just before: let the controller go on, try again
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@pytest.mark.parametrize("partial", [False, True])
def test_kill_between_ask_and_launch(tmp_path, partial):
    """The controller dies after Optuna's ask committed and before rota's launch commit.

    Reached exactly: lock optuna.db while a trial runs (its end is committed to state.db, its
    tell waits); lock state.db; release optuna.db: the tell and the next ask go through and the
    launch commit waits; SIGKILL. ``partial``: the kill came inside the ask (the trial holds
    no parameter yet), left by clearing what the ask had written.
    On resume that trial is launched (adopted, its x kept), never told FAIL; the report
    counts no failed trial; no parameter set is asked twice.
    """
    spec = _spec(tmp_path, trials=5, parallel=1, sleep=0.4)
    sd = tmp_path / "st"
    proc = _start(spec, sd)
    try:
        with _lock_while_a_launched_trial_runs(sd):
            done = _count(sd, "COMPLETE")
            asked = done + 1
            wait_for(lambda: len(_q(sd / "state.db", "SELECT name FROM tasks WHERE state='succeeded'")) == asked,
                     timeout=30, interval=0.02)
            state_lock = _write_lock(sd / "state.db")
            state_lock.__enter__()
        try:
            def asked_in_full() -> bool:
                rows = _q(sd / "optuna.db", "SELECT count(*) FROM trial_user_attributes WHERE key='rota_attempt'")
                return bool(rows) and rows[0][0] == asked + 1
            wait_for(asked_in_full, timeout=30, interval=0.01)
            _kill(proc)
        finally:
            state_lock.__exit__(None, None, None)
    finally:
        if proc.poll() is None:
            _kill(proc)
    orphan = max(_trials(sd), key=lambda t: t.number)
    assert orphan.number == asked and orphan.state == TS.RUNNING and "x" in orphan.params
    stored = [json.loads(p) for (p,) in _q(sd / "state.db", "SELECT params FROM tasks WHERE params IS NOT NULL")]
    assert orphan.number not in [p["_optuna_trial"] for p in stored], "the launch commit was not stopped"
    if partial:
        con = sqlite3.connect(sd / "optuna.db")
        with con:
            con.execute("DELETE FROM trial_params WHERE trial_id=?", (orphan._trial_id,))
            con.execute("DELETE FROM trial_user_attributes WHERE trial_id=?", (orphan._trial_id,))
        con.close()

    _run(spec, sd)
    trials = _check_study(sd, 5)
    again = trials[orphan.number]
    assert again.state == TS.COMPLETE and again.user_attrs["rota_task"].startswith("s-trial-")
    if not partial:
        assert again.params["x"] == orphan.params["x"]  # the trial asked before the kill was the one run
    (rep,) = _report(sd)
    assert rep["counts"]["fail"] == 0 and rep["counts"]["complete"] == 5
    p = rota("report", "--state-dir", sd, check=True)
    assert "5 complete, 0 failed" in p.stdout


def test_rerun_starts_a_new_study_and_keeps_the_old(tmp_path):
    """`--rerun '*'` after a finished sweep: a new study `s@2` with `trials` trials; `s` unchanged and
    readable; the report shows `s@2` and names `s`. A changed command then starts `s@3`."""
    spec = _spec(tmp_path, trials=3, parallel=3, sleep=0)
    sd = tmp_path / "st"
    _run(spec, sd)
    first = [t.params["x"] for t in _check_study(sd, 3)]
    _run(spec, sd, "--rerun", "*")
    _check_study(sd, 3, "s@2")
    assert [t.params["x"] for t in _check_study(sd, 3)] == first  # the old study is untouched
    (rep,) = _report(sd)
    assert (rep["sweep"], rep["group"], rep["earlier"]) == ("s@2", "s", ["s"])
    assert rep["counts"]["complete"] == 3
    assert {b["task"] for b in rep["best"]} == {f"s-trial-{i}" for i in range(3)}
    text = rota("report", "--state-dir", sd, check=True).stdout
    assert "sweep s@2: best loss (minimize); 3 complete" in text and "earlier studies of this sweep" in text

    _run(spec, sd)  # nothing to do: still s@2, nothing added
    assert len(_trials(sd, "s@2")) == 3

    spec = _spec(tmp_path, trials=3, parallel=3, sleep=0, echo="ROTA_METRIC loss={x} ")
    _run(spec, sd)
    _check_study(sd, 3, "s@3")
    assert len(_trials(sd, "s@2")) == 3
    assert _report(sd)[0]["earlier"] == ["s", "s@2"]


def test_partial_rerun_stays_in_the_study(tmp_path):
    """Rerunning some slots adds their new trials to the current study (documented)."""
    spec = _spec(tmp_path, trials=3, parallel=3, sleep=0)
    sd = tmp_path / "st"
    _run(spec, sd)
    _run(spec, sd, "--rerun", "s-trial-1")
    trials = _trials(sd)
    assert len(trials) == 4 and all(t.state == TS.COMPLETE for t in trials)
    assert len({t.params["x"] for t in trials}) == 4
    assert _report(sd)[0]["sweep"] == "s"


def test_rerun_killed_before_its_study_exists_still_gets_a_new_one(tmp_path):
    """SIGKILL after `--rerun '*'` reset the slots but before the new study was made (optuna.db
    locked), then a plain `rota run`: the new study is made then, not the old one continued."""
    spec = _spec(tmp_path, trials=3, parallel=3, sleep=0)
    sd = tmp_path / "st"
    _run(spec, sd)
    with _write_lock(sd / "optuna.db"):
        proc = _start(spec, sd, "--rerun", "*")
        try:
            wait_for(lambda: len(_q(sd / "state.db", "SELECT name FROM tasks WHERE state='pending' "
                                    "AND params IS NULL")) == 3, timeout=60, interval=0.02)
        finally:
            _kill(proc)
    _run(spec, sd)
    _check_study(sd, 3)
    _check_study(sd, 3, "s@2")


def test_crash_during_a_rerun_continues_its_new_study(tmp_path):
    """SIGKILL in the middle of `--rerun '*'`, then plain `rota run`: `s@2` is finished, no `s@3`."""
    spec = _spec(tmp_path, trials=6, parallel=2, sleep=0.3)
    sd = tmp_path / "st"
    _run(spec, sd)
    proc = _start(spec, sd, "--rerun", "*")
    try:
        wait_for(lambda: _count(sd, "COMPLETE", "s@2") >= 2, timeout=60, interval=0.02)
    finally:
        _kill(proc)
    _run(spec, sd)
    _check_study(sd, 6, "s@2")
    (rep,) = _report(sd)
    assert rep["sweep"] == "s@2" and rep["earlier"] == ["s"]
