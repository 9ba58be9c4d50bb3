"""Fixtures shared by every test folder.

The session fixtures for the two cluster backends are registered here once, so a test
asks for ``slurm_cluster`` or ``ray_cluster`` by name without importing it:

- ``slurm_cluster``: the one-node SLURM cluster of scripts/slurm-up.sh is up (or the test
  skips, or fails under ``CI=true``; see tests/integration/conftest_slurm.py);
- ``ray_cluster``: the address of a local Ray cluster, started once per session (or
  ``ROTA_TEST_RAY_ADDRESS``; see tests/ray_cluster.py).

Helpers that are plain functions (running the CLI, ``wait_for``, writing a spec) are in
tests/helpers.py.
"""

from __future__ import annotations

from tests.integration.conftest_slurm import slurm_cluster
from tests.ray_cluster import ray_cluster

__all__ = ["ray_cluster", "slurm_cluster"]
