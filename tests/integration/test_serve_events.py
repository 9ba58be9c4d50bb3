"""``rota serve``'s event stream (``/api/events``): a real server over a real run, read as a browser's
``EventSource`` reads it: the status follows the run, each piece is sent when it changed and not
again, a stream asks its own table page, and the token guards it as every route."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import rota, start_rota, wait_for, write_spec
from tests.integration.test_serve import Served, _row_state
from tests.integration.test_serve import browser as browser  # the fixtures
from tests.integration.test_serve import served as served

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

SPEC = """
tasks:
  - name: first
    command: |
      for i in $(seq 1200); do [ -e {gate} ] && break; sleep 0.05; done
      echo ROTA_METRIC acc=0.5
  - name: second-{{seed}}
    matrix: {{seed: [1, 2]}}
    needs: [first]
    command: echo ROTA_METRIC acc=0.{{seed}}
"""


class Stream:
    """One ``/api/events`` connection, read event by event (a thread reads it with blocking reads,
    as a browser does; the test takes the events with a deadline)."""

    def __init__(self, s: Served, query: str = "") -> None:
        host, port = s.base.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        path = "/api/events" + (f"?{query}" if query else "")
        if s.token:
            path += ("&" if query else "?") + f"token={s.token}"
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("content-type", "").startswith("text/event-stream")
        self.queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        name, data = "", ""
        try:
            while True:
                line = self.resp.readline().decode()  # the chunked body decoded
                if line == "":
                    break
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and name:
                    self.queue.put((name, json.loads(data)))
                    name, data = "", ""
        except (OSError, ValueError, AttributeError, http.client.HTTPException):  # closed by the test
            pass
        finally:
            self.ended.set()
            self.queue.put(None)

    def events(self, timeout_s: float) -> Iterator[tuple[str, Any]]:
        """``(name, json)`` of each event until ``timeout_s`` passes with none, or the stream ends."""
        while True:
            try:
                got = self.queue.get(timeout=timeout_s)
            except queue.Empty:
                return
            if got is None:
                self.queue.put(None)
                return
            yield got

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        self.conn.close()


def _until(stream: Stream, want: Any, deadline_s: float = 60.0, log: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """Read events until a ``status`` for which ``want(status)`` holds; returns that status (each
    event read is appended to ``log``)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for name, d in stream.events(max(0.1, end - time.monotonic())):
            if log is not None:
                log.append((name, d))
            if name == "status" and want(d):
                return d
    raise AssertionError("no such status in time")


def test_the_stream_follows_a_run_sends_changes_once_and_asks_its_own_page(tmp_path: Path,
                                                                           served: list[Served]) -> None:
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, SPEC.format(gate=gate))
    s = Served(spec)
    served.append(s)
    stream = Stream(s)
    only_done = Stream(s, "state=succeeded&limit=10")
    ctl = start_rota("run", spec, "--plain", "--gpus", "none", "--cpus", "2")
    log: list[tuple[str, Any]] = []
    try:
        running = _until(stream, lambda d: d.get("counts", {}).get("running") == 1, log=log)
        assert [t["name"] for t in running["tasks"]][:1] == ["first"] and running["controller"]["alive"]
        assert isinstance(running["now"], float) and running["total"] == 3
        gate.touch()
        done = _until(stream, lambda d: d.get("counts", {}).get("succeeded") == 3, log=log)
        assert {t["state"] for t in done["tasks"]} == {"succeeded"}
        mine = _until(only_done, lambda d: d.get("matching") == 3)
        assert {t["state"] for t in mine["tasks"]} == {"succeeded"} and len(mine["tasks"]) == 3
        assert ctl.wait(60) == 0
        _until(stream, lambda d: not d["controller"]["alive"], log=log)
        log.extend(stream.events(3.0))
    finally:
        stream.close()
        only_done.close()
        if ctl.poll() is None:
            ctl.kill()
    # Each piece is sent when what it shows changed, never twice the same (the status goes at each
    # read of the database, at most once a second: its read time is what changed).
    last: dict[str, Any] = {}
    for name, d in log:
        if name != "status":
            assert last.get(name) != d, f"{name} sent again unchanged"
        last[name] = d
    assert {"status", "timeline", "results"} <= set(last)
    assert rota("status", spec).returncode == 0


def test_a_new_stream_gets_every_piece_at_once(tmp_path: Path, served: list[Served]) -> None:
    spec = write_spec(tmp_path, "tasks:\n  - name: a\n    command: echo ROTA_METRIC acc=1\n")
    assert rota("run", spec, "--plain", "--gpus", "none").returncode == 0
    s = Served(spec)
    served.append(s)
    stream = Stream(s)
    try:
        got: dict[str, Any] = {}
        end = time.monotonic() + 30
        while time.monotonic() < end and not {"status", "timeline", "gpus", "results", "sweeps", "eta", "figures"} <= set(got):
            for name, d in stream.events(2.0):
                got[name] = d
                break
        assert got["status"]["counts"]["succeeded"] == 1
        assert [it["name"] for it in got["timeline"]["items"]] == ["a"]
        assert got["sweeps"] == {"sweeps": []} and "gpus" in got["gpus"]
        # The same JSON as the polling route answers (but for its clock: when the state was read).
        polled = s.json("/api/timeline")
        assert {**got["timeline"], "now_s": 0} == {**polled, "now_s": 0}
    finally:
        stream.close()


def test_the_stream_needs_the_token_on_other_addresses(tmp_path: Path, served: list[Served]) -> None:
    spec = write_spec(tmp_path, "tasks:\n  - name: a\n    command: 'true'\n")
    s = Served(spec, "--host", "127.0.0.2")
    served.append(s)
    assert s.get("/api/events")[0] == 401
    assert s.get("/api/events", token="wrong")[0] == 403
    assert s.token
    stream = Stream(s)
    try:
        assert any(name == "status" for name, _ in stream.events(10.0))
    finally:
        stream.close()


def test_the_page_follows_by_streams_and_polls_where_a_browser_has_none(tmp_path: Path, browser: Any,
                                                                        served: list[Served]) -> None:
    spec = write_spec(tmp_path, "tasks:\n  - name: t-{i}\n    matrix: {i: [1, 2]}\n    command: 'true'\n")
    assert rota("run", spec, "--plain", "--gpus", "none").returncode == 0
    s = Served(spec)
    served.append(s)
    browser.get(s.url)
    wait_for(lambda: _row_state(browser, "t-2") == "succeeded", timeout=30)
    assert browser.execute_script("return [streamed, polling]") == [True, False]
    # A browser without EventSource (or a proxy that refuses streams): the same page by polling.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
    browser.get(s.url)
    wait_for(lambda: _row_state(browser, "t-2") == "succeeded", timeout=30)
    assert browser.execute_script("return [typeof EventSource, streamed, polling]") == ["undefined", False, True]


def test_ctrl_c_ends_open_streams_cleanly(tmp_path: Path, served: list[Served]) -> None:
    spec = write_spec(tmp_path, "tasks:\n  - name: a\n    command: 'true'\n")
    s = Served(spec)
    served.append(s)
    streams = [Stream(s), Stream(s, "pieces=status")]
    try:
        for st in streams:
            assert any(name == "status" for name, _ in st.events(10.0))
        os.killpg(s.proc.pid, signal.SIGINT)
        assert s.proc.wait(10) == 0
        out = s.proc.stdout.read() if s.proc.stdout else ""
        assert "Traceback" not in out and "ERROR" not in out, out
        for st in streams:  # each stream was ended by the server (its reader saw the end)
            assert st.ended.wait(5)
    finally:
        for st in streams:
            st.close()
