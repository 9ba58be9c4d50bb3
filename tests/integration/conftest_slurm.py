"""The local SLURM cluster for tests: started once through scripts/slurm-up.sh.

``ensure_cluster()`` runs the script at most once per test session (it is
idempotent and returns in about a second when the cluster is up). It skips
only when the tests cannot start it (not root) and ``CI`` is unset; under
``CI=true`` a cluster that cannot be started fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "scripts" / "slurm-up.sh"
_state: dict[str, str | None] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def ensure_cluster() -> None:
    """Make sure the one-node cluster answers; skip or fail as described above."""
    if "error" not in _state:
        _state["error"] = _start()
    err = _state["error"]
    if err is None:
        return
    if _in_ci():
        pytest.fail(f"SLURM test cluster unavailable under CI: {err}")
    pytest.skip(f"SLURM test cluster unavailable: {err}")


def _start() -> str | None:
    if os.geteuid() != 0:
        if shutil.which("sbatch") and subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0:
            return None  # someone else's cluster is up: use it
        return "not root, so scripts/slurm-up.sh cannot install or start SLURM (run it with sudo first)"
    p = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return f"scripts/slurm-up.sh failed (exit {p.returncode}): {p.stderr.strip()[-800:]}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Session fixture: the cluster is up (or the test skipped/failed as documented)."""
    ensure_cluster()
