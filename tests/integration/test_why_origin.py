"""``rota why`` names where a waiting task's CPU slots and RAM come from, never a flag the user did
not give: real runs of the CLI, with and without a live controller.

Before: a task waiting for RAM read "(the run's --memory)" with no ``--memory`` given, locally and
on Ray; on SLURM a ``--cpus`` cap above the node's CPUs was named as the limit.
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
from tests.helpers import by_name, rota, start_rota, wait_for, write_spec


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
