"""Defects a new user hit going through the README and examples (real subprocesses, real state
folders): an offline ``rota retry`` that left the skipped dependents skipped and unnamed, ``rota
stop --now`` answered with a Ctrl-C hint, a never-fits message with "1 GPUs", an absolute path and
a 'gpus: 0' hint on a machine without GPUs, ``rota plan`` starting with a blank line, and the
undocumented ``timeout: 0`` (no timeout)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import by_name, processes_with_env, rota, start_rota, wait_for, write_spec


def _states(sd: Path) -> dict[str, str]:
    return {n: t["state"] for n, t in by_name(sd).items()}


def test_offline_retry_brings_back_the_skipped_dependents_and_names_them(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: prep, command: "test -f {fixed}"}}
          - {{name: train, command: "true", needs: prep}}
          - {{name: report, command: "true", needs: train}}
          - {{name: other, command: "true"}}
    """)
    sd = tmp_path / ".rota"
    assert rota("run", spec, "--plain", "--cpus", "2").returncode == 1
    assert _states(sd) == {"prep": "failed", "train": "skipped", "report": "skipped", "other": "succeeded"}
    out = rota("retry", "prep", "--spec", spec, check=True).stdout
    assert "no controller is running" in out and "pending again: prep" in out, out
    assert "pending again (uses one of them): train, report" in out, out  # as a live controller answers
    assert _states(sd) == {"prep": "pending", "train": "pending", "report": "pending", "other": "succeeded"}
    fixed.touch()
    p = rota("run", spec, "--plain", "--cpus", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert set(_states(sd).values()) == {"succeeded"}
    # --force offline: the done tasks that used it are named and run again after it.
    out = rota("retry", "train", "--force", "--spec", spec, check=True).stdout
    assert "pending again: train" in out and "pending again (uses one of them): report" in out, out
    assert _states(sd)["report"] == "pending" and _states(sd)["prep"] == "succeeded"


def test_offline_retry_without_the_spec_file_resets_the_targets(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        tasks:
          - {name: a, command: "false"}
          - {name: b, command: "true", needs: a}
    """)
    sd = tmp_path / ".rota"
    assert rota("run", spec, "--plain", "--cpus", "2").returncode == 1
    spec.rename(tmp_path / "moved.yaml")  # the recorded spec is gone: the graph is unknown
    out = rota("retry", "a", "--state-dir", sd, check=True).stdout
    assert "pending again: a" in out and "uses one of them" not in out, out
    assert _states(sd) == {"a": "pending", "b": "skipped"}


def test_stop_now_says_what_it_does_not_ctrl_c(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        tasks:
          - {name: stubborn, command: "trap '' TERM; sleep 300 & wait; sleep 300"}
    """)
    sd = tmp_path / ".rota"
    ctl = start_rota("run", spec, "--plain", "--grace", "60")
    wait_for(lambda: len(processes_with_env("ROTA_STATE_DIR", str(sd))) >= 2, timeout=60)
    p = rota("stop", spec, "--now", "--wait", "30")
    assert p.returncode == 0, p.stdout + p.stderr
    log, _ = ctl.communicate(timeout=30)
    assert ctl.returncode == 130, log
    assert "Ctrl-C again" not in log, log
    assert "'rota stop --now' or a second SIGTERM kills them at once" in log, log
    assert "killed the running tasks at once" in log, log


def test_a_task_that_never_fits_is_one_clear_line_with_the_typed_path(tmp_path: Path) -> None:
    write_spec(tmp_path, """
        tasks:
          - {name: train, command: "true", gpus: 1}
    """)
    write_spec(tmp_path, """
        tasks:
          - {name: train, command: "true", gpus: 2, gpu_memory: 30GB}
    """, name="two.yaml")
    p = rota("run", "rota.yaml", "--gpus", "none", "--plain", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.splitlines() == [
        "rota: error: rota.yaml: task 'train': field 'gpus': can never run here: asks for 1 GPU but the machine "
        "has none; declare 1 GPU with --gpus (e.g. --gpus 1x24GB) if this machine has it"], p.stderr
    p = rota("plan", "two.yaml", "--gpus", "1x40GB", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.splitlines() == [
        "rota: error: two.yaml: task 'train': field 'gpus': can never run here: asks for 2 GPUs but the machine "
        "has 1; declare 2 GPUs with --gpus (e.g. --gpus 2x30GB) if this machine has them, or lower the task's "
        "'gpus:' to 1"], p.stderr
    assert not (tmp_path / ".rota").exists()


def test_plan_output_starts_with_its_first_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        tasks:
          - {name: a, command: "true", estimate: 1m}
    """)
    p = rota("plan", spec, "--gpus", "none", "--cpus", "2", check=True)
    assert p.stdout.startswith("this machine: "), p.stdout[:200]


def test_timeout_0_means_no_timeout_even_over_a_default(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        defaults: {timeout: 1s}
        tasks:
          - {name: long, command: "sleep 2", timeout: 0}
          - {name: capped, command: "sleep 30"}
    """)
    sd = tmp_path / ".rota"
    p = rota("run", spec, "--plain", "--cpus", "2", "--grace", "1")
    assert p.returncode == 1, p.stdout + p.stderr
    states = _states(sd)
    assert states["long"] == "succeeded", states
    assert states["capped"] == "failed", states
    db = sqlite3.connect(sd / "state.db")
    try:
        kinds = {k for (k,) in db.execute("SELECT kind FROM events WHERE task='capped'")}
    finally:
        db.close()
    assert "timed-out" in kinds, kinds
