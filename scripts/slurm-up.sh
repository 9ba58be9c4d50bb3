#!/usr/bin/env bash
# scripts/slurm-up.sh -- a real one-node SLURM cluster on this machine, for
# trying (and testing) rota's SLURM backend on a laptop or a CI runner.
#
#   sudo scripts/slurm-up.sh          # install if needed, configure, start, wait
#   sudo scripts/slurm-down.sh        # stop what this script started
#
# Works on a bare Debian/Ubuntu as root, without systemd (containers, CI):
#   1. apt-get update + install slurmctld slurmd slurm-client munge (only when
#      missing; services are kept from auto-starting during the install)
#   2. a munge key, then munged
#   3. fake GPUs: SLURM's gres/gpu wants character devices, so we mknod
#      nvidia-like nodes (major 195) under $ROTA_SLURM_PREFIX; nothing opens
#      them, SLURM only hands their indices out as CUDA_VISIBLE_DEVICES
#   4. /etc/slurm/slurm.conf + gres.conf (node claims $ROTA_SLURM_CPUS CPUs even
#      if the machine has fewer: SlurmdParameters=config_overrides)
#   5. slurmctld + slurmd as plain daemons
#   6. waits until the node is idle and `srun true` (with a GPU) works
#
# Idempotent: a second run with the same settings changes nothing and only
# checks readiness; changed settings rewrite the config and restart the slurm
# daemons this script started.  Daemons it started are listed in
# $ROTA_SLURM_PREFIX/run/started so slurm-down.sh never stops anyone else's.
#
# There is no slurmdbd: plain `sacct` reports "accounting storage is
# disabled"; finished jobs are in a job-completion file that `sacct -c` reads
# (rota's SLURM executor falls back to it), and squeue keeps finished jobs for
# MinJobAge=600 s.
#
# Settings (environment):
#   ROTA_SLURM_CPUS     CPUs the node offers          (default 8)
#   ROTA_SLURM_GPUS     fake GPUs in gres.conf         (default 4; 0 = none)
#   ROTA_SLURM_MEM_MB   memory the node offers, MiB    (default: MemTotal)
#   ROTA_SLURM_PREFIX   state, spool, logs, pid files  (default /var/tmp/rota-slurm)
#   ROTA_SLURM_WAIT     seconds to wait for readiness  (default 90)
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

CPUS=${ROTA_SLURM_CPUS:-8}
GPUS=${ROTA_SLURM_GPUS:-4}
PREFIX=${ROTA_SLURM_PREFIX:-/var/tmp/rota-slurm}
WAIT=${ROTA_SLURM_WAIT:-90}
MEM_MB=${ROTA_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)}
ETC=/etc/slurm
RUN=$PREFIX/run
PKGS=(slurmctld slurmd slurm-client munge)

say() { echo "[slurm-up] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
for v in CPUS GPUS MEM_MB WAIT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || fail "ROTA_SLURM_$v must be a whole number, got '${!v}'"
done
[ "$CPUS" -ge 1 ] || fail "ROTA_SLURM_CPUS must be at least 1"
[ "$(id -u)" -eq 0 ] || fail "run me as root (sudo $0): I install packages and start daemons"
started_at=$SECONDS

# ------------------------------------------------------------------ packages
missing=()
for exe in slurmctld slurmd sbatch squeue sacct scancel srun munged; do
  command -v "$exe" >/dev/null || missing+=("$exe")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get: install SLURM and munge yourself"
  say "installing ${PKGS[*]} (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # keep the packages' init scripts from starting daemons with no config
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  mkdir -p "$PREFIX"
  ok=1
  apt-get update -q >"$PREFIX/apt.log" 2>&1 || ok=0
  [ $ok = 1 ] && { apt-get install -y -q --no-install-recommends "${PKGS[@]}" >>"$PREFIX/apt.log" 2>&1 || ok=0; }
  [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $ok = 1 ] || { tail -n 25 "$PREFIX/apt.log" >&2; fail "apt-get failed (full log: $PREFIX/apt.log)"; }
fi
for u in slurm munge; do id "$u" >/dev/null 2>&1 || fail "user '$u' does not exist after installing"; done

mkdir -p "$RUN" "$PREFIX/state" "$PREFIX/spool" "$PREFIX/log" "$PREFIX/gpu" "$ETC"
chown slurm:slurm "$PREFIX/state" "$PREFIX/log"
chmod 755 "$PREFIX" "$RUN"
touch "$RUN/started"

# running PIDFILE NAME: the pid in PIDFILE is a live process called NAME
running() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(tr -cd '0-9' <"$1") || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
mark_started() { grep -qx "$1" "$RUN/started" || echo "$1" >>"$RUN/started"; }
# stop_ours NAME: SIGTERM (then SIGKILL after 10 s) a daemon we started
stop_ours() {
  local name=$1 pidf=$RUN/$1.pid pid
  grep -qx "$name" "$RUN/started" && running "$pidf" "$name" || return 0
  pid=$(tr -cd '0-9' <"$pidf")
  say "restarting $name (pid $pid) for the new configuration"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do running "$pidf" "$name" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# ------------------------------------------------------------------ munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
  else head -c 1024 /dev/urandom >/etc/munge/munge.key; fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if munge_ok; then
  say "munged: already running"
else
  say "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 100); do munge_ok && break; sleep 0.1; done
  munge_ok || fail "munged does not answer, see /var/log/munge/munged.log"
  cp /run/munge/munged.pid "$RUN/munged.pid"
  mark_started munged
fi

# ------------------------------------------------------------------ fake GPUs
gres_line=
if [ "$GPUS" -gt 0 ]; then
  for ((i = 0; i < GPUS; i++)); do
    dev=$PREFIX/gpu/nvidia$i
    [ -c "$dev" ] && continue
    rm -f "$dev"
    mknod -m 666 "$dev" c 195 "$i" || fail "cannot mknod $dev (a container without CAP_MKNOD?)"
  done
  gres_line="NodeName=$(hostname -s) Name=gpu File=$PREFIX/gpu/nvidia[0-$((GPUS - 1))]"
fi

# ------------------------------------------------------------------ config
node=$(hostname -s)
conf_new=$RUN/slurm.conf.new
gres_new=$RUN/gres.conf.new
{
  echo "# written by rota scripts/slurm-up.sh: a one-node test cluster"
  echo "ClusterName=rota"
  echo "SlurmctldHost=$node(127.0.0.1)"
  echo "SlurmUser=slurm"
  echo "SlurmdUser=root"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  echo "MpiDefault=none"
  echo "ProctrackType=proctrack/linuxproc"
  echo "TaskPlugin=task/none"
  echo "SwitchType=switch/none"
  echo "SchedulerType=sched/backfill"
  # start queued (array) jobs at once instead of in 3-second waves
  echo "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=2000"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_CPU_Memory"
  echo "DefMemPerCPU=$((MEM_MB / CPUS))"
  echo "GresTypes=gpu"
  # the node may claim more CPUs than the hardware has
  echo "SlurmdParameters=config_overrides"
  echo "ReturnToService=2"
  echo "KillWait=5"
  echo "MinJobAge=600"
  echo "MaxArraySize=100001"
  echo "MaxJobCount=200000"
  echo "StateSaveLocation=$PREFIX/state"
  echo "SlurmdSpoolDir=$PREFIX/spool"
  echo "SlurmctldPidFile=$RUN/slurmctld.pid"
  echo "SlurmdPidFile=$RUN/slurmd.pid"
  echo "SlurmctldLogFile=$PREFIX/log/slurmctld.log"
  echo "SlurmdLogFile=$PREFIX/log/slurmd.log"
  echo "AccountingStorageType=accounting_storage/none"
  echo "JobAcctGatherType=jobacct_gather/none"
  echo "JobCompType=jobcomp/filetxt"
  echo "JobCompLoc=$PREFIX/log/jobcomp.txt"
  gres=; [ "$GPUS" -gt 0 ] && gres=" Gres=gpu:$GPUS"
  echo "NodeName=$node NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB$gres State=UNKNOWN"
  echo "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$conf_new"
echo "$gres_line" >"$gres_new"

if cmp -s "$conf_new" "$ETC/slurm.conf" && cmp -s "$gres_new" "$ETC/gres.conf"; then
  rm -f "$conf_new" "$gres_new"
else
  if [ -e "$ETC/slurm.conf" ] && ! grep -q '^# written by rota scripts/slurm-up.sh' "$ETC/slurm.conf"; then
    cp -n "$ETC/slurm.conf" "$ETC/slurm.conf.before-rota"
    say "kept the existing $ETC/slurm.conf as slurm.conf.before-rota"
  fi
  say "writing $ETC/slurm.conf ($CPUS CPUs, $GPUS GPUs, $MEM_MB MiB) and gres.conf"
  mv -f "$conf_new" "$ETC/slurm.conf"; chmod 644 "$ETC/slurm.conf"
  mv -f "$gres_new" "$ETC/gres.conf"; chmod 644 "$ETC/gres.conf"
  stop_ours slurmd
  stop_ours slurmctld
fi

# ------------------------------------------------------------------ daemons
if running "$RUN/slurmctld.pid" slurmctld; then
  say "slurmctld: already running"
else
  say "starting slurmctld"
  slurmctld || fail "slurmctld did not start: $(tail -n 3 "$PREFIX/log/slurmctld.log" 2>/dev/null)"
  mark_started slurmctld
fi
for _ in $(seq 150); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
scontrol ping >/dev/null 2>&1 || fail "slurmctld does not answer: $(tail -n 3 "$PREFIX/log/slurmctld.log")"
if running "$RUN/slurmd.pid" slurmd; then
  say "slurmd: already running"
else
  say "starting slurmd"
  slurmd || fail "slurmd did not start: $(tail -n 3 "$PREFIX/log/slurmd.log" 2>/dev/null)"
  mark_started slurmd
fi

# ------------------------------------------------------------------ readiness
deadline=$((SECONDS + WAIT))
state=
until [[ $state =~ ^(idle|mixed|allocated|completing) ]]; do
  [ $SECONDS -lt $deadline ] || fail "node is '$state' after ${WAIT}s: $(tail -n 3 "$PREFIX/log/slurmd.log")"
  sleep 0.2
  state=$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null | head -n 1 || true)
  # a node that was down when the config changed needs a nudge
  [[ $state =~ ^(down|drain|fail) ]] && scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
done
gpu_opt=(); [ "$GPUS" -gt 0 ] && gpu_opt=(--gres=gpu:1)
left=$((deadline - SECONDS)); [ $left -gt 5 ] || left=5
answer=$(timeout "$left" srun --quiet --nodes=1 --ntasks=1 --time=1 "${gpu_opt[@]}" \
  bash -c 'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none}"') \
  || fail "a test job (srun) did not run; see $PREFIX/log/slurmctld.log and slurmd.log"
say "ready after $((SECONDS - started_at)) s: node $node ($state), $CPUS CPUs, $GPUS GPUs, partition 'main'; test job saw $answer"
