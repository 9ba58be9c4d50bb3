"""`rota run --backend ray` end to end: the real CLI against a real local Ray cluster.

The cluster (tests/ray_cluster.py) declares 4 CPUs and 4 GPUs; rota's machine
comes from ``RayExecutor.capacity()`` (4 GPUs of 80 GB by default).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    by_name,
    forget_handles,
    read_records,
    rota,
    start_rota,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.ray

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable


def ray_run(spec: Path, address: str, state: Path, *extra: str, timeout: float = 240):
    return rota("run", spec, "--backend", "ray", "--address", address, "--plain", "--state-dir", state,
                *extra, timeout=timeout)


def test_memory_shared_gpu_tasks_pack_on_ray(tmp_path, ray_cluster):
    """8 tasks of 40GB on 4 declared 80GB GPUs: Ray gets num_gpus=0.5, two share a GPU at once."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: shard-{{i}}
            command: {PY} {REC} {rec} shard-{{i}} 4.0
            matrix: {{i: [0, 1, 2, 3, 4, 5, 6, 7]}}
            gpus: 1
            gpu_memory: 40GB
            cpus: 0
          - name: cpu-side
            command: {PY} {REC} {rec} cpu-side 0.2
            cpus: 2
    """)
    p = ray_run(spec, ray_cluster, tmp_path / "st")
    assert p.returncode == 0, p.stdout + p.stderr
    recs = {r["name"]: r for r in read_records(rec)}
    assert len(recs) == 9
    shards = [recs[f"shard-{i}"] for i in range(8)]
    # Ray's CUDA_VISIBLE_DEVICES (one fake id each), never rota's: at most 2 tasks per GPU.
    per_gpu: dict[str, int] = {}
    for r in shards:
        assert r["cvd"] in ("0", "1", "2", "3"), r
        per_gpu[r["cvd"]] = per_gpu.get(r["cvd"], 0) + 1
    events = sorted([(r["start"], 1, r["cvd"]) for r in shards] + [(r["end"], -1, r["cvd"]) for r in shards],
                    key=lambda e: (e[0], e[1]))
    load: dict[str, int] = {}
    peak = 0
    for _, kind, g in events:
        load[g] = load.get(g, 0) + kind
        assert load[g] <= 2, "more than two 40GB tasks on one 80GB GPU"
        peak = max(peak, sum(load.values()))
    assert max(load.get(g, 0) for g in load) == 0
    assert any(n == 2 for n in per_gpu.values()), per_gpu
    assert peak >= 5, f"memory-shared tasks did not run side by side (peak {peak})"
    assert recs["cpu-side"]["cvd"] == ""
    assert all(t["state"] == "succeeded" for t in by_name(tmp_path / "st").values())


def test_failures_and_retries_on_ray(tmp_path, ray_cluster):
    count = tmp_path / "count"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: flaky
            command: n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; echo "try $n"; [ "$n" -ge 2 ]
            retries: 2
          - name: bad
            command: echo failing; exit 3
            retries: 1
          - name: after-bad
            command: "true"
            needs: [bad]
    """)
    p = ray_run(spec, ray_cluster, tmp_path / "st", "--retry-delay", "0.1")
    assert p.returncode == 1, p.stdout + p.stderr
    st = by_name(tmp_path / "st")
    assert st["flaky"]["state"] == "succeeded" and st["flaky"]["attempts"] == 3
    assert "try 2" in Path(st["flaky"]["log_path"]).read_text()
    assert st["bad"]["state"] == "failed" and st["bad"]["attempts"] == 2 and st["bad"]["exit_code"] == 3
    assert Path(st["bad"]["log_path"] + ".rc").read_text().strip() == "3"
    assert st["after-bad"]["state"] == "skipped"


def test_controller_killed_then_rerun_adopts(tmp_path, ray_cluster):
    """kill -9 of `rota run` while tasks run on Ray: the rerun adopts them, reruns nothing."""
    rec = tmp_path / "rec"
    rec.mkdir()
    line = 'echo "start $(date +%s.%N)" >> {rec}/$ROTA_TASK; sleep {s}; echo "end $(date +%s.%N)" >> {rec}/$ROTA_TASK'
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: quick-{{i}}
            matrix: {{i: [0, 1, 2, 3]}}
            command: {line.format(rec=rec, s=0.5)}
          - name: slow-{{i}}
            matrix: {{i: [0, 1, 2, 3]}}
            needs: [quick-0, quick-1, quick-2, quick-3]
            command: {line.format(rec=rec, s=8)}
          - name: final
            needs: [slow-0, slow-1, slow-2, slow-3]
            command: {line.format(rec=rec, s=0)}
    """)
    state = tmp_path / "st"
    ctl = start_rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state)
    try:
        def slow_running() -> bool:
            if not (state / "state.db").exists():
                return False
            st = by_name(state)
            return all(st[f"slow-{i}"]["state"] == "running" for i in range(4))

        wait_for(slow_running, timeout=120, interval=0.2)
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(timeout=30)
    finally:
        if ctl.poll() is None:
            os.kill(ctl.pid, signal.SIGKILL)
    first = by_name(state)
    assert all(first[f"quick-{i}"]["state"] == "succeeded" for i in range(4))
    p = ray_run(spec, ray_cluster, state)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "adopted" in p.stdout
    st = by_name(state)
    assert all(t["state"] == "succeeded" for t in st.values()), st
    assert all(t["attempts"] == 1 for t in st.values()), {n: t["attempts"] for n, t in st.items()}
    for name in [f"quick-{i}" for i in range(4)] + [f"slow-{i}" for i in range(4)] + ["final"]:
        lines = (rec / name).read_text().split()
        assert lines.count("start") == 1 and lines.count("end") == 1, (name, lines)


def test_timeout_and_interrupt_stop_ray_tasks(tmp_path, ray_cluster):
    """A task past its timeout is stopped (cancel from the engine's thread); Ctrl-C stops the rest."""
    marker = tmp_path / "marker"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: too-long
            command: sleep 60; touch {marker}-too-long
            timeout: 3s
    """)
    p = ray_run(spec, ray_cluster, tmp_path / "st", "--grace", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    st = by_name(tmp_path / "st")["too-long"]
    assert st["state"] == "failed" and st["reason"] == "timeout", st
    assert st["duration_s"] < 30

    spec2 = write_spec(tmp_path / "two", f"""
        tasks:
          - name: long-{{i}}
            matrix: {{i: [0, 1]}}
            command: echo started; sleep 60; touch {marker}-{{i}}
    """)
    state = tmp_path / "st2"
    ctl = start_rota("run", spec2, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state,
                     "--grace", "2")
    try:
        def both_started() -> bool:
            logs = [state / "logs" / f"long-{i}" / "attempt-1.log" for i in range(2)]
            return all(p.exists() and "started" in p.read_text() for p in logs)

        wait_for(both_started, timeout=120, interval=0.2)
        os.kill(ctl.pid, signal.SIGINT)
        assert ctl.wait(timeout=60) == 130
    finally:
        if ctl.poll() is None:
            os.kill(ctl.pid, signal.SIGKILL)
    st2 = by_name(state)
    assert all(t["state"] == "interrupted" for t in st2.values()), st2
    for i in range(2):
        rc = Path(st2[f"long-{i}"]["log_path"] + ".rc").read_text().strip()
        assert rc == "143", rc  # SIGTERM reached the task's process group
    assert not list(tmp_path.glob("marker*"))


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


def test_queue_ahead_keeps_ray_fed_and_records_real_starts(tmp_path, ray_cluster):
    """rota books one extra CPU slot per cluster CPU: 8 one-CPU tasks on 4 CPUs are all submitted at
    once, Ray runs at most 4 together, and each attempt's recorded run starts when Ray started it."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: {PY} {REC} {rec} t-{{i}} 2.0
            matrix: {{i: [0, 1, 2, 3, 4, 5, 6, 7]}}
    """)
    state = tmp_path / "st"
    p = ray_run(spec, ray_cluster, state)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = read_records(rec)
    assert len(recs) == 8
    assert _max_overlap([(r["start"], r["end"]) for r in recs]) <= 4  # Ray never ran more than its CPUs
    import sqlite3

    with sqlite3.connect(state / "state.db") as db:
        launched = dict(db.execute("SELECT task, min(ts) FROM events WHERE kind='launching' GROUP BY task"))
        ended = dict(db.execute("SELECT task, max(ts) FROM events WHERE kind='succeeded' GROUP BY task"))
    assert _max_overlap([(launched[n], ended[n]) for n in launched]) > 4  # submitted ahead of capacity
    tasks = by_name(state)
    by_rec = {r["name"]: r for r in recs}
    for name, t in tasks.items():
        # The run counts from the real start (the recorder starts just after it), not the submission.
        assert t["started_at"] <= by_rec[name]["start"] < t["started_at"] + 1.5, (t, by_rec[name])
        assert t["duration_s"] < 3.5, t
    waited = [n for n in tasks if tasks[n]["started_at"] - launched[n] > 1.0]
    assert waited, "no attempt waited in Ray's queue"


def test_time_waiting_in_rays_queue_does_not_count_against_the_timeout(tmp_path, ray_cluster):
    """4 blockers fill the cluster's CPUs for 4s; a 1s task with a 2s timeout, submitted ahead,
    waits in Ray's queue longer than its timeout and still succeeds."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: block-{{i}}
            command: {PY} {REC} {rec} block-{{i}} 4.0
            matrix: {{i: [0, 1, 2, 3]}}
            priority: 10
          - name: short
            command: {PY} {REC} {rec} short 1.0
            timeout: 2s
    """)
    state = tmp_path / "st"
    p = ray_run(spec, ray_cluster, state, "--grace", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    recs = {r["name"]: r for r in read_records(rec)}
    first_block_end = min(recs[f"block-{i}"]["end"] for i in range(4))
    assert recs["short"]["start"] >= first_block_end - 0.5  # it waited for a CPU ...
    import sqlite3

    with sqlite3.connect(state / "state.db") as db:
        (launched,) = db.execute("SELECT min(ts) FROM events WHERE task='short' AND kind='launching'").fetchone()
    assert recs["short"]["end"] - launched > 2.0  # ... longer than its timeout, and was not stopped
    assert by_name(state)["short"]["state"] == "succeeded"


def test_status_shows_attempts_waiting_in_rays_queue_as_queued(tmp_path, ray_cluster):
    """4 blockers hold the cluster's 4 CPUs; 2 more tasks are booked ahead and wait in Ray's queue:
    `rota status` says queued (no duration) until each starts, and their durations count from then.
    Again on a rerun, where each attempt's log already exists from the first run."""
    import json

    rec = tmp_path / "rec"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: block-{{i}}
            command: touch {rec}/started-{{i}}; sleep 4
            matrix: {{i: [0, 1, 2, 3]}}
            priority: 10
          - name: later-{{i}}
            command: sleep 0.5
            matrix: {{i: [0, 1]}}
    """)
    state = tmp_path / "st"
    seen: dict[str, dict] = {}

    def waiting() -> bool:
        if len(list(rec.iterdir())) < 4:
            return False
        p = rota("status", "--json", "--state-dir", state)
        tasks = {t["name"]: t for t in json.loads(p.stdout)["tasks"]} if p.returncode == 0 else {}
        seen.clear()
        seen.update(tasks)
        blocking = all(tasks.get(f"block-{i}", {}).get("queued") is False for i in range(4))  # start seen
        return blocking and all(tasks.get(f"later-{i}", {}).get("state") == "running" for i in range(2))

    for extra in ((), ("--rerun", "*")):
        shutil.rmtree(rec, ignore_errors=True)
        rec.mkdir()
        run = start_rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state,
                         *extra)

        try:
            wait_for(waiting, timeout=120, interval=0.2)
            for i in range(2):
                t = seen[f"later-{i}"]
                assert t["queued"] is True and t["reason"] == "queued in ray" and t["duration_s"] is None, t
            for i in range(4):
                t = seen[f"block-{i}"]
                assert t["state"] == "running" and t["queued"] is False and t["reason"] == "", t
            only = rota("status", "--json", "--state", "queued", "--state-dir", state)
            assert sorted(t["name"] for t in json.loads(only.stdout)["tasks"]) == ["later-0", "later-1"], only.stdout
            out, _ = run.communicate(timeout=180)
        finally:
            run.kill()
        assert run.returncode == 0, out
        final = by_name(state)
        for i in range(2):
            t = final[f"later-{i}"]
            # ran 0.5 s once a blocker's CPU freed: its duration is that, not the wait in Ray's queue
            assert t["state"] == "succeeded" and t["queued"] is False and t["duration_s"] < 2.5, t
            assert t["started_at"] >= min(final[f"block-{j}"]["ended_at"] for j in range(4)) - 0.5, (t, final)


def test_fail_fast_keeps_attempts_queued_ahead_in_ray_from_starting(tmp_path, ray_cluster):
    """4 blockers hold the cluster's 4 CPUs; 4 more tasks wait in Ray's queue (booked ahead); a
    0-CPU task fails meanwhile: --fail-fast halts, and the queued tasks never run (left pending)."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: block-{{i}}
            command: touch {rec}/started-{{i}}; {PY} {REC} {rec} block-{{i}} 3.0
            matrix: {{i: [0, 1, 2, 3]}}
            priority: 10
          - name: bad
            # fails once every blocker has started (Ray starts a new job's workers two at a time)
            command: for n in $(seq 600); do [ $(ls {rec} | grep -c started-) -ge 4 ] && exit 3; sleep 0.1; done; exit 4
            cpus: 0
            priority: 10
          - name: later-{{i}}
            command: {PY} {REC} {rec} later-{{i}} 0.1
            matrix: {{i: [0, 1, 2, 3]}}
    """)
    state = tmp_path / "st"
    p = ray_run(spec, ray_cluster, state, "--fail-fast")
    assert p.returncode == 1, p.stdout + p.stderr
    ran = {r["name"] for r in read_records(rec)}
    assert ran == {f"block-{i}" for i in range(4)}, ran
    st = by_name(state)
    assert st["bad"]["state"] == "failed" and st["bad"]["exit_code"] == 3, st["bad"]
    assert all(st[f"later-{i}"]["state"] == "pending" for i in range(4)), st
    import sqlite3

    with sqlite3.connect(state / "state.db") as db:
        booked = db.execute("SELECT count(*) FROM events WHERE kind='launching' AND task LIKE 'later-%'").fetchone()
    assert booked[0] == 4  # they had been submitted (queued ahead), yet none started
    for i in range(4):  # each such attempt's log says why it never ran ('rota logs' found no file)
        log = (state / "logs" / f"later-{i}" / "attempt-1.log").read_text()
        assert "never started" in log and "launched nothing more" in log, log
    p2 = ray_run(spec, ray_cluster, state)
    assert p2.returncode == 1, p2.stdout + p2.stderr  # bad fails again; the rest now runs
    assert {f"later-{i}" for i in range(4)} <= {r["name"] for r in read_records(rec)}


def _supervisors(address: str) -> set[str]:
    code = ("import sys, ray; from ray.util import list_named_actors; "
            "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
            "print('\\n'.join(str(a.get('name') if isinstance(a, dict) else a) "
            "for a in list_named_actors(all_namespaces=True)))")
    import subprocess

    p = subprocess.run([PY, "-c", code, address], capture_output=True, text=True, timeout=120, check=True)
    return {n for n in p.stdout.split() if n.startswith("rota-supervisor-")}


def test_crash_before_handle_commit_finds_ray_attempts_again(tmp_path, ray_cluster):
    """Handles of Ray attempts are committed with the next round, so a controller killed in between
    leaves them ``launching`` without one: the rerun asks the old supervisor by state folder and
    attempt key and adopts both the running attempt and the one that ended; neither runs twice."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: quick, command: "{PY} {REC} {rec} quick 0.1"}}
          - {{name: slow, command: "{PY} {REC} {rec} slow 6"}}
    """)
    state = tmp_path / "st"
    ctl = start_rota("run", spec, "--backend", "ray", "--address", ray_cluster, "--plain", "--state-dir", state)
    try:
        def quick_done_slow_running() -> bool:
            if not (state / "state.db").exists():
                return False
            st = by_name(state)
            return st["quick"]["state"] == "succeeded" and st["slow"]["state"] == "running"

        wait_for(quick_done_slow_running, timeout=120, interval=0.2)
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(timeout=30)
    finally:
        if ctl.poll() is None:
            os.kill(ctl.pid, signal.SIGKILL)
    forget_handles(state)
    p = ray_run(spec, ray_cluster, state)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("adopted") == 2, p.stdout
    assert sorted(r["name"] for r in read_records(rec)) == ["quick", "slow"]
    assert {n: (t["state"], t["attempts"]) for n, t in by_name(state).items()} == {
        "quick": ("succeeded", 1), "slow": ("succeeded", 1)}


def test_unrecorded_ray_attempt_whose_supervisor_is_gone_is_found_by_its_exit_status_file(tmp_path, ray_cluster):  # noqa: E501
    """The attempt ended and its supervisor exited: the ``<log>.rc`` file is what is left, and is enough."""
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: once, command: "{PY} {REC} {rec} once 0.1 3"}}
    """)
    state = tmp_path / "st"
    before = _supervisors(ray_cluster)
    p = ray_run(spec, ray_cluster, state)
    assert p.returncode == 1, p.stdout + p.stderr  # exit 3: recorded as failed
    ours = _supervisors(ray_cluster) - before
    wait_for(lambda: not (_supervisors(ray_cluster) & ours), timeout=60, interval=0.5)
    forget_handles(state)
    p = ray_run(spec, ray_cluster, state)
    assert "adopted" in p.stdout, p.stdout + p.stderr
    assert [r["name"] for r in read_records(rec)] == ["once"]  # not run again
    t = by_name(state)["once"]
    assert (t["state"], t["attempts"], t["exit_code"]) == ("failed", 1, 3), t


def test_an_address_where_no_ray_answers_is_one_clear_line_at_once(tmp_path):
    """Checked before ``ray.init`` (which would retry for minutes); nothing is started or written."""
    import socket
    import time

    from tests.ray_cluster import require_ray

    require_ray()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    spec = write_spec(tmp_path, """
        tasks:
          - {name: a, command: "echo hi"}
    """)
    t0 = time.monotonic()
    p = rota("run", spec, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--plain", timeout=120)
    assert time.monotonic() - t0 < 60
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip() == (f"rota: error: no Ray cluster answers at 127.0.0.1:{port} (Connection refused); "
                                "start one with 'ray start --head' or pass --address HOST:PORT"), p.stderr
    assert not (tmp_path / ".rota").exists()
