"""The exit-status log the local executor's tasks append to (rota.executors.exits)."""

from __future__ import annotations

import subprocess

from rota.executors import exits


def _bash_exit(path, key: str, code: int) -> None:
    """A real bash with rota's EXIT trap, exiting with ``code``."""
    env = {"PATH": "/usr/bin:/bin", "ROTA_ATTEMPT_KEY": key, "ROTA_EXIT_LOG": str(path)}
    subprocess.run(["bash", "-c", exits.TRAP + f"exit {code}"], env=env, check=False)


def test_bash_trap_records_status_and_end_time(tmp_path):
    log = tmp_path / exits.NAME
    _bash_exit(log, "train a#1", 3)
    _bash_exit(log, "b#2", 0)
    reader = exits.ExitLog(str(log))
    assert reader.status("train a#1") == 3
    assert reader.status("b#2") == 0
    assert reader.status("c#1") is None
    code, ended, key = log.read_text().splitlines()[0].split(" ", 2)
    assert (code, key) == ("3", "train a#1") and float(ended) > 1.7e9


def test_a_line_from_before_the_launch_does_not_count(tmp_path):
    """Keys repeat after a reset (--rerun): an old attempt's status must not pass for the new one's."""
    log = tmp_path / exits.NAME
    log.write_text("1 1000.5 t#1\n")
    reader = exits.ExitLog(str(log))
    assert reader.status("t#1", after=1000.0) == 1
    assert reader.status("t#1", after=2000.0) is None
    with log.open("a") as f:
        f.write("0 2001,25 t#1\n")  # a comma-decimal locale's $EPOCHREALTIME
    assert reader.status("t#1", after=2000.0) == 0


def test_void_discards_and_later_lines_count_again(tmp_path):
    log = tmp_path / exits.NAME
    log.write_text("143 10.0 t#1\n")
    reader = exits.ExitLog(str(log))
    assert reader.status("t#1") == 143
    reader.void(["t#1"])
    assert reader.status("t#1") is None
    assert exits.ExitLog(str(log)).status("t#1") is None  # a new controller reads the same
    with log.open("a") as f:
        f.write("0 20.0 t#1\n")
    assert reader.status("t#1") == 0


def test_unfinished_and_garbled_lines(tmp_path):
    log = tmp_path / exits.NAME
    log.write_bytes(b"garbage\nx 1.0 a#1\n2 1.0 b#1\n5 1.0 c#")
    reader = exits.ExitLog(str(log))
    assert reader.status("a#1") is None and reader.status("b#1") == 2
    assert reader.status("c#1") is None  # still being written
    with log.open("ab") as f:
        f.write(b"1\n")
    assert reader.status("c#1") == 5
    assert exits.ExitLog(str(tmp_path / "missing")).status("a#1") is None
