"""Shared test helpers: run the real `rota` CLI as a subprocess, read its state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

ROTA = [sys.executable, "-m", "rota.cli"]


def write_spec(folder: Path, text: str, name: str = "rota.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(textwrap.dedent(text))
    return p


def rota(*args: str | os.PathLike[str], timeout: float = 120, check: bool = False, env: dict[str, str] | None = None,
         cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([*ROTA, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"rota {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_rota(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*ROTA, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def open_gate(run: subprocess.Popen[str], gate: Path, timeout: float = 120) -> str:
    """Let a run whose tasks wait for the file ``gate`` finish: create it, wait for the run, return
    its output; a run still there after ``timeout`` is killed with its process group."""
    gate.touch()
    try:
        out, _ = run.communicate(timeout=timeout)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
    return out


def status(state_dir: Path) -> dict:
    out = rota("status", "--json", "--state-dir", state_dir, check=True)
    return json.loads(out.stdout)


def by_name(state_dir: Path) -> dict[str, dict]:
    return {t["name"]: t for t in status(state_dir)["tasks"]}


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``pred`` until it is true; fail after ``timeout`` seconds. The one way tests wait
    for a condition (never a fixed sleep)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def wait_ended(executor, handles: list, timeout_s: float = 120.0) -> dict:
    """Poll an executor until every handle's attempt has ended; ``{key: Status}``."""
    done: dict = {}

    def all_ended() -> bool:
        for k, s in executor.poll([h for h in handles if h.key not in done]).items():
            if s.phase != "running":
                done[k] = s
        return len(done) == len(handles)

    try:
        wait_for(all_ended, timeout=timeout_s, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not finished in {timeout_s}s: {[h.key for h in handles if h.key not in done]}") from None
    return done


def forget_handles(state_dir: Path) -> None:
    """Leave what a controller killed between committing ``launching`` and its handles leaves:
    every task and attempt ``launching``, with no handle and no end."""
    import sqlite3

    db = sqlite3.connect(state_dir / "state.db")
    with db:
        db.execute("UPDATE tasks SET state='launching', handle=NULL, exit_code=NULL, ended_at=NULL")
        db.execute("UPDATE attempts SET state='launching', handle=NULL, ended_at=NULL, exit_code=NULL")
    db.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it has ended, not yet been waited for)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(key) == value and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def read_records(folder: Path) -> list[dict]:
    """Each test task appends one JSON line with what it saw."""
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


class SnapshotUI:
    """A UI for tests (the engine's UI protocol): ``_record(engine)`` at the start and at every
    refresh, as LiveUI renders; events, flushes and the stop do nothing. Subclasses keep what
    they need."""

    def __init__(self) -> None:
        self.gpu_live: dict[int, tuple[float, int]] = {}  # the UI protocol's GPU fields
        self.gpu_notes: dict[int, tuple[str, str]] = {}

    def _record(self, engine: Any) -> None:
        raise NotImplementedError

    def start(self, engine: Any) -> None:
        self._record(engine)

    def refresh(self, engine: Any) -> None:
        self._record(engine)

    def flush(self) -> None:
        pass

    def event(self, engine: Any, ev: Any) -> None:
        pass

    def stop(self, engine: Any) -> None:
        pass
