"""Attempts have identity: numbers never restart, each attempt has its own log and a store id.

Real ``rota`` processes, real signals, real SQLite (issue 18, item 2).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from tests.helpers import by_name, rota, start_rota, status, wait_for, write_spec

# Each run prints one start line, the attempt's number and id, then (unless stopped) one end line.
TASK = 'echo "start $ROTA_ATTEMPT id=$ROTA_ATTEMPT_ID"; [ -e {gate} ] || sleep 60; echo "end $ROTA_ATTEMPT"'


def test_rerun_and_ctrl_c_give_new_attempts_each_with_its_own_log(tmp_path: Path) -> None:
    """run, --rerun, --rerun stopped by Ctrl-C, run: attempts 1, 2, 3, 4; attempt-N.log holds exactly one run each
    (attempt 3's: the one Ctrl-C stopped); ``rota logs --attempt N`` reaches each; ids are distinct."""
    gate = tmp_path / "gate"
    gate.touch()
    spec = write_spec(tmp_path, f"tasks:\n  - name: t\n    command: '{TASK.format(gate=gate)}'\n")
    sd = tmp_path / ".rota"
    logs = sd / "logs" / "t"
    assert rota("run", spec, "--plain").returncode == 0
    assert rota("run", spec, "--plain", "--rerun", "t").returncode == 0
    gate.unlink()  # the third run waits in its task until Ctrl-C
    proc = start_rota("run", spec, "--plain", "--grace", "1", "--rerun", "t")
    wait_for(lambda: (logs / "attempt-3.log").exists() and "start" in (logs / "attempt-3.log").read_text(), 30)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert by_name(sd)["t"]["state"] == "interrupted"
    gate.touch()
    assert rota("run", spec, "--plain").returncode == 0

    texts = {n: (logs / f"attempt-{n}.log").read_text().splitlines() for n in (1, 2, 3, 4)}
    marks = {n: [line.split(" id=")[0] for line in texts[n] if line.startswith(("start", "end"))] for n in texts}
    assert marks == {1: ["start 1", "end 1"], 2: ["start 2", "end 2"], 3: ["start 3"], 4: ["start 4", "end 4"]}
    assert not (logs / "attempt-5.log").exists()
    ids = [int(texts[n][0].split(" id=")[1]) for n in (1, 2, 3, 4)]
    assert len(set(ids)) == 4 and all(i > 0 for i in ids), ids

    # rota status --json: `attempt` is the latest attempt's number; `attempts` still counts since the reset.
    t = status(sd)["tasks"][0]
    assert (t["attempt"], t["attempts"]) == (4, 1), t
    assert t["log_path"] == str(logs / "attempt-4.log")

    # Every earlier attempt is reachable, and the store's ids are the ones the tasks saw.
    for n in (1, 2, 3, 4):
        p = rota("logs", "t", str(spec), "--attempt", str(n))
        assert p.returncode == 0 and p.stdout.splitlines() == texts[n], (n, p.stdout, p.stderr)
    conn = sqlite3.connect(sd / "state.db")
    rows = conn.execute("SELECT attempt, id, state FROM attempts WHERE task='t' ORDER BY attempt").fetchall()
    conn.close()
    assert [(a, i) for a, i, _ in rows] == list(zip((1, 2, 3, 4), ids, strict=True))
    assert [s for _, _, s in rows] == ["succeeded", "succeeded", "interrupted", "succeeded"]


def test_a_retry_within_a_run_counts_on(tmp_path: Path) -> None:
    """Retries are attempts too: a task failing once then succeeding has attempt-1.log and attempt-2.log;
    a --rerun after that is attempt 3, and `attempts` counts from the reset (1) while `attempt` is 3."""
    flag = tmp_path / "failed-once"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: flaky
            command: 'echo "try $ROTA_ATTEMPT"; [ -e {flag} ] || (touch {flag}; exit 3)'
            retries: 1
    """)
    sd = tmp_path / ".rota"
    assert rota("run", spec, "--plain", "--retry-delay", "0").returncode == 0
    t = status(sd)["tasks"][0]
    assert (t["attempt"], t["attempts"]) == (2, 2)
    assert rota("run", spec, "--plain", "--rerun", "flaky").returncode == 0
    t = status(sd)["tasks"][0]
    assert (t["attempt"], t["attempts"]) == (3, 1)
    logs = sd / "logs" / "flaky"
    assert [(logs / f"attempt-{n}.log").read_text() for n in (1, 2, 3)] == ["try 1\n", "try 2\n", "try 3\n"]
