"""The SLURM executor in the contract suite, on the local test cluster.

The cluster comes from scripts/slurm-up.sh (started once per session by the
fixture in tests/integration/conftest_slurm.py's helper). Without root and
outside CI the backend skips; under CI=true a missing cluster fails.
"""

from rota.executors.slurm import SlurmExecutor
from tests.integration.conftest_slurm import ensure_cluster

NAME = "slurm"


def make_executor(tmp_path):
    ensure_cluster()
    return SlurmExecutor(tmp_path / "state", gpu_memory_bytes=16 * 2**30)
