"""A task waiting for CPU slots is told where those slots come from (``rota why``, ``rota status``):
the run's ``--cpus``, this machine's CPUs, the SLURM allocation's, or a Ray cluster's, with the
slots rota books ahead in Ray's queue. It always said "(the run's --cpus)", also on Ray with no
``--cpus`` given ("0 of 8 free (the run's --cpus)" on a 4-CPU cluster)."""

from __future__ import annotations

from dataclasses import replace

from rota.core.explain import explain
from rota.core.policy import Candidate, Running
from rota.core.resources import Machine, Placement, Request, with_cpu_headroom
from rota.executors.cluster_limits import apply_limits, parse_limits
from rota.machine import detect_machine


def _why_waiting(machine: Machine) -> str:
    """The reason of a task that asks for every CPU of ``machine`` while another holds them all."""
    running = [Running(Placement("busy", (), (), machine.cpus, 0), 60.0)]
    reasons = explain([Candidate("wait", Request(cpus=machine.cpus), 0, 0, None, 0)], machine, running, now=0.0)
    assert reasons["wait"].kind == "cpu", reasons
    return reasons["wait"].text


def test_a_ray_cluster_and_its_slots_booked_ahead_are_named() -> None:
    cluster = Machine((), 4, 2**34, source="ray", cpus_from="ray")
    text = _why_waiting(with_cpu_headroom(cluster, 1.0))
    assert "0 of 8 free (the Ray cluster's 4 CPUs + 4 booked ahead in Ray's queue)" in text, text
    assert "--cpus" not in text, text


def test_a_cluster_capped_by_cpus_names_the_flag() -> None:
    cluster = Machine((), 4, 2**34, source="ray", cpus_from="ray")
    capped = apply_limits(cluster, parse_limits("ray", cpus=2))
    assert "0 of 2 free (the run's --cpus 2)" in _why_waiting(capped)
    above = apply_limits(cluster, parse_limits("ray", cpus=16))  # no cap in effect: the cluster's
    assert "(the Ray cluster's 4 CPUs)" in _why_waiting(above)


def test_a_local_machine_names_the_flag_or_the_machine() -> None:
    assert "(the run's --cpus 3)" in _why_waiting(detect_machine(gpus="none", cpus=3, environ={}))
    mine = detect_machine(gpus="none", environ={})
    assert f"(this machine's {mine.cpus} CPUs)" in _why_waiting(mine)
    slurm = detect_machine(gpus="none", environ={"SLURM_CPUS_ON_NODE": "6"})
    assert "0 of 6 free (the SLURM allocation's 6 CPUs)" in _why_waiting(slurm)


def test_a_machine_stored_by_an_older_rota_is_read_from_its_source() -> None:
    """``rota why`` without a controller rebuilds the machine from the state; one stored before
    ``cpus_from`` existed says where its CPUs come from through its source alone."""
    assert "(the Ray cluster's 4 CPUs)" in _why_waiting(Machine((), 4, 2**34, source="ray"))
    capped = Machine((), 2, 2**34, source="ray, this run capped by --cpus 2")
    assert "(the run's --cpus 2)" in _why_waiting(capped)
    assert "0 of 8 free (8 CPUs)" in _why_waiting(replace(Machine((), 8, 2**34), source="nvml"))
