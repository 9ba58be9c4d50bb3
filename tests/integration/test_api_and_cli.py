"""The Python API under the CLI, `rota machine`, `rota logs -f`, the dashboard render."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from rich.console import Console

import rota
from rota.api import default_state_dir
from rota.core.resources import Gpu
from rota.machine import apply_visible_devices, detect_machine, parse_gpus_flag
from tests.helpers import rota as rota_cli
from tests.helpers import start_rota, wait_for, write_spec


def test_python_api_builds_runs_and_reads_status(tmp_path):
    spec = rota.spec_from_dict(
        {"tasks": [
            {"name": "a-{x}", "command": "echo ROTA_METRIC v={x}", "matrix": {"x": [1, 2]}},
            {"name": "b", "command": "echo done", "needs": ["a-*"]},
        ]},
        root=tmp_path,
    )
    assert [t.name for t in spec.tasks] == ["a-1", "a-2", "b"]
    result = rota.run(spec, gpus="none", state_dir=tmp_path / "st")
    assert result.exit_code == 0 and result.counts["succeeded"] == 3
    st = rota.status(state_dir=result.state_dir)
    assert st["version"] == 1
    assert {t["name"]: t["metrics"] for t in st["tasks"]}["a-2"] == {"v": 2.0}


def test_spec_error_from_api(tmp_path):
    try:
        rota.spec_from_dict({"tasks": [{"name": "a", "command": "x", "gpus": "two"}]}, root=tmp_path)
    except rota.SpecError as e:
        assert e.task == "a" and e.field == "gpus"
    else:
        raise AssertionError("expected SpecError")


def test_machine_command_and_flags():
    out = rota_cli("machine", "--gpus", "2x80GB,24GB", "--cpus", "6", "--memory", "100GB", "--json", check=True)
    m = json.loads(out.stdout)
    assert [g["memory_bytes"] for g in m["gpus"]] == [80 * 2**30, 80 * 2**30, 24 * 2**30]
    assert m["cpus"] == 6 and m["memory_bytes"] == 100 * 2**30
    bad = rota_cli("machine", "--gpus", "4xBANANA")
    assert bad.returncode == 2 and "--gpus" in bad.stderr and "Traceback" not in bad.stderr
    none = rota_cli("machine", "--gpus", "0,2")  # no NVML here: restricting to undetected GPUs is an error
    assert none.returncode == 2 and "not detected" in none.stderr


def test_inherited_cuda_visible_devices_is_respected():
    detected = [Gpu(i, 80 * 2**30, "H100", f"GPU-{i}aaaa") for i in range(4)]
    kept = apply_visible_devices(detected, "2,GPU-3aaaa")
    assert [g.index for g in kept] == [2, 3]
    assert [g.cuda_id for g in kept] == ["2", "GPU-3aaaa"]
    assert apply_visible_devices(detected, "") == []
    assert [g.index for g in parse_gpus_flag("0,2", detected)] == [0, 2]


def test_slurm_allocation_environment_is_respected():
    m = detect_machine(gpus="2x80GB", environ={"SLURM_CPUS_ON_NODE": "12", "SLURM_MEM_PER_NODE": "65536"})
    assert m.cpus == 12 and m.memory_bytes == 64 * 2**30


def test_logs_follow_streams_until_the_task_ends(tmp_path):
    spec = write_spec(tmp_path, """
        tasks:
          - {name: talk, command: "for i in 1 2 3; do echo line $i; sleep 0.4; done"}
    """)
    proc = start_rota("run", spec, "--plain")
    wait_for(lambda: (tmp_path / ".rota" / "logs" / "talk" / "attempt-1.log").exists(), timeout=30)
    out = rota_cli("logs", "talk", spec, "-f", timeout=60)
    assert out.stdout.split() == ["line", "1", "line", "2", "line", "3"]
    proc.communicate(timeout=30)


def test_dashboard_render_is_pure_and_complete(tmp_path):
    from rota.ui.dashboard import render
    from rota.ui.snapshot import GpuView, Snapshot, TaskView

    snap = Snapshot(
        now=time.time(), started_at=time.time() - 65,
        gpus=(GpuView(0, "H100", 80 * 2**30, 60 * 2**30, ("train-a", "train-b")), GpuView(1, "H100", 80 * 2**30, 0, ())),
        cpus_total=16, cpus_booked=4, memory_total=64 * 2**30, memory_booked=8 * 2**30,
        running=(TaskView("train-a", (0,), 30.0, 120.0, {"done": 50, "total": 200, "items_per_s": 5.0, "eta_s": 30}),),
        counts={"succeeded": 3, "failed": 1, "pending": 4, "running": 2}, total=10, eta_s=300.0,
        failures=(("bad", "cuda out of memory", "/x/bad/attempt-1.log"),), recent=(),
    )
    console = Console(width=140, record=True, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    for needle in ("GPU 0", "60GB/80GB", "train-a, train-b", "CPU", "4/16", "50/200", "ETA 5m00s", "bad",
                   "cuda out of memory", "/x/bad/attempt-1.log", "done 3", "failed 1"):
        assert needle in text, needle
    assert "waiting in the backend's queue" not in text
    queued = (*snap.running, TaskView("train-r", (), 0.0, None, None, queued=True))
    console.print(render(dataclasses.replace(snap, cpus_booked=20, running=queued)))  # Ray: booked ahead
    ahead = console.export_text()
    assert "20/16" in ahead and "4 waiting in the backend's queue" in ahead
    # Over the limit with nothing queued: a live --cpus change lowered it under what runs (local)
    console.print(render(dataclasses.replace(snap, cpus_booked=20)))
    over = console.export_text().split("4 waiting in the backend's queue")[-1]
    assert "4 over the limit" in over and "backend's queue" not in over, over
    held = dataclasses.replace(snap, running=(TaskView("train-q", (1,), 30.0, 120.0, None, queued=True),))
    console.print(render(held))  # SLURM still holds it PENDING: no elapsed time yet
    line = next(ln for ln in console.export_text().splitlines() if "train-q" in ln and "GPU" not in ln)
    assert "queued" in line and "30s" not in line, line


def test_stop_drain_then_stop_then_nothing_to_stop(tmp_path):
    """`rota stop --drain` lets the running task finish and launches nothing more; `rota stop`
    is Ctrl-C from another terminal: tasks interrupted, no process left, exit 130."""
    from tests.helpers import by_name, processes_with_env, read_records

    rec = tmp_path / "rec"
    rec.mkdir()
    recorder = Path(__file__).resolve().parent.parent / "recorder.py"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: "t-{{i}}"
            command: {sys.executable} {recorder} {rec} t-{{i}} 4
            matrix: {{i: [0, 1, 2]}}
    """)
    sd = tmp_path / ".rota"

    def running() -> set[str]:
        return {n for n, t in by_name(sd).items() if t["state"] == "running"} if (sd / "state.db").exists() else set()

    ctl = start_rota("run", spec, "--plain", "--cpus", "1", "--grace", "1")
    wait_for(lambda: running() == {"t-0"}, timeout=60)
    p = rota_cli("stop", spec, "--drain")
    assert p.returncode == 0 and "launches nothing more" in p.stdout, p.stdout + p.stderr
    out, _ = ctl.communicate(timeout=60)
    assert ctl.returncode == 1, out
    assert "asked to drain" in out
    st = by_name(sd)
    assert st["t-0"]["state"] == "succeeded" and {st["t-1"]["state"], st["t-2"]["state"]} == {"pending"}
    assert not (sd / "drain.request").exists()

    ctl = start_rota("run", spec, "--plain", "--cpus", "1", "--grace", "1")
    wait_for(lambda: len(running()) == 1, timeout=60)
    p = rota_cli("stop", spec)
    assert p.returncode == 0 and "stopped the controller" in p.stdout, p.stdout + p.stderr
    out, _ = ctl.communicate(timeout=60)
    assert ctl.returncode == 130, out
    assert processes_with_env("ROTA_STATE_DIR", str(sd)) == []
    assert "interrupted" in {t["state"] for t in by_name(sd).values()}
    assert [r["name"] for r in read_records(rec)] == ["t-0"]  # the stopped task never finished

    p = rota_cli("stop", spec)
    assert p.returncode == 1 and "no rota controller is running" in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stderr


def test_stop_now_kills_a_task_that_ignores_sigterm(tmp_path):
    from tests.helpers import processes_with_env

    spec = write_spec(tmp_path, """
        tasks:
          - {name: stubborn, command: "trap '' TERM; sleep 300 & wait; sleep 300"}
    """)
    sd = tmp_path / ".rota"
    ctl = start_rota("run", spec, "--plain", "--grace", "60")
    wait_for(lambda: len(processes_with_env("ROTA_STATE_DIR", str(sd))) >= 2, timeout=60)
    t0 = time.monotonic()
    p = rota_cli("stop", spec, "--now", "--wait", "30")
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.monotonic() - t0 < 20  # not the 60 s grace period
    ctl.communicate(timeout=30)
    assert ctl.returncode == 130
    assert processes_with_env("ROTA_STATE_DIR", str(sd)) == []


def _readme_python_snippet() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_python_api_snippet_runs_as_written(tmp_path):
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "examples" / "quickstart", tmp_path / "examples" / "quickstart")
    code = _readme_python_snippet()
    got = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert got.returncode == 0, got.stderr
    assert f"{tmp_path.resolve()}/.rota/dicts/hello" in got.stdout
    assert "summary succeeded" in got.stdout
    # The built spec's task is not in the quickstart's state (nor the other way round).
    quick = rota.status(tmp_path / "examples" / "quickstart" / "rota.yaml")
    assert "hello" not in {t["name"] for t in quick["tasks"]}


def test_a_dict_spec_has_its_own_state_folder_never_rota_yaml_s(tmp_path):
    (tmp_path / "rota.yaml").write_text("tasks:\n  - {name: from-file, command: echo file}\n")
    rota_cli("run", tmp_path / "rota.yaml", "--gpus", "none", "--plain", check=True)
    data = {"tasks": [{"name": "from-dict", "command": "echo dict"}]}
    result = rota.run(rota.spec_from_dict(data, root=tmp_path), gpus="none")
    assert result.exit_code == 0
    sd = Path(result.state_dir)
    # Before: the dict spec ran in ./.rota as if it were ./rota.yaml.
    assert sd.parent == (tmp_path / ".rota" / "dicts").resolve() and sd.name.startswith("dict-")
    listed = json.loads(rota_cli("status", tmp_path / "rota.yaml", "--json", check=True).stdout)
    assert [t["name"] for t in listed["tasks"]] == ["from-file"]
    # The same mapping finds the same state; a name keeps one state across changes.
    assert default_state_dir(rota.spec_from_dict(data, root=tmp_path)) == str(sd)
    named = rota.spec_from_dict(data, root=tmp_path, name="mine")
    assert default_state_dir(named) == str((tmp_path / ".rota" / "dicts" / "mine").resolve())
    try:
        rota.spec_from_dict({"tasks": [{"name": "a", "command": "x", "gpus": "two"}]}, root=tmp_path, name="mine")
    except rota.SpecError as e:
        assert "<dict spec mine>" in str(e) and "rota.yaml" not in str(e)
    else:
        raise AssertionError("a bad dict spec was accepted")
    try:
        rota.spec_from_dict(data, root=tmp_path, name="../x")
    except rota.SpecError as e:
        assert "name '../x'" in str(e)
    else:
        raise AssertionError("a name with a path was accepted")
