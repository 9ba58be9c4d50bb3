"""A test task that fails like PyTorch does when its GPU share is too small.

usage: python oom_task.py REC_FOLDER NAME NEED_GB

Records (attempt, CUDA_VISIBLE_DEVICES, ROTA_GPU_MEMORY_BYTES), then exits 0
if the booked memory is at least NEED_GB, else prints a realistic
``torch.OutOfMemoryError`` traceback to stderr and exits 1.
"""

import json
import os
import sys

rec, name, need_gb = sys.argv[1], sys.argv[2], float(sys.argv[3])
booked = int(os.environ.get("ROTA_GPU_MEMORY_BYTES", "0"))
with open(os.path.join(rec, f"{name}.jsonl"), "a") as f:
    f.write(json.dumps({"name": name, "attempt": os.environ.get("ROTA_ATTEMPT"), "booked": booked,
                        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
print("epoch 0: loss 2.3012")
if booked >= need_gb * 2**30:
    print("ROTA_METRIC loss=0.5")
    sys.exit(0)
sys.stderr.write(f"""Traceback (most recent call last):
  File "/home/user/train.py", line 88, in <module>
    loss = model(batch).loss
  File "/opt/conda/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1553, in _wrapped_call_impl
    return self._call_impl(*args, **kwargs)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB \
of which 1.06 GiB is free. Including non-PyTorch memory, this process has {booked / 2**30:.2f} GiB memory in use. \
Of the allocated memory 13.20 GiB is allocated by PyTorch, and 1.31 GiB is reserved by PyTorch but unallocated. \
If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid \
fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)
""")
sys.exit(1)
