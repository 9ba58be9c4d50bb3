"""GPUs listed by CUDA_VISIBLE_DEVICES that NVML cannot read (a SLURM allocation's ``--gres=gpu:2`` on
a node without NVML) are never ignored in silence: rota says how many, why their memory is unknown
and how to declare them (``--gpus 2x80GB``); a spec with a GPU task is refused with that line
(exit 2, nothing started), a CPU-only one runs with the line on stderr. Before, rota booked no GPU
and said nothing (a GPU task was refused as 'the machine has none')."""

from __future__ import annotations

import pytest

from rota.core.resources import Gpu, Machine
from rota.machine import detect_gpus_nvml, detect_machine, visible_without_nvml
from tests.helpers import rota, write_spec

ALLOC = {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "4242"}
no_nvml = pytest.mark.skipif(detect_gpus_nvml() is not None, reason="NVML works here: the GPUs are read")


def test_the_line_names_the_count_the_cause_and_the_flag():
    note = visible_without_nvml(Machine((), 4, 2**30, source="none"), None, ALLOC)
    assert note is not None
    assert note.startswith("2 GPUs are visible through CUDA_VISIBLE_DEVICES=0,1 (SLURM job 4242)"), note
    assert "memory is unknown without NVML" in note and "--gpus 2x80GB" in note and "\n" not in note
    one = visible_without_nvml(Machine((), 4, 2**30, source="none"), None, {"CUDA_VISIBLE_DEVICES": "GPU-3f2a"})
    assert one is not None and one.startswith("1 GPU is visible") and "--gpus 1x80GB" in one


@pytest.mark.parametrize("cvd", ["", "-1", "NoDevFiles", None])
def test_nothing_listed_says_nothing(cvd):
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    assert visible_without_nvml(Machine((), 4, 2**30, source="none"), None, env) is None


def test_gpus_read_or_declared_say_nothing():
    read = Machine((Gpu(0, 80 * 2**30),), 4, 2**30, source="nvml")
    assert visible_without_nvml(read, None, ALLOC) is None
    assert visible_without_nvml(Machine((), 4, 2**30, source="none"), "none", ALLOC) is None  # --gpus none
    assert visible_without_nvml(Machine((), 4, 2**30, source="declared"), "2x80GB", ALLOC) is None


@no_nvml
def test_detected_inside_an_allocation_without_nvml():
    m = detect_machine(environ=ALLOC)
    assert m.gpus == () and m.source == "none"
    note = visible_without_nvml(m, None, ALLOC)
    assert note is not None and "2 GPUs are visible" in note
    declared = detect_machine(gpus="2x80GB", environ=ALLOC)  # the fix the line gives
    assert [g.cuda_id for g in declared.gpus] == ["0", "1"]
    assert visible_without_nvml(declared, "2x80GB", ALLOC) is None


@no_nvml
def test_rota_run_refuses_a_gpu_task_with_that_line_and_runs_a_cpu_spec_saying_it(tmp_path):
    gpu = write_spec(tmp_path / "g", """
        tasks:
          - {name: prep, command: "true"}
          - {name: train, command: "true", gpus: 1}
    """)
    p = rota("run", gpu, "--plain", env=ALLOC)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "task 'train'" in lines[0] and "2 GPUs are visible through CUDA_VISIBLE_DEVICES=0,1" in lines[0]
    assert "--gpus 2x80GB" in lines[0]
    assert not (tmp_path / "g" / ".rota").exists()  # nothing started, nothing written
    cpu = write_spec(tmp_path / "c", """
        tasks:
          - {name: prep, command: "true"}
    """)
    p = rota("run", cpu, "--plain", env=ALLOC)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rota: 2 GPUs are visible through CUDA_VISIBLE_DEVICES=0,1" in p.stderr, p.stderr
    p = rota("run", gpu, "--plain", "--gpus", "2x80GB", env=ALLOC)
    assert p.returncode == 0 and "visible through" not in p.stderr, p.stdout + p.stderr
