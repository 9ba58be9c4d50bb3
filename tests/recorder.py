"""A test task: records its env and start/end times, sleeps, exits as told.

usage: python recorder.py OUT_FOLDER NAME SLEEP_S [EXIT_CODE] [extra args recorded verbatim...]
"""

import json
import os
import sys
import time

out, name, sleep_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
code = int(sys.argv[4]) if len(sys.argv) > 4 else 0
start = time.time()
time.sleep(sleep_s)
rec = {
    "name": name,
    "start": start,
    "end": time.time(),
    "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "omp": os.environ.get("OMP_NUM_THREADS"),
    "task": os.environ.get("ROTA_TASK"),
    "attempt": os.environ.get("ROTA_ATTEMPT"),
    "out": os.environ.get("ROTA_OUT"),
    "argv": sys.argv[5:],
    "pid": os.getpid(),
    "raylet": os.environ.get("RAY_RAYLET_PID"),  # which Ray node ran it (multi-node tests)
}
with open(os.path.join(out, f"{name.replace('/', '_')}.jsonl"), "a") as f:
    f.write(json.dumps(rec) + "\n")
sys.exit(code)
