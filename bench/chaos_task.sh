#!/bin/bash
# A chaos-suite task: records its start and end in a shared side file.
# usage: chaos_task.sh REC_FILE NAME SLEEP_S FLAKY(0|1) MARKER_DIR
# Lines: "S name attempt pid cvd booked_bytes time" and "E name attempt pid exit_code time".
rec=$1 name=$2 nap=$3 flaky=$4 marks=$5
echo "S $name ${ROTA_ATTEMPT:-0} $$ ${CUDA_VISIBLE_DEVICES:--} ${ROTA_GPU_MEMORY_BYTES:-0} $EPOCHREALTIME" >> "$rec"
trap 'echo "E $name ${ROTA_ATTEMPT:-0} $$ 143 $EPOCHREALTIME" >> "$rec"; exit 143' TERM
sleep "$nap" & wait $!
code=0
if [ "$flaky" = 1 ] && [ ! -e "$marks/$name" ]; then : > "$marks/$name"; code=3; fi
echo "E $name ${ROTA_ATTEMPT:-0} $$ $code $EPOCHREALTIME" >> "$rec"
exit $code
