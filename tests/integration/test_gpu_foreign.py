"""Foreign GPU memory and sick GPUs, through the real controller and the stand-in pynvml.

The controller runs as a subprocess with tests/fake_nvml first on its path; the test
rewrites the stand-in's script to show foreign processes coming and going, Xid events,
ECC counts and a lost GPU, and watches what rota does (its tasks' files, its events).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fakegpu import FakeGpus, GiB
from tests.helpers import ROTA, by_name, rota, wait_for, write_spec


def _env(fake: FakeGpus) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    return env | fake.env


class Controller:
    """``rota run --plain`` in the background, its output collected line by line."""

    def __init__(self, fake: FakeGpus, *args: str | Path, slurm_job: str | None = None) -> None:
        env = _env(fake) | ({"SLURM_JOB_ID": slurm_job} if slurm_job else {})
        self.proc = subprocess.Popen([*ROTA, "run", *map(str, args), "--plain"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_line(self, text: str, timeout: float = 30.0) -> None:
        try:
            wait_for(lambda: self.saw(text), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines)) from None

    def finish(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            raise AssertionError("controller did not finish:\n" + "\n".join(self.lines)) from None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


@pytest.fixture
def outsider():
    """A process started outside rota (it stands for a colleague's python holding GPU memory)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def _blocking_task(fake: FakeGpus, folder: Path, used_bytes: int) -> str:
    # Shows itself on its GPU, says it started (with its GPU), then waits for the test's go.
    return (f"{fake.task_holds(used_bytes)}; echo $CUDA_VISIBLE_DEVICES > {folder}/started-$ROTA_TASK; "
            f"while [ ! -e {folder}/go ]; do sleep 0.05; done")


def _started(folder: Path) -> dict[str, str]:
    return {p.name.removeprefix("started-"): p.read_text().strip() for p in folder.glob("started-*")}


def test_foreign_memory_is_booked_and_packed_around(tmp_path: Path, outsider: subprocess.Popen) -> None:
    fake = FakeGpus(tmp_path, count=1)
    fake.hold(0, outsider.pid, 50 * GiB)  # 50 GB + 1 GB margin of 80: one 20 GB task fits beside it, not two
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t{{i}}
            matrix: {{i: [1, 2, 3]}}
            command: {_blocking_task(fake, tmp_path, 20 * GiB)}
            gpus: 1
            gpu_memory: 20GB
    """)
    ctl = Controller(fake, spec, "--cpus", "8")
    try:
        ctl.wait_line(f"held by pid {outsider.pid}")
        wait_for(lambda: len(_started(tmp_path)) == 1)
        # The first task's own 20 GB shows on the GPU too: it must not be booked as foreign
        # (that would leave no room at all once the outsider leaves). A few polls pass here.
        deadline = time.time() + 2.5
        while time.time() < deadline:
            assert len(_started(tmp_path)) == 1, _started(tmp_path)
            time.sleep(0.1)
        assert not any("held by pid" in ln and str(outsider.pid) not in ln for ln in ctl.lines), ctl.lines
        wait_for(lambda: f"GPU 0: 50GB held by pid {outsider.pid}, user " in rota(
            "status", "--state-dir", tmp_path / ".rota", check=True).stdout, timeout=15)
        fake.release(outsider.pid)  # the outsider leaves: its booking goes, the other two start
        ctl.wait_line(f"pid {outsider.pid} left")
        wait_for(lambda: len(_started(tmp_path)) == 3)
        (tmp_path / "go").touch()
        assert ctl.finish() == 0, ctl.lines
    finally:
        ctl.kill()
    assert {t["state"] for t in by_name(tmp_path / ".rota").values()} == {"succeeded"}
    assert "held by" not in rota("status", "--state-dir", tmp_path / ".rota", check=True).stdout


@pytest.mark.parametrize("mode", ["respect", "ignore", "slurm"])
def test_whole_gpu_task_never_starts_beside_a_foreign_process(tmp_path: Path, outsider: subprocess.Popen,
                                                              mode: str) -> None:
    fake = FakeGpus(tmp_path, count=2)
    fake.hold(0, outsider.pid, None)  # even one whose memory the driver cannot tell (booked: the margin)
    spec = write_spec(tmp_path, f"""
        foreign_gpu_memory: {"ignore" if mode == "ignore" else "respect"}
        tasks:
          - name: whole
            command: echo $CUDA_VISIBLE_DEVICES > {tmp_path}/started-whole
            gpus: 1
    """)
    # Inside a SLURM allocation the scheduler owns the GPUs: nothing is booked around.
    ctl = Controller(fake, spec, slurm_job="4242" if mode == "slurm" else None)
    try:
        assert ctl.finish() == 0, ctl.lines
    finally:
        ctl.kill()
    assert _started(tmp_path)["whole"] == ("1" if mode == "respect" else "0")


def test_cli_option_overrides_the_spec(tmp_path: Path, outsider: subprocess.Popen) -> None:
    fake = FakeGpus(tmp_path, count=2)
    fake.hold(0, outsider.pid, 10 * GiB)
    spec = write_spec(tmp_path, f"""
        foreign_gpu_memory: respect
        tasks:
          - name: whole
            command: echo $CUDA_VISIBLE_DEVICES > {tmp_path}/started-whole
            gpus: 1
    """)
    ctl = Controller(fake, spec, "--foreign-gpu-memory", "ignore")
    try:
        assert ctl.finish() == 0, ctl.lines
    finally:
        ctl.kill()
    assert _started(tmp_path)["whole"] == "0"
    assert not ctl.saw("held by pid")


@pytest.mark.parametrize("sickness", ["xid", "ecc", "lost", "timeouts"])
def test_a_task_that_failed_on_a_sick_gpu_runs_again_elsewhere_free(tmp_path: Path, sickness: str) -> None:
    fake = FakeGpus(tmp_path, count=2)
    fake.set_gpu(0, ecc_uncorrected=3)  # errors from before the run do not count (the baseline)
    # Attempt 1 waits for go-1 and fails; attempt 2 succeeds. retries: 0, so only a free retry saves it.
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t
            command: >-
              echo $CUDA_VISIBLE_DEVICES > {tmp_path}/gpu-$ROTA_ATTEMPT;
              while [ ! -e {tmp_path}/go-$ROTA_ATTEMPT ]; do sleep 0.05; done;
              [ "$ROTA_ATTEMPT" -ge 2 ]
            gpus: 1
            retries: 0
    """)
    ctl = Controller(fake, spec)
    try:
        wait_for(lambda: (tmp_path / "gpu-1").exists() and (tmp_path / "gpu-1").read_text().strip() != "")
        first = int((tmp_path / "gpu-1").read_text())
        if sickness == "xid":
            fake.xid(first, 45)  # a killed process's cleanup: the application's doing, not the GPU's
            fake.xid(first, 79)  # fell off the bus
            why = "Xid 79"
        elif sickness == "ecc":
            fake.set_gpu(first, ecc_uncorrected=fake.data["gpus"][first]["ecc_uncorrected"] + 2)
            why = "2 uncorrectable ECC error(s)"
        elif sickness == "lost":
            fake.set_gpu(first, lost=True)
            why = "GPU is lost"
        else:
            fake.set_gpu(first, fail="TIMEOUT")  # one would pass; three readings in a row do not
            why = "stopped answering NVML (NVMLError_Timeout"
        ctl.wait_line(f"GPU {first} unhealthy: {why}")
        assert not ctl.saw("Xid 45")
        (tmp_path / "go-1").touch()
        wait_for(lambda: (tmp_path / "gpu-2").exists() and (tmp_path / "gpu-2").read_text().strip() != "")
        assert int((tmp_path / "gpu-2").read_text()) == 1 - first
        (tmp_path / "go-2").touch()
        assert ctl.finish() == 0, ctl.lines
    finally:
        ctl.kill()
    t = by_name(tmp_path / ".rota")["t"]
    assert t["state"] == "succeeded" and t["attempts"] == 2


def test_rota_machine_shows_health_and_who_holds_memory(tmp_path: Path, outsider: subprocess.Popen) -> None:
    fake = FakeGpus(tmp_path, count=2)
    fake.hold(1, outsider.pid, 21 * GiB)
    fake.set_gpu(0, ecc_uncorrected=4)
    out = subprocess.run([*ROTA, "machine"], capture_output=True, text=True, env=_env(fake), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "GPU 0: NVIDIA H100 80GB HBM3, 80GB GPU-fake-0000" in out.stdout
    assert "GPU 0 health: 4 uncorrectable ECC error(s) since the driver loaded" in out.stdout
    assert "GPU 1 health: ok" in out.stdout
    assert f"GPU 1: 21GB held by pid {outsider.pid}" in out.stdout and "(not rota's)" in out.stdout
    js = subprocess.run([*ROTA, "machine", "--json"], capture_output=True, text=True, env=_env(fake), timeout=60)
    gpus = json.loads(js.stdout)["gpus"]
    assert [g["uuid"] for g in gpus] == ["GPU-fake-0000", "GPU-fake-0001"]
    assert gpus[1]["processes"][0]["pid"] == outsider.pid and gpus[1]["processes"][0]["used_bytes"] == 21 * GiB
    assert gpus[0]["health"].startswith("4 uncorrectable")
    fake.set_gpu(1, lost=True)  # a GPU that stops answering is not offered at all
    out = subprocess.run([*ROTA, "machine"], capture_output=True, text=True, env=_env(fake), timeout=60)
    assert "GPU 1:" not in out.stdout and "GPU 0:" in out.stdout


def test_a_run_whose_every_gpu_is_unhealthy_stops_launching(tmp_path: Path) -> None:
    fake = FakeGpus(tmp_path, count=1)
    spec = write_spec(tmp_path, f"""
        tasks:
          - name: t
            command: touch {tmp_path}/started; while [ ! -e {tmp_path}/go ]; do sleep 0.05; done; exit 1
            gpus: 1
          - name: after
            command: "true"
            gpus: 1
            needs: [t]
    """)
    ctl = Controller(fake, spec)
    try:
        wait_for(lambda: (tmp_path / "started").exists())
        fake.xid(0, 79)
        ctl.wait_line("GPU 0 unhealthy: Xid 79")
        (tmp_path / "go").touch()
        assert ctl.finish() == 1, ctl.lines  # not a hang: nothing could ever start again
    finally:
        ctl.kill()
    assert ctl.saw("every GPU is unhealthy")
    tasks = by_name(tmp_path / ".rota")
    assert tasks["t"]["state"] == "pending" and tasks["after"]["state"] == "pending"
