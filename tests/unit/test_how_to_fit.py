"""The fix a refused task is offered names only what can help: ``--cpus``/``--memory`` raise a
machine's figures, but only lower a cluster's (Ray, SLURM), so there the fix is on the cluster."""

from __future__ import annotations

from rota.core.resources import Machine, Request, how_to_fit

GB = 1 << 30


def test_a_machine_is_offered_the_flag() -> None:
    here = Machine((), 8, 16 * GB, source="nvml", cpus_from="machine", memory_from="machine")
    assert how_to_fit(Request(cpus=16), here) == "run with --cpus 16 if this machine has them, or lower the task's 'cpus:' to 8"
    assert "run with --memory 32GB" in how_to_fit(Request(memory_bytes=32 * GB), here)


def test_a_cluster_is_not_offered_a_flag_that_only_lowers_it() -> None:
    ray = Machine((), 4, 16 * GB, source="ray", cpus_from="ray", memory_from="ray")
    fix = how_to_fit(Request(cpus=8), ray)
    assert "run with --cpus" not in fix and fix.startswith("lower the task's 'cpus:' to 4") and "Ray cluster" in fix
    fix = how_to_fit(Request(memory_bytes=32 * GB), ray)
    assert "run with --memory" not in fix and "lower the task's 'memory:' to 16GB" in fix
    slurm = Machine((), 8, 16 * GB, source="slurm:n1", cpus_from="slurm", memory_from="slurm")
    assert "--partition" in how_to_fit(Request(cpus=16), slurm) and "run with --cpus" not in how_to_fit(Request(cpus=16), slurm)
    alloc = Machine((), 2, 4 * GB, source="slurm-allocation", cpus_from="slurm-allocation", memory_from="slurm-allocation")
    assert "--cpus-per-task" in how_to_fit(Request(cpus=4), alloc)
