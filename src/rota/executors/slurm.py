"""The SLURM executor: attempts become sbatch jobs; status from squeue/sacct.

Construction::

    SlurmExecutor(state_dir, options=SlurmOptions(partition="gpu"),
                  gpu_memory_bytes=80 * 2**30)
    SlurmExecutor(state_dir, spec_slurm=spec.file.slurm, partition=None)  # what the CLI does

``state_dir`` must be on a filesystem the compute nodes see (as must each
launch's ``log_path`` and ``workdir``); scripts go to ``<state_dir>/slurm/``.
``capacity()`` describes the biggest node of the partition as a
:class:`~rota.core.resources.Machine` (GPUs from ``Gres=gpu:N``, CPUs,
RealMemory); SLURM does not know GPU memory, so every GPU gets
``gpu_memory_bytes``. ``rota run``'s ``--gpus``/``--cpus``/``--memory`` cap it
for the run (:mod:`rota.executors.cluster_limits`).

What runs: ``bash -c COMMAND`` in ``workdir`` with the launch's env exported
on top of the submitting environment (the controller's task variables (``ROTA_TASK``...) and
``SLURM_*`` but ``SLURM_CONF`` removed, so a controller inside a SLURM job
does not pass its allocation on),
except ``CUDA_VISIBLE_DEVICES``, which SLURM sets from the GPUs it granted
(the launch's ``gpus`` are the engine's bookkeeping, not real device ids); a
CPU launch gets it empty (SLURM sets none for a job without GPUs).
stdout+stderr are appended to ``log_path``; the exit status goes to
``<log_path>.rc``. SLURM never requeues (``--no-requeue``): rota retries.

``submit_many(launches)`` turns one scheduling round into as few sbatch calls
as possible, all or nothing (a failed sbatch cancels what this call already
submitted and raises :class:`ExecutorError`):

- memory-shared GPUs: launches with ``gpu_count == 1`` and a
  ``gpu_memory_bytes`` below the whole GPU (``gpu_fraction < 1``) that the
  engine placed on the same GPU index (equal ``gpus``) in this round become
  ONE job with ``--gres=gpu:1`` that runs them concurrently (``&`` + ``wait``),
  each with its own log and rc file; ``poll`` reports each from its rc file
  while the others still run; ``cancel`` of some members only stops those
  (a cancel file the job watches), of all members scancels the job. A shared
  launch alone in its round gets a whole-GPU job of its own. SLURM's GPU is
  not the engine's index: the engine's packing only decides who shares. So a
  shared launch placed in a later round next to a running shared job gets a
  job (and a whole GPU) of its own: SLURM may queue it where the engine's
  ledger saw room. That is conservative (a GPU is never oversubscribed), at
  the cost of some packing across rounds. With ``strict_gpus`` (set when
  ``--gpus`` caps the run below the cluster's GPUs) such a launch instead waits
  for the shared job on its engine GPU (``--dependency=afterany:JOB``, shown
  queued), so the run never holds more SLURM GPUs than the cap.
- launches of one ``array_group`` with identical resources (GPUs, CPUs,
  memory, time limit) become ONE ``sbatch --array=0-(n-1)``.
- everything else: one sbatch each.

``poll`` first reads the rc files (an attempt whose command ended needs no
SLURM call), then makes ONE ``squeue`` call for all the other handles and at
most ONE ``sacct`` call for the finished ones whose rc file is missing
(killed, timed out, preempted). A SLURM that does not answer in
``poll_timeout_s`` (10 s) leaves those handles out of the answer (still
running as far as the engine knows) until ``poll_failure_limit_s`` (300 s). Without slurmdbd ("accounting storage is disabled") it falls back
to ``sacct -c`` (the job-completion file), which knows array elements only by
their raw job ids, learned from earlier squeue output.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rota.core.resources import Gpu, Machine
from rota.errors import ExecutorError
from rota.executors import slurm_text as T
from rota.executors.base import Executor, Handle, Launch, Status, inherited_env
from rota.executors.common import note_never_started
from rota.executors.slurm_units import is_shared, plan_units, split_cancel

NAME = "slurm"
DEFAULT_GPU_MEMORY = 80 * 2**30
_INVALID_JOB = re.compile(r"invalid job id", re.IGNORECASE)


class SlurmExecutor(Executor):
    """Runs attempts as SLURM jobs. ``command_counts`` counts calls per SLURM command."""

    name = NAME
    queues = True  # jobs may wait in SLURM's queue: a task's timeout starts when poll reports its start

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        options: T.SlurmOptions | None = None,
        gpu_memory_bytes: int | None = None,
        spec_slurm: Any = None,
        partition: str | None = None,
        inherit_env: dict[str, str] | None = None,
        command_timeout_s: float = 60.0,
        poll_timeout_s: float = 10.0,
        poll_failure_limit_s: float = 300.0,
    ) -> None:
        """``spec_slurm`` (the spec's ``slurm:`` section: partition, account, qos,
        extra, gpu_flag, gpu_memory) fills ``options``/``gpu_memory_bytes`` when
        those are not given; ``partition`` (``--partition`` on the CLI) wins over both.
        GPU memory defaults to 80 GiB per GPU.
        """
        self.dir = Path(state_dir) / "slurm"
        if options is None and spec_slurm is not None:
            options = T.SlurmOptions(
                partition=spec_slurm.partition, account=spec_slurm.account, qos=spec_slurm.qos,
                extra=tuple(spec_slurm.extra or ()), gpu_flag=spec_slurm.gpu_flag,
            )
        options = options or T.SlurmOptions()
        if partition:
            options = dataclasses.replace(options, partition=partition)
        self.options = options
        if gpu_memory_bytes is None and spec_slurm is not None:
            gpu_memory_bytes = spec_slurm.gpu_memory
        self.gpu_memory_bytes = int(gpu_memory_bytes or DEFAULT_GPU_MEMORY)
        environ = os.environ if inherit_env is None else inherit_env
        # a controller running inside a SLURM job must not hand its own
        # allocation (SLURM_JOB_ID, SLURM_MEM_PER_NODE...) to the jobs it submits
        base = inherited_env({k: v for k, v in environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"})
        self._env = base
        self._timeout = command_timeout_s
        self._poll_timeout = poll_timeout_s
        self._fail_limit = poll_failure_limit_s
        self._failing_since: float | None = None
        self._sacct_c: bool | None = None  # None: not known yet whether slurmdbd exists
        self._raw: dict[str, str] = {}  # "123_4" -> raw job id, from squeue
        #: never hold more SLURM GPUs than the engine booked (see the module docstring)
        self.strict_gpus = False
        # engine GPU index -> the latest memory-shared job placed there, and its members not yet seen ending
        self._shared_on: dict[int, tuple[str, set[str]]] = {}
        self.command_counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ plumbing
    def _run(self, args: list[str], check: bool = True,
             timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
        self.command_counts[args[0]] += 1
        limit = timeout_s or self._timeout
        try:
            p = subprocess.run(args, capture_output=True, text=True, env=self._env, timeout=limit)
        except FileNotFoundError as e:
            raise ExecutorError(f"{args[0]} not found: is SLURM installed here (try scripts/slurm-up.sh)?") from e
        except subprocess.TimeoutExpired as e:
            raise ExecutorError(f"{args[0]} did not answer in {limit:g}s") from e
        if check and p.returncode != 0:
            raise ExecutorError(f"{' '.join(args[:3])} failed (exit {p.returncode}): {p.stderr.strip()[:500]}")
        return p

    def _sbatch(self, script: str, tag: str) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{tag}.sbatch"
        path.write_text(script)
        return T.parse_sbatch_parsable(self._run(["sbatch", "--parsable", str(path)]).stdout)

    def _after_shared(self, group: Sequence[Launch]) -> str | None:
        """The running shared job a memory-shared ``group`` must wait for (``strict_gpus``), if any."""
        if not self.strict_gpus or not is_shared(group[0]):
            return None
        live = self._shared_on.get(group[0].gpus[0])
        return live[0] if live and live[1] else None

    def _sbatch_after(self, render: Callable[[T.SlurmOptions], str], after: str | None, tag: str) -> str:
        """sbatch ``render(options)``, waiting for job ``after`` when given; a job SLURM no longer
        knows ("dependency" refused) has long ended: then without the dependency."""
        if after is not None:
            opts = dataclasses.replace(self.options, extra=(*self.options.extra, f"--dependency=afterany:{after}"))
            try:
                return self._sbatch(render(opts), tag)
            except ExecutorError as e:
                if "dependency" not in str(e).lower():
                    raise
        return self._sbatch(render(self.options), tag)

    @staticmethod
    def _prepare(launch: Launch) -> None:
        Path(launch.log_path).parent.mkdir(parents=True, exist_ok=True)
        for p in (T.rc_path_for(launch.log_path), T.cancel_path_for(launch.log_path)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def _handle(self, launch: Launch, job: str, kind: str, task_id: int | None = None,
                members: list[str] | None = None) -> Handle:
        ext = job if task_id is None else f"{job}_{task_id}"
        data: dict[str, object] = {
            "job_id": job, "task_id": task_id, "kind": kind, "log_path": launch.log_path,
            "rc_path": T.rc_path_for(launch.log_path), "submitted_at": time.time(),
        }
        if members is not None:
            data["members"] = members
        return Handle(launch.key, NAME, ext, data)

    # ------------------------------------------------------------------ submit
    def submit(self, launch: Launch) -> Handle:
        return self.submit_many([launch])[0]

    def submit_many(self, launches: Sequence[Launch]) -> list[Handle]:
        """Handles in the order of ``launches``; see the module docstring for the grouping."""
        units = plan_units(launches)
        out: dict[int, Handle] = {}
        done_jobs: list[str] = []
        try:
            for kind, idxs in units:
                group = [launches[i] for i in idxs]
                for la in group:
                    self._prepare(la)
                tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
                if kind == "single":
                    output = None
                    if T.needs_output_link(group[0].log_path):
                        self.dir.mkdir(parents=True, exist_ok=True)
                        output = str(self.dir / f"{tag}.log")
                        os.symlink(os.path.abspath(group[0].log_path), output)
                    job = self._sbatch_after(partial(T.render_single, group[0], output=output),
                                             self._after_shared(group), tag)
                    out[idxs[0]] = self._handle(group[0], job, kind)
                elif kind == "array":
                    links = self.dir / tag
                    links.mkdir(parents=True)
                    for n, la in enumerate(group):
                        (links / str(n)).symlink_to(os.path.abspath(la.log_path))
                    job = self._sbatch(T.render_array(group, self.options, str(links / "%a")), tag)
                    for n, i in enumerate(idxs):
                        out[i] = self._handle(launches[i], job, kind, n)
                else:
                    job = self._sbatch_after(partial(T.render_shared, group, output=str(self.dir / f"{tag}.out")),
                                             self._after_shared(group), tag)
                    keys = [la.key for la in group]
                    for i in idxs:
                        out[i] = self._handle(launches[i], job, kind, members=keys)
                done_jobs.append(job)
                if is_shared(group[0]):
                    self._shared_on[group[0].gpus[0]] = (job, {la.key for la in group})
        except Exception:
            if done_jobs:
                self._run(["scancel", *done_jobs], check=False)
            raise
        return [out[i] for i in range(len(launches))]

    # ------------------------------------------------------------------ status
    def _squeue(self, job_ids: Sequence[str], timeout_s: float | None = None) -> dict[str, T.JobState] | None:
        """One squeue call; None when SLURM did not answer (try again next poll)."""
        if not job_ids:
            return {}
        try:
            p = self._run(["squeue", "--noheader", "--array", "--states=all", f"--format={T.SQUEUE_FORMAT}",
                           f"--jobs={','.join(sorted(set(job_ids)))}"], check=False, timeout_s=timeout_s)
        except ExecutorError:
            return None
        if p.returncode != 0 and not _INVALID_JOB.search(p.stderr):
            return None
        rows = T.parse_squeue(p.stdout)
        for jid, js in rows.items():
            if js.raw_id:
                self._raw[jid] = js.raw_id
        return rows

    def _sacct(self, handles: Sequence[Handle]) -> dict[str, T.JobState] | None:
        """At most one sacct call (two the very first time, to learn about slurmdbd); None: no answer."""
        if not handles:
            return {}
        try:
            if self._sacct_c is not True:
                ids = sorted({h.external_id for h in handles})
                p = self._run(["sacct", "--parsable2", "--noheader", f"--format={T.SACCT_FORMAT}",
                               f"--jobs={','.join(ids)}"], check=False, timeout_s=self._poll_timeout)
                if "accounting storage is disabled" not in (p.stdout + p.stderr).lower():
                    if p.returncode != 0:
                        return None
                    self._sacct_c = False
                    return T.parse_sacct(p.stdout)
                self._sacct_c = True
            # job-completion file: array elements are known by their raw ids only
            want = {self._raw.get(h.external_id, h.external_id): h.external_id for h in handles}
            want = {raw: ext for raw, ext in want.items() if raw.isdigit()}
            if not want:
                return {}
            p = self._run(["sacct", "-c", "--parsable2", "--noheader", f"--format={T.SACCT_FORMAT}",
                           f"--jobs={','.join(sorted(want))}"], check=False, timeout_s=self._poll_timeout)
        except ExecutorError:
            return None
        if p.returncode != 0:
            return None
        rows = T.parse_sacct(p.stdout)
        return {ext: rows[raw] for raw, ext in want.items() if raw in rows}

    @staticmethod
    def _rc(h: Handle) -> tuple[int, float] | None:
        path = str(h.data.get("rc_path") or "")
        try:
            text = Path(path).read_text().strip()
            return int(text), os.path.getmtime(path)
        except (OSError, ValueError):
            return None

    def _job_key(self, h: Handle) -> str:
        return str(h.data.get("job_id") or h.external_id.split("_")[0])

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        """Status of every handle known now: rc files first (no SLURM call), then one squeue for
        the rest and at most one sacct for those squeue no longer shows. When squeue does not
        answer within ``poll_timeout_s`` (slurmctld down), only the rc-file statuses come back;
        after ``poll_failure_limit_s`` of that, ExecutorError."""
        out = self._poll(handles)
        if self._shared_on:
            ended = {k for k, st in out.items() if st.phase != "running"}
            for gpu, (_job, members) in list(self._shared_on.items()):
                members -= ended
                if not members:
                    del self._shared_on[gpu]
        return out

    def _poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        if not handles:
            return {}
        out: dict[str, Status] = {}
        rest: list[Handle] = []
        for h in handles:
            rc = self._rc(h)
            if rc is not None:  # the command itself ended: its own exit status is the truth
                out[h.key] = T.status_from_rc(rc[0], None, rc[1])
            else:
                rest.append(h)
        if not rest:
            return out
        sq = self._squeue([self._job_key(h) for h in rest], timeout_s=self._poll_timeout)
        now = time.time()
        if sq is None:
            self._failing_since = self._failing_since or now
            if now - self._failing_since > self._fail_limit:
                raise ExecutorError(f"squeue has failed for {now - self._failing_since:.0f}s")
            return out
        self._failing_since = None
        ask: list[Handle] = []
        for h in rest:
            js = sq.get(h.external_id)
            if js is not None and js.state in T.RUNNING_STATES:
                out[h.key] = T.status_of(js)
            elif h.data.get("kind") == "shared" and js is not None:
                rc = self._rc(h)  # it may have ended between the two looks
                st = T.status_of(js)  # the shared job ended and this member wrote no rc
                out[h.key] = T.status_from_rc(rc[0], js.start, rc[1]) if rc is not None else (
                    st if st.phase == "failed" else Status(
                        "failed", None, "ended without an exit status", started_at=js.start, ended_at=js.end))
            else:
                rc = self._rc(h)
                if rc is not None:
                    out[h.key] = T.status_from_rc(rc[0], js.start if js else None, rc[1])
                else:
                    ask.append(h)
        acct = self._sacct(ask)
        for h in ask:
            if acct is None and h.external_id not in sq:
                continue  # sacct did not answer: unknown for now, ask again next poll
            js = (acct or {}).get(h.external_id) or sq.get(h.external_id)
            if js is not None:
                out[h.key] = T.status_of(js)
            elif now - float(h.data.get("submitted_at") or 0) < 10:
                out[h.key] = Status("running")  # just submitted: let SLURM catch up
            else:
                out[h.key] = Status("lost", None, "job vanished from squeue and sacct")
        return out

    # ------------------------------------------------------------------ cancel
    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        """One scancel for all jobs; members of partly cancelled shared jobs via cancel files."""
        if not handles:
            return
        whole, partial = split_cancel(handles)
        for h in partial:
            Path(T.cancel_path_for(str(h.data["log_path"]))).write_text("TERM\n")
        if whole:
            self._run(["scancel", *sorted(whole)], check=False)
        deadline = time.time() + max(0.0, grace_s)
        killed = False
        while True:
            left = self._still_running(handles)
            live = {h.key for h in left}
            if not left or (time.time() >= deadline and killed):
                # a job cancelled while PENDING never made its log: say so there (rota logs shows it)
                note_never_started([h for h in handles if h.key not in live], "SLURM")
                return
            if time.time() >= deadline:
                killed = True
                deadline = time.time() + 10.0
                for h in partial:
                    Path(T.cancel_path_for(str(h.data["log_path"]))).write_text("KILL\n")
                if whole:
                    self._run(["scancel", "--signal=KILL", "--full", *sorted(whole)], check=False)
            time.sleep(0.3)

    def _still_running(self, handles: Sequence[Handle]) -> list[Handle]:
        st = self.poll(handles)
        return [h for h in handles if h.key not in st or st[h.key].phase == "running"]

    # ------------------------------------------------------------------ adopt
    def adopt(self, handle: Handle) -> bool:
        """True when SLURM (squeue or sacct) or the rc file still knows the attempt."""
        if self._rc(handle) is not None:
            return True
        sq = self._squeue([self._job_key(handle)])
        if sq and handle.external_id in sq:
            return True
        return handle.external_id in (self._sacct([handle]) or {})

    def stop_unrecorded(self, state_dir: str, key: str, *, attempt_id: int | None = None) -> None:
        """Cancel the job (or array element) of an attempt a dead controller submitted but never recorded.

        Found among this user's jobs by its batch script: one in the state
        folder's ``slurm/`` that runs that attempt (``ROTA_ATTEMPT_KEY``: one attempt's alone, as
        attempt numbers never restart; ``attempt_id`` is not needed). Killed,
        then waited for until SLURM lists it no more, so its rerun never overlaps it.
        """
        folder = (Path(state_dir) / "slurm").resolve()
        # Not knowing is not "none": an error here stops the recovery rather than risk a second run.
        listed = self._run(["squeue", "--me", "-h", "-o", T.JOB_SCRIPTS_FORMAT]).stdout
        targets: set[str] = set()
        for job, script in T.parse_job_scripts(listed):
            path = Path(script)
            if path.parent.resolve() != folder:
                continue
            try:
                text = path.read_text()
            except OSError:
                continue
            targets.update(job if i is None else f"{job}_{i}" for k, i in T.attempts_in_script(text) if k == key)
        if not targets:
            return
        ids = sorted(targets)
        self._run(["scancel", "--signal=KILL", "--full", *ids], check=False)  # running: at once
        self._run(["scancel", *ids], check=False)  # pending
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            p = self._run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], check=False)
            answered = p.returncode == 0 or _INVALID_JOB.search(p.stderr)  # "invalid job id": long gone
            if answered and not p.stdout.strip():
                return
            time.sleep(0.3)
        raise ExecutorError(f"SLURM still lists job(s) {', '.join(ids)} of attempt {key} a minute after scancel")

    def close(self) -> None:
        """Nothing to release: jobs outlive the controller on purpose."""

    # ------------------------------------------------------------------ capacity
    def capacity(self) -> Machine:
        """The biggest node of the partition (tasks never span nodes), GPU memory as configured."""
        nodes = T.parse_nodes(self._run(["scontrol", "show", "node", "--oneliner"]).stdout)
        part = self.options.partition
        if part:
            nodes = [n for n in nodes if part in n.partitions]
        if not nodes:
            raise ExecutorError(f"SLURM lists no nodes{f' in partition {part!r}' if part else ''}")
        best = max(nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb))
        gpus = tuple(Gpu(i, self.gpu_memory_bytes, name="SLURM gres/gpu") for i in range(best.gpus))
        return Machine(gpus=gpus, cpus=best.cpus, memory_bytes=best.memory_mb * 2**20, source=f"slurm:{best.name}",
                       cpus_from="slurm", memory_from="slurm")

    def total_capacity(self) -> Machine:
        """All nodes of the partition summed (GPUs numbered across nodes).

        For an engine that wants to keep more than one node busy: book against
        this, but check that each task fits :meth:`capacity` (one node), since
        a job never spans nodes. Down/drained nodes are left out.
        """
        nodes = T.parse_nodes(self._run(["scontrol", "show", "node", "--oneliner"]).stdout)
        part = self.options.partition
        nodes = [n for n in nodes if (not part or part in n.partitions)
                 and not n.state.upper().startswith(("DOWN", "DRAIN", "FAIL"))]
        if not nodes:
            raise ExecutorError(f"SLURM lists no usable nodes{f' in partition {part!r}' if part else ''}")
        n_gpus = sum(n.gpus for n in nodes)
        gpus = tuple(Gpu(i, self.gpu_memory_bytes, name="SLURM gres/gpu") for i in range(n_gpus))
        return Machine(gpus=gpus, cpus=sum(n.cpus for n in nodes),
                       memory_bytes=sum(n.memory_mb for n in nodes) * 2**20,
                       source=f"slurm:{len(nodes)} nodes", cpus_from="slurm", memory_from="slurm")
