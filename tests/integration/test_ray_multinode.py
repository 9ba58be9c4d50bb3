"""`rota run --backend ray` on a Ray cluster of two nodes (scenario 3: GPUs on more than one machine).

The cluster is Ray's own multi-node test harness (``ray.cluster_utils.Cluster``, in a process of its own):
a head and a second node, each a real raylet with 2 CPUs and 2 declared GPUs, on
this one host, so the state folder is shared as a shared file system would be.
A task records ``RAY_RAYLET_PID`` (its node) and the ``CUDA_VISIBLE_DEVICES``
Ray gave it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import by_name, read_records, rota, write_spec
from tests.ray_cluster import require_ray

pytestmark = pytest.mark.ray

REC = str(Path(__file__).resolve().parent.parent / "recorder.py")
PY = sys.executable


# Run in its own process: this pytest process may be a driver of the session's cluster already.
_CLUSTER = """
import sys
from ray.cluster_utils import Cluster
node = {"num_cpus": 2, "num_gpus": 2, "object_store_memory": 100_000_000}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
try:
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    sys.stdin.read()  # until the test closes our stdin
finally:
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    require_ray()
    proc = subprocess.Popen([PY, "-c", _CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        address = proc.stdout.readline().strip()
        assert address, f"the two-node Ray cluster did not start (exit {proc.wait(timeout=60)})"
        yield address
        proc.stdin.close()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_tasks_spread_over_both_nodes_with_each_nodes_gpu_ids(tmp_path: Path, two_nodes: str) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: embed-{{i}}
            command: {PY} {REC} {rec} embed-{{i}} 3.0
            matrix: {{i: [0, 1, 2, 3]}}
            gpus: 1
            cpus: 0
          - {{name: merge, command: "{PY} {REC} {rec} merge 0.1", needs: "embed-*", cpus: 1}}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--backend", "ray", "--address", two_nodes, "--plain", "--state-dir", sd, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    # The cluster's sums (rota books 4 GPUs at once), and its two nodes.
    assert "3:80GB; 4 CPUs on 2 nodes;" in p.stdout.splitlines()[0], p.stdout
    recs = {r["name"]: r for r in read_records(rec)}
    embeds = [recs[f"embed-{i}"] for i in range(4)]
    nodes = {r["raylet"] for r in embeds}
    assert len(nodes) == 2 and None not in nodes, embeds
    for node in nodes:
        mine = [r for r in embeds if r["raylet"] == node]
        # Each node has GPUs 0 and 1 of its own: Ray's ids, not rota's ledger (which numbers 0-3).
        assert {r["cvd"] for r in mine} <= {"0", "1"}, mine
        for a in mine:
            for b in mine:
                if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                    assert a["cvd"] != b["cvd"], f"two tasks on one GPU of one node at once: {a} {b}"
    # All four ran side by side (2 GPUs on each node): the run took one round, not two.
    assert max(r["start"] for r in embeds) < min(r["end"] for r in embeds), embeds
    assert recs["merge"]["start"] >= max(r["end"] for r in embeds)
    st = by_name(sd)
    assert {t["state"] for t in st.values()} == {"succeeded"}, st
    assert all(Path(t["log_path"]).is_file() for t in st.values()), st


def test_a_task_bigger_than_every_node_is_refused_before_anything_runs(tmp_path: Path, two_nodes: str) -> None:
    spec = write_spec(tmp_path, f"""
        tasks:
          - {{name: small, command: "touch {tmp_path / 'ran'}"}}
          - {{name: big, command: "touch {tmp_path / 'ran'}", gpus: 3}}
    """)
    sd = tmp_path / "st"
    p = rota("run", spec, "--backend", "ray", "--address", two_nodes, "--plain", "--state-dir", sd, timeout=240)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert str(spec) in err[0] and "big" in err[0] and "gpus" in err[0], err[0]
    assert "3 GPUs but the largest node has 2" in err[0], err[0]
    assert not (tmp_path / "ran").exists() and not sd.exists()
