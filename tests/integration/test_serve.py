"""``rota serve``: the live page in a real headless Chromium (Debian's, driven by Selenium through
Debian's chromedriver: no browser download), over a real ``rota run`` in a subprocess; the token
on a non-default address; the state folder left untouched.

The browser tests skip only when Chromium, chromedriver or Selenium is missing and ``CI`` is unset.
Screenshots are saved in each test's tmp folder.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import rota, start_rota, wait_for, write_spec

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing(what: str) -> None:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but {what} is missing")
    pytest.skip(f"{what} is missing (apt-get install -y chromium chromium-driver; pip install selenium)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            _missing(path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1300", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Served:
    """A ``rota serve`` subprocess and the URL it printed."""

    def __init__(self, *args: str | os.PathLike[str]) -> None:
        self.proc = start_rota("serve", "--port", "0", *args)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "http://" in line, f"rota serve printed {line!r}; exit {self.proc.poll()}"
        self.url = line.split(" at ", 1)[1].split()[0]
        self.base = self.url.split("?")[0]
        self.token = self.url.split("token=", 1)[1] if "token=" in self.url else None

    def get(self, path: str, token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = self.base + path.lstrip("/") + (("&" if "?" in path else "?") + f"token={token}" if token else "")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str) -> Any:
        code, body = self.get(path, self.token)
        assert code == 200, (code, body)
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.stop()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    """The page's console errors (and failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _row_state(driver: Any, task: str) -> str | None:
    """The state a task's row shows (None: no row). In page JavaScript, as one step: the table is
    drawn again every second, so an element found first may be gone when it is read."""
    return driver.execute_script(
        "const r = document.querySelector(`#tasks tbody tr[data-task='${arguments[0]}']`);"
        "return r ? r.dataset.state : null;", task)


def _click(driver: Any, selector: str) -> None:
    """Click the element ``selector`` finds, found and clicked in one step (see _row_state)."""
    assert driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;", selector)


GATED_SPEC = """
tasks:
  - name: first
    command: |
      echo first-line-of-log
      for i in $(seq 1200); do [ -e {gate} ] && break; sleep 0.05; done
      echo ROTA_METRIC acc=0.5
    gpus: 1
    gpu_memory: 20GB
  - name: second-{{seed}}
    matrix: {{seed: [1, 2]}}
    needs: [first]
    command: echo second {{seed}}; echo ROTA_METRIC acc=0.{{seed}}
"""


def test_page_follows_a_run_and_shows_a_log_tail(tmp_path: Path, browser: Any, served: list[Served]) -> None:
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    spec = write_spec(tmp_path / "p", GATED_SPEC.format(gate=gate))
    s = Served(spec)  # before the run: no state yet, the page says so and keeps asking
    served.append(s)
    browser.get(s.url)
    wait_for(lambda: "no run to show yet" in browser.find_element(By.ID, "banner").text, timeout=20)

    run = start_rota("run", spec, "--gpus", "1x80GB", "--plain")
    try:
        wait_for(lambda: _row_state(browser, "first") == "running", timeout=60)
        assert _row_state(browser, "second-1") == "pending"
        _click(browser, '#tasks tbody tr[data-task="first"]')
        wait_for(lambda: "first-line-of-log" in browser.find_element(By.ID, "log").text, timeout=20)
        wait_for(lambda: "controller pid" in browser.find_element(By.ID, "controller").text, timeout=10)
        browser.save_screenshot(str(tmp_path / "serve-running.png"))

        gate.write_text("go")
        for task in ("first", "second-1", "second-2"):
            wait_for(lambda t=task: _row_state(browser, t) == "succeeded", timeout=60)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
    # After the run: the page says so and keeps showing it; the log tail turns into the whole log.
    wait_for(lambda: "no controller running" in browser.find_element(By.ID, "controller").text, timeout=20)
    wait_for(lambda: "ROTA_METRIC acc=0.5" in browser.find_element(By.ID, "log").text, timeout=20)
    # The search box and a state filter narrow the table.
    browser.find_element(By.ID, "search").send_keys("second")
    wait_for(lambda: _row_state(browser, "first") is None and _row_state(browser, "second-2") == "succeeded",
             timeout=10)
    # The timeline draws a bar per started task (plotly loaded from the server, offline).
    wait_for(lambda: browser.execute_script(
        "const d = document.getElementById('timeline').data; return d ? d.reduce((n, t) => n + t.x.length, 0) : 0") == 3,
        timeout=20)
    wait_for(lambda: "acc" in browser.find_element(By.ID, "results").text, timeout=20)
    # The report's own figures (rota.report's functions): results per task group, booked GPU memory.
    wait_for(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#figures [data-figure]')].filter(d => d.data).map(d => d.dataset.figure)"
    ) == ["results-second-seed", "gpu-memory"], timeout=30)
    browser.save_screenshot(str(tmp_path / "serve-done.png"))
    assert (tmp_path / "serve-done.png").stat().st_size > 10_000
    assert _console_errors(browser) == []


def _finished_run(tmp_path: Path) -> Path:
    spec = write_spec(tmp_path / "p", """
        tasks:
          - name: t-{seed}
            matrix: {seed: [1, 2, 3]}
            command: echo out-{seed}; echo ROTA_METRIC loss=0.{seed}
        """)
    rota("run", spec, "--plain", check=True)
    return spec


def test_a_non_default_address_refuses_requests_without_the_token(tmp_path: Path, browser: Any,
                                                                   served: list[Served]) -> None:
    from selenium.webdriver.common.by import By

    spec = _finished_run(tmp_path)
    s = Served(spec, "--host", "127.0.0.2")  # loopback, but not the default: a token is required
    served.append(s)
    assert s.base.startswith("http://127.0.0.2:") and s.token
    for path in ("/", "/api/status", "/api/log?task=t-1", "/plotly.min.js"):
        assert s.get(path)[0] == 401, path
        assert s.get(path, "not-the-token")[0] == 403, path
        assert s.get(path, s.token)[0] == 200, path
    assert s.get("/api/status", headers={"X-Rota-Token": s.token})[0] == 200
    browser.get(s.url)
    wait_for(lambda: _row_state(browser, "t-3") == "succeeded", timeout=30)
    _click(browser, '#tasks tbody tr[data-task="t-2"]')
    wait_for(lambda: "out-2" in browser.find_element(By.ID, "log").text, timeout=20)
    browser.save_screenshot(str(tmp_path / "serve-token.png"))
    assert _console_errors(browser) == []


def test_default_bind_needs_no_token_but_a_loopback_host_and_never_writes_the_state(
        tmp_path: Path, served: list[Served]) -> None:
    spec = _finished_run(tmp_path)
    sd = tmp_path / "p" / ".rota"
    # Every file but SQLite's shared-memory index (state.db-shm), where any WAL reader, rota status
    # too, marks what it reads, and the empty state.db-wal SQLite opens beside it when the last
    # writer removed it: no file is created, written or removed.
    def files() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sd.rglob("*")
                if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}

    before = files()
    s = Served(spec)
    served.append(s)
    assert s.token is None and s.base.startswith("http://127.0.0.1:")
    assert s.get("/api/status", headers={"Host": "attacker.example:80"})[0] == 403  # DNS rebinding
    d = s.json("/api/status?q=t-2")
    assert d["counts"]["succeeded"] == 3 and d["matching"] == 1 and d["tasks"][0]["name"] == "t-2"
    assert s.json("/api/status?state=failed")["matching"] == 0
    assert s.json("/api/log?task=t-3")["text"].startswith("out-3")
    assert s.get("/api/log?task=nope")[0] == 404
    results = s.json("/api/results")["rows"]
    assert [(r["metric"], r["n"]) for r in results] == [("loss", 3)]
    for path in ("/api/timeline", "/api/gpus", "/api/sweeps", "/api/eta", "/"):
        assert s.get(path)[0] == 200, path
    # A browser's Accept-Encoding: the same JSON, gzip'd (once per snapshot; "now" put in front).
    plain = s.json("/api/status?limit=500")
    req = urllib.request.Request(s.base + "api/status?limit=500", headers={"Accept-Encoding": "gzip, deflate"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        zipped = json.loads(gzip.decompress(r.read()))
    assert zipped["now"] >= plain["now"] and {**zipped, "now": 0} == {**plain, "now": 0}
    assert files() == before

    # A controller that starts again (a rerun) is followed by the same server.
    rota("run", spec, "--plain", "--rerun", "t-1", check=True)
    wait_for(lambda: s.json("/api/status?q=t-1")["tasks"][0]["attempt"] == 2, timeout=20)


def test_serve_refuses_a_busy_port_in_one_line(tmp_path: Path, served: list[Served]) -> None:
    spec = _finished_run(tmp_path)
    s = Served(spec)
    served.append(s)
    port = s.base.rsplit(":", 1)[1].strip("/")
    out = rota("serve", spec, "--port", port, timeout=30)
    assert out.returncode == 2
    assert out.stderr.startswith("rota: error: --host 127.0.0.1 --port") and out.stderr.count("\n") == 1


def test_serve_refuses_a_missing_spec_in_one_line(tmp_path: Path) -> None:
    out = rota("serve", tmp_path / "nope.yaml", "--port", "0", timeout=30)
    assert out.returncode == 2 and out.stderr == f"rota: error: {tmp_path / 'nope.yaml'}: no such spec file or folder\n"


def test_serve_help_names_the_token() -> None:
    out = rota("serve", "--help", check=True)
    assert "--host" in out.stdout and "token" in out.stdout


def test_page_holds_releases_cancels_and_retries_a_task(tmp_path: Path, browser: Any, served: list[Served]) -> None:
    control = pytest.importorskip("rota.engine.control")  # the controls of "steer a run while it runs"
    assert hasattr(control, "request")
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    spec = write_spec(tmp_path / "p", GATED_SPEC.format(gate=gate))
    run = start_rota("run", spec, "--gpus", "1x80GB", "--plain", "--grace", "2")
    try:
        s = Served(spec)
        served.append(s)
        # A cross-site form cannot post a control: the header is missing.
        code, _ = s.get("/api/status")
        assert code == 200
        req = urllib.request.Request(s.base + "api/control", data=b'{"kind": "cancel", "task": "first"}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        browser.get(s.url)
        wait_for(lambda: _row_state(browser, "first") == "running", timeout=60)
        _click(browser, '#tasks tbody tr[data-task="second-2"]')
        _click(browser, '#controls button[data-kind="hold"]')
        wait_for(lambda: _row_state(browser, "second-2") == "held", timeout=30)
        _click(browser, '#controls button[data-kind="release"]')
        wait_for(lambda: _row_state(browser, "second-2") == "pending", timeout=30)
        _click(browser, '#tasks tbody tr[data-task="first"]')
        _click(browser, '#controls button[data-kind="cancel"]')
        wait_for(lambda: _row_state(browser, "first") == "cancelled", timeout=60)
        assert "first" in browser.find_element(By.ID, "answer").text
        wait_for(lambda: _row_state(browser, "second-1") == "skipped", timeout=30)
        assert run.wait(60) != 0
        gate.write_text("go")
        _click(browser, '#controls button[data-kind="retry"]')
        wait_for(lambda: _row_state(browser, "first") == "pending", timeout=30)
        browser.save_screenshot(str(tmp_path / "serve-controls.png"))
        assert _console_errors(browser) == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)


def test_sweeps_show_their_best_trials_and_the_reports_figures(tmp_path: Path, served: list[Served]) -> None:
    pytest.importorskip("optuna")
    spec = write_spec(tmp_path / "p", """
        tasks:
          - name: hpo
            command: echo ROTA_METRIC loss={x}
            sweep:
              trials: 4
              metric: loss
              sampler: random
              seed: 3
              params:
                x: {type: float, low: 0.0, high: 1.0}
                depth: {type: int, low: 1, high: 8}
        """)
    rota("run", spec, "--plain", "--cpus", "2", check=True)
    sd = tmp_path / "p" / ".rota"
    def files() -> dict[Path, int]:  # but SQLite's reader files (-shm, an empty -wal), as above
        return {p: p.stat().st_mtime_ns for p in sd.rglob("*")
                if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}

    before = files()
    s = Served(spec)
    served.append(s)
    sweeps = s.json("/api/sweeps")["sweeps"]
    assert [(w["sweep"], w["counts"]["complete"]) for w in sweeps] == [("hpo", 4)]
    best = sweeps[0]["best"]
    assert best[0]["value"] == min(b["value"] for b in best) and set(best[0]["params"]) == {"x", "depth"}
    names = [f["name"] for f in s.json("/api/figures")["figures"]]
    assert "sweep-hpo-history" in names and all(f.startswith(("results-", "sweep-", "gpu-memory")) for f in names)
    assert files() == before
