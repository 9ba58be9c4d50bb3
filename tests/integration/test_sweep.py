"""Sweeps end to end: `rota run` drives an Optuna study whose trials are rota tasks.

Each trial runs a tiny objective that records what it saw (argv, env, GPUs) in a
side file *after* it finished, so the side file counts finished executions.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rota.store.sqlite import SqliteStore
from tests.helpers import by_name, rota, start_rota, wait_for, write_spec

optuna = pytest.importorskip("optuna")

PY = sys.executable

OBJECTIVE = textwrap.dedent("""
    import json, os, sys, time
    rec_dir, x, sleep_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    metric = sys.argv[4] if len(sys.argv) > 4 else "loss"
    start = time.time()
    with open(os.path.join(rec_dir, "started.jsonl"), "a") as f:
        f.write(json.dumps({"task": os.environ["ROTA_TASK"], "attempt": os.environ["ROTA_ATTEMPT"],
                            "start": start}) + "\\n")
    time.sleep(sleep_s)
    loss = (x - 1.5) ** 2
    rec = {
        "task": os.environ["ROTA_TASK"], "attempt": os.environ["ROTA_ATTEMPT"], "argv_x": sys.argv[2],
        "env_x": os.environ.get("ROTA_PARAM_X"), "params": json.loads(os.environ.get("ROTA_PARAMS", "{}")),
        "private_env": sorted(k for k in os.environ if k.startswith("ROTA_PARAM__")),
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(), "loss": loss,
    }
    with open(os.path.join(rec_dir, "finished.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\\n")
    if metric != "none":
        print(f"ROTA_METRIC {metric}={loss}")
""")


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    rec = tmp_path / "rec"
    rec.mkdir()
    obj = tmp_path / "objective.py"
    obj.write_text(OBJECTIVE)
    return rec, obj


def _records(rec: Path, name: str = "finished") -> list[dict]:
    f = rec / f"{name}.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


def _study(sd: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sd / 'optuna.db'}")


def _sweep_spec(tmp_path: Path, rec: Path, obj: Path, *, trials: int, sleep: float, parallel: int | None = None,
                metric_arg: str = "loss") -> Path:
    par = f"\n              parallel: {parallel}" if parallel else ""
    return write_spec(tmp_path, f"""
        tasks:
          - name: hpo
            command: {PY} {obj} {rec} {{x}} {sleep} {metric_arg}
            cpus: 1
            sweep:
              trials: {trials}
              metric: loss
              direction: minimize
              seed: 7{par}
              params:
                x: {{type: float, low: -4.0, high: 4.0}}
                depth: {{type: int, low: 2, high: 64, log: true}}
                booster: {{type: categorical, choices: [gbtree, dart]}}
    """)


def _complete(study) -> list:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_sweep_runs_study_and_reports_best(tmp_path):
    """8 trials through `rota run`: 8 COMPLETE trials, params in {x} and env, best trial reported."""
    from rota.report.sweeps import best_trials, best_trials_text

    rec, obj = _setup(tmp_path)
    spec = _sweep_spec(tmp_path, rec, obj, trials=8, sleep=0.0, parallel=2)
    sd = tmp_path / "st"
    p = rota("run", spec, "--cpus", "4", "--plain", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr

    study = _study(sd, "hpo")
    done = _complete(study)
    assert len(done) == 8 and len(study.trials) == 8
    recs = _records(rec)
    assert len(recs) == 8
    assert sorted(r["task"] for r in recs) == sorted(f"hpo-trial-{i}" for i in range(8))
    for r in recs:
        assert r["env_x"] == r["argv_x"]  # the same value as {x} and as ROTA_PARAM_X
        assert set(r["params"]) == {"x", "depth", "booster"}  # ROTA_PARAMS has no private keys
        assert r["private_env"] == []
        assert r["params"]["booster"] in ("gbtree", "dart") and 2 <= r["params"]["depth"] <= 64
    # Each trial's sampled params reached exactly one slot.
    by_task = {t.user_attrs["rota_task"]: t for t in done}
    for r in recs:
        assert by_task[r["task"]].params["x"] == pytest.approx(float(r["argv_x"]))
        assert by_task[r["task"]].value == pytest.approx(r["loss"])
    # parallel: 2 -> never three trials at once.
    for r in recs:
        at_once = sum(1 for o in recs if o["start"] < r["start"] < o["end"])
        assert at_once <= 1
    # The store keeps the trial number with the params; the report ranks trials.
    st = by_name(sd)
    assert {st[f"hpo-trial-{i}"]["params"]["_optuna_trial"] for i in range(8)} == set(range(8))
    report = best_trials(sd, top=3)
    assert len(report) == 1 and report[0]["sweep"] == "hpo" and report[0]["metric"] == "loss"
    assert report[0]["counts"]["complete"] == 8
    best = report[0]["best"]
    assert len(best) == 3
    assert best[0]["value"] == pytest.approx(min(r["loss"] for r in recs))
    assert best[0]["value"] <= best[1]["value"] <= best[2]["value"]
    assert best[0]["task"] == min(recs, key=lambda r: r["loss"])["task"]
    assert set(best[0]["params"]) == {"x", "depth", "booster"}
    text = best_trials_text(report)
    assert text.startswith("sweep hpo: best loss (minimize); 8 complete") and best[0]["task"] in text


@pytest.mark.parametrize("mode", ["adopt", "lost", "ctrl-c"])
def test_sweep_survives_sigkill(tmp_path, mode):
    """Stop the controller mid-study, run again: exactly `trials` COMPLETE, no finished trial repeated.

    adopt: SIGKILL; the trials outlive the controller and are adopted. lost: SIGKILL
    and the trials die with it (like a reboot); their Optuna trials become FAIL and
    the slots ask new ones. ctrl-c: SIGINT; rota stops the trials, tells FAIL, exits 130.
    Trials are stopped only mid-sleep (not while writing their side-file line), so
    the side file counts exactly the executions rota saw finish.
    """
    rec, obj = _setup(tmp_path)
    spec = _sweep_spec(tmp_path, rec, obj, trials=8, sleep=1.5, parallel=3)
    sd = tmp_path / "st"
    proc = start_rota("run", spec, "--cpus", "4", "--plain", "--state-dir", sd)
    try:
        def mid_study() -> bool:
            if len(_records(rec)) < 2 or not (sd / "state.db").exists():
                return False
            store = SqliteStore(sd, readonly=True)
            try:
                running = {(t.name, str(t.attempts)) for t in store.tasks() if t.state == "running"}
            finally:
                store.close()
            started = {(r["task"], r["attempt"]): r["start"] for r in _records(rec, "started")}
            if not running or not running <= set(started):
                return False
            return all(time.time() - started[k] < 0.9 for k in running)  # all well before their end

        wait_for(mid_study, timeout=60, interval=0.02)
        if mode == "ctrl-c":
            os.kill(proc.pid, signal.SIGINT)
            assert proc.wait(60) == 130
        else:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if mode == "lost":  # kill the running trials' process groups, as a reboot would
            store = SqliteStore(sd, readonly=True)
            try:
                groups = [int(t.handle["data"]["pgid"]) for t in store.tasks() if t.state == "running" and t.handle]
            finally:
                store.close()
            assert groups, "expected trials still running after the controller died"
            for g in groups:
                try:
                    os.killpg(g, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_before = len(_records(rec))
    assert finished_before < 8

    p = rota("run", spec, "--cpus", "4", "--plain", "--state-dir", sd, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr

    study = _study(sd, "hpo")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 8
    assert states.count(optuna.trial.TrialState.RUNNING) == 0
    recs = _records(rec)
    tasks = [r["task"] for r in recs]
    assert sorted(tasks) == sorted(f"hpo-trial-{i}" for i in range(8)), "a finished trial ran twice or not at all"
    done = _complete(study)
    assert sorted(t.user_attrs["rota_task"] for t in done) == sorted(tasks)
    assert sorted(float(r["argv_x"]) for r in recs) == pytest.approx(sorted(t.params["x"] for t in done))
    fails = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    if mode in ("lost", "ctrl-c"):
        assert fails and all(t.user_attrs.get("rota_fail_reason") for t in fails)


def test_missing_metric_marks_trial_fail(tmp_path):
    """A trial that exits 0 without the metric is told FAIL, with the reason, and its slot is final."""
    rec, obj = _setup(tmp_path)
    spec = _sweep_spec(tmp_path, rec, obj, trials=2, sleep=0.0, metric_arg="none")
    sd = tmp_path / "st"
    p = rota("run", spec, "--cpus", "2", "--plain", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "marked FAIL" in p.stdout
    study = _study(sd, "hpo")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("loss" in t.user_attrs["rota_fail_reason"] for t in study.trials)
    assert len(_records(rec)) == 2  # not rerun


def test_failed_trial_retries_with_new_trial(tmp_path):
    """A failing attempt is told FAIL; the retry asks a new trial; the slot count stays `trials`."""
    rec, _ = _setup(tmp_path)
    flaky = tmp_path / "flaky.py"
    flaky.write_text(textwrap.dedent(f"""
        import os, sys
        marker = os.path.join({str(rec)!r}, os.environ["ROTA_TASK"] + ".tried")
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(3)
        print("ROTA_METRIC loss=" + sys.argv[1])
    """))
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: s
            command: {PY} {flaky} {{x}}
            retries: 1
            sweep:
              trials: 3
              metric: loss
              sampler: random
              params:
                x: {{type: float, low: 0.0, high: 1.0}}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--cpus", "2", "--plain", "--state-dir", sd, "--retry-delay", "0")
    assert p.returncode == 0, p.stdout + p.stderr
    states = [t.state for t in _study(sd, "s").trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert states.count(optuna.trial.TrialState.FAIL) == 3


def test_bad_search_space_is_a_spec_error(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - name: s
            command: echo {lr}
            sweep:
              trials: 2
              metric: loss
              params:
                lr: {type: float, low: 0.0, high: 1.0, log: true}
    """)
    p = rota("run", spec, "--cpus", "1", "--plain", "--state-dir", tmp_path / "st")
    assert p.returncode == 2
    assert "log: true needs low > 0" in p.stderr and "sweep.params.lr" in p.stderr


def test_missing_optuna_says_how_to_install(tmp_path):
    """With Optuna not importable, a sweep fails with the install hint (no traceback)."""
    block = tmp_path / "block"
    (block / "optuna").mkdir(parents=True)
    (block / "optuna" / "__init__.py").write_text("raise ImportError('optuna hidden by the test')\n")
    spec = write_spec(tmp_path, """
        tasks:
          - name: s
            command: echo {x}
            sweep: {trials: 1, metric: loss, params: {x: {type: int, low: 0, high: 3}}}
    """)
    p = rota("run", spec, "--cpus", "1", "--plain", "--state-dir", tmp_path / "st",
             env={"PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "pip install 'rota[sweep]'" in p.stderr
    assert "Traceback" not in p.stderr


def test_pruner_stops_bad_trial(tmp_path):
    """pruner: median. Slots 0-4 report 1.0 per step; slot 5 reports 5.0 and is pruned early:
    Optuna says PRUNED, the slot is final (not retried, the run succeeds), the trial did not run to its end."""
    rec = tmp_path / "rec"
    rec.mkdir()
    stepper = tmp_path / "stepper.py"
    stepper.write_text(textwrap.dedent(f"""
        import os, sys, time
        slot = int(os.environ["ROTA_TRIAL"])
        bad = slot == 5
        value = 5.0 if bad else (0.5 if slot == 6 else 1.0)
        for step in range(20 if bad else 4):
            time.sleep(0.25 if bad else 0.05)
            print(f"ROTA_REPORT step={{step}} value={{value + 0.001 * step}}", flush=True)
        open(os.path.join({str(rec)!r}, f"done-{{slot}}"), "w").close()
        print(f"ROTA_METRIC loss={{value}}")
    """))
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: p
            command: {PY} {stepper} {{x}}
            retries: 2
            sweep:
              trials: 7
              parallel: 1
              metric: loss
              pruner: median
              params:
                x: {{type: float, low: 0.0, high: 1.0}}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--cpus", "2", "--plain", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pruned" in p.stdout
    trials = {t.user_attrs["rota_task"]: t for t in _study(sd, "p").trials}
    assert len(trials) == 7
    assert trials["p-trial-5"].state == optuna.trial.TrialState.PRUNED
    assert "rota_pruned_at" in trials["p-trial-5"].user_attrs
    others = [t for name, t in trials.items() if name != "p-trial-5"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in others)
    assert not (rec / "done-5").exists()  # stopped before its last step
    st = by_name(sd)
    assert st["p-trial-5"]["state"] == "succeeded" and st["p-trial-5"]["attempts"] == 1


def test_matrix_of_sweeps_makes_one_study_each(tmp_path):
    """Scenario 4's '8 datasets': a matrix over a sweep gives one study per combination."""
    from rota.report.sweeps import best_trials

    rec, obj = _setup(tmp_path)
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: hpo-{{ds}}
            matrix: {{ds: [iris, wine]}}
            command: {PY} {obj} {rec} {{x}} 0
            sweep:
              trials: 3
              parallel: 1
              metric: loss
              params:
                x: {{type: float, low: 0.0, high: 3.0}}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--cpus", "4", "--plain", "--state-dir", sd)
    assert p.returncode == 0, p.stdout + p.stderr
    report = best_trials(sd, top=5)
    assert [r["sweep"] for r in report] == ["hpo-iris", "hpo-wine"]
    for r in report:
        assert r["counts"]["complete"] == 3 and len(r["best"]) == 3
        assert all(b["task"].startswith(r["sweep"] + "-trial-") for b in r["best"])
    # parallel is per study: at most one trial of each dataset at a time, so at most two at once.
    recs = _records(rec)
    for r in recs:
        same = [o for o in recs if o is not r and o["task"].rsplit("-trial-", 1)[0] == r["task"].rsplit("-trial-", 1)[0]]
        assert not any(o["start"] < r["start"] < o["end"] for o in same)
