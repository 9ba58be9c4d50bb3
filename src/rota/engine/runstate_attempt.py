"""An attempt's transitions, pure: from a placement to its end (a part of :mod:`rota.engine.runstate`).

The functions that turn what the engine observes about one attempt into :class:`~rota.engine.runstate.Transition`
records: outputs already there (:func:`cached`), placed (:func:`placed`), submitted
(:func:`submitted`), started by a backend that queues (:func:`started`), ended (:func:`ended`,
with :class:`End`), past its timeout (:func:`timed_out`), Ctrl-C (:func:`interrupted`), and a
previous controller's attempts at recovery (:func:`lost`, :func:`adopted`). Like the rest of the
run-state model they do no I/O and read no clock; :func:`rota.engine.runstate.apply` applies
what they return. The state keys and the table of events are documented at the top of
:mod:`rota.engine.runstate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rota.core.resources import Placement
from rota.engine.runstate import Live, Op, RunState, Transition
from rota.executors.base import Handle
from rota.store import base as S


def cached(name: str, inputs_fp: str | None, now: float) -> Transition:
    """Its outputs exist, made from the same inputs: done without running."""
    return Transition(Op.CACHED, name, {"state": S.CACHED, "reason": "outputs exist", "inputs_fp": inputs_fp,
                                        "ended_at": now}, note="outputs exist; skipped")


def placed(lv: Live, p: Placement, *, attempt: int, attempt_id: int | None, now: float, deadline: float | None,
           log_path: str, out: str, params: dict[str, Any] | None, code: str | None = None) -> Transition:
    """The policy placed a pending task: its attempt ``attempt`` (the next number, never reused)
    is committed ``launching`` before it is submitted. ``code``: the attempt's code record, JSON
    text (:mod:`rota.engine.codever`), kept in its row."""
    gpus, gpu_bytes = list(p.gpus), list(p.gpu_bytes)
    row: dict[str, Any] = {"attempt": attempt, "state": S.LAUNCHING, "gpus": gpus, "started_at": now,
                           "log_path": log_path, "command": lv.task.command}
    if code is not None:
        row["code"] = code
    if attempt_id is not None:
        row["id"] = attempt_id
    return Transition(Op.LAUNCHING, p.task, {
        "state": S.LAUNCHING, "attempts": lv.attempts + 1, "attempt": attempt, "gpus": gpus, "gpu_bytes": gpu_bytes,
        "cpus": p.cpus, "memory_bytes": p.memory_bytes, "started_at": now, "deadline": deadline,
        "log_path": log_path, "out_dir": out, "params": params, "handle": None, "exit_code": None, "reason": "",
        "ended_at": None,
    }, row, placement=p)


def submitted(lv: Live, handle: Handle | Exception, *, queued_in: str = "") -> Transition:
    """The executor answered a submit: RUNNING with its handle (``queued_in``: the backend that
    queues it), or SUBMIT_FAILED (the caller then ends the attempt as a failure)."""
    name = lv.task.name
    if isinstance(handle, Exception):
        return Transition(Op.SUBMIT_FAILED, name, {"state": S.RUNNING, "handle": None},
                          note=f"could not start: {handle}")
    h = handle.to_json()
    fields: dict[str, Any] = {"state": S.RUNNING, "handle": h}
    if queued_in:  # `rota status` shows it queued until the backend starts it (started())
        fields["reason"] = S.QUEUED_PREFIX + queued_in
    return Transition(Op.RUNNING, name, fields, {"attempt": lv.attempt, "state": S.RUNNING, "handle": h},
                      handle=handle)


def started(lv: Live, started_at: float, deadline: float | None) -> Transition:
    """A queued attempt began: its run and its timeout count from ``started_at``."""
    return Transition(Op.STARTED, lv.task.name, {"started_at": started_at, "deadline": deadline, "reason": ""},
                      {"attempt": lv.attempt, "state": S.RUNNING, "started_at": started_at})


@dataclass(frozen=True)
class End:
    """An attempt's end as the engine saw it (the executor's Status plus what the engine read)."""

    phase: str  # succeeded, failed, lost
    exit_code: int | None
    reason: str
    now: float
    retry_free: bool = False
    metrics: Mapping[str, float] | None = None
    inputs_fp: str | None = None  # succeeded: the fingerprint of what it read
    started_at: float | None = None  # its real start, when it moved (queued ahead in the backend)
    oom: bool = False  # a CUDA out-of-memory in its log
    oom_booking: int | None = None  # oom on GPUs: the bigger GPU-memory booking for its retry


def ended(lv: Live, end: End, *, retry_delay_s: float, interrupting: bool) -> Transition:
    """An attempt ended: SUCCEEDED, RETRY (pending again after a back-off, at once when the
    attempt does not count) or FAILED for good. The caller applies it, then :func:`~rota.engine.runstate.released`."""
    t, now = lv.task, end.now
    row: dict[str, Any] = {"attempt": lv.attempt, "ended_at": now, "exit_code": end.exit_code}
    moved: dict[str, Any] = {}  # the task row's start, rewritten only when it moved (not on the common path)
    if end.started_at is not None:
        row["started_at"] = moved["started_at"] = end.started_at
    if end.phase == "succeeded":
        row.update(state=S.SUCCEEDED, reason=end.reason)
        took = now - (end.started_at or lv.started_at or now)
        return Transition(Op.SUCCEEDED, t.name, {
            "state": S.SUCCEEDED, "exit_code": 0, "reason": "", "ended_at": now, "handle": None,
            "inputs_fp": end.inputs_fp, **moved}, row, end.metrics, note=f"done in {took:.1f}s")
    if lv.cancelling:  # rota cancel stopped it: not retried, whatever its exit says
        row.update(state=S.CANCELLED, reason="cancelled")
        return Transition(Op.CANCELLED, t.name, {
            "state": S.CANCELLED, "exit_code": end.exit_code, "reason": "cancelled", "ended_at": now,
            "handle": None, **moved}, row, end.metrics, note="cancelled (rota cancel)")
    reason = "timeout" if lv.timed_out else (end.reason or "failed")
    if end.oom:
        reason = "cuda out of memory"
    free = end.retry_free or end.phase == "lost"
    counted = lv.attempts - lv.free_attempts - (1 if free else 0)
    row.update(state="lost" if end.phase == "lost" else S.FAILED, reason=reason)
    if (free or counted <= t.retries) and not interrupting:
        delay = 0.0 if free else min(retry_delay_s * 2 ** max(counted - 1, 0), 300.0)
        override = end.oom_booking if end.oom and t.request.gpus else lv.gpu_override
        fields: dict[str, Any] = {"state": S.PENDING, "exit_code": end.exit_code, "reason": reason, "ended_at": now,
                                  "handle": None, "not_before": now + delay, "gpu_memory_override": override}
        if free:
            fields["free_attempts"] = lv.free_attempts + 1
        extra = f"; booking {override / 2**30:.0f}GB per GPU" if end.oom and override else ""
        return Transition(Op.RETRY, t.name, fields, row, end.metrics,
                          note=f"{reason}; retry in {delay:.0f}s{extra} ({lv.log_path})")
    return Transition(Op.FAILED, t.name, {
        "state": S.FAILED, "exit_code": end.exit_code, "reason": reason, "ended_at": now, "handle": None, **moved},
        row, end.metrics, note=f"{reason} ({lv.log_path})")


def interrupted(rs: RunState, now: float) -> list[Transition]:
    """Ctrl-C (a control request): every running attempt is recorded ``interrupted``."""
    return [Transition(Op.INTERRUPTED, n, {"state": S.INTERRUPTED, "reason": "interrupted", "ended_at": now,
                                           "handle": None},
                       {"attempt": lv.attempt, "state": S.INTERRUPTED, "ended_at": now, "reason": "interrupted"})
            for n, lv in rs.running.items()]


def timed_out(lv: Live) -> Transition:
    """It ran past its timeout: recorded before it is stopped; its end is then a ``timeout``."""
    t = lv.task
    return Transition(Op.TIMED_OUT, t.name, {"reason": TIMED_OUT_REASON},
                      note=f"ran past its timeout of {t.timeout_s or 0:g}s; stopping it")


TIMED_OUT_REASON = "timed out; stopping it"
"""A running task's ``reason`` once it ran past its timeout (its end then says ``timeout``)."""


def lost(lv: Live, now: float) -> Transition:
    """Recovery: an attempt vanished with the previous controller; it runs again, for free (unless
    ``rota cancel`` was stopping it: then it is CANCELLED)."""
    if lv.cancelling:
        return Transition(Op.CANCELLED, lv.task.name, {
            "state": S.CANCELLED, "handle": None, "reason": "cancelled", "ended_at": now},
            {"attempt": lv.attempt, "state": S.CANCELLED, "ended_at": now, "reason": "cancelled"},
            note="was being cancelled when the previous controller died: cancelled")
    return Transition(Op.LOST, lv.task.name, {
        "state": S.PENDING, "handle": None, "free_attempts": lv.free_attempts + 1,
        "reason": "lost with the previous controller"},
        {"attempt": lv.attempt, "state": "lost", "ended_at": now, "reason": "lost"},
        note="was starting when the previous controller died; running it again")


def adopted(lv: Live, handle: Handle, placement: Placement) -> Transition:
    """Recovery: a previous controller's attempt still runs and is followed again (RUNNING)."""
    h = handle.to_json()
    return Transition(Op.RUNNING, lv.task.name, {"state": S.RUNNING, "handle": h},
                      {"attempt": lv.attempt, "state": S.RUNNING, "handle": h}, handle=handle,
                      placement=placement, note=f"still running from a previous controller ({handle.external_id})")
