"""``rota serve``'s reader notices a killed controller at its next read, although nothing in the
state folder changed (a kill -9 writes nothing: only the lock's flock goes), and prints an address
others can open when it listens on every interface."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rota.cli.serve_cmd import url_of
from tests.helpers import start_rota, wait_for, write_spec

pytest.importorskip("starlette")


def test_a_killed_controller_shows_dead_within_two_seconds(tmp_path: Path) -> None:
    from rota.serve.cache import StateCache

    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"tasks:\n  - name: a\n    command: 'while [ ! -e {gate} ]; do sleep 0.05; done'\n")
    run = start_rota("run", spec, "--plain", "--gpus", "none")
    cache = StateCache(tmp_path / ".rota", status_interval_s=0.2)
    try:
        wait_for(lambda: (d := cache.status().data) is not None and d["counts"]["running"] == 1
                 and d["controller"]["alive"], timeout=60)
        files = cache._db_files()
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
        killed = time.monotonic()
        wait_for(lambda: not cache.status().data["controller"]["alive"], timeout=5)  # type: ignore[index]
        assert time.monotonic() - killed < 2.0
        assert cache._db_files()[:2] == files[:2]  # the database files did not change: the lock told
    finally:
        gate.touch()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)


def test_a_wildcard_bind_prints_this_machines_name() -> None:
    assert url_of("0.0.0.0", 8765, "tok", hostname="gpu-box") == "http://gpu-box:8765/?token=tok"
    assert url_of("::", 8765, None, hostname="gpu-box") == "http://gpu-box:8765/"
    assert url_of("127.0.0.2", 9000, "t") == "http://127.0.0.2:9000/?token=t"
    assert url_of("::1", 9000, None) == "http://[::1]:9000/"
