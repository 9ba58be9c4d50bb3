"""--gpus/--cpus/--memory as caps on what a run takes from a cluster (SLURM, Ray): the pure part."""

from __future__ import annotations

import pytest

from rota.core.resources import Gpu, Machine, Node
from rota.errors import MachineError
from rota.executors.cluster_limits import ClusterLimits, apply_limits, parse_limits

GB = 2**30
CLUSTER = Machine(tuple(Gpu(i, 80 * GB, name="Ray GPU") for i in range(4)), 16, 64 * GB, source="ray",
                  nodes=(Node("a", 2, 8, 32 * GB), Node("b", 2, 8, 32 * GB)))


def test_no_flags_leave_the_cluster_as_it_is():
    assert apply_limits(CLUSTER, parse_limits("ray")) is CLUSTER


def test_caps_take_the_smaller_figure_and_keep_the_nodes():
    m = apply_limits(CLUSTER, parse_limits("slurm", gpus="1x40GB", cpus=2, memory="8GB"))
    assert [(g.index, g.memory_bytes) for g in m.gpus] == [(0, 40 * GB)]
    assert (m.cpus, m.memory_bytes, m.nodes) == (2, 8 * GB, CLUSTER.nodes)
    assert "--gpus 1x40GB --cpus 2 --memory 8GB" in m.source
    big = apply_limits(CLUSTER, parse_limits("slurm", gpus="8x80GB", cpus=64, memory="1TB"))
    assert (len(big.gpus), big.cpus, big.memory_bytes) == (4, 16, 64 * GB)  # a cap never adds
    mixed = apply_limits(CLUSTER, parse_limits("ray", gpus="80GB,24GB"))
    assert [g.memory_bytes for g in mixed.gpus] == [80 * GB, 24 * GB]


def test_gpus_none_takes_every_gpu_away():
    assert parse_limits("ray", gpus="none") == ClusterLimits((), None, None, "--gpus none")
    m = apply_limits(CLUSTER, parse_limits("ray", gpus="none"))
    assert m.gpus == () and m.cpus == 16


@pytest.mark.parametrize("flag", ["0,2", "1", " 0 , 3 "])
def test_device_indices_are_refused(flag):
    with pytest.raises(MachineError, match=r"indices have no meaning with --backend slurm.*--gpus \d+x80GB"):
        parse_limits("slurm", gpus=flag)


@pytest.mark.parametrize("kw,match", [({"cpus": 0}, "--cpus 0"), ({"memory": "lots"}, "--memory lots"),
                                      ({"gpus": "4xBANANA"}, "--gpus 4xBANANA")])
def test_bad_values_are_refused(kw, match):
    with pytest.raises(MachineError, match=match):
        parse_limits("ray", **kw)
