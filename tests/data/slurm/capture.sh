#!/usr/bin/env bash
# Re-captures the reference outputs in this folder from a live cluster
# (scripts/slurm-up.sh).  Takes ~2 minutes (it waits for a 1-minute TIMEOUT).
#   tests/data/slurm/capture.sh [OUTDIR]
set -euo pipefail
OUT=${1:-$(cd "$(dirname "$0")" && pwd)}
W=$(mktemp -d)
SQ='%i|%A|%T|%r|%S|%e'   # must match rota.executors.slurm_text.SQUEUE_FORMAT
SA=JobID,State,ExitCode,Start,End
ok=$(sbatch --parsable -o "$W/ok.out" --wrap 'echo fine')
bad=$(sbatch --parsable -o "$W/bad.out" --wrap 'exit 3')
sig=$(sbatch --parsable -o "$W/sig.out" --wrap 'kill -9 $$')
slow=$(sbatch --parsable -o "$W/slow.out" --time=1 --wrap 'sleep 600')
arr=$(sbatch --parsable -o "$W/arr_%a.out" --array=0-9 --gres=gpu:1 --wrap 'sleep 3; exit $((SLURM_ARRAY_TASK_ID % 3 == 2))')
big=$(sbatch --parsable -o /dev/null --gres=gpu:4 --wrap 'sleep 5')
held=$(sbatch --parsable -o /dev/null --hold --wrap true)
run=$(sbatch --parsable -o /dev/null --wrap 'sleep 600')
sleep 1.5
squeue --noheader --array --states=all --format="$SQ" -j "$ok,$bad,$sig,$slow,$arr,$big,$held,$run" >"$OUT/squeue_running.txt"
squeue --noheader --states=all --format="$SQ" -j "$arr" >"$OUT/squeue_array_collapsed.txt"
scancel "$held" "$run"
while squeue --noheader --states=PD,R,CG,CF -j "$ok,$bad,$sig,$slow,$arr,$big" | grep -q .; do sleep 1; done
squeue --noheader --array --states=all --format="$SQ" -j "$ok,$bad,$sig,$slow,$arr,$big,$held,$run" >"$OUT/squeue_finished.txt"
raw=$(squeue --noheader --array --states=all --format=%A -j "$arr" | tr '\n' ',')
sacct -c --parsable2 --noheader --format="$SA" -j "$ok,$bad,$sig,$slow,$arr,$big,$held,$run,${raw%,}" >"$OUT/sacct_c.txt"
{ sacct --parsable2 --noheader --format="$SA" -j "$ok" 2>&1 || true; } >"$OUT/sacct_disabled.txt"
sbatch --version >"$OUT/VERSION"
scontrol show node --oneliner >"$OUT/scontrol_show_node.txt"
rm -rf "$W"
echo "captured into $OUT"
