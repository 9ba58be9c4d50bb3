#!/usr/bin/env bash
# The one test command (README and CI): install rota with its test extras, start
# the services the tests use (a one-node SLURM cluster, a local Ray instance) and
# run every test with pytest. Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # a quicker pass
#
# As root on Debian it also installs the system packages the tests use (GNU
# parallel and xargs for the benchmarks' peers, Chromium (and its driver) for the browser tests,
# SLURM through scripts/slurm-up.sh). Elsewhere those tests skip with a reason,
# except under CI=true, where a missing service fails them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
log() { printf '[test.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "apt: parallel chromium chromium-driver tmux"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends parallel chromium chromium-driver tmux >/dev/null
fi

log "pip: rota with the test, examples and ray extras"
# torch: the CPU build (the examples' DDP step); pinned so pip takes the local CPU wheel
# where the machine has one instead of the multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0 || "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
"$PY" -m pip install -q -e ".[test,examples,ray]"
# Hydra's Optuna sweeper pins optuna<3 (rota needs >=3.4) but works with it: installed without
# its pins, for the Hydra launcher's sweeper test.
"$PY" -m pip install -q --no-deps hydra-optuna-sweeper

if [ "$(id -u)" = 0 ]; then
  log "SLURM: scripts/slurm-up.sh"
  bash scripts/slurm-up.sh
fi

if "$PY" -c "import ray" 2>/dev/null && [ -z "${ROTA_TEST_RAY_ADDRESS:-}" ]; then
  log "Ray: ray start --head (4 CPUs, 4 declared GPUs)"
  ray stop --force >/dev/null 2>&1 || true
  ray start --head --node-ip-address 127.0.0.1 --port 6379 --num-cpus 4 --num-gpus 4 --object-store-memory 200000000 \
    --disable-usage-stats --include-dashboard=false >/tmp/rota-test-ray.log 2>&1
  # Loopback only: tests never talk to this machine's other addresses.
  export ROTA_TEST_RAY_ADDRESS=127.0.0.1:6379
  trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
fi

log "pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
