"""``rota why`` names where a waiting task's CPU slots and RAM come from, never a flag the user did
not give: real runs of the CLI, with and without a live controller.

Before: a task waiting for RAM read "(the run's --memory)" with no ``--memory`` given, locally and
on Ray; without a controller on Ray, a task waiting for CPU slots read "0 of 4 free" where the run
books 8 (the cluster's 4 CPUs + 4 booked ahead in Ray's queue: the stored machine had no slots
booked ahead); on SLURM a ``--cpus`` cap above the node's CPUs was named as the limit.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from rota.core.explain import explain
from rota.core.policy import Candidate, Running
from rota.core.resources import Placement, Request
from rota.executors.cluster_limits import apply_limits, parse_limits
from rota.store.sqlite import SqliteStore
from rota.units import format_size
from tests.helpers import by_name, open_gate, rota, start_rota, wait_for, write_spec


def _kill_controller(run) -> None:
    """SIGKILL the controller alone (its attempts outlive it, as after a crash)."""
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)


def _stored_machine(sd: Path) -> dict:
    store = SqliteStore(sd, readonly=True)
    try:
        return json.loads(store.get_meta("machine") or "{}")
    finally:
        store.close()


def test_why_a_task_waits_for_ram_names_this_machines_ram_not_a_memory_flag(tmp_path: Path) -> None:
    """Two tasks that each book 60% of this machine's RAM, run without ``--memory``: the second
    waits, and ``rota why`` says the RAM is this machine's, from the controller and (once it is
    killed) computed from the stored state."""
    total = psutil.virtual_memory().total
    each = int(total * 0.6) // 2**20
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: first
            command: while [ ! -e {gate} ]; do sleep 0.05; done
            memory: {each}MB
            priority: 10
          - name: second
            command: 'true'
            memory: {each}MB
    """)
    sd = tmp_path / "state"
    origin = f"of {format_size(total)} free (this machine's {format_size(total)} RAM)"
    run = start_rota("run", spec, "--state-dir", sd, "--gpus", "none", "--plain")
    try:
        wait_for(lambda: (sd / "state.db").exists() and "RAM" in by_name(sd)["second"]["reason"], timeout=60)
        live = rota("why", "second", "--state-dir", sd, check=True).stdout
        assert origin in live and "--memory" not in live, live
        _kill_controller(run)
        computed = rota("why", "second", "--state-dir", sd, check=True).stdout
        assert "(no controller runs: computed" in computed, computed
        assert origin in computed and "--memory" not in computed, computed
    finally:
        if run.poll() is None:
            _kill_controller(run)
        gate.touch()  # the first task, left running by the killed controller, ends
    again = rota("run", spec, "--state-dir", sd, "--gpus", "none", "--plain")  # adopts it, runs the second
    assert again.returncode == 0, again.stdout + again.stderr
    assert {t["state"] for t in by_name(sd).values()} == {"succeeded"}


@pytest.mark.ray
def test_why_on_ray_names_rays_memory_and_counts_the_slots_booked_ahead_without_a_controller(
        tmp_path: Path, ray_cluster: str) -> None:
    """Three ``cpus: 4`` tasks on the 4-CPU cluster, no ``--cpus``/``--memory``: one runs, one waits
    in Ray's queue (booked ahead), the third waits. A task handed to the live run that needs no CPU
    slot but more RAM than the two running leave is told Ray's memory resource. With the controller
    killed, ``rota why`` counts the 8 slots the run books (it said 0 of 4) and still names Ray's."""
    gate = tmp_path / "gate"
    body = f"""
        tasks:
          - name: whole-{{i}}
            command: while [ ! -e {gate} ]; do sleep 0.1; done
            matrix: {{i: [0, 1, 2]}}
            cpus: 4
            memory: 1MB
    """
    spec = write_spec(tmp_path, body)
    sd = tmp_path / "state"
    backend = ("--backend", "ray", "--address", ray_cluster)
    run = start_rota("run", spec, *backend, "--plain", "--state-dir", sd)
    try:
        def one_waits() -> bool:
            if not (sd / "state.db").exists():
                return False
            states = [t["state"] for n, t in by_name(sd).items() if n.startswith("whole-")]
            return states.count("pending") == 1 and states.count("running") == 2

        wait_for(one_waits, timeout=120, interval=0.3)
        pending = next(n for n, t in by_name(sd).items() if t["state"] == "pending")
        memory = _stored_machine(sd)["memory_bytes"]
        size = format_size(memory)
        write_spec(tmp_path, body + f"""
          - name: ram
            command: 'true'
            cpus: 0
            memory: {memory - 2**20}B
        """)
        rota("run", spec, *backend, "--plain", "--state-dir", sd, check=True)  # handed to the live run
        wait_for(lambda: "RAM" in by_name(sd).get("ram", {}).get("reason", ""), timeout=60, interval=0.3)
        live = rota("why", "ram", "--state-dir", sd, check=True).stdout
        assert f"of {size} free (the Ray cluster's {size} memory resource)" in live, live
        assert "--memory" not in live, live

        _kill_controller(run)
        why = rota("why", pending, "--state-dir", sd, check=True).stdout
        assert "(no controller runs: computed" in why, why
        assert "no 4 CPU slots free: 0 of 8 free (the Ray cluster's 4 CPUs + 4 booked ahead in Ray's queue)" in why, why
        assert "--cpus" not in why, why
        ram = rota("why", "ram", "--state-dir", sd, check=True).stdout
        assert "(no controller runs: computed" in ram, ram
        assert f"of {size} free (the Ray cluster's {size} memory resource)" in ram and "--memory" not in ram, ram
    finally:
        if run.poll() is None:
            _kill_controller(run)
        write_spec(tmp_path, body)  # the resumed run leaves 'ram' out: it would ask Ray for all its memory
        gate.touch()
    again = start_rota("run", spec, *backend, "--plain", "--state-dir", sd)  # adopts the two Ray tasks
    out = open_gate(again, gate, timeout=180)
    assert again.returncode == 0, out


@pytest.mark.slurm
def test_a_slurm_node_under_caps_above_it_names_slurm_not_the_flags(tmp_path: Path, slurm_cluster) -> None:
    """``--cpus``/``--memory`` above what the SLURM node has cap nothing: a waiting task is told the
    node's figures, not the flags (the capacity did not say where they came from, so the source,
    "slurm:NODE, this run capped by --cpus 1000 --memory 1TB", named the flags)."""
    from rota.executors.slurm import SlurmExecutor

    node = SlurmExecutor(tmp_path / "state", gpu_memory_bytes=16 * 2**30).capacity()
    machine = apply_limits(node, parse_limits("slurm", cpus=1000, memory="1TB"))
    running = [Running(Placement("busy", (), (), machine.cpus, 2**20), 60.0)]
    ready = [Candidate("cpu", Request(cpus=1), 0, 0, None, 0),
             Candidate("ram", Request(cpus=0, memory_bytes=machine.memory_bytes), 0, 0, None, 1)]
    why = explain(ready, machine, running, now=0.0)
    assert f"0 of {node.cpus} free ({node.cpus} CPUs from SLURM)" in why["cpu"].text, why["cpu"].text
    size = format_size(node.memory_bytes)
    assert f"of {size} free ({size} RAM from SLURM)" in why["ram"].text, why["ram"].text
