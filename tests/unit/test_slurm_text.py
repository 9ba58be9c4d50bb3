"""SLURM text in and out, against output saved from a real cluster.

The files in tests/data/slurm/ were captured from SLURM 22.05 started by
scripts/slurm-up.sh (tests/data/slurm/capture.sh re-captures them). The
slurmdbd form of sacct (``123_4`` ids, step lines, ``CANCELLED by 0``) cannot
be captured from that cluster (no slurmdbd), so its cases are written from
SLURM's documented format and marked SYNTHETIC below.

Rendered scripts are checked by running them with bash (no SLURM needed):
the array script with SLURM_ARRAY_TASK_ID set, as slurmstepd would.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.errors import ExecutorError
from rota.executors.base import Launch
from rota.executors.slurm_text import (
    SlurmOptions,
    attempts_in_script,
    expand_array_id,
    gres_gpu_count,
    parse_exit_code,
    parse_job_scripts,
    parse_nodes,
    parse_sacct,
    parse_sbatch_parsable,
    parse_squeue,
    render_array,
    render_shared,
    render_single,
    status_of,
    time_limit_minutes,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def _launch(tmp_path: Path, key: str = "t#1", command: str = "echo hi", **kw) -> Launch:
    base = {
        "key": key, "task": key.split("#")[0], "attempt": 1, "command": command,
        "env": {"MY_VAR": "hello world", "CUDA_VISIBLE_DEVICES": "3"}, "workdir": str(tmp_path),
        "log_path": str(tmp_path / "logs" / (key.replace("#", "-") + ".log")),
    }
    base.update(kw)
    return Launch(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ squeue (real)
def test_squeue_while_running():
    rows = parse_squeue(_read("squeue_running.txt"))
    assert rows["12"].state == "COMPLETED" and status_of(rows["12"]).phase == "succeeded"
    assert rows["13"].state == "FAILED" and status_of(rows["13"]).phase == "failed"
    assert rows["15"].state == "RUNNING" and status_of(rows["15"]).phase == "running"
    assert status_of(rows["15"]).started_at == datetime(2026, 11, 23, 14, 2, 45).timestamp()
    assert rows["15"].end is None  # squeue's %e of a running job is its time limit, not an end
    # array elements: running ones have their own raw id, pending ones share the array's
    assert rows["16_0"].raw_id == "20" and rows["16_0"].state == "RUNNING"
    assert [rows[f"16_{i}"].state for i in range(4, 10)] == ["PENDING"] * 6
    assert rows["16_4"].raw_id is None  # squeue prints the array's id for elements not started yet
    assert rows["18"].reason == "JobHeldUser"
    assert all(status_of(rows[k]).phase == "running" for k in ("16_4", "17", "18", "19"))
    assert status_of(rows["16_4"]).started_at is None


def test_squeue_collapsed_array_range_is_expanded():
    rows = parse_squeue(_read("squeue_array_collapsed.txt"))
    assert sorted(rows) == sorted(f"16_{i}" for i in range(10))
    assert rows["16_7"].state == "PENDING" and rows["16_7"].raw_id is None


def test_squeue_after_the_end():
    rows = parse_squeue(_read("squeue_finished.txt"))
    timeout = status_of(rows["15"])
    assert timeout.phase == "failed" and timeout.reason == "timeout" and not timeout.retry_free
    assert timeout.ended_at == datetime(2026, 11, 23, 14, 4, 3).timestamp()
    assert status_of(rows["18"]).reason == "cancelled"  # held, then scancel
    assert {k for k, v in rows.items() if k.startswith("16_") and v.state == "FAILED"} == {"16_2", "16_5", "16_8"}
    assert rows["16_9"].raw_id == "16"  # the last element keeps the array's own id
    assert not any(status_of(v).phase == "running" for v in rows.values())


def test_squeue_empty_and_junk():
    assert parse_squeue("") == {}
    assert parse_squeue("slurm_load_jobs error: Invalid job id specified\n") == {}


# ------------------------------------------------------------------ sacct -c (real)
def test_sacct_job_completion_file_form():
    rows = parse_sacct(_read("sacct_c.txt"))
    bad = status_of(rows["13"])
    assert (bad.phase, bad.exit_code, bad.reason) == ("failed", 3, "exit 3")
    killed = status_of(rows["14"])  # the batch shell killed by SIGKILL: 0:9
    assert (killed.phase, killed.exit_code, killed.reason) == ("failed", 137, "signal 9")
    assert status_of(rows["15"]).reason == "timeout"
    assert status_of(rows["12"]).phase == "succeeded"
    assert status_of(rows["22"]).exit_code == 1  # array element, known by raw id only
    assert status_of(rows["18"]).reason == "cancelled"


def test_sacct_without_accounting_says_nothing():
    assert "accounting storage is disabled" in _read("sacct_disabled.txt")
    assert parse_sacct(_read("sacct_disabled.txt")) == {}


# ------------------------------------------------------------------ sacct with slurmdbd (SYNTHETIC)
SACCT_DBD = """\
123|COMPLETED|0:0|2026-11-23T10:00:00|2026-11-23T10:05:00
123.batch|COMPLETED|0:0|2026-11-23T10:00:00|2026-11-23T10:05:00
123.extern|COMPLETED|0:0|2026-11-23T10:00:00|2026-11-23T10:05:00
124_1|CANCELLED by 0|0:15|2026-11-23T10:00:00|2026-11-23T10:01:00
124_[2-4%2]|PENDING|0:0|Unknown|Unknown
125|PREEMPTED|0:15|2026-11-23T10:00:00|2026-11-23T10:02:00
126|NODE_FAIL|1:0|2026-11-23T10:00:00|2026-11-23T10:02:00
127|OUT_OF_MEMORY|0:125|2026-11-23T10:00:00|2026-11-23T10:02:00
128|REQUEUED|0:0|2026-11-23T10:00:00|2026-11-23T10:02:00
129|BOOT_FAIL|0:0|None|2026-11-23T10:02:00
130|CONFIGURING|0:0|2026-11-23T10:00:00|Unknown
131|COMPLETING|0:0|2026-11-23T10:00:00|Unknown
132|FAILED|2:0|2026-11-23T10:00:00|2026-11-23T10:00:01
132|COMPLETED|0:0|2026-11-23T11:00:00|2026-11-23T11:00:01
"""


def test_sacct_slurmdbd_form():
    rows = parse_sacct(SACCT_DBD)
    assert not any("." in k for k in rows)
    assert status_of(rows["123"]).phase == "succeeded"
    c = status_of(rows["124_1"])
    assert (c.phase, c.reason, c.exit_code) == ("failed", "cancelled", 128 + 15)
    assert [status_of(rows[f"124_{i}"]).phase for i in (2, 3, 4)] == ["running"] * 3
    for jid, reason in (("125", "preempted"), ("126", "node failure"), ("128", "requeued by SLURM"),
                        ("129", "node boot failure")):
        s = status_of(rows[jid])
        assert s.phase == "failed" and s.retry_free and s.reason == reason, jid
    oom = status_of(rows["127"])
    assert oom.phase == "failed" and not oom.retry_free and "memory" in oom.reason
    assert status_of(rows["129"]).started_at is None
    assert status_of(rows["130"]).phase == status_of(rows["131"]).phase == "running"
    assert status_of(rows["132"]).phase == "succeeded"  # the later record wins


@pytest.mark.parametrize("text,expected", [
    ("0:0", (0, 0)), ("3:0", (3, 0)), ("0:9", (0, 9)), ("255:0", (255, 0)), ("", (None, None)), ("x:y", (None, None)),
])
def test_exit_codes(text, expected):
    assert parse_exit_code(text) == expected


def test_expand_array_ids():
    assert expand_array_id("12") == ["12"]
    assert expand_array_id("12_3") == ["12_3"]
    assert expand_array_id("12_[0-2,5]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_array_id("12_[7-8%2]") == ["12_7", "12_8"]


# ------------------------------------------------------------------ nodes (real)
def test_nodes_from_scontrol():
    (node,) = parse_nodes(_read("scontrol_show_node.txt"))
    assert (node.name, node.cpus, node.memory_mb, node.gpus, node.partitions) == ("vm", 8, 24105, 4, ("main",))
    assert node.state == "IDLE"


def test_gres_forms():
    assert gres_gpu_count("gpu:4") == 4
    assert gres_gpu_count("gpu:a100:2(S:0-1),gpu:v100:2(S:1)") == 4
    assert gres_gpu_count("(null)") == 0
    assert gres_gpu_count("mps:100,gpu:2") == 2


def test_sbatch_parsable():
    assert parse_sbatch_parsable("1234\n") == "1234"
    assert parse_sbatch_parsable("1234;cluster1\n") == "1234"
    with pytest.raises(ExecutorError):
        parse_sbatch_parsable("sbatch: error: Batch job submission failed\n")


# ------------------------------------------------------------------ rendering
def _directives(script: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH ")]


def test_single_directives(tmp_path):
    la = _launch(tmp_path, gpu_count=2, cpus=4, memory_bytes=3 * 2**30, timeout_s=90)
    opts = SlurmOptions(partition="gpu", account="proj", qos="high", extra=("--constraint=a100",))
    d = _directives(render_single(la, opts))
    for want in ("--gres=gpu:2", "--cpus-per-task=4", "--mem=3072M", "--time=0-00:02:00", f"--output={la.log_path}",
                 "--partition=gpu", "--account=proj", "--qos=high", "--constraint=a100", "--no-requeue",
                 "--open-mode=append", f"--chdir={tmp_path}"):
        assert want in d, want
    d2 = _directives(render_single(_launch(tmp_path, gpu_count=1), SlurmOptions(gpu_flag="gpus")))
    assert "--gpus=1" in d2 and not any(x.startswith(("--mem", "--time", "--gres", "--partition")) for x in d2)
    d3 = _directives(render_single(_launch(tmp_path), SlurmOptions()))
    assert not any(x.startswith(("--gpus", "--gres")) for x in d3)


def test_output_patterns_need_a_link(tmp_path):
    from rota.executors.slurm_text import needs_output_link

    assert not needs_output_link("/s/logs/t-1/attempt-1.log")
    assert needs_output_link("/s/logs/100%j.log") and needs_output_link("/s/a\\b.log")
    d = _directives(render_single(_launch(tmp_path), SlurmOptions(), "/s/slurm/x.log"))
    assert "--output=/s/slurm/x.log" in d


def test_time_limits(tmp_path):
    assert time_limit_minutes(_launch(tmp_path)) is None
    assert time_limit_minutes(_launch(tmp_path, timeout_s=10)) == 1
    assert time_limit_minutes(_launch(tmp_path, timeout_s=3600)) == 60
    assert time_limit_minutes(_launch(tmp_path, estimate_s=600)) == 30  # 2x + 10 min
    assert time_limit_minutes(_launch(tmp_path, timeout_s=120, estimate_s=6000)) == 2  # timeout wins
    assert "--time=1-01:00:00" in _directives(render_single(_launch(tmp_path, timeout_s=25 * 3600), SlurmOptions()))


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env={**os.environ, **env},
                          cwd="/", timeout=60)


def test_single_script_runs(tmp_path):
    la = _launch(tmp_path, command='echo "var=$MY_VAR cvd=${CUDA_VISIBLE_DEVICES-unset}"; pwd; exit 4', gpu_count=1)
    Path(la.log_path).parent.mkdir(parents=True)
    p = _bash(render_single(la, SlurmOptions()), tmp_path, CUDA_VISIBLE_DEVICES="1")
    assert p.returncode == 4
    assert "var=hello world cvd=1" in p.stdout  # SLURM's CUDA_VISIBLE_DEVICES, not the launch's "3"
    assert str(tmp_path) in p.stdout
    assert Path(la.log_path + ".rc").read_text() == "4\n"


CVD = 'echo "cvd=${CUDA_VISIBLE_DEVICES-unset}"'


@pytest.mark.parametrize("inherited", [None, "0,1,2,3"])
def test_cpu_task_sees_no_gpu(tmp_path, inherited):
    """A CPU launch gets CUDA_VISIBLE_DEVICES empty (as on the local and Ray backends), whether the
    job inherited none (SLURM sets none for a job without GPUs) or the submitting shell's."""
    env = {} if inherited is None else {"CUDA_VISIBLE_DEVICES": inherited}
    la = _launch(tmp_path, command=CVD, env={"MY_VAR": "x", "CUDA_VISIBLE_DEVICES": ""})
    Path(la.log_path).parent.mkdir(parents=True)
    clean = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    path = tmp_path / "job.sh"
    path.write_text(render_single(la, SlurmOptions()))
    p = subprocess.run(["bash", str(path)], capture_output=True, text=True, env={**clean, **env}, timeout=60)
    assert p.returncode == 0 and p.stdout == "cvd=\n"


def test_array_cpu_elements_see_no_gpu_gpu_elements_keep_slurms(tmp_path):
    cpu = [_launch(tmp_path, f"c{i}#1", CVD, array_group="c") for i in range(2)]
    gpu = [_launch(tmp_path, f"g{i}#1", CVD, array_group="g", gpu_count=1) for i in range(2)]
    Path(cpu[0].log_path).parent.mkdir(parents=True)
    cpu_script = render_array(cpu, SlurmOptions(), str(tmp_path / "c" / "%a"))
    gpu_script = render_array(gpu, SlurmOptions(), str(tmp_path / "g" / "%a"))
    for i in range(2):
        assert _bash(cpu_script, tmp_path, SLURM_ARRAY_TASK_ID=str(i), CUDA_VISIBLE_DEVICES="2").stdout == "cvd=\n"
        assert _bash(gpu_script, tmp_path, SLURM_ARRAY_TASK_ID=str(i), CUDA_VISIBLE_DEVICES="2").stdout == "cvd=2\n"


def test_shared_gpu_members_keep_slurms_gpu(tmp_path):
    las = [_launch(tmp_path, f"s{i}#1", CVD, gpu_count=1, gpus=(0,), gpu_memory_bytes=2**30, gpu_fraction=0.5)
           for i in range(2)]
    Path(las[0].log_path).parent.mkdir(parents=True)
    script = render_shared(las, SlurmOptions(), str(tmp_path / "shared.out"))
    assert "export CUDA_VISIBLE_DEVICES" not in script
    assert _bash(script, tmp_path, CUDA_VISIBLE_DEVICES="3").returncode == 0
    assert [Path(la.log_path).read_text() for la in las] == ["cvd=3\n"] * 2


def test_array_script_runs_each_element(tmp_path):
    las = [_launch(tmp_path, f"a{i}#1", f"echo item {i} $MY_VAR; exit {i}", array_group="a",
                   env={"MY_VAR": f"v{i}"}) for i in range(3)]
    Path(las[0].log_path).parent.mkdir(parents=True)
    script = render_array(las, SlurmOptions(), str(tmp_path / "links" / "%a"))
    assert "--array=0-2" in _directives(script)
    for i, la in enumerate(las):
        p = _bash(script, tmp_path, SLURM_ARRAY_TASK_ID=str(i))
        assert p.returncode == i and p.stdout == f"item {i} v{i}\n"
        assert Path(la.log_path + ".rc").read_text() == f"{i}\n"
    assert _bash(script, tmp_path, SLURM_ARRAY_TASK_ID="7").returncode == 2


def test_array_needs_equal_resources(tmp_path):
    a, b = _launch(tmp_path, "a#1", cpus=1), _launch(tmp_path, "b#1", cpus=2)
    with pytest.raises(ExecutorError):
        render_array([a, b], SlurmOptions(), "/x/%a")
    with pytest.raises(ExecutorError):
        render_array([a], SlurmOptions(), "/x/no-index")


def test_shared_script_runs_members_concurrently(tmp_path):
    las = [_launch(tmp_path, f"s{i}#1", f"echo start {i}; sleep 1; echo end {i}; exit {i}", gpu_count=1,
                   gpu_memory_bytes=2**30, cpus=2, memory_bytes=2**30, timeout_s=60 * (i + 1)) for i in range(3)]
    Path(las[0].log_path).parent.mkdir(parents=True)
    script = render_shared(las, SlurmOptions(), str(tmp_path / "shared.out"))
    d = _directives(script)
    assert "--gres=gpu:1" in d and "--cpus-per-task=6" in d and "--mem=3072M" in d and "--time=0-00:03:00" in d
    import time as _t

    t0 = _t.time()
    assert _bash(script, tmp_path).returncode == 0
    assert _t.time() - t0 < 2.9  # side by side, not one after another
    for i, la in enumerate(las):
        assert Path(la.log_path).read_text() == f"start {i}\nend {i}\n"
        assert Path(la.log_path + ".rc").read_text() == f"{i}\n"


def test_env_names_are_checked(tmp_path):
    with pytest.raises(ExecutorError):
        render_single(_launch(tmp_path, env={"BAD-NAME": "x"}), SlurmOptions())
    with pytest.raises(ExecutorError):
        render_single(_launch(tmp_path), SlurmOptions(extra=("--comment=a\nrm -rf /",)))


@settings(max_examples=40, deadline=None)
@given(value=st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_env_values_survive_quoting(tmp_path_factory, value):
    tmp = tmp_path_factory.mktemp("q")
    la = _launch(tmp, command='printf "%s" "$MY_VAR"', env={"MY_VAR": value})
    Path(la.log_path).parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["bash", "-c", render_single(la, SlurmOptions())], capture_output=True, timeout=30)
    assert p.stdout == value.encode("utf-8", "surrogateescape")


def _keyed(tmp_path: Path, key: str) -> Launch:
    return _launch(tmp_path, key, env={"ROTA_ATTEMPT_KEY": key, "MY_VAR": "x"})


def test_attempts_in_rendered_scripts(tmp_path):
    """Which attempts a batch script runs, read back from what rota rendered (odd names included)."""
    odd = "it's a \"task\" $HOME#2"
    assert attempts_in_script(render_single(_keyed(tmp_path, odd), SlurmOptions())) == [(odd, None)]
    arr = [_keyed(tmp_path, f"train-{i}#1") for i in range(12)]
    assert attempts_in_script(render_array(arr, SlurmOptions(), str(tmp_path / "%a"))) == [
        (f"train-{i}#1", i) for i in range(12)]
    shared = [_keyed(tmp_path, f"small-{i}#3") for i in range(3)]
    assert attempts_in_script(render_shared(shared, SlurmOptions(), str(tmp_path / "o"))) == [
        (f"small-{i}#3", None) for i in range(3)]
    assert attempts_in_script("#!/bin/bash\nexport ROTA_ATTEMPT_KEY='unclosed\nsleep 1\n") == []
    assert attempts_in_script("#!/bin/bash\nsrun python train.py\n") == []


def test_parse_job_scripts():
    text = "1234|/home/u/.rota/slurm/a.sbatch\n1234|/home/u/.rota/slurm/a.sbatch\n77|/tmp/x y.sh\n(null)|\n"
    assert parse_job_scripts(text) == [("1234", "/home/u/.rota/slurm/a.sbatch"), ("77", "/tmp/x y.sh")]
