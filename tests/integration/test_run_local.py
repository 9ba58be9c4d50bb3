"""`rota run` end to end with real processes on declared GPUs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import (
    by_name,
    forget_handles,
    processes_with_env,
    read_records,
    rota,
    start_rota,
    status,
    wait_for,
    write_spec,
)

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable


def overlaps(recs, name_a, name_b):
    a = next(r for r in recs if r["name"] == name_a)
    b = next(r for r in recs if r["name"] == name_b)
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_memory_packing_and_pinning(tmp_path):
    """6 tasks of 30GB on 2x80GB: two per GPU at once, never three; whole-GPU tasks alone."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: small-{{i}}
            command: {PY} {REC} {rec} small-{{i}} 1.0
            matrix: {{i: [0, 1, 2, 3, 4, 5]}}
            gpus: 1
            gpu_memory: 30GB
            cpus: 1
          - name: whole
            command: {PY} {REC} {rec} whole 0.5
            gpus: 1
          - name: pair
            command: {PY} {REC} {rec} pair 0.5
            gpus: 2
            gpu_memory: 10GB
          - name: cpu
            command: {PY} {REC} {rec} cpu 0.2
            cpus: 2
    """)
    p = rota("run", spec, "--gpus", "2x80GB", "--cpus", "8", "--plain", "--state-dir", tmp_path / "st")
    assert p.returncode == 0, p.stdout + p.stderr
    recs = read_records(rec)
    assert len(recs) == 9
    cvd = {r["name"]: r["cvd"] for r in recs}
    assert cvd["cpu"] == "" and recs[0]["omp"]
    assert next(r for r in recs if r["name"] == "cpu")["omp"] == "2"
    assert sorted(cvd["pair"].split(",")) == ["0", "1"]
    # Booked memory per GPU never above 80GB at any instant.
    booked = {"small": 30, "whole": 80, "pair": 10}
    events = []
    for r in recs:
        if r["name"] == "cpu":
            continue
        gb = booked[r["name"].split("-")[0]]
        for g in r["cvd"].split(","):
            events.append((r["start"], 1, g, gb))
            events.append((r["end"], -1, g, gb))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at equal times
    load: dict[str, int] = {}
    for _, kind, g, gb in events:
        load[g] = load.get(g, 0) + kind * gb
        assert load[g] <= 80
    # Packing happened: at least two small tasks overlapped on one GPU.
    smalls = [r for r in recs if r["name"].startswith("small")]
    assert any(a["cvd"] == b["cvd"] and overlaps(recs, a["name"], b["name"])
               for a in smalls for b in smalls if a["name"] < b["name"])
    st = by_name(tmp_path / "st")
    assert st["whole"]["gpus"] in ([0], [1])


def test_dependencies_failures_skip_and_exit_codes(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: a, command: "{PY} {REC} {rec} a 0.2"}}
          - {{name: b, command: "{PY} {REC} {rec} b 0.1", needs: a}}
          - {{name: bad, command: "exit 4"}}
          - {{name: after-bad, command: "true", needs: bad}}
          - {{name: after-after, command: "true", needs: after-bad}}
          - {{name: independent, command: "{PY} {REC} {rec} independent 0.1"}}
    """)
    p = rota("run", spec, "--gpus", "none", "--plain")
    assert p.returncode == 1
    recs = read_records(rec)
    a = next(r for r in recs if r["name"] == "a")
    b = next(r for r in recs if r["name"] == "b")
    assert b["start"] >= a["end"]
    st = by_name(tmp_path / ".rota")
    assert st["bad"]["state"] == "failed" and st["bad"]["exit_code"] == 4
    assert st["after-bad"]["state"] == "skipped" and st["after-after"]["state"] == "skipped"
    assert st["independent"]["state"] == "succeeded"


def test_retries_count_attempts_and_logs_per_attempt(tmp_path):
    counter = tmp_path / "count"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: flaky
            command: echo try >> {counter}; n=$(wc -l < {counter}); echo attempt $n; test $n -ge 3
            retries: 3
          - name: hopeless
            command: exit 9
            retries: 2
    """)
    p = rota("run", spec, "--plain", "--retry-delay", "0.05")
    assert p.returncode == 1
    st = by_name(tmp_path / ".rota")
    assert st["flaky"]["state"] == "succeeded" and st["flaky"]["attempts"] == 3
    assert st["hopeless"]["state"] == "failed" and st["hopeless"]["attempts"] == 3
    logs = sorted((tmp_path / ".rota" / "logs" / "flaky").glob("attempt-*.log"))
    assert [p.read_text().strip() for p in logs] == ["attempt 1", "attempt 2", "attempt 3"]
    out = rota("logs", "flaky", "--state-dir", tmp_path / ".rota", "--attempt", "2")
    assert out.stdout.strip() == "attempt 2"


def test_matrix_values_arrive_literally(tmp_path):
    values = ["it's", 'say "hi"', "$HOME and `id`", "a b  c", "semi;colon", "*"]
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: q-{{i}}
            command: {PY} -c "import sys, json; print(json.dumps(sys.argv[1:]))" {{v}} {{i}}
            matrix:
              v: {json.dumps(values)}
              i: [0]
    """.replace("q-{i}", "q-{v}-{i}"))
    p = rota("run", spec, "--plain")
    assert p.returncode == 0, p.stdout + p.stderr
    st = status(tmp_path / ".rota")
    seen = []
    for t in st["tasks"]:
        argv = json.loads(Path(t["log_path"]).read_text())
        seen.append(argv[0])
        assert t["vars"]["v"] == argv[0]
    assert sorted(seen) == sorted(values)


def test_timeout_kills_grandchildren(tmp_path):
    pidfile = tmp_path / "pids"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: hang
            command: (sleep 300 & echo $! >> {pidfile}; wait) & (setsid sleep 301 & echo $! >> {pidfile}; wait) & wait
            timeout: 1s
    """)
    t0 = time.time()
    p = rota("run", spec, "--plain", "--grace", "1")
    assert p.returncode == 1
    assert time.time() - t0 < 30
    st = by_name(tmp_path / ".rota")
    assert st["hang"]["reason"] == "timeout"
    pids = [int(x) for x in pidfile.read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                             for pid in pids), timeout=10)


def test_sigint_leaves_no_process_behind(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - name: w-{i}
            command: bash -c 'sleep 300 & sleep 300 & trap "" TERM; wait'
            matrix: {i: [0, 1, 2]}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--grace", "1", "--cpus", "4")
    wait_for(lambda: len(processes_with_env("ROTA_STATE_DIR", str(sd))) >= 9, timeout=30)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert processes_with_env("ROTA_STATE_DIR", str(sd)) == []
    st = by_name(sd)
    assert {t["state"] for t in st.values()} == {"interrupted"}


def test_sigkill_controller_then_resume(tmp_path):
    """No task twice at once; finished tasks not rerun; running ones adopted."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: {PY} {REC} {rec} t-{{i}} 1.5
            matrix: {{i: [0, 1, 2, 3, 4, 5, 6, 7]}}
          - {{name: final, command: "{PY} {REC} {rec} final 0.1", needs: "t-*"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "3")
    wait_for(lambda: len(read_records(rec)) >= 3, timeout=60)
    # Some tasks finished; kill the controller once later ones are running (they must be adopted).
    wait_for(lambda: any(t["state"] == "running" for t in by_name(sd).values()), timeout=60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = by_name(sd)
    running_before = {n for n, t in before.items() if t["state"] in ("running", "launching")}
    assert running_before, before
    p = rota("run", spec, "--plain", "--cpus", "3")
    assert p.returncode == 0, p.stdout
    assert "adopted" in p.stdout
    recs = read_records(rec)
    names = [r["name"] for r in recs]
    assert sorted(names) == sorted({*names}), f"a task ran twice: {names}"
    assert len(names) == 9
    after = by_name(sd)
    assert all(t["state"] == "succeeded" for t in after.values())
    # Every adopted task ran exactly once, as attempt 1.
    assert all(after[n]["attempts"] == 1 for n in running_before)


def test_crash_before_handle_commit_finds_the_attempt_again(tmp_path):
    """A controller killed after committing ``launching`` but before its handle: nothing runs twice.

    Handles are committed with the next round (see Engine._sleep), so the crash window is
    real; the fault is injected by killing the controller and then erasing the committed
    handles, which leaves exactly what a kill inside that window leaves. One attempt is
    still running (found again by its environment), one already ended (found by its
    line in the exit-status log): both are adopted, neither runs again.
    """
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: quick, command: "{PY} {REC} {rec} quick 0.1"}}
          - {{name: slow, command: "{PY} {REC} {rec} slow 3"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "2")
    wait_for(lambda: {r["name"] for r in read_records(rec)} >= {"quick"} and (sd / "logs" / "slow").exists(), timeout=60)
    exit_log = sd / "exit-status.log"
    quick_id = sqlite3.connect(sd / "state.db").execute("SELECT id FROM attempts WHERE task='quick'").fetchone()[0]
    wait_for(lambda: exit_log.exists() and f" @{quick_id}\n" in exit_log.read_text(), timeout=30)  # by attempt id
    os.killpg(proc.pid, signal.SIGKILL)  # the tasks have their own sessions: they go on
    proc.wait()
    forget_handles(sd)
    p = rota("run", spec, "--plain", "--cpus", "2")
    assert p.returncode == 0, p.stdout
    assert p.stdout.count("adopted") == 2, p.stdout
    names = [r["name"] for r in read_records(rec)]
    assert sorted(names) == ["quick", "slow"], f"ran again: {names}"
    after = by_name(sd)
    assert {n: (t["state"], t["attempts"]) for n, t in after.items()} == {"quick": ("succeeded", 1), "slow": ("succeeded", 1)}
    assert not processes_with_env("ROTA_STATE_DIR", str(sd.resolve()))


def test_second_controller_refuses(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - {name: slow, command: sleep 5}
    """)
    proc = start_rota("run", spec, "--plain")
    wait_for(lambda: (tmp_path / ".rota" / "controller.lock").exists() and
             (tmp_path / ".rota" / "controller.lock").read_text() != "", timeout=20)
    # Another spec file on the same state folder is refused (the same file is a live edit:
    # tests/integration/test_live_edit.py).
    other = write_spec(tmp_path, "tasks:\n  - {name: other, command: 'true'}\n", name="other.yaml")
    p = rota("run", other, "--plain", "--state-dir", tmp_path / ".rota")
    assert p.returncode == 2
    assert f"pid {proc.pid}" in p.stderr and "Traceback" not in p.stderr
    # status works while the run goes on, from another process.
    st = status(tmp_path / ".rota")
    assert st["controller"]["alive"] and st["controller"]["pid"] == proc.pid
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)


def test_resume_skips_succeeded_and_rerun_forces(tmp_path):
    counter = tmp_path / "runs"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: a, command: "echo a >> {counter}"}}
          - {{name: b, command: "echo b >> {counter}", needs: a}}
    """)
    assert rota("run", spec, "--plain").returncode == 0
    assert rota("run", spec, "--plain").returncode == 0
    assert counter.read_text().split() == ["a", "b"]
    assert rota("run", spec, "--plain", "--rerun", "b").returncode == 0
    assert counter.read_text().split() == ["a", "b", "b"]
    # A changed command runs again.
    spec.write_text(spec.read_text().replace("echo b", "echo B"))
    assert rota("run", spec, "--plain").returncode == 0
    assert counter.read_text().split() == ["a", "b", "b", "B"]


def test_outputs_skip_when_present_and_inputs_unchanged(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    counter = tmp_path / "runs"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: combine
            command: echo ran >> {counter}; cp data.txt combined.txt
            outputs: [combined.txt]
            inputs: [data.txt]
    """)
    (tmp_path / "combined.txt").write_text("already there")
    assert rota("run", spec, "--plain").returncode == 0
    assert not counter.exists()
    assert by_name(tmp_path / ".rota")["combine"]["state"] == "cached"
    (tmp_path / "combined.txt").unlink()
    assert rota("run", spec, "--plain").returncode == 0
    assert counter.read_text().split() == ["ran"]


def test_metrics_from_lines_and_json(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - name: m
            command: |
              echo ROTA_METRIC acc=0.91; echo '{"loss": 0.25}' > $ROTA_OUT/metrics.json
    """)
    assert rota("run", spec, "--plain").returncode == 0
    assert by_name(tmp_path / ".rota")["m"]["metrics"] == {"acc": 0.91, "loss": 0.25}


@pytest.mark.parametrize(
    "body,needle",
    [("gpus: 5", "asks for 5 GPUs"), ("gpus: 1\n    gpu_memory: 100GB", "largest GPU"), ("cpus: 999", "CPUs")],
)
def test_never_fits_is_exit_2_and_writes_nothing(tmp_path, body, needle):
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: big
            command: "true"
            {body}
    """.replace("\n    gpu_memory", "\n            gpu_memory"))
    p = rota("run", spec, "--gpus", "4x80GB", "--plain")
    assert p.returncode == 2 and needle in p.stderr and "big" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".rota").exists()


def test_task_starts_with_default_signals_and_no_inherited_descriptors(tmp_path):
    """Python ignores SIGPIPE; a task must not (``yes | head`` ends ``yes`` by SIGPIPE, 141).
    A descriptor the controller inherited from its parent is not passed on to tasks."""
    import subprocess

    from tests.helpers import ROTA

    spec = write_spec(tmp_path, """
        tasks:
          - name: pipe
            command: 'yes | head -n1 >/dev/null; echo "status ${PIPESTATUS[0]}"; ls /proc/self/fd'
    """)
    fd = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT)
    assert fd > 3  # `ls` itself holds 3
    try:
        p = subprocess.run([*ROTA, "run", str(spec), "--plain", "--cpus", "1"], pass_fds=(fd,), capture_output=True,
                           text=True, timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stdout + p.stderr
    log = (tmp_path / ".rota" / "logs" / "pipe" / "attempt-1.log").read_text().split()
    assert log[:2] == ["status", "141"], log
    assert str(fd) not in log[2:], (fd, log)


def test_only_runs_the_selection_and_what_it_needs(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: prep, command: "{PY} {REC} {rec} prep 0"}}
          - {{name: "train-{{i}}", command: "{PY} {REC} {rec} train-{{i}} 0", needs: prep, matrix: {{i: [1, 2]}}}}
          - {{name: "eval-{{i}}", command: "{PY} {REC} {rec} eval-{{i}} 0", needs: "train-{{i}}", matrix: {{i: [1, 2]}}}}
          - {{name: report, command: "{PY} {REC} {rec} report 0", needs: "eval-*"}}
    """)
    sd = tmp_path / ".rota"
    planned = rota("plan", spec, "--only", "eval-1", "--json")
    assert planned.returncode == 0, planned.stderr
    assert [t["name"] for t in json.loads(planned.stdout)["tasks"]] == ["prep", "train-1", "eval-1"]
    p = rota("run", spec, "--plain", "--only", "eval-1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(r["name"] for r in read_records(rec)) == ["eval-1", "prep", "train-1"]
    assert {n: t["state"] for n, t in by_name(sd).items()} == dict.fromkeys(["prep", "train-1", "eval-1"], "succeeded")
    # The whole spec afterwards: the rest runs, nothing runs twice.
    p = rota("run", spec, "--plain")
    assert p.returncode == 0, p.stdout + p.stderr
    names = [r["name"] for r in read_records(rec)]
    assert sorted(names) == ["eval-1", "eval-2", "prep", "report", "train-1", "train-2"]
    # A failure inside the selection is the run's exit code; tasks outside it stay as they were.
    spec.write_text(spec.read_text().replace(f"{rec} train-{{i}} 0", f"{rec} train-{{i}} 0 3"))
    p = rota("run", spec, "--plain", "--only", "train-2")
    assert p.returncode == 1, p.stdout + p.stderr
    st = by_name(sd)
    assert st["train-2"]["state"] == "failed" and st["train-1"]["state"] == "succeeded"
    assert st["eval-2"]["state"] == "succeeded"  # not part of this run: not skipped


def test_only_matching_nothing_is_exit_2_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path, "tasks:\n  - {name: train-1, command: 'true'}\n")
    for cmd in ("run", "plan"):
        p = rota(cmd, spec, "--only", "trian-*", "--plain" if cmd == "run" else "--json")
        assert p.returncode == 2, p.stdout + p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "'trian-*' matches no task" in p.stderr and "rota.yaml" in p.stderr
    assert not (tmp_path / ".rota").exists()


def test_only_adopts_a_dead_controllers_attempt_outside_the_selection(tmp_path):
    """A task still running from a killed controller is watched, not ignored, by a run --only."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: slow, command: "{PY} {REC} {rec} slow 3"}}
          - {{name: quick, command: "{PY} {REC} {rec} quick 0"}}
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--plain", "--cpus", "1")
    wait_for(lambda: sd.exists() and by_name(sd).get("slow", {}).get("state") == "running", timeout=60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    p = rota("run", spec, "--plain", "--cpus", "1", "--only", "quick")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "adopted" in p.stdout
    recs = read_records(rec)
    assert sorted(r["name"] for r in recs) == ["quick", "slow"]
    quick = next(r for r in recs if r["name"] == "quick")
    slow = next(r for r in recs if r["name"] == "slow")
    assert quick["start"] >= slow["end"] - 0.05, "quick took the one CPU slot while slow still held it"
    st = by_name(sd)
    assert st["slow"]["state"] == "succeeded" and st["slow"]["attempts"] == 1


def test_fail_fast_launches_nothing_more_and_lets_running_tasks_finish(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: bad, command: "{PY} {REC} {rec} bad 0.2 3", priority: 10}}
          - {{name: long, command: "{PY} {REC} {rec} long 1.5", priority: 10}}
          - {{name: "later-{{i}}", command: "{PY} {REC} {rec} later-{{i}} 0", matrix: {{i: [0, 1, 2, 3]}}}}
    """)
    sd = tmp_path / ".rota"
    p = rota("run", spec, "--plain", "--cpus", "2", "--fail-fast")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "launching nothing more" in p.stdout
    assert sorted(r["name"] for r in read_records(rec)) == ["bad", "long"]
    st = by_name(sd)
    assert st["bad"]["state"] == "failed" and st["long"]["state"] == "succeeded"  # finished, not stopped
    assert all(st[f"later-{i}"]["state"] == "pending" for i in range(4))
    # Without the flag the next run goes on with what was left (and the failure, again).
    p = rota("run", spec, "--plain", "--cpus", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    st = by_name(sd)
    assert all(st[f"later-{i}"]["state"] == "succeeded" for i in range(4)) and st["long"]["attempts"] == 1
