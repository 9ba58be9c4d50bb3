"""SlurmExecutor against the real one-node cluster of scripts/slurm-up.sh.

The session fixture ``slurm_cluster`` (tests/integration/conftest_slurm.py)
starts the cluster once; without root and outside CI these tests skip, under
CI=true a missing cluster fails them. The cluster has 8 CPUs and 4 fake GPUs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rota.executors.base import Handle, Launch
from rota.executors.slurm import SlurmExecutor
from tests.helpers import wait_ended, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
GiB = 2**30


def _launch(tmp_path: Path, key: str, command: str, **kw) -> Launch:
    env = {"ROTA_TASK": key.split("#")[0], "MY_VAR": "it's \"quoted\" $HOME", "CUDA_VISIBLE_DEVICES": "7"}
    env.update(kw.pop("env", {}))
    return Launch(key=key, task=key.split("#")[0], attempt=1, command=command, env=env, workdir=str(tmp_path),
                  log_path=str(tmp_path / "logs" / f"{key.replace('#', '-')}.log"), **kw)


@pytest.fixture
def ex(tmp_path):
    e = SlurmExecutor(tmp_path / "state", gpu_memory_bytes=16 * GiB)
    yield e
    e.close()


def test_success_env_log_and_slurm_gpus(ex, tmp_path):
    la = _launch(tmp_path, "ok#1", 'echo "var=$MY_VAR"; echo "cvd=$CUDA_VISIBLE_DEVICES"; pwd; echo err >&2',
                 gpus=(3,), gpu_count=1, cpus=2, memory_bytes=GiB)
    h = ex.submit(la)
    assert h.executor == "slurm" and h.external_id.isdigit()
    st = wait_ended(ex, [h])["ok#1"]
    assert (st.phase, st.exit_code) == ("succeeded", 0)
    assert st.ended_at is not None and st.ended_at <= time.time()  # the rc file's time
    log = Path(la.log_path).read_text()
    assert "var=it's \"quoted\" $HOME" in log and str(tmp_path) in log and "err" in log
    cvd = next(line for line in log.splitlines() if line.startswith("cvd="))
    assert cvd in {f"cvd={i}" for i in range(4)}, cvd  # granted by SLURM, not the launch's "7"


def test_failure_reports_exit_code(ex, tmp_path):
    h = ex.submit(_launch(tmp_path, "bad#1", "echo about to fail; exit 7"))
    st = wait_ended(ex, [h])["bad#1"]
    assert (st.phase, st.exit_code, st.reason) == ("failed", 7, "exit 7")


def test_two_gpu_job_sees_two_devices(ex, tmp_path):
    la = _launch(tmp_path, "ddp#1", 'echo "cvd=$CUDA_VISIBLE_DEVICES"', gpu_count=2, gpus=(0, 1))
    wait_ended(ex, [ex.submit(la)])
    ids = Path(la.log_path).read_text().split("cvd=")[1].strip().split(",")
    assert len(ids) == 2 and len(set(ids)) == 2


def test_array_of_20_is_one_sbatch_and_polls_are_batched(ex, tmp_path):
    las = [_launch(tmp_path, f"m{i}#1", f'echo "item {i} on $CUDA_VISIBLE_DEVICES"; exit $(({i} % 5 == 4))',
                   array_group="m", gpu_count=1, gpus=(i % 4,)) for i in range(20)]
    hs = ex.submit_many(las)
    assert ex.command_counts["sbatch"] == 1
    assert len({h.data["job_id"] for h in hs}) == 1
    assert [h.external_id for h in hs] == [f"{hs[0].data['job_id']}_{i}" for i in range(20)]
    before = dict(ex.command_counts)
    ex.poll(hs)
    assert ex.command_counts["squeue"] - before.get("squeue", 0) == 1
    assert ex.command_counts["sacct"] - before.get("sacct", 0) <= 1
    res = wait_ended(ex, hs)
    assert [res[f"m{i}#1"].phase for i in range(20)] == ["failed" if i % 5 == 4 else "succeeded" for i in range(20)]
    assert res["m4#1"].exit_code == 1
    for i, la in enumerate(las):
        assert f"item {i} on " in Path(la.log_path).read_text()
    assert ex.command_counts["sbatch"] == 1


def test_submit_many_groups_by_array_and_resources(ex, tmp_path):
    las = [_launch(tmp_path, f"g{i}#1", "true", array_group="g", cpus=1 + (i % 2)) for i in range(4)]
    las.append(_launch(tmp_path, "solo#1", "true"))
    hs = ex.submit_many(las)
    assert ex.command_counts["sbatch"] == 3  # cpus=1 array, cpus=2 array, solo
    assert [h.key for h in hs] == [la.key for la in las]
    assert all(s.phase == "succeeded" for s in wait_ended(ex, hs).values())


def test_cancel_stops_a_running_job(ex, tmp_path):
    """Cancel reaches the job after it started and before it wrote its marker (due 5 s after the
    start): the marker never appears, checked past the moment it was due."""
    started, marker = tmp_path / "started", tmp_path / "finished"
    h = ex.submit(_launch(tmp_path, "long#1", f"touch {started}; sleep 5; touch {marker}"))
    wait_for(started.exists, timeout=60)
    seen_started = time.time()
    ex.cancel([h], grace_s=2.0)
    assert time.time() - seen_started < 5, "cancel took longer than the task; the test proves nothing"
    st = wait_ended(ex, [h], timeout_s=30)[h.key]
    assert st.phase == "failed" and st.reason == "cancelled"
    # Past the moment the marker was due (5 s after the start), with a margin.
    wait_for(lambda: time.time() > seen_started + 6.5, timeout=30)
    assert not marker.exists(), "the cancelled job ran to its end"


def test_adopt_after_controller_restart(ex, tmp_path):
    hs = ex.submit_many([_launch(tmp_path, f"ad{i}#1", f"sleep 2; exit {i + 3}", array_group="ad") for i in range(2)])
    hs.append(ex.submit(_launch(tmp_path, "ad_single#1", "sleep 2")))
    saved = json.loads(json.dumps([h.to_json() for h in hs]))
    fresh = SlurmExecutor(tmp_path / "state", gpu_memory_bytes=16 * GiB)  # a new controller
    again = [Handle.from_json(d) for d in saved]
    assert all(fresh.adopt(h) for h in again)
    res = wait_ended(fresh, again)
    assert (res["ad0#1"].exit_code, res["ad1#1"].exit_code, res["ad_single#1"].phase) == (3, 4, "succeeded")
    assert fresh.adopt(Handle("nope#1", "slurm", "999999999", {"job_id": "999999999"})) is False


def test_adopt_a_killed_job_without_rc_file(ex, tmp_path):
    """A job that ended without its rc file (cancelled) is still found, through squeue then sacct -c."""
    h = ex.submit(_launch(tmp_path, "gone#1", "sleep 60"))
    ex.cancel([h], grace_s=5)
    fresh = SlurmExecutor(tmp_path / "state", gpu_memory_bytes=16 * GiB)
    assert fresh.adopt(Handle.from_json(h.to_json()))
    assert fresh.poll([h])[h.key].reason == "cancelled"


def test_memory_shared_gpu_group_is_one_job(ex, tmp_path):
    las = [_launch(tmp_path, f"sh{i}#1", f'echo "start $(date +%s.%N) $CUDA_VISIBLE_DEVICES"; sleep 3; exit {i}',
                   gpu_count=1, gpus=(0,), gpu_memory_bytes=4 * GiB, gpu_fraction=0.25) for i in range(3)]
    las.append(_launch(tmp_path, "victim#1", "sleep 60; echo not stopped", gpu_count=1, gpus=(0,),
                       gpu_memory_bytes=4 * GiB, gpu_fraction=0.25))
    hs = ex.submit_many(las)
    assert ex.command_counts["sbatch"] == 1 and len({h.external_id for h in hs}) == 1
    wait_for(Path(las[3].log_path).exists, timeout=60)
    ex.cancel([hs[3]], grace_s=5)  # one member only: the others go on
    res = wait_ended(ex, hs[:3])
    assert [res[f"sh{i}#1"].exit_code for i in range(3)] == [0, 1, 2]
    victim = ex.poll([hs[3]])[hs[3].key]
    assert victim.phase == "failed" and victim.exit_code == 128 + 15
    starts = [float(Path(la.log_path).read_text().split()[1]) for la in las[:3]]
    assert max(starts) - min(starts) < 2.0  # side by side
    devices = {Path(la.log_path).read_text().split()[2] for la in las[:3]}
    assert len(devices) == 1  # one GPU for the group
    assert "not stopped" not in Path(las[3].log_path).read_text()


def test_capacity_from_the_cluster(ex):
    m = ex.capacity()
    assert len(m.gpus) == 4 and all(g.memory_bytes == 16 * GiB for g in m.gpus)
    assert m.cpus == 8 and m.memory_bytes > GiB and m.source.startswith("slurm:")
    total = ex.total_capacity()  # one node: the same
    assert (len(total.gpus), total.cpus, total.memory_bytes) == (4, 8, m.memory_bytes)


@pytest.mark.slow
def test_slurm_time_limit_reports_timeout(ex, tmp_path):
    """SLURM's own limit (whole minutes) as a safety net: TIMEOUT -> failed 'timeout'."""
    h = ex.submit(_launch(tmp_path, "slow#1", "sleep 600", timeout_s=5))
    st = wait_ended(ex, [h], timeout_s=200)[h.key]
    assert st.phase == "failed" and st.reason == "timeout"


def test_sbatch_refusal_is_an_executor_error(tmp_path):
    from rota.errors import ExecutorError
    from rota.executors.slurm_text import SlurmOptions

    ex = SlurmExecutor(tmp_path / "state", options=SlurmOptions(partition="no-such-partition"))
    with pytest.raises(ExecutorError, match="partition"):
        ex.submit(_launch(tmp_path, "x#1", "true"))


def test_rota_run_backend_slurm_end_to_end(tmp_path):
    """The real engine and CLI on SLURM: a dependency, a matrix, memory-shared GPUs, a retry."""
    from tests.helpers import rota, write_spec

    spec = write_spec(tmp_path, """
        slurm:
          gpu_memory: 16GB
        tasks:
          - name: prep
            command: echo prep
          - name: train-{i}
            command: echo "train {i} cvd=$CUDA_VISIBLE_DEVICES"
            matrix: {i: [0, 1, 2, 3, 4, 5]}
            gpus: 1
            needs: [prep]
          - name: small-{i}
            command: echo small {i}; sleep 1
            matrix: {i: [0, 1, 2]}
            gpus: 1
            gpu_memory: 4GB
          - name: flaky
            command: exit 3
            retries: 1
    """)
    p = rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", tmp_path / "st", timeout=240)
    assert p.returncode != 0  # flaky fails twice
    assert "10 succeeded" in p.stdout and "1 failed" in p.stdout, p.stdout + p.stderr
    for i in range(6):
        log = (tmp_path / "st" / "logs" / f"train-{i}" / "attempt-1.log").read_text()
        assert f"train {i} cvd=" in log
    assert (tmp_path / "st" / "logs" / "flaky" / "attempt-2.log").exists()


def test_controller_inside_a_slurm_job_does_not_leak_its_allocation(tmp_path):
    import os

    outer = {**os.environ, "SLURM_JOB_ID": "424242", "SLURM_MEM_PER_NODE": "1", "ROTA_TASK": "controller"}
    ex = SlurmExecutor(tmp_path / "state", inherit_env=outer)
    la = _launch(tmp_path, "inner#1", 'echo "job=$SLURM_JOB_ID mem=${SLURM_MEM_PER_NODE:-unset} task=$ROTA_TASK"')
    h = ex.submit(la)
    assert wait_ended(ex, [h])[h.key].phase == "succeeded"
    assert f"job={h.external_id} mem=unset task=inner" in Path(la.log_path).read_text()


def test_log_path_with_percent_signs(ex, tmp_path):
    """SLURM expands %j, %a... in --output: such a log is reached through a symlink."""
    import dataclasses

    la = dataclasses.replace(_launch(tmp_path, "pct#1", "echo hello"), log_path=str(tmp_path / "logs" / "100%j.log"))
    wait_ended(ex, [ex.submit(la)])
    assert Path(la.log_path).read_text() == "hello\n"


def test_time_in_the_queue_does_not_count_against_the_timeout(tmp_path):
    """A job that waits behind a full cluster is timed (and shown) from its start, not its submission."""
    import subprocess

    from tests.helpers import rota, write_spec

    blocker = subprocess.run(["sbatch", "--parsable", "-c", "8", "-o", "/dev/null", "--wrap", "sleep 10"],
                             capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        spec = write_spec(tmp_path, """
            tasks:
              - {name: waits, command: sleep 1, timeout: 5s}
              - {name: overruns, command: sleep 60, timeout: 3s}
        """)
        t0 = time.time()
        p = rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", tmp_path / "st", timeout=240)
        st = json.loads(rota("status", "--json", "--state-dir", tmp_path / "st").stdout)
    finally:
        subprocess.run(["scancel", blocker], check=False)
    by = {t["name"]: t for t in st["tasks"]}
    assert by["waits"]["state"] == "succeeded", p.stdout + p.stderr  # queued ~10 s behind the blocker, ran 1 s
    assert by["overruns"]["state"] == "failed" and by["overruns"]["reason"] == "timeout", p.stdout
    assert time.time() - t0 > 10  # both really waited for the blocker
    # Its recorded start is the job's, after the queue: status and report show the run, not the wait.
    assert by["waits"]["started_at"] > t0 + 5 and by["waits"]["duration_s"] < 5, by["waits"]


def test_status_shows_a_job_waiting_in_slurms_queue_as_queued(tmp_path):
    """While SLURM holds a job PENDING, `rota status` says queued (no duration); once it ran, not."""
    import subprocess

    from tests.helpers import rota, start_rota, status, wait_for, write_spec

    # The node's 8 CPUs are held until the test has seen the task queued (a gate, not a sleep: on a
    # loaded machine an 8 s blocker ended before the first status and the task was running already).
    gate = tmp_path / "gate"
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "8", "-o", "/dev/null", "--wrap",
                              f"while [ ! -e {gate} ]; do sleep 0.1; done"],
                             capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    state = tmp_path / "st"
    spec = write_spec(tmp_path, "tasks:\n  - {name: waits, command: sleep 1}\n")
    run = start_rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", state)
    seen: list[dict] = []

    def running() -> bool:
        p = rota("status", "--json", "--state-dir", state)
        # A state folder just made has no task rows yet (a loaded machine shows that moment).
        tasks = json.loads(p.stdout)["tasks"] if p.returncode == 0 else []
        task = tasks[0] if tasks else {}
        seen[:] = [task] if task.get("state") == "running" else []
        return bool(seen)

    try:
        wait_for(running, timeout=60, interval=0.2)
        t = seen[0]
        assert t["queued"] is True and t["reason"] == "queued in slurm" and t["duration_s"] is None, t
        table = rota("status", "--state-dir", state).stdout
        assert any(line.split()[:2] == ["waits", "queued"] for line in table.splitlines()), table
        only = rota("status", "--json", "--state", "queued", "--state-dir", state)
        assert [t["name"] for t in json.loads(only.stdout)["tasks"]] == ["waits"], only.stdout + only.stderr
        gate.touch()
        out, _ = run.communicate(timeout=120)
    finally:
        run.kill()
        subprocess.run(["scancel", blocker], check=False)
    assert run.returncode == 0, out
    t = status(state)["tasks"][0]
    assert t["state"] == "succeeded" and t["queued"] is False and t["duration_s"] < 5, t
    none = json.loads(rota("status", "--json", "--state", "queued", "--state-dir", state).stdout)
    assert none["tasks"] == [] and none["counts"]["succeeded"] == 1


def test_crash_before_handle_commit_kills_the_unrecorded_job_before_the_rerun(tmp_path):
    """A controller killed between sbatch and committing the job's handle: the rerun finds the job by its
    batch script (this state folder, this attempt), kills it, waits until SLURM drops it, and only then
    runs the attempt again. The task holds a lock for its lifetime: a second execution beside the first
    would find it taken."""
    import os
    import signal

    from tests.helpers import by_name, forget_handles, rota, start_rota, wait_for, write_spec

    rec, lock, task = tmp_path / "rec", tmp_path / "lock", tmp_path / "task.sh"
    task.write_text('exec 9>>"$1"\nif ! flock -n 9; then echo overlap >> "$2"; exit 3; fi\n'
                    'echo "start $SLURM_JOB_ID" >> "$2"\nsleep "$3"\necho "end $SLURM_JOB_ID" >> "$2"\n')
    spec = write_spec(tmp_path, f"tasks:\n  - {{name: slow, command: bash {task} {lock} {rec} 6}}\n")
    state = tmp_path / "st"
    ctl = start_rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", state)
    try:
        wait_for(lambda: rec.exists() and "start" in rec.read_text(), timeout=60, interval=0.2)
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(timeout=30)
    finally:
        if ctl.poll() is None:
            ctl.kill()
    forget_handles(state)  # what a kill between sbatch and the handle's commit leaves
    p = rota("run", spec, "--backend", "slurm", "--plain", "--state-dir", state, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "lost" in p.stdout, p.stdout
    lines = rec.read_text().split("\n")
    starts = [ln.split()[1] for ln in lines if ln.startswith("start")]
    assert "overlap" not in lines and len(starts) == 2 and starts[0] != starts[1], lines
    assert [ln for ln in lines if ln.startswith("end")] == [f"end {starts[1]}"], lines  # the first was killed
    assert by_name(state)["slow"]["state"] == "succeeded"


def test_python_api_runs_a_dict_spec_on_slurm(tmp_path):
    """``rota.run(spec, backend="slurm")`` as the README's API shows it, with no backend_options:
    the executor gets the run's state folder, the spec's ``slurm:`` section and ``--gpus``' size
    as ``rota run --backend slurm`` gives them (it raised TypeError: no state_dir)."""
    import rota

    spec = rota.spec_from_dict({
        "slurm": {"extra": ["--comment=rota-api-test"]},
        "tasks": [{"name": "hello", "command": "echo hi from $ROTA_TASK on $SLURM_JOB_ID", "gpus": 1,
                   "gpu_memory": "30GB"}],
    }, root=tmp_path, name="api-slurm")
    result = rota.run(spec, backend="slurm", gpus="2x40GB")
    assert result.exit_code == 0, result
    sd = Path(result.state_dir)
    assert sd == (tmp_path / ".rota" / "dicts" / "api-slurm").resolve()
    (task,) = rota.status(state_dir=sd)["tasks"]
    assert task["state"] == "succeeded"
    assert "hi from hello on " in Path(task["log_path"]).read_text()
    scripts = list((sd / "slurm").glob("*.sbatch"))  # in the run's own state folder, with the spec's slurm:
    assert scripts and "--comment=rota-api-test" in scripts[0].read_text()


def test_a_run_left_on_slurm_is_not_continued_on_another_backend(tmp_path):
    """kill -9 of a --backend slurm controller, then 'rota run SPEC' without the flag (as the
    end-of-run hint reads): the local executor cannot follow the SLURM jobs, so it took them for
    lost and ran each task a second time beside its still running job. Now: exit 2, nothing
    started; with --backend slurm the jobs are adopted and each task runs once."""
    import os
    import signal

    from tests.helpers import by_name, rota, start_rota, write_spec

    runs = tmp_path / "runs"
    runs.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: long-{{i}}
            matrix: {{i: [0, 1]}}
            command: touch {runs}/{{i}}-$ROTA_ATTEMPT; sleep 6
    """)
    sd = tmp_path / ".rota"
    proc = start_rota("run", spec, "--backend", "slurm", "--plain")
    try:
        wait_for(lambda: len(list(runs.iterdir())) == 2, timeout=120)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    p = rota("run", spec, "--plain")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--backend slurm" in p.stderr and "long-0" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = rota("run", spec, "--plain", "--backend", "slurm", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(f.name for f in runs.iterdir()) == ["0-1", "1-1"]  # each task ran once
    assert {n: t["state"] for n, t in by_name(sd).items()} == {"long-0": "succeeded", "long-1": "succeeded"}
