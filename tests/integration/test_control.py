"""Steering a run (issue 19, item 1): rota cancel, retry, hold, release, priority, on a live run
and without one. Real controllers, real task processes, real signals; the controls are sent by
the real CLI from other processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from rota import api
from rota.errors import StateError, UsageError
from rota.store.sqlite import SqliteStore
from tests.helpers import ROTA, alive, rota, start_rota, wait_for, write_spec


def states(sd: Path) -> dict[str, dict]:
    """Every task's status line; none before the controller has written its state."""
    try:
        return {t["name"]: t for t in api.status(state_dir=sd)["tasks"]}
    except StateError:
        return {}


def state_of(sd: Path, name: str) -> str:
    return str(states(sd).get(name, {}).get("state", ""))


def events(sd: Path, kind: str, task: str) -> int:
    db = sqlite3.connect(sd / "state.db")
    try:
        return int(db.execute("SELECT count(*) FROM events WHERE kind=? AND task=?", (kind, task)).fetchone()[0])
    finally:
        db.close()


def untaken(sd: Path) -> int:
    db = sqlite3.connect(sd / "state.db")
    try:
        return int(db.execute("SELECT count(*) FROM controls WHERE taken_at IS NULL").fetchone()[0])
    finally:
        db.close()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_cancel_a_running_task_and_its_grandchild(tmp_path):
    pids = tmp_path / "pids"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: train
            command: echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait
          - {{name: evaluate, command: "true", needs: train}}
          - {{name: other, command: "sleep 0.5"}}
          - {{name: after-other, command: "true", needs: other}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--grace", "1", "--cpus", "4")
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=30)
    wait_for(lambda: state_of(sd, "train") == "running", timeout=30)
    shell, child = map(int, pids.read_text().split())
    out = rota("cancel", "train", "--spec", spec, check=True).stdout
    assert "stopping" in out and "train" in out, out
    code, log = finish(proc)
    assert code == 1, log
    st = states(sd)
    assert st["train"]["state"] == "cancelled"
    assert st["evaluate"]["state"] == "skipped"
    assert st["other"]["state"] == st["after-other"]["state"] == "succeeded"
    wait_for(lambda: not alive(shell) and not alive(child), timeout=10)
    assert api.status(state_dir=sd)["counts"]["cancelled"] == 1
    assert rota("report", spec).returncode == 0  # reports know the state
    # Not retried, and the next run keeps it cancelled (its dependent skipped again).
    assert st["train"]["attempts"] == 1
    again = rota("run", spec, "--plain")
    assert again.returncode == 1, again.stdout
    assert state_of(sd, "train") == "cancelled" and state_of(sd, "evaluate") == "skipped"


def test_retry_a_failed_task_during_the_run(tmp_path):
    flag, done = tmp_path / "fixed", tmp_path / "done"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: flaky, command: "test -f {flag}"}}
          - {{name: uses-flaky, command: "true", needs: flaky}}
          - {{name: keeper, command: "while [ ! -f {done} ]; do sleep 0.05; done"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "4")
    wait_for(lambda: state_of(sd, "uses-flaky") == "skipped", timeout=30)
    assert state_of(sd, "flaky") == "failed"
    flag.touch()
    out = rota("retry", "flak*", "--spec", spec, check=True).stdout
    assert "pending again: flaky" in out and "uses-flaky" in out, out
    wait_for(lambda: state_of(sd, "uses-flaky") == "succeeded", timeout=30)
    st = states(sd)
    assert st["flaky"]["state"] == "succeeded" and st["flaky"]["attempts"] == 1  # a fresh retry budget
    assert st["flaky"]["attempt"] == 2
    done.touch()
    code, log = finish(proc)
    assert code == 0, log


def test_hold_then_release(tmp_path):
    go, done = tmp_path / "go", tmp_path / "done"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "while [ ! -f {go} ]; do sleep 0.05; done"}}
          - {{name: held-one, command: "true", needs: gate}}
          - {{name: free-one, command: "true", needs: gate}}
          - {{name: keeper, command: "while [ ! -f {done} ]; do sleep 0.05; done"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "4")
    wait_for(lambda: state_of(sd, "gate") == "running", timeout=30)
    out = rota("hold", "held-one", "--spec", spec, check=True).stdout
    assert "held: held-one" in out, out
    assert states(sd)["held-one"]["held"] is True
    table = rota("status", spec, check=True).stdout
    assert any(line.split()[:2] == ["held-one", "held"] for line in table.splitlines()), table
    go.touch()
    # Both became ready together: once the free one ran, the held one was passed over.
    wait_for(lambda: state_of(sd, "free-one") == "succeeded", timeout=30)
    assert state_of(sd, "held-one") == "pending"
    assert "unchanged (running" in rota("hold", "keeper", "--spec", spec, check=True).stdout
    out = rota("release", "held-*", "--spec", spec, check=True).stdout
    assert "released: held-one" in out, out
    wait_for(lambda: state_of(sd, "held-one") == "succeeded", timeout=30)
    assert states(sd)["held-one"]["held"] is False
    done.touch()
    code, log = finish(proc)
    assert code == 0, log


@pytest.mark.parametrize("live", [True, False], ids=["live", "offline"])
def test_four_processes_at_once_none_lost_none_twice(tmp_path, live):
    go = tmp_path / "go"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "while [ ! -f {go} ]; do sleep 0.05; done"}}
          - {{name: "p-{{i}}", command: "true", needs: gate, matrix: {{i: [0, 1, 2, 3]}}}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--grace", "1")
    wait_for(lambda: state_of(sd, "gate") == "running", timeout=30)
    if not live:  # stopped: the p-* stay pending, and no controller answers
        assert rota("stop", spec).returncode == 0
        finish(proc)
    sends = [("hold", "p-0"), ("cancel", "p-1"), ("priority", "p-2", "7"), ("hold", "p-3")]
    procs = [subprocess.Popen([*ROTA, *args, "--state-dir", str(sd)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in sends]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert "held: p-0" in outs[0] and "cancelled: p-1" in outs[1] and "priority 7: p-2" in outs[2], outs
    assert untaken(sd) == 0
    assert (events(sd, "held", "p-0"), events(sd, "cancelled", "p-1"), events(sd, "priority", "p-2"),
            events(sd, "held", "p-3")) == (1, 1, 1, 1)
    st = states(sd)
    assert st["p-0"]["held"] and st["p-3"]["held"] and st["p-1"]["state"] == "cancelled"
    if live:
        go.touch()
        code, log = finish(proc)
        assert code == 1, log  # p-1 cancelled; p-0, p-3 held (the run ends with only them left)
        st = states(sd)
        assert st["p-2"]["state"] == "succeeded"
        assert st["p-0"]["state"] == st["p-3"]["state"] == "pending"


def test_sigkill_between_commit_and_effect_applies_once_in_the_next_run(tmp_path):
    go = tmp_path / "go"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "while [ ! -f {go} ]; do sleep 0.05; done"}}
          - {{name: later, command: "true", needs: gate}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain")
    wait_for(lambda: state_of(sd, "gate") == "running", timeout=30)
    os.kill(proc.pid, signal.SIGSTOP)  # alive and holding the lock, but it takes nothing
    try:
        answer = api.cancel(["later"], state_dir=sd, wait_s=0.5)
        assert "has not answered" in answer, answer
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert untaken(sd) == 1 and state_of(sd, "later") == "pending"
    go.touch()
    p = rota("run", spec, "--plain")
    assert p.returncode == 1, p.stdout
    st = states(sd)
    assert st["gate"]["state"] == "succeeded" and st["later"]["state"] == "cancelled"
    assert untaken(sd) == 0 and events(sd, "cancelled", "later") == 1
    p = rota("run", spec, "--plain")
    assert p.returncode == 1 and events(sd, "cancelled", "later") == 1


def test_offline_controls_are_obeyed_by_the_next_run(tmp_path):
    fixed = tmp_path / "fixed"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: bad, command: "test -f {fixed}", priority: 10}}
          - {{name: a, command: "true"}}
          - {{name: b, command: "true", needs: a}}
          - {{name: d, command: "true"}}
          - {{name: e, command: "true", needs: d}}
    """)
    sd = tmp_path / ".rota"
    first = rota("run", spec, "--plain", "--cpus", "1", "--fail-fast")
    assert first.returncode == 1, first.stdout
    assert state_of(sd, "bad") == "failed" and state_of(sd, "b") == "pending"
    out = rota("hold", "b", "--spec", spec, check=True).stdout
    assert "no controller is running" in out and "held: b" in out, out
    assert "cancelled: d" in api.cancel(["d"], spec)  # the Python API: the same request path
    assert "priority 3: a" in api.priority(["a"], 3, spec)
    fixed.touch()
    p = rota("run", spec, "--plain")
    assert p.returncode == 1, p.stdout
    st = states(sd)
    assert st["bad"]["state"] == st["a"]["state"] == "succeeded"
    assert st["b"]["state"] == "pending" and st["b"]["held"] is True
    assert st["d"]["state"] == "cancelled" and st["e"]["state"] == "skipped"
    assert "released: b" in api.release(["b"], spec)
    assert "pending again: d" in api.retry(["d"], spec)
    p = rota("run", spec, "--plain")
    assert p.returncode == 0, p.stdout
    assert {t["state"] for t in states(sd).values()} == {"succeeded"}
    # --force: a succeeded task runs again, and so does what used it.
    assert "pending again: a" in api.retry(["a"], spec, force=True)
    p = rota("run", spec, "--plain")
    assert p.returncode == 0 and states(sd)["b"]["attempt"] == 2, p.stdout


def test_a_pattern_that_matches_nothing_is_bad_input(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - {name: one, command: "true"}
    """)
    assert rota("run", spec, "--plain").returncode == 0
    for args in (["retry", "one", "nope*"], ["priority", "zz", "1"]):
        p = rota(*args, "--spec", spec)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "matches no task" in p.stderr and "Traceback" not in p.stderr
    p = rota("cancel", "one", "--state-dir", tmp_path / "empty")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    # A malformed request (no priority given) is answered as refused, never left to block the next ones.
    store = SqliteStore(tmp_path / ".rota")
    try:
        bad = store.add_control("priority", ["one"], {})
        assert "unchanged (already not held): one" in api.release(["one"], spec)
        got = store.control(bad)
        assert got is not None and got.result is not None and got.result.startswith("refused"), got
    finally:
        store.close()


def test_a_cancel_committed_by_a_killed_controller_is_finished_by_the_next(tmp_path):
    """What a controller SIGKILLed right after committing a running task's cancel (the CANCELLING
    mark) and before stopping it leaves: the next rota run adopts the attempt and stops it."""
    pids = tmp_path / "pids"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: train
            command: echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait
          - {{name: evaluate, command: "true", needs: train}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--grace", "1")
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=30)
    wait_for(lambda: state_of(sd, "train") == "running", timeout=30)
    os.killpg(proc.pid, signal.SIGKILL)  # the task has its own session: it goes on
    proc.wait()
    db = sqlite3.connect(sd / "state.db")
    with db:
        db.execute("UPDATE tasks SET reason='cancelling (rota cancel)' WHERE name='train'")
    db.close()
    p = rota("run", spec, "--plain", "--grace", "1")
    assert p.returncode == 1, p.stdout
    assert state_of(sd, "train") == "cancelled" and state_of(sd, "evaluate") == "skipped"
    assert not any(alive(int(pid)) for pid in pids.read_text().split())


def test_a_live_priority_reorders_the_waiting_tasks(tmp_path):
    go = tmp_path / "go"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "while [ ! -f {go} ]; do sleep 0.05; done"}}
          - {{name: "p-{{i}}", command: "true", needs: gate, matrix: {{i: [0, 1, 2, 3]}}}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "1")  # one task at a time: the order shows
    wait_for(lambda: state_of(sd, "gate") == "running", timeout=30)
    assert "priority 10: p-3" in rota("priority", "p-3", "10", "--spec", spec, check=True).stdout
    go.touch()
    code, log = finish(proc)
    assert code == 0, log
    st = states(sd)
    order = sorted((st[f"p-{i}"]["started_at"], f"p-{i}") for i in range(4))
    assert [n for _, n in order] == ["p-3", "p-0", "p-1", "p-2"], order


def test_offline_controls_say_whether_the_state_changed_and_refuse_a_negative_grace(tmp_path: Path) -> None:
    """With no controller, a request that changes nothing (cancel of a done task, hold of one that
    is not pending) must not claim 'the state is changed'; one that changes something says so.
    ``rota cancel --grace -3`` is bad input: one line, exit 2, nothing sent."""
    spec = write_spec(tmp_path, """
        tasks:
          - name: a
            command: 'true'
          - name: b
            command: 'exit 1'
    """)
    sd = tmp_path / ".rota"
    assert rota("run", spec, "--gpus", "none").returncode == 1
    out = rota("cancel", "a", "--spec", spec, check=True).stdout
    assert "nothing changed" in out and "state is changed" not in out, out
    assert "unchanged (succeeded): a" in out, out
    out = rota("retry", "b", "--spec", spec, check=True).stdout
    assert "the state is changed" in out and "pending again: b" in out, out
    bad = rota("cancel", "b", "--grace", "-3", "--spec", spec)
    assert bad.returncode == 2, bad
    assert "--grace" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    with pytest.raises(UsageError, match="grace_s=-3"):  # the API refuses it as the CLI does
        api.cancel(["b"], spec, grace_s=-3)
    assert state_of(sd, "b") == "pending"
