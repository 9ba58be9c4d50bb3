"""The dashboard's ETA learns how long tasks really take.

A spec whose estimates are 10x too large: before anything runs, the ETA is
`rota plan --use-history`'s makespan; once some tasks have finished, the ETA
(:func:`rota.plan.eta.remaining_s`, which the dashboard's snapshot calls) is near the
time the run really had left. Checked twice: on a real `rota run`'s store read with
`rota status --json` during the run, and in-process through the dashboard's own
snapshot()/EtaTracker at every refresh of a real run.
"""

from __future__ import annotations

import json
import time

from rota.machine import detect_machine
from rota.plan.estimates import load_history
from rota.plan.eta import Progress, remaining_s
from rota.spec.load import load_spec
from tests.helpers import SnapshotUI, rota, start_rota, status, wait_for, write_spec

SPEC = """
tasks:
  - name: step-{i}
    command: sleep 1
    matrix: {i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
    estimate: 10s          # 10x what it takes
  - name: summary
    command: sleep 0.5
    needs: [step-1, step-2, step-3, step-4, step-5, step-6, step-7, step-8, step-9, step-10]
    estimate: 5s
"""
FLAGS = ("--gpus", "none", "--cpus", "2")


def progress_of(tasks: list[dict]) -> dict[str, Progress]:
    return {t["name"]: Progress(t["state"], t["started_at"], t["ended_at"]) for t in tasks}


def test_eta_from_a_real_runs_store_learns_the_real_durations(tmp_path):
    spec_path = write_spec(tmp_path, SPEC)
    spec = load_spec(str(spec_path))
    machine = detect_machine(gpus="none", cpus=2)
    # At the start: the same figure as `rota plan --use-history` (no history yet: the estimates).
    planned = json.loads(rota("plan", spec_path, *FLAGS, "--use-history", "--json", check=True).stdout)
    assert remaining_s(spec.tasks, machine, {}, time.time()) == planned["makespan_s"] == 55.0

    proc = start_rota("run", spec_path, *FLAGS, "--plain")
    try:
        def some_done() -> bool:
            try:
                return sum(t["state"] == "succeeded" for t in status(tmp_path / ".rota")["tasks"]) >= 4
            except (AssertionError, json.JSONDecodeError):
                return False
        wait_for(some_done, timeout=60)
        tasks = status(tmp_path / ".rota")["tasks"]
        now = time.time()
        eta = remaining_s(spec.tasks, machine, progress_of(tasks), now)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    end = max(t["ended_at"] for t in status(tmp_path / ".rota")["tasks"])
    truth = end - now
    assert eta is not None and abs(eta - truth) <= 0.35 * truth + 1.0, (eta, truth)
    # Unlearned (what the estimates alone say about the same work), it is ~10x off.
    left = {t["name"] for t in tasks if t["state"] != "succeeded"}
    assert sum(10.0 for n in left if n != "summary") / 2 > 3 * truth

    # And after the run, --use-history plans what the run took.
    hist = load_history(tmp_path / ".rota", [t.command for t in spec.tasks])
    again = remaining_s(spec.tasks, machine, {}, time.time(), hist)
    replanned = json.loads(rota("plan", spec_path, *FLAGS, "--use-history", "--json", check=True).stdout)
    assert round(again, 3) == replanned["makespan_s"]


class RecordingUI(SnapshotUI):
    """Builds the dashboard's snapshot at every refresh, as LiveUI does, and keeps (time, ETA
    shown, tasks finished)."""

    def __init__(self) -> None:
        from rota.ui.snapshot import EtaTracker

        super().__init__()
        self.eta = EtaTracker(min_interval_s=0.3)
        self.seen: list[tuple[float, float | None, int]] = []

    def _record(self, engine) -> None:
        from rota.ui.snapshot import snapshot

        s = snapshot(engine, eta=self.eta)
        finished = s.counts.get("succeeded", 0)
        self.seen.append((s.now, s.eta_s, finished))


def test_dashboard_eta_learns_during_a_real_run(tmp_path):
    import rota as api

    spec_path = write_spec(tmp_path, SPEC)
    ui = RecordingUI()
    result = api.run(str(spec_path), gpus="none", cpus=2, ui=ui)
    assert result.exit_code == 0
    end = max(t["ended_at"] for t in status(tmp_path / ".rota")["tasks"])
    first_now, first_eta, _ = ui.seen[0]
    assert first_eta == 55.0  # rota plan --use-history's makespan, before anything ran
    late = [(now, eta) for now, eta, done in ui.seen if 4 <= done < 10 and eta is not None]
    assert late, ui.seen
    for now, eta in late:
        truth = end - now
        assert abs(eta - truth) <= 0.35 * truth + 1.5, (eta, truth)
