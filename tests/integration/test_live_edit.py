"""Editing a run while it runs (issue 19, item 2): ``rota run SPEC`` against a live controller
hands it the new spec, or new limits, instead of refusing. Real controllers and task processes;
the edits are sent by the real CLI from another process. A gate task (it waits for a file) keeps
the run alive until the edit has been answered, so nothing depends on timing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rota import api
from rota.engine import runstate as R
from rota.errors import StateError
from rota.spec.load import load_spec
from rota.store.sqlite import SqliteStore
from tests.helpers import rota, start_rota, wait_for, write_spec


def states(sd: Path) -> dict[str, dict]:
    try:
        return {t["name"]: t for t in api.status(state_dir=sd)["tasks"]}
    except StateError:
        return {}


def running(sd: Path, *names: str) -> bool:
    st = states(sd)
    return all(st.get(n, {}).get("state") == "running" for n in names)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def gate(folder: Path) -> str:
    return f"while [ ! -e {folder / 'go'} ]; do sleep 0.05; done"


def most_at_once(tasks: list[dict]) -> int:
    """The most of ``tasks`` that ran at the same moment, from their start and end times."""
    edges = sorted([(t["started_at"], 1) for t in tasks] + [(t["ended_at"], -1) for t in tasks])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant (-1 < 1)
        now += step
        most = max(most, now)
    return most


def test_edit_the_spec_of_a_live_run_adds_redefines_and_drops(tmp_path):
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "{gate(tmp_path)}"}}
          - {{name: keep, command: "true", needs: gate}}
          - {{name: drop-me, command: "touch {tmp_path / 'dropped-ran'}", needs: gate}}
          - {{name: change-me, command: "echo old > {tmp_path / 'change.txt'}", needs: gate}}
          - {{name: early, command: "echo v1 >> {tmp_path / 'early.txt'}"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "4")
    wait_for(lambda: running(sd, "gate") and states(sd).get("early", {}).get("state") == "succeeded", timeout=30)
    write_spec(tmp_path, f"""
        tasks:
          - {{name: gate, command: "{gate(tmp_path)}; echo v2"}}
          - {{name: keep, command: "true", needs: gate}}
          - {{name: change-me, command: "echo new > {tmp_path / 'change.txt'}", needs: gate}}
          - {{name: new-1, command: "true"}}
          - {{name: new-2, command: "true", needs: [new-1, gate]}}
          - {{name: early, command: "echo v2 >> {tmp_path / 'early.txt'}"}}
    """)
    edit = rota("run", spec, "--plain", timeout=60)
    assert edit.returncode == 0, edit.stdout + edit.stderr
    out = edit.stdout
    assert "added: new-1, new-2" in out and "updated: change-me" in out and "dropped: drop-me" in out, out
    assert "left running" in out and "gate" in out, out
    assert "kept as done" in out and "early" in out, out  # done, its command changed: only with --rerun
    st = states(sd)
    assert "drop-me" not in st and st["new-2"]["state"] == "pending" and st["gate"]["state"] == "running"
    assert (tmp_path / "early.txt").read_text() == "v1\n"
    again = rota("run", spec, "--plain", "--rerun", "early", timeout=60)
    assert again.returncode == 0 and "run again: early" in again.stdout, again.stdout + again.stderr
    (tmp_path / "go").touch()
    code, log = finish(proc)
    assert code == 0, log
    st = states(sd)
    assert {n: t["state"] for n, t in st.items()} == {n: "succeeded" for n in
                                                      ("gate", "keep", "change-me", "new-1", "new-2", "early")}
    assert (tmp_path / "early.txt").read_text() == "v1\nv2\n"
    assert (tmp_path / "change.txt").read_text() == "new\n"
    assert not (tmp_path / "dropped-ran").exists()
    assert "v2" not in (sd / "logs" / "gate" / "attempt-1.log").read_text()  # left alone: its old command
    # The event log is still a journal of the run: replayed, it gives the states the run ended with.
    store = SqliteStore(sd, readonly=True)
    try:
        replayed = R.replay(load_spec(spec).tasks, store.events())
    finally:
        store.close()
    assert {n: lv.state for n, lv in replayed.tasks.items()} == {n: t["state"] for n, t in st.items()}


def test_an_invalid_edit_is_refused_and_the_run_goes_on(tmp_path):
    good = f"""
        tasks:
          - {{name: gate, command: "{gate(tmp_path)}"}}
          - {{name: after, command: "echo kept > {tmp_path / 'after.txt'}", needs: gate}}
    """
    spec = write_spec(tmp_path, good)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "2", "--gpus", "none")
    wait_for(lambda: running(sd, "gate"), timeout=30)
    write_spec(tmp_path, good.replace("needs: gate}", "needs: nope}"))  # refused by the CLI's validation
    bad = rota("run", spec, "--plain", timeout=60)
    assert bad.returncode == 2 and "nope" in bad.stderr, bad.stdout + bad.stderr
    # Valid as a file, but the run has no GPU: the controller's own check refuses it.
    write_spec(tmp_path, good.replace('"true"', '"true"').replace(
        "needs: gate}", "needs: gate}\n          - {name: big, command: 'true', gpus: 1}"))
    bad = rota("run", spec, "--plain", timeout=60)
    assert bad.returncode == 2 and "refused" in bad.stderr and "big" in bad.stderr, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    assert set(states(sd)) == {"gate", "after"}
    (tmp_path / "go").touch()
    code, log = finish(proc)
    assert code == 0, log
    assert (tmp_path / "after.txt").read_text() == "kept\n"


def test_cpus_changed_live_changes_how_many_run_at_once(tmp_path):
    names = [f"w{i}" for i in range(6)]
    spec = write_spec(tmp_path, "tasks:\n" + f'  - {{name: gate, command: "{gate(tmp_path)}"}}\n' + "".join(
        f"  - {{name: {n}, command: 'sleep 1'}}\n" for n in names))
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "1")
    wait_for(lambda: running(sd, "gate"), timeout=30)
    assert all(states(sd)[n]["state"] == "pending" for n in names)  # one CPU: the gate holds it
    edit = rota("run", spec, "--plain", "--cpus", "3", timeout=60)
    assert edit.returncode == 0 and "3 CPUs (were 1)" in edit.stdout, edit.stdout + edit.stderr
    wait_for(lambda: running(sd, "gate") and sum(states(sd)[n]["state"] == "running" for n in names) == 2,
             timeout=30)
    (tmp_path / "go").touch()
    code, log = finish(proc)
    assert code == 0, log
    st = states(sd)
    assert most_at_once([st[n] for n in ["gate", *names]]) == 3, st
    assert most_at_once([st[n] for n in names]) == 3


def test_gpus_given_back_live_get_nothing_new(tmp_path):
    first = [f"first{i}" for i in range(4)]
    later = [f"later{i}" for i in range(4)]
    spec = write_spec(tmp_path, "tasks:\n" + "".join(
        f'  - {{name: {n}, command: "{gate(tmp_path)}", gpus: 1}}\n' for n in first) + "".join(
        f"  - {{name: {n}, command: 'sleep 0.2', gpus: 1}}\n" for n in later))
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--gpus", "4x80GB", "--cpus", "8")
    wait_for(lambda: running(sd, *first), timeout=30)
    on3 = [n for n in first if states(sd)[n]["gpus"] == [3]]
    assert len(on3) == 1
    edit = rota("run", spec, "--plain", "--gpus", "0,1,2", timeout=60)
    assert edit.returncode == 0, edit.stdout + edit.stderr
    assert "GPUs 0:80GB,1:80GB,2:80GB" in edit.stdout and on3[0] in edit.stdout, edit.stdout
    (tmp_path / "go").touch()
    code, log = finish(proc)
    assert code == 0, log
    st = states(sd)
    assert st[on3[0]]["state"] == "succeeded" and st[on3[0]]["gpus"] == [3]  # it finished there
    assert all(st[n]["state"] == "succeeded" and st[n]["gpus"] and 3 not in st[n]["gpus"] for n in later), st
