"""Why a task waits, and when it will start: real controllers, the real CLI (rota why, rota status).

The controller writes each pending task's reason and predicted start/end (engine/predict.py);
``rota why`` prints them with the per-GPU table and the needs, or computes them from the stored
state and the spec when no controller runs.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from rich.console import Console

import rota as api
from tests.helpers import SnapshotUI, by_name, rota, start_rota, status, wait_for, write_spec

# One 1-GPU task holds GPU 0 until the test lets it go; the 4-GPU task waits for it with a
# reservation, so the long 1-GPU tasks may not take the three idle GPUs; 'after' needs the big one.
SPEC = """
tasks:
  - name: a
    command: 'while [ ! -e {gate} ]; do sleep 0.05; done'
    gpus: 1
    estimate: 20s
    priority: 10
  - name: big
    command: 'true'
    gpus: 4
    estimate: 10s
    priority: 5
  - name: small-{{i}}
    matrix: {{i: [1, 2, 3]}}
    command: 'true'
    gpus: 1
    estimate: 1h
  - name: after
    needs: [big]
    command: 'true'
    estimate: 5s
"""


def _why(sd: Path, task: str, *more: str) -> str:
    p = rota("why", task, "--state-dir", sd, *more, check=True)
    return p.stdout


def test_why_names_the_reservation_needs_and_holds_during_a_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, SPEC.format(gate=gate))
    sd = tmp_path / "state"
    run = start_rota("run", spec, "--state-dir", sd, "--gpus", "4x80GB", "--cpus", "8", "--plain")
    try:
        wait_for(lambda: (sd / "state.db").exists() and "reserved for big" in by_name(sd)["small-1"]["reason"],
                 timeout=60)
        data = status(sd)
        tasks = {t["name"]: t for t in data["tasks"]}
        pending = [t for t in data["tasks"] if t["state"] == "pending"]
        assert {t["name"] for t in pending} == {"big", "small-1", "small-2", "small-3", "after"}
        for t in pending:  # every pending task: a reason and a prediction
            assert t["reason"], t
            assert t["predicted_start_s"] is not None and t["predicted_end_s"] is not None, t
            assert t["predicted_end_s"] >= t["predicted_start_s"] >= tasks["a"]["started_at"]  # epoch seconds
        assert tasks["a"]["predicted_start_s"] == tasks["a"]["started_at"]  # a running task: its real start
        assert tasks["a"]["predicted_end_s"] > tasks["a"]["started_at"]  # and its predicted end
        # The forecast's order is the simulation's: big first (when a ends), the long small tasks after
        # it, 'after' after big.
        assert tasks["big"]["predicted_start_s"] <= tasks["small-1"]["predicted_start_s"]
        assert tasks["after"]["predicted_start_s"] >= tasks["big"]["predicted_end_s"]
        assert tasks["big"]["predicted_start_s"] >= tasks["a"]["predicted_end_s"] - 0.5
        assert tasks["after"]["reason"] == "waiting for its need: big (pending)"
        assert tasks["big"]["reason"].startswith("no 4 idle GPUs: 3 have it")

        # rota why names the reservation, its holder and the GPUs.
        small = _why(sd, "small-1")
        assert small.startswith("small-1: pending\nwhy: free resources are reserved for big (4 GPUs) until ~")
        assert "it would not end before then (1h00m)" in small and "predicted start: " in small
        gpu_lines = small.split("GPUs:\n", 1)[1].splitlines()
        assert gpu_lines[0].split() == ["GPU", "size", "booked", "free", "by"]
        assert gpu_lines[1].split() == ["0", "80GB", "80GB", "0B", "a"]
        assert gpu_lines[3].split() == ["2", "80GB", "0B", "80GB", "-"]
        assert "reserved for it from ~" in _why(sd, "big")
        after = _why(sd, "after")
        assert "why: waiting for its need: big (pending)" in after and "needs:\n  big  pending\n" in after
        as_json = json.loads(_why(sd, "small-2", "--json"))
        assert as_json["source"] == "controller" and "reserved for big" in as_json["reason"]
        assert as_json["gpus"][0]["tasks"] == ["a"] and as_json["predicted_start"] is not None

        # A held task says so (rota hold, from another terminal), and has no predicted start.
        assert rota("hold", "small-3", "--state-dir", sd).returncode == 0
        wait_for(lambda: by_name(sd)["small-3"]["reason"].startswith("held"), timeout=30)
        held = by_name(sd)["small-3"]
        assert held["predicted_start_s"] is None and "rota release small-3" in held["reason"]
        assert _why(sd, "small-3").startswith("small-3: pending (held)\nwhy: held")
        line = next(ln for ln in rota("status", "--state-dir", sd, check=True).stdout.splitlines()
                    if ln.startswith("  small-3 "))
        assert line.split()[1:4] == ["no", "prediction", "held:"], line
        # A task that needs a held one says so, and has no prediction either.
        assert rota("hold", "big", "--state-dir", sd).returncode == 0
        wait_for(lambda: by_name(sd)["after"]["reason"] == "waiting for its need: big (held)", timeout=30)
        assert by_name(sd)["after"]["predicted_start_s"] is None
        assert "needs:\n  big  held\n" in _why(sd, "after")
        assert rota("release", "small-3", "big", "--state-dir", sd).returncode == 0
        table = rota("status", "--state-dir", sd, check=True).stdout
        assert "pending, why they wait (rota why TASK):" in table and "  after  " in table

        gate.touch()
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, out
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
            run.wait()
    # Nothing pending: no reasons block, no predictions.
    final = status(sd)
    assert all(t["predicted_start_s"] is None and t["predicted_end_s"] is None for t in final["tasks"])
    assert "why they wait" not in rota("status", "--state-dir", sd, check=True).stdout
    assert "it is not waiting" in _why(sd, "big")


def test_why_without_a_controller_computes_from_the_state_and_the_spec(tmp_path: Path) -> None:
    """A --fail-fast run stops launching after a failure: the tasks it leaves pending are explained
    by the controller as it stops, and by rota why afterwards from the stored state and the spec."""
    spec = write_spec(tmp_path, """
        tasks:
          - name: bad
            command: exit 3
            priority: 10
            cpus: 4
          - name: later-{i}
            matrix: {i: [1, 2]}
            command: 'true'
            gpus: 1
            gpu_memory: 50GB
          - name: agg
            needs: ["later-*"]
            command: 'true'
    """)
    sd = tmp_path / "state"
    p = rota("run", spec, "--state-dir", sd, "--gpus", "1x80GB", "--cpus", "4", "--fail-fast", "--plain")
    assert p.returncode == 1, p.stdout + p.stderr
    tasks = by_name(sd)
    assert tasks["later-1"]["state"] == "pending"
    assert tasks["later-1"]["reason"].startswith("the run's limit: the run launches nothing more")
    assert tasks["agg"]["reason"] == "waiting for 2 needs: later-1 (pending), later-2 (pending)"
    why = _why(sd, "later-2")
    # Computed now, as the next rota run would decide first: later-1 starts, later-2 waits for
    # room on the one GPU (50GB + 50GB > 80GB).
    assert why.startswith("later-2: pending\nwhy: no GPU with 50GB free (free: GPU 0 30GB)"), why
    assert "(no controller runs: computed from the stored state and the spec" in why
    assert "resources are free: it starts at the next scheduling round" in _why(sd, "later-1")
    agg = json.loads(_why(sd, "agg", "--json"))
    assert agg["source"] == "computed" and agg["needs"] == [{"name": "later-1", "state": "pending"},
                                                            {"name": "later-2", "state": "pending"}]
    assert agg["predicted_start"] is not None and agg["predicted_end"] > agg["predicted_start"]
    # Bad input: a task the run does not have (exit 2, one line).
    missing = rota("why", "later-3", "--state-dir", sd)
    assert missing.returncode == 2 and missing.stderr.startswith("rota: error: ") and "did you mean" in missing.stderr
    # Nothing close: the line names some of the run's tasks, as 'rota hold' does.
    far = rota("why", "zzzzzzzz", "--state-dir", sd)
    assert far.returncode == 2 and "its tasks are named " in far.stderr and len(far.stderr.strip().splitlines()) == 1


class _Frames(SnapshotUI):
    """Renders the dashboard at every refresh, as LiveUI does, and keeps the snapshots."""

    def __init__(self) -> None:
        super().__init__()
        self.snaps: list = []

    def _record(self, engine) -> None:
        from rota.ui.dashboard import render
        from rota.ui.snapshot import snapshot
        from rota.ui.view import forecasts

        s = snapshot(engine)
        fc = forecasts(engine)
        f = fc.forecast if fc is not None else None
        self.snaps.append((s, f, render(s)))


def test_the_dashboard_shows_reasons_and_the_forecasts_eta(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, SPEC.format(gate=gate))
    ui = _Frames()

    def open_gate() -> None:  # once the dashboard has explained the waiting tasks
        wait_for(lambda: any(any("reserved for big" in w[1] for w in s.waiting) for s, _, _ in ui.snaps[-3:]),
                 timeout=60, interval=0.1)
        gate.touch()

    opener = threading.Thread(target=open_gate, daemon=True)
    opener.start()
    try:
        result = api.run(api.load_spec(str(spec)), gpus="4x80GB", cpus=8, ui=ui)
    finally:
        gate.touch()
    assert result.exit_code == 0
    opener.join(timeout=5)
    s, f, frame = next((s, f, fr) for s, f, fr in ui.snaps if any("reserved for big" in w[1] for w in s.waiting))
    names = [w[0] for w in s.waiting]
    assert names[0] == "big" and set(names) <= {"big", "small-1", "small-2", "small-3", "after"}
    assert all(w[2] is not None for w in s.waiting)  # each with its predicted start
    # The ETA is the forecast's makespan, counted down from when it was made.
    assert f is not None and f.makespan_s is not None
    assert abs(s.eta_s - max(f.makespan_s - (s.now - f.at), 0.0)) < 1e-6
    text = io.StringIO()
    Console(file=text, width=200, color_system=None).print(frame)
    out = text.getvalue()
    assert "waiting" in out and "reserved for big (4 GPUs)" in out and "in ~" in out


def test_a_retry_waiting_out_its_back_off_says_until_when_and_after_what(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        tasks:
          - name: flaky
            command: exit 7
            retries: 1
    """)
    sd = tmp_path / "state"
    run = start_rota("run", spec, "--state-dir", sd, "--gpus", "none", "--plain", "--retry-delay", "60")
    try:
        wait_for(lambda: (sd / "state.db").exists() and "back-off" in by_name(sd)["flaky"]["reason"], timeout=60)
        t = by_name(sd)["flaky"]
        assert t["state"] == "pending" and t["reason"].startswith("retry back-off until ")
        assert t["reason"].endswith(", after: exit 7") and t["predicted_start_s"] >= t["ended_at"] + 59
        assert "why: retry back-off until " in _why(sd, "flaky")
        assert rota("stop", "--state-dir", sd).returncode == 0
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
