"""A real, local Ray cluster for the tests: 4 CPUs and 4 *declared* GPUs.

``ray start --head --num-cpus 4 --num-gpus 4`` makes Ray schedule GPU tasks
and set CUDA_VISIBLE_DEVICES to the fake ids, so GPU packing is exercised on
a machine without GPUs. The cluster is started once per pytest process
(:func:`ensure_cluster`, also the session fixture :func:`ray_cluster`) in its
own process group and stopped at the end by signalling that group (the
targeted equivalent of ``ray stop``, which would also stop other clusters of
this user). ``ROTA_TEST_RAY_ADDRESS`` uses an already running cluster instead
and leaves it running.

Ray missing: the tests fail under ``CI=true`` and are skipped otherwise.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

_STATE: dict[str, object] = {}


def require_ray() -> None:
    """Fail (CI) or skip (elsewhere) when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        why = "Ray is not installed: pip install 'ray[default]' (or -e '.[ray]')"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    if shutil.which("ray") is None:
        pytest.fail("the 'ray' command is not on PATH although the ray package is installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_cluster() -> str:
    """Address of the test cluster, starting it on first use."""
    require_ray()
    if "address" in _STATE:
        return str(_STATE["address"])
    given = os.environ.get("ROTA_TEST_RAY_ADDRESS")
    if given:
        _STATE["address"] = given
        return given
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="rray", dir="/tmp")  # short: Ray's socket paths are length-limited
    cmd = [
        "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--num-cpus", "4", "--num-gpus", "4", "--disable-usage-stats", "--include-dashboard", "false",
        "--object-store-memory", "200000000", "--temp-dir", tmp,
        "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
        "--min-worker-port", "0", "--max-worker-port", "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode != 0:
        _stop_group(proc.pid)
        raise RuntimeError(f"ray start failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}")
    address = f"127.0.0.1:{port}"
    _STATE.update(address=address, pgid=proc.pid, tmp=tmp)
    atexit.register(stop_cluster)
    return address


def _stop_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def stop_cluster() -> None:
    """Disconnect this process and stop the cluster it started (idempotent)."""
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    pgid = _STATE.pop("pgid", None)
    if isinstance(pgid, int):
        _stop_group(pgid)
        shutil.rmtree(str(_STATE.pop("tmp", "")), ignore_errors=True)
    _STATE.pop("address", None)


@pytest.fixture(scope="session")
def ray_cluster():
    """Session-wide Ray cluster address; stopped when the session ends."""
    address = ensure_cluster()
    yield address
    stop_cluster()
