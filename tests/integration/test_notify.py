"""Notifications and hook commands (issue 19, item 4): real runs, a real local HTTP endpoint
(apprise's ``json://``), real hook processes; the run's log is read from the store."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from rota.engine.notify import FLUSH_S, run_hook
from tests.helpers import rota, start_rota, wait_for, write_spec

pytest.importorskip("apprise")


class _Endpoint(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages: list[dict] = []

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server_address[1]}/rota"


class _Handler(BaseHTTPRequestHandler):
    server: _Endpoint

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.messages.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def _events(state_dir: Path, kinds: tuple[str, ...]) -> list[tuple[str | None, str, dict]]:
    con = sqlite3.connect(state_dir / "state.db")
    try:
        marks = ",".join("?" * len(kinds))
        rows = con.execute(f"SELECT task, kind, data FROM events WHERE kind IN ({marks}) ORDER BY seq", kinds).fetchall()
    finally:
        con.close()
    return [(t, k, json.loads(d)) for t, k, d in rows]


def _run(spec: Path, *extra: str) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = rota("run", spec, "--gpus", "none", "--plain", "--retry-delay", "0", *extra, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def test_a_task_that_failed_for_good_sends_one_message_and_the_run_end_one(tmp_path, endpoint):
    spec = write_spec(tmp_path, f"""\
        name: nightly
        notify: {{urls: ["{endpoint.url}"], events: [failed, finished]}}
        tasks:
          - {{name: ok, command: "true"}}
          - {{name: bad, command: "exit 3", retries: 1}}
          - {{name: after, command: "true", needs: [bad]}}
    """)
    code, out, _ = _run(spec)
    assert code == 1, out
    # The run's end waited for both; a retried attempt sent nothing, the skipped task nothing.
    titles = [m["title"] for m in endpoint.messages]
    assert len(titles) == 2, endpoint.messages
    failed = [m for m in endpoint.messages if "task bad failed" in m["title"]]
    assert len(failed) == 1 and "after 2 attempt(s)" in failed[0]["message"], endpoint.messages
    assert failed[0]["type"] == "failure"
    end = [m for m in endpoint.messages if "run finished" in m["title"]]
    assert len(end) == 1 and "nightly" in end[0]["title"], endpoint.messages
    assert "1 succeeded" in end[0]["message"] and "1 failed" in end[0]["message"]
    assert "1 skipped" in end[0]["message"] and "exit code 1" in end[0]["message"]


def test_a_stopped_run_sends_stopped_and_runs_the_runs_failure_hook(tmp_path, endpoint):
    spec = write_spec(tmp_path, f"""\
        notify: {{urls: ["{endpoint.url}"], events: [stopped]}}
        on_failure: 'echo "$ROTA_RUN_OUTCOME $ROTA_RUN_EXIT_CODE" > {tmp_path}/run-hook'
        tasks:
          - {{name: long, command: "touch {tmp_path}/started; sleep 60"}}
    """)
    proc = start_rota("run", spec, "--gpus", "none", "--plain", "--grace", "1")
    try:
        wait_for(lambda: (tmp_path / "started").exists(), timeout=60)
        proc.send_signal(signal.SIGTERM)  # as rota stop does
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert [m["title"] for m in endpoint.messages] == ["rota: rota.yaml: run stopped (1 interrupted)"], endpoint.messages
    assert (tmp_path / "run-hook").read_text().split() == ["stopped", "130"]


def test_a_hanging_endpoint_does_not_hold_the_run_end_past_the_bound(tmp_path, silent_port):
    # Each send may take a minute; the run's end waits FLUSH_S for them, then leaves them.
    spec = write_spec(tmp_path, f"""\
        notify: {{urls: ["json://127.0.0.1:{silent_port}/rota"], timeout: 60s}}
        tasks:
          - {{name: bad, command: "exit 1"}}
    """)
    code, out, took_s = _run(spec)
    assert code == 1, out
    # Without the bound it takes over 60 s; CLI start-up and the task take a few seconds on 2 busy cores.
    assert took_s < FLUSH_S + 20, (took_s, out)
    logged = _events(tmp_path / ".rota", ("notify-error",))
    assert any("left behind" in d["error"] for _, _, d in logged), logged
    assert "notify-error" in out


def test_a_failing_hook_command_is_logged_and_leaves_the_exit_code_alone(tmp_path):
    spec = write_spec(tmp_path, """\
        on_finish: "echo run-hook-ran; exit 5"
        tasks:
          - {name: ok, command: "true", on_success: "echo oops; exit 7"}
    """)
    code, out, _ = _run(spec)
    assert code == 0, out
    logged = _events(tmp_path / ".rota", ("hook-error",))
    by_task = {t: d["error"] for t, _, d in logged}
    assert "exited with code 7" in by_task["ok"], logged
    assert "exited with code 5" in by_task[None], logged
    assert "hook-error" in out
    hooks_log = (tmp_path / ".rota" / "hooks.log").read_text()
    assert "oops" in hooks_log and "run-hook-ran" in hooks_log


def test_a_hook_command_past_its_limit_is_killed_with_its_children(tmp_path):
    started = time.monotonic()
    why = run_hook(f"sleep 60 & echo $! > {tmp_path}/child; wait", dict(os.environ), str(tmp_path),
                   str(tmp_path / "hooks.log"), "t", timeout_s=1)
    assert why is not None and "ran past 1s and was killed" in why, why
    assert time.monotonic() - started < 10
    child = int((tmp_path / "child").read_text())

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout=10)


def test_on_failure_runs_with_the_environment_of_the_tasks_last_attempt(tmp_path):
    dump = "env | grep -E '^(ROTA_|CUDA_|OMP_|x=)' | sort"
    spec = write_spec(tmp_path, f"""\
        defaults:
          on_failure: "{dump} > {tmp_path}/hook-env"
        tasks:
          - name: bad-{{x}}
            matrix: {{x: [1]}}
            retries: 1
            command: "{dump} > {tmp_path}/task-env-$ROTA_ATTEMPT; exit 3"
          - {{name: ok, command: "true"}}
    """)
    code, out, _ = _run(spec)
    assert code == 1, out
    hook = dict(line.split("=", 1) for line in (tmp_path / "hook-env").read_text().splitlines())
    task = dict(line.split("=", 1) for line in (tmp_path / "task-env-2").read_text().splitlines())
    assert hook["ROTA_TASK"] == "bad-1" and hook["ROTA_ATTEMPT"] == "2"
    assert hook["ROTA_TASK_STATE"] == "failed" and hook["ROTA_TASK_EXIT_CODE"] == "3"
    task.pop("ROTA_EXIT_LOG")  # the local executor's own bookkeeping
    assert {k: hook.get(k) for k in task} == task
    assert not (tmp_path / "task-env-3").exists()


def test_without_apprise_a_notify_spec_is_refused_and_hooks_still_run(tmp_path):
    stand_in = tmp_path / "no-apprise" / "apprise"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError(\"No module named 'apprise'\")\n")
    env = {"PYTHONPATH": str(stand_in.parent)}
    spec = write_spec(tmp_path, """\
        notify: ntfy://rota-test
        tasks: [{name: a, command: "true"}]
    """)
    proc = rota("run", spec, "--gpus", "none", "--plain", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'rota[notify]'" in lines[0] and str(spec) in lines[0], lines
    assert "'notify'" in lines[0]
    hooks_only = write_spec(tmp_path / "h", f"""\
        tasks: [{{name: a, command: "true", on_success: "touch {tmp_path}/ran"}}]
    """)
    proc = rota("run", hooks_only, "--gpus", "none", "--plain", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("notify, field, words", [
    ("{urls: []}", "notify.urls", "at least one apprise URL"),  # the shape: tests/unit/test_notify_spec.py
    ("{urls: ['nosuchservice://x']}", "notify.urls.0", "apprise cannot use this URL"),  # apprise's own check
])
def test_a_bad_notify_section_exits_2_naming_file_and_field(tmp_path, notify, field, words):
    spec = write_spec(tmp_path, f"""\
        notify: {notify}
        tasks: [{{name: a, command: "true"}}]
    """)
    proc = rota("run", spec, "--gpus", "none", "--plain")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and str(spec) in line and f"field {field!r}" in line and words in line, line
    assert not (tmp_path / ".rota" / "state.db").exists()
