"""The contract suite against a real local Ray cluster (tests/ray_cluster.py)."""

from tests.ray_cluster import ensure_cluster

NAME = "ray"


def make_executor(tmp_path):
    address = ensure_cluster()  # skips without Ray, fails under CI=true
    from rota.executors.ray import RayExecutor

    return RayExecutor(address=address)
