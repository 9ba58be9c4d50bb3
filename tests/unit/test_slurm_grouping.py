"""How SlurmExecutor.submit_many splits launches into sbatch jobs, and cancel into scancel/cancel files."""

from __future__ import annotations

from rota.executors.base import Handle, Launch
from rota.executors.slurm_units import is_shared, plan_units, split_cancel

GiB = 2**30


def _la(key: str, **kw) -> Launch:
    return Launch(key=key, task=key.split("#")[0], attempt=1, command="true", env={}, workdir="/tmp",
                  log_path=f"/tmp/{key}.log", **kw)


def test_units():
    las = [
        _la("a0#1", array_group="a", gpu_count=1, gpus=(0,)),
        _la("s0#1", gpu_count=1, gpus=(2,), gpu_memory_bytes=4 * GiB, gpu_fraction=0.25),
        _la("a1#1", array_group="a", gpu_count=1, gpus=(1,)),
        _la("a2#1", array_group="a", gpu_count=1, cpus=4, gpus=(3,)),  # other resources: other job
        _la("s1#1", gpu_count=1, gpus=(2,), gpu_memory_bytes=4 * GiB, gpu_fraction=0.25),
        _la("s2#1", gpu_count=1, gpus=(3,), gpu_memory_bytes=4 * GiB, gpu_fraction=0.25),  # alone on GPU 3
        _la("x#1"),
        _la("b0#1", array_group="b", timeout_s=60),
        _la("b1#1", array_group="b", timeout_s=3600),  # other time limit
    ]
    assert plan_units(las) == [
        ("array", [0, 2]), ("shared", [1, 4]), ("single", [3]), ("single", [5]), ("single", [6]),
        ("single", [7]), ("single", [8]),
    ]


def test_shared_means_part_of_one_gpu():
    assert is_shared(_la("s#1", gpu_count=1, gpus=(0,), gpu_memory_bytes=GiB, gpu_fraction=0.1))
    assert not is_shared(_la("w#1", gpu_count=1, gpus=(0,)))
    assert not is_shared(_la("f#1", gpu_count=1, gpus=(0,), gpu_memory_bytes=80 * GiB, gpu_fraction=1.0))
    assert not is_shared(_la("p#1", gpu_count=2, gpus=(0, 1), gpu_memory_bytes=GiB, gpu_fraction=0.1))


def test_cancel_split():
    def h(key: str, ext: str, kind: str, members: list[str] | None = None) -> Handle:
        data = {"kind": kind, "job_id": ext.split("_")[0], "log_path": f"/tmp/{key}.log"}
        if members is not None:
            data["members"] = members
        return Handle(key, "slurm", ext, data)

    hs = [h("a#1", "10_3", "array"), h("b#1", "11", "single"),
          h("s0#1", "12", "shared", ["s0#1", "s1#1"]), h("s1#1", "12", "shared", ["s0#1", "s1#1"]),
          h("t0#1", "13", "shared", ["t0#1", "t1#1"])]
    whole, partial = split_cancel(hs)
    assert whole == {"10_3", "11", "12"}
    assert [p.key for p in partial] == ["t0#1"]
