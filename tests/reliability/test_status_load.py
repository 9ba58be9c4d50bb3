"""Readers during a run: ``rota status --json`` and ``rota.status()`` in loops never see an error."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from rota import api
from tests.helpers import rota, start_rota, write_spec


def test_status_readers_during_a_run_never_fail(tmp_path: Path) -> None:
    n = 600
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: sleep 0.05
            matrix: {{i: {list(range(n))}}}
    """)
    sd = tmp_path / ".rota"
    stop = threading.Event()
    errors: list[str] = []
    calls = {"cli": 0, "api": 0}

    def cli_reader() -> None:
        while not stop.is_set():
            if not (sd / "state.db").exists():
                continue
            p = rota("status", "--json", "--state-dir", sd)
            calls["cli"] += 1
            if p.returncode != 0:
                errors.append(f"cli exit {p.returncode}: {p.stderr}")
                continue
            data = json.loads(p.stdout)
            if len(data["tasks"]) not in (0, n):
                errors.append(f"cli saw {len(data['tasks'])} tasks")

    def api_reader() -> None:
        while not stop.is_set():
            if not (sd / "state.db").exists():
                continue
            try:
                data = api.status(state_dir=sd)
                calls["api"] += 1
                if sum(data["counts"].values()) not in (0, n):
                    errors.append(f"api counts {data['counts']}")
            except Exception as e:  # noqa: BLE001 - any error is the finding
                errors.append(f"api {type(e).__name__}: {e}")
            stop.wait(0.01)

    readers = [threading.Thread(target=cli_reader), threading.Thread(target=api_reader)]
    proc = start_rota("run", spec, "--plain", "--gpus", "none", "--cpus", "8")
    for r in readers:
        r.start()
    out, _ = proc.communicate(timeout=240)
    stop.set()
    for r in readers:
        r.join()
    assert proc.returncode == 0, out
    assert errors == []
    assert calls["cli"] >= 1 and calls["api"] >= 5, calls  # a loaded 2-core CI box is slow
    assert api.status(state_dir=sd)["counts"]["succeeded"] == n
