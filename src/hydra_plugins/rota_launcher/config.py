"""The launcher's config, ``hydra/launcher=rota`` (imported by Hydra's plugin scan, which registers it)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RotaLauncherConf:
    """Every job of the sweep is one rota task with this request; the ``machine_*`` fields are
    ``rota run``'s ``--gpus``, ``--cpus`` and ``--memory`` (None: what rota detects)."""

    _target_: str = "hydra_plugins.rota_launcher.rota_launcher.RotaLauncher"
    gpus: int = 0  # GPUs per job (CUDA_VISIBLE_DEVICES)
    gpu_memory: str | None = None  # per GPU, e.g. 20GB: jobs share a GPU while the booked sum fits
    cpus: int = 1
    memory: str | None = None  # RAM booked per job, e.g. 16GB
    retries: int = 0
    timeout: str | None = None  # e.g. 2h
    estimate: str | None = None  # e.g. 45m (rota plan, the dashboard's ETA)
    env: dict[str, str] | None = None  # extra environment variables for every job
    machine_gpus: str | None = None  # rota run --gpus: 0,1 | 4x80GB | none
    machine_cpus: int | None = None  # rota run --cpus
    machine_memory: str | None = None  # rota run --memory
    backend: str = "local"  # local, slurm, ray
    state_dir: str | None = None  # default: .rota in the sweep folder (rota status SWEEP_DIR)
    retry_delay_s: float = 1.0
    dashboard: bool = False  # rota's live dashboard instead of one line per event
    python: str | None = None  # the interpreter each job runs with; default: this one


ConfigStore.instance().store(group="hydra/launcher", name="rota", node=RotaLauncherConf, provider="rota")
