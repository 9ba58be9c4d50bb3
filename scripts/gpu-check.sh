#!/usr/bin/env bash
# Proof on a real NVIDIA GPU (one H100 or H200; under 5 minutes): one line per check,
#   PASS|FAIL|SKIP <check> <detail>
# and exit 0 only when every check passed (1: some failed; 2: no NVIDIA GPU here, nothing ran).
# Needs rota installed (pip install -e .) and torch with CUDA. How to run it, what each check
# does: docs/gpu-check.md.
#
#   bash scripts/gpu-check.sh            # GPU_CHECK_PYTHON=python3, GPU_CHECK_WORK=a temp folder
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPECS="$HERE/gpu-check"
PY="${GPU_CHECK_PYTHON:-python3}"
export GPU_CHECK_PYTHON="$PY"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/rota-gpu-check.XXXXXX)}"
mkdir -p "$WORK"
ROTA=("$PY" -m rota.cli)
CHECKS=(machine quickstart share oom enforce foreign report)
FAILED=0
HOLDER_PID=""

line() { printf '%s %s %s\n' "$1" "$2" "$3"; [ "$1" = PASS ] || FAILED=1; }
cleanup() { [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null; }
trap cleanup EXIT

# ---------------------------------------------------------------- is there a GPU at all?
GPU_JSON="$("$PY" - <<'PYEOF' 2>/dev/null
import json
try:
    import pynvml
    pynvml.nvmlInit()
    n = pynvml.nvmlDeviceGetCount()
except Exception:
    n = 0
if n:
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    name, uuid = pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetUUID(h)
    print(json.dumps({"count": n, "name": name if isinstance(name, str) else name.decode(),
                      "uuid": uuid if isinstance(uuid, str) else uuid.decode(),
                      "total": pynvml.nvmlDeviceGetMemoryInfo(h).total}))
PYEOF
)"
if [ -z "$GPU_JSON" ]; then
    for c in "${CHECKS[@]}"; do line SKIP "$c" "no NVIDIA GPU: skipped"; done
    echo "gpu-check: no NVIDIA GPU here (NVML found none); nothing was checked" >&2
    exit 2
fi
field() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$GPU_JSON" "$1"; }
GPU_NAME="$(field name)"; GPU_UUID="$(field uuid)"; GPU_TOTAL="$(field total)"
export GPU_CHECK_UUIDS="{\"0\": \"$GPU_UUID\"}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID
export CUDA_VISIBLE_DEVICES=0  # one GPU, whatever the machine has: rota (and the outsider) see GPU 0 only
echo "gpu-check: $GPU_NAME $GPU_UUID $((GPU_TOTAL / 2**20)) MiB; work in $WORK"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: torch with CUDA is needed for the job checks (pip install torch)" >&2
fi

status_json() { "${ROTA[@]}" status --json --state-dir "$WORK/$1" 2>/dev/null; }
# jq-free reading of rota's JSON: the expression sees the object as `d`.
py_json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ---------------------------------------------------------------- 1. rota machine
out="$("${ROTA[@]}" machine --json 2>&1)"
got="$(printf '%s' "$out" | py_json "'|'.join([d['source']] + [str(x) for g in d['gpus'][:1] for x in (g['name'], g['uuid'], g['memory_bytes'], g.get('health'))])" 2>/dev/null)"
if [ "$got" = "nvml|$GPU_NAME|$GPU_UUID|$GPU_TOTAL|ok" ]; then
    line PASS machine "rota machine: $GPU_NAME, $((GPU_TOTAL / 2**30)) GiB, $GPU_UUID, health ok"
else
    line FAIL machine "expected nvml|$GPU_NAME|$GPU_UUID|$GPU_TOTAL|ok, got: ${got:-$out}"
fi

# ---------------------------------------------------------------- 2. the quickstart, GPUs detected
QS="$HERE/../examples/quickstart/gpus.yaml"
plan="$("${ROTA[@]}" plan "$QS" 2>&1)"; plan_rc=$?
out="$("${ROTA[@]}" run "$QS" --only 'finetune-*' --plain --state-dir "$WORK/quickstart" 2>&1)"; rc=$?
fin="$(status_json quickstart | py_json "sum(1 for t in d['tasks'] if t['name'].startswith('finetune') and t['state'] == 'succeeded')" 2>/dev/null)"
# On one GPU the 2-GPU task can never run: rota plan must refuse it (exit 2) by name.
if [ $rc -eq 0 ] && [ "$fin" = 4 ] && [ $plan_rc -eq 2 ] && [[ "$plan" == *train-2gpu* ]]; then
    line PASS quickstart "examples/quickstart/gpus.yaml without --gpus: 4 finetune tasks on the detected GPU; plan exit $plan_rc"
else
    line FAIL quickstart "run exit $rc, finetune succeeded: ${fin:-?}, plan exit $plan_rc: $(printf '%s' "$out$plan" | tail -3 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 3. two torch jobs share the GPU
out="$("${ROTA[@]}" run "$SPECS/share.yaml" --plain --cpus 8 --state-dir "$WORK/share" 2>&1)"; rc=$?
verdict="$("$PY" - "$WORK/share" 2>/dev/null <<'PYEOF'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1]) / "out"
t = [json.loads((root / n / "times.json").read_text()) for n in ("share-1", "share-2")]
overlap = min(x["end"] for x in t) - max(x["start"] for x in t)
same = t[0]["cvd"] == t[1]["cvd"]
print(f"{'ok' if overlap > 5 and same else 'bad'} overlap {overlap:.0f}s on CUDA_VISIBLE_DEVICES={t[0]['cvd']},{t[1]['cvd']}, torch uuid {t[0]['torch_uuid']}")
PYEOF
)"
if [ $rc -eq 0 ] && [[ "$verdict" == ok* ]]; then
    line PASS share "two torch jobs of 20GB at once: ${verdict#ok }; each saw exactly its device"
else
    line FAIL share "exit $rc, ${verdict:-no times recorded}: $(printf '%s' "$out" | grep -E 'failed|error' | head -2 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 4. a real CUDA OOM, retried bigger
out="$("${ROTA[@]}" run "$SPECS/oom.yaml" --plain --retry-delay 0 --state-dir "$WORK/oom" 2>&1)"; rc=$?
got="$(status_json oom | py_json "[(t['state'], t['attempts']) for t in d['tasks']][0]" 2>/dev/null)"
log1="$(ls "$WORK"/oom/logs/oom/attempt-1.log 2>/dev/null)"
if [ $rc -eq 0 ] && [ "$got" = "('succeeded', 2)" ] && grep -qi "out of memory" "$log1" 2>/dev/null \
        && [[ "$out" == *"booking 16GB"* ]]; then
    line PASS oom "attempt 1 ran out of CUDA memory under 8GB, attempt 2 booked 16GB and succeeded"
else
    line FAIL oom "exit $rc, (state, attempts) ${got:-?}: $(printf '%s' "$out" | grep -E 'retry|failed' | head -2 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 5. enforce_gpu_memory caps torch
out="$("${ROTA[@]}" run "$SPECS/enforce.yaml" --plain --state-dir "$WORK/enforce" 2>&1)"; rc=$?
capped="$(grep -h "capped as booked" "$WORK"/enforce/logs/enforce/attempt-*.log 2>/dev/null | head -1)"
if [ $rc -eq 0 ] && [ -n "$capped" ]; then
    line PASS enforce "12 GiB refused under an 8GB booking: ${capped#capped as booked: }"
else
    line FAIL enforce "exit $rc: $(grep -h . "$WORK"/enforce/logs/enforce/attempt-*.log 2>/dev/null | tail -2 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 6. a foreign process, packed around
HOLD_GIB=$(( GPU_TOTAL / 2**30 - 60 )); [ $HOLD_GIB -lt 20 ] && HOLD_GIB=20
rm -f "$WORK/holder.ready"
"$PY" "$SPECS/job.py" hold --gib "$HOLD_GIB" --ready "$WORK/holder.ready" >"$WORK/holder.log" 2>&1 &
HOLDER_PID=$!
for _ in $(seq 1 120); do  # until it holds its memory (or died: no torch, no room)
    [ -e "$WORK/holder.ready" ] && break; kill -0 "$HOLDER_PID" 2>/dev/null || break; sleep 0.5
done
out="$("${ROTA[@]}" run "$SPECS/foreign.yaml" --plain --cpus 8 --state-dir "$WORK/foreign" 2>&1)"; rc=$?
kill "$HOLDER_PID" 2>/dev/null; wait "$HOLDER_PID" 2>/dev/null; HOLDER_PID=""
most="$("$PY" - "$WORK/foreign" 2>/dev/null <<'PYEOF'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1]) / "out"
t = [json.loads((root / f"pack-{i}" / "times.json").read_text()) for i in (1, 2, 3)]
edges = sorted([(x["start"], 1) for x in t] + [(x["end"], -1) for x in t])
now = most = 0
for _, d in edges:
    now += d
    most = max(most, now)
print(most)
PYEOF
)"
if [ -e "$WORK/holder.ready" ] && [ $rc -eq 0 ] && [ "$most" = 2 ] && [[ "$out" == *"held by pid"* ]]; then
    line PASS foreign "a python holding ${HOLD_GIB} GiB outside rota was booked ($(printf '%s' "$out" | grep -o 'GPU 0: [^(]*held by pid [^(]*' | head -1)); at most 2 of 3 25GB jobs ran beside it, none ran out of memory"
else
    line FAIL foreign "holder ready: $([ -e "$WORK/holder.ready" ] && echo yes || echo no), exit $rc, most at once: ${most:-?}: $(printf '%s' "$out" | grep -E 'gpu|failed' | head -3 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- 7. sampler rows and peaks in the report
rows="$("$PY" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from gpu_samples').fetchone()[0])" "$WORK/share/state.db" 2>/dev/null)"
rep="$("${ROTA[@]}" report --json --state-dir "$WORK/share" 2>/dev/null | py_json "(d['run']['mean_util_pct'], min((t['peak_gpu_memory_bytes'] or 0) for t in d['tasks']))" 2>/dev/null)"
peak="$(printf '%s' "$rep" | "$PY" -c "import sys,ast; u,p=ast.literal_eval(sys.stdin.read()); print(p if u is not None else -1)" 2>/dev/null)"
if [ "${rows:-0}" -gt 0 ] && [ "${peak:--1}" -ge $(( 8 * 2**30 )) ]; then
    line PASS report "$rows GPU sampler rows; rota report --json: mean util and each task's peak >= 8 GiB (least $((peak / 2**20)) MiB)"
else
    line FAIL report "gpu_samples rows: ${rows:-?}; (mean_util_pct, least peak): ${rep:-?}"
fi

exit $FAILED
