"""``rota status`` through its fast path (no click, rich or pydantic): same contract, real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import rota
from tests.helpers import ROTA, start_rota, write_spec
from tests.helpers import rota as rota_cli

# The documented version-1 fields (README, "rota status --json"): only ever added to.
TOP_FIELDS = ["version", "run_id", "spec", "state_dir", "controller", "counts", "tasks"]
TASK_FIELDS = ["name", "state", "attempts", "exit_code", "reason", "gpus", "cpus", "started_at", "ended_at",
               "duration_s", "log_path", "out_dir", "vars", "params", "metrics", "group", "queued", "attempt",
               "code", "predicted_start_s", "predicted_end_s", "held"]
STATES = ["pending", "launching", "running", "succeeded", "cached", "failed", "skipped", "interrupted", "cancelled"]

# The click command, bypassing `python -m rota.cli`'s fast path.
CLICK = [sys.executable, "-c", "import sys; from rota.cli.main import main; sys.argv[0] = 'rota'; main()"]


def _mixed_run(folder: Path) -> Path:
    spec = write_spec(folder, """
        tasks:
          - {name: "ok-{x}", command: "echo ROTA_METRIC acc=0.{x}", matrix: {x: [1, 2]}}
          - {name: bad, command: "exit 3"}
          - {name: after-bad, command: "true", needs: bad}
    """)
    p = rota_cli("run", spec, "--plain", "--gpus", "none")
    assert p.returncode == 1, p.stdout + p.stderr
    return folder / ".rota"


def test_fast_path_prints_the_same_bytes_as_the_click_command(tmp_path: Path) -> None:
    sd = _mixed_run(tmp_path)
    for extra in (["--json"], []):
        fast = subprocess.run([*ROTA, "status", *extra, "--state-dir", str(sd)], capture_output=True, text=True)
        slow = subprocess.run([*CLICK, "status", *extra, "--state-dir", str(sd)], capture_output=True, text=True)
        assert fast.returncode == slow.returncode == 0, fast.stderr + slow.stderr
        assert fast.stdout == slow.stdout and fast.stderr == slow.stderr == ""


def test_json_has_exactly_the_documented_fields_and_values(tmp_path: Path) -> None:
    sd = _mixed_run(tmp_path)
    p = rota_cli("status", "--json", tmp_path / "rota.yaml")  # a spec file as TARGET
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert list(data) == TOP_FIELDS and list(data["counts"]) == STATES
    assert data == rota.status(state_dir=sd)  # the Python API reads the same picture
    assert data["state_dir"] == str(sd.resolve()) and data["spec"] == str((tmp_path / "rota.yaml").resolve())
    assert data["controller"] == {"pid": data["controller"]["pid"], "host": data["controller"]["host"], "alive": False}
    tasks = {t["name"]: t for t in data["tasks"]}
    assert all(list(t) == TASK_FIELDS for t in data["tasks"])
    assert [t["name"] for t in data["tasks"]] == ["ok-1", "ok-2", "bad", "after-bad"]
    assert tasks["ok-2"]["metrics"] == {"acc": 0.2} and tasks["ok-2"]["vars"] == {"x": "2"}
    assert tasks["ok-1"]["group"] == "ok-{x}" and tasks["ok-1"]["gpus"] == [] and tasks["ok-1"]["params"] is None
    assert not any(t["queued"] for t in data["tasks"])  # the local backend never queues
    assert tasks["bad"]["state"] == "failed" and tasks["bad"]["exit_code"] == 3
    assert (tasks["bad"]["attempts"], tasks["bad"]["attempt"]) == (1, 1)  # attempt: the latest one's number
    assert (tasks["after-bad"]["attempts"], tasks["after-bad"]["attempt"]) == (0, 0)  # none yet
    assert tasks["after-bad"]["state"] == "skipped" and tasks["after-bad"]["duration_s"] is None
    assert tasks["ok-1"]["duration_s"] == tasks["ok-1"]["ended_at"] - tasks["ok-1"]["started_at"] >= 0
    assert data["counts"] == {**dict.fromkeys(STATES, 0), "succeeded": 2, "failed": 1, "skipped": 1}
    # One task per line: grep-able, and each line is that task's JSON.
    lines = [ln.strip().rstrip(",") for ln in p.stdout.splitlines() if ln.strip().startswith('{"name"')]
    assert [json.loads(ln) for ln in lines] == data["tasks"]


def test_table(tmp_path: Path) -> None:
    sd = _mixed_run(tmp_path)
    p = rota_cli("status", tmp_path)  # a folder holding .rota as TARGET
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith("(no controller running)")
    assert lines[1].split() == ["task", "state", "attempts", "exit", "GPUs", "duration", "log"]
    bad = next(ln for ln in lines if ln.startswith("bad "))
    assert bad.split()[:5] == ["bad", "failed", "1", "3", "-"] and bad.endswith(str(sd / "logs" / "bad" / "attempt-1.log"))
    assert "\x1b[" not in p.stdout  # no colour codes into a pipe
    assert lines[-1] == "succeeded 2  failed 1  skipped 1"
    # Columns line up: every field starts where its header does.
    starts = [lines[1].index(h) for h in ("state", "attempts", "duration")]
    for ln in lines[2:-1]:
        assert all(ln[s - 2:s] == "  " and ln[s] != " " for s in starts), ln
    log_at = lines[1].index("log")
    assert bad[log_at - 2:log_at] == "  " and bad[log_at:] == str(sd / "logs" / "bad" / "attempt-1.log")


def test_errors_help_and_unknown_options(tmp_path: Path) -> None:
    missing = rota_cli("status", "--json", "--state-dir", tmp_path / "nothing")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("rota: error: no rota state at ") and len(missing.stderr.splitlines()) == 1
    typo = rota_cli("status", tmp_path / "nosuch.yaml")  # a spec's name mistyped: said so, not "no state at"
    assert typo.returncode == 2 and typo.stderr == f"rota: error: {tmp_path / 'nosuch.yaml'}: no such spec file or folder\n"
    (tmp_path / "afile").write_text("x")
    for args, code, needle in ((["--help"], 0, "Usage: rota status"), (["--bogus"], 2, "No such option"),
                               (["--state-dir", str(tmp_path / "afile")], 2, "is a file"),
                               (["a", "b"], 2, "unexpected extra argument"), (["-h"], 0, "--state STATE"),
                               (["--json", "--state"], 2, "requires an argument"),
                               (["--json=1"], 2, "does not take a value")):
        p = rota_cli("status", *args)
        assert p.returncode == code and needle in p.stdout + p.stderr, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
        # One parser: the click command hands its words to the same one, so it answers the same bytes.
        slow = subprocess.run([*CLICK, "status", *args], capture_output=True, text=True)
        assert (slow.returncode, slow.stdout, slow.stderr) == (p.returncode, p.stdout, p.stderr), args


def test_odd_characters_in_the_state_folder(tmp_path: Path) -> None:
    folder = tmp_path / "a?b#c%20d"  # '?', '#' and '%' are URI syntax: the reader must not cut the path
    _mixed_run(folder)
    p = rota_cli("status", "--json", folder)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["counts"]["succeeded"] == 2


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    sd = _mixed_run(tmp_path)
    for extra in ("--json", ""):
        # `true` exits without reading: the write meets a closed pipe (EPIPE).
        cmd = f"{' '.join(ROTA)} status {extra} --state-dir '{sd}' | true; echo ${{PIPESTATUS[0]}}"
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
        assert p.stdout.strip() in ("0", "1") and p.stderr == "", p.stdout + p.stderr


def test_readers_during_a_run_see_a_consistent_picture_and_the_wal_stays_small(tmp_path: Path) -> None:
    n = 300
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t-{{i}}
            command: "echo ROTA_METRIC i={{i}}"
            matrix: {{i: {list(range(n))}}}
    """)
    sd = tmp_path / ".rota"
    wal = sd / "state.db-wal"
    stop = threading.Event()
    errors: list[str] = []
    seen: list[dict] = []
    wal_max = [0]

    def reader(args: list[str]) -> None:
        while not stop.is_set():
            if not (sd / "state.db").exists():
                continue
            p = subprocess.run([*ROTA, "status", *args, "--state-dir", str(sd)], capture_output=True, text=True)
            if wal.exists():
                wal_max[0] = max(wal_max[0], wal.stat().st_size)
            if p.returncode != 0 or p.stderr:
                errors.append(f"exit {p.returncode}: {p.stderr}")
            elif args:
                data = json.loads(p.stdout)
                seen.append(data["counts"])
                done = {t["name"] for t in data["tasks"] if t["state"] == "succeeded"}
                with_metric = {t["name"] for t in data["tasks"] if t["metrics"]}
                if not with_metric <= {t["name"] for t in data["tasks"]} or len(data["tasks"]) not in (0, n):
                    errors.append(f"inconsistent: {len(data['tasks'])} tasks")
                if data["tasks"] and not data["controller"]["alive"] and data["counts"]["succeeded"] < n:
                    errors.append(f"controller not alive with unfinished tasks: {data['counts']}")
                if done - with_metric:
                    errors.append(f"succeeded without its metric: {sorted(done - with_metric)[:3]}")

    proc = start_rota("run", spec, "--plain", "--gpus", "none", "--cpus", "4", env={"PYTHONUNBUFFERED": "1"})
    readers = [threading.Thread(target=reader, args=(a,)) for a in (["--json"], [])]
    for r in readers:
        r.start()
    out, _ = proc.communicate(timeout=240)
    stop.set()
    for r in readers:
        r.join()
    assert proc.returncode == 0, out
    assert errors == [], errors[:3]
    assert seen, "no reader call finished during the run"
    assert all(sum(c.values()) in (0, n) for c in seen)
    # Readers hold their snapshot for milliseconds: the controller's checkpoints keep the WAL
    # near its 1000-page auto-checkpoint size instead of growing with the run.
    assert wal_max[0] < 16 * 2**20, wal_max[0]
    final = json.loads(rota_cli("status", "--json", "--state-dir", sd).stdout)
    assert final["counts"]["succeeded"] == n and not final["controller"]["alive"]
    assert os.path.exists(sd / "state.db")


def test_numbers_and_strings_are_written_as_json_dumps_writes_them() -> None:
    from rota.store.read import _jnum, _jstr

    for v in (None, 0, 3, -1, 0.1, 1795442190.0412345, 1e-300, 1e300, float("nan"), float("inf"), float("-inf")):
        assert _jnum(v) == json.dumps(v)
    for s in (None, "", "t-1", 'quote " and \\ back', "é ü 雪 \n\t", "\x00"):
        assert _jstr(s) == json.dumps(s)


def test_status_imports_no_heavy_modules(tmp_path: Path) -> None:
    """A reader polled once a second must start cheaply: no click, rich, pydantic or yaml."""
    sd = _mixed_run(tmp_path)
    for extra in (["--json"], []):
        p = subprocess.run([sys.executable, "-X", "importtime", *ROTA[1:], "status", *extra, "--state-dir", str(sd)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        modules = {ln.split("|")[-1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
        heavy = {m for m in modules if m.split(".")[0] in ("click", "rich", "pydantic", "yaml", "psutil")}
        assert "rota.store.read" in modules and not heavy, sorted(heavy)


def test_state_filter_in_both_forms_and_both_paths(tmp_path: Path) -> None:
    sd = _mixed_run(tmp_path)
    for cmd in (ROTA, CLICK):
        table = subprocess.run([*cmd, "status", "--state", "failed", "--state-dir", str(sd)], capture_output=True,
                               text=True)
        assert table.returncode == 0, table.stderr
        rows = table.stdout.splitlines()[2:-1]
        assert [r.split()[0] for r in rows] == ["bad"]
        assert table.stdout.splitlines()[-1] == "succeeded 2  failed 1  skipped 1"  # the counts count all
        both = subprocess.run([*cmd, "status", "--state=failed,skipped", "--json", "--state-dir", str(sd)],
                              capture_output=True, text=True)
        data = json.loads(both.stdout)
        assert [t["name"] for t in data["tasks"]] == ["bad", "after-bad"]
        assert data["counts"]["succeeded"] == 2
        typo = subprocess.run([*cmd, "status", "--state", "faild", "--state-dir", str(sd)], capture_output=True,
                              text=True)
        assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1, typo.stderr
        assert "'faild' is not a task state" in typo.stderr and "Traceback" not in typo.stderr


def test_held_is_a_state_filter_in_both_forms_and_both_paths(tmp_path: Path) -> None:
    """``--state held``: the pending tasks ``rota hold`` keeps back (no controller: the requests change
    the store); ``pending`` still lists them, and the counts are those of the stored states."""
    sd = _mixed_run(tmp_path)
    spec = tmp_path / "rota.yaml"
    assert "pending again: bad, after-bad" in rota_cli("retry", "*bad", "--spec", spec, check=True).stdout
    assert "held: after-bad" in rota_cli("hold", "after-bad", "--spec", spec, check=True).stdout
    for cmd in (ROTA, CLICK):
        table = subprocess.run([*cmd, "status", "--state", "held", "--state-dir", str(sd)], capture_output=True,
                               text=True)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert [r.split()[:2] for r in lines[2:3]] == [["after-bad", "held"]], table.stdout
        assert lines[3] == "pending 2  succeeded 2", table.stdout  # the counts count all, held ones as pending
        assert [ln.split()[0] for ln in lines[5:]] == ["after-bad"], table.stdout  # why it waits: only the held one
        data = json.loads(subprocess.run([*cmd, "status", "--json", "--state=held,failed", "--state-dir", str(sd)],
                                         capture_output=True, text=True, check=True).stdout)
        assert [(t["name"], t["state"], t["held"]) for t in data["tasks"]] == [("after-bad", "pending", True)]
        assert data["counts"]["pending"] == 2 and data["counts"]["succeeded"] == 2
        pending = json.loads(subprocess.run([*cmd, "status", "--json", "--state", "pending", "--state-dir", str(sd)],
                                            capture_output=True, text=True, check=True).stdout)
        assert [t["name"] for t in pending["tasks"]] == ["bad", "after-bad"]
    assert rota_cli("release", "after-bad", "--spec", spec, check=True).returncode == 0
    none = json.loads(rota_cli("status", "--json", "--state", "held", "--state-dir", sd, check=True).stdout)
    assert none["tasks"] == [] and none["counts"]["pending"] == 2
