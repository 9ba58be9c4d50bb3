#!/usr/bin/env bash
# scripts/slurm-down.sh -- stop the daemons scripts/slurm-up.sh started.
#
# Only daemons listed in $ROTA_SLURM_PREFIX/run/started are stopped (SIGTERM,
# then SIGKILL after 10 s), so a SLURM or munge that was already running
# before slurm-up.sh is left alone.  Jobs still on the cluster are cancelled
# first so no slurmstepd outlives slurmd.  Idempotent.  Packages, /etc/slurm
# and the prefix stay (pass --purge to delete the prefix too).
set -uo pipefail
export PATH=$PATH:/usr/sbin:/sbin
PREFIX=${ROTA_SLURM_PREFIX:-/var/tmp/rota-slurm}
RUN=$PREFIX/run
say() { echo "[slurm-down] $*" >&2; }

if [ ! -s "$RUN/started" ]; then
  say "nothing started by slurm-up.sh is recorded in $RUN/started"
else
  running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -cd '0-9' <"$1") || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
  }
  ours() { grep -qx "$1" "$RUN/started"; }
  stop() {
    local name=$1 pidf=$RUN/$1.pid pid
    if ours "$name" && running "$pidf" "$name"; then
      pid=$(tr -cd '0-9' <"$pidf")
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 100); do running "$pidf" "$name" || break; sleep 0.1; done
      if running "$pidf" "$name"; then say "$name ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
    fi
    sed -i "/^$name\$/d" "$RUN/started"
    rm -f "$pidf"
  }

  if ours slurmctld && running "$RUN/slurmctld.pid" slurmctld; then
    jobs=$(squeue --noheader --format=%A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs still on the cluster: $jobs"
      # shellcheck disable=SC2086
      scancel --full $jobs 2>/dev/null
      for _ in $(seq 150); do
        [ -z "$(squeue --noheader --states=PD,R,CG,CF,S --format=%i 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  stop slurmd
  stop slurmctld
  stop munged
  [ -s "$RUN/started" ] || rm -f "$RUN/started"
fi
if [ "${1:-}" = --purge ]; then say "removing $PREFIX"; rm -rf "$PREFIX"; fi
say "down"
