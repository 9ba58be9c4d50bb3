"""A user steering a long run (helper 'longrun'): what the controller shows after each step.

Real controllers (``rota run`` in the background), the real CLI, real SQLite; no mocks.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import by_name, open_gate, rota, start_rota, wait_for, write_spec


def test_a_drained_run_predicts_no_start_for_its_pending_tasks(tmp_path: Path) -> None:
    """After ``rota stop --drain`` the run launches nothing more: a pending task must not be shown
    as starting "now" or "in ~5s" (status --json, rota why), and the ETA covers the running task alone."""
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: long
            command: 'while [ ! -e {gate} ]; do sleep 0.05; done'
            gpus: 1
            estimate: 30s
            priority: 100
          - name: later
            command: 'true'
            gpus: 1
            estimate: 1m
    """)
    sd = tmp_path / ".rota"
    run = start_rota("run", spec, "--gpus", "1x80GB", "--cpus", "4", "--plain")
    try:
        wait_for(lambda: sd.joinpath("state.db").exists()
                 and by_name(sd)["later"]["predicted_start_s"] is not None, timeout=60)
        out = rota("stop", spec, "--drain", check=True).stdout
        assert "launches nothing more" in out, out

        def drained() -> bool:
            t = by_name(sd)["later"]
            return "launches nothing more" in (t["reason"] or "") and t["predicted_start_s"] is None
        wait_for(drained, timeout=20)
        why = rota("why", "later", "--state-dir", sd, check=True).stdout
        assert "predicted start: none: this run launches nothing more" in why, why
    finally:
        out = open_gate(run, gate)
    assert run.returncode == 1, out
    assert by_name(sd)["later"]["state"] == "pending"


def test_the_dashboard_keeps_a_gpu_given_back_while_its_task_runs(tmp_path: Path) -> None:
    """``rota run SPEC --gpus 0`` on a live run of two GPUs gives GPU 1 back; the task running
    there finishes there. The dashboard must keep showing GPU 1 (marked given back) with that task
    until it ends, not drop the GPU while its task still runs."""
    import threading

    import rota as api
    from rota.ui.dashboard import render
    from rota.ui.snapshot import snapshot
    from tests.helpers import SnapshotUI

    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: w-{{i}}
            matrix: {{i: [0, 1]}}
            command: 'while [ ! -e {gate} ]; do sleep 0.05; done'
            gpus: 1
    """)

    class Recording(SnapshotUI):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[tuple[int, ...], dict[int, tuple[tuple[str, ...], bool]], str]] = []

        def _record(self, engine: object) -> None:
            from io import StringIO

            from rich.console import Console

            s = snapshot(engine)  # type: ignore[arg-type]
            buf = StringIO()
            Console(file=buf, width=160).print(render(s))
            self.seen.append((tuple(engine.machine.gpu_indices),  # type: ignore[attr-defined]
                              {g.index: (g.tasks, g.given_back) for g in s.gpus}, buf.getvalue()))

    ui = Recording()
    sd = tmp_path / ".rota"
    seen: dict[str, str] = {}

    def steer() -> None:  # another terminal, while the run goes on in this (main) thread
        try:
            wait_for(lambda: sd.joinpath("state.db").exists()
                     and {x["state"] for x in by_name(sd).values()} == {"running"}, timeout=60)
            seen["on1"] = next(n for n, x in by_name(sd).items() if x["gpus"] == [1])
            seen["out"] = rota("run", spec, "--gpus", "0", check=True).stdout
            wait_for(lambda: any(m == (0,) for m, _, _ in ui.seen[-3:]), timeout=20)
        finally:
            gate.touch()

    t = threading.Thread(target=steer)
    t.start()
    rc = api.run(str(spec), gpus="2x80GB", cpus=4, ui=ui).exit_code
    t.join(timeout=120)
    assert rc == 0
    assert "GPUs 0:80GB" in seen["out"], seen
    after = [(gpus, text) for m, gpus, text in ui.seen if m == (0,) and len(gpus) > 1]
    assert after, [g for _, g, _ in ui.seen[-3:]]
    gpus, text = after[0]
    assert gpus[1] == ((seen["on1"],), True), gpus
    assert "given back" in text, text


def test_the_waiting_table_keeps_names_and_starts_on_an_80_column_terminal() -> None:
    """On an 80-column terminal the dashboard's waiting table cut names to 'basel…' and dropped the
    'starts' column, the long reasons taking the width: the reasons must give way instead."""
    import time

    from rich.console import Console

    from rota.ui.dashboard import render
    from rota.ui.snapshot import GpuView, Snapshot

    now = time.time()
    why = "no 1 CPU slot free: 0 of 8 free (the run's --cpus); resources are reserved for it from ~20:06:36"
    snap = Snapshot(now=now, started_at=now - 5, gpus=(GpuView(0, "H100", 80 * 2**30, 0, ()),), cpus_total=8,
                    cpus_booked=8, memory_total=2**30, memory_booked=0, running=(), counts={"pending": 2}, total=2,
                    eta_s=60.0, failures=(), recent=(),
                    waiting=(("baseline-random", why, now + 75), ("train-medium-12", why, None)))
    console = Console(width=80, record=True, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    for needle in ("baseline-random", "train-medium-12", "starts", "in ~1m15s", "no 1 CPU slot free"):
        assert needle in text, (needle, text)


def test_a_closed_terminal_sighup_leaves_the_tasks_to_the_next_run(tmp_path: Path) -> None:
    """A dropped SSH session or ``tmux kill-session`` sends the controller SIGHUP: it ends as after
    ``kill -9`` (docs/running.md, crash safety): the task keeps running, and the next ``rota run``
    adopts it and records its result, with no second attempt."""
    import signal

    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: long
            command: 'while [ ! -e {gate} ]; do sleep 0.05; done; echo ROTA_METRIC acc=0.5'
    """)
    sd = tmp_path / ".rota"
    # A terminal's SIGHUP kills by default; under nohup (a CI started that way) it is ignored and
    # the ignore is inherited: the controller here gets the default, as from a real terminal.
    old = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        run = start_rota("run", spec, "--gpus", "none", "--plain")
    finally:
        signal.signal(signal.SIGHUP, old)
    try:
        wait_for(lambda: sd.joinpath("state.db").exists() and by_name(sd)["long"]["state"] == "running", timeout=60)
        os.kill(run.pid, signal.SIGHUP)
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
    assert by_name(sd)["long"]["state"] == "running"  # left running, not interrupted
    again = start_rota("run", spec, "--gpus", "none", "--plain")
    try:
        from tests.helpers import status

        wait_for(lambda: (status(sd).get("controller") or {}).get("pid") == again.pid, timeout=60)
        gate.touch()
        out, _ = again.communicate(timeout=120)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, 9)
            again.wait()
    assert again.returncode == 0, out
    t = by_name(sd)["long"]
    assert t["state"] == "succeeded" and t["attempt"] == 1 and t["metrics"] == {"acc": 0.5}, t
