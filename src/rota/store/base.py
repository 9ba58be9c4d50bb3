"""The state store contract.

One store per state folder (``.rota/`` beside the spec; see ``state_dir_for_spec``). The controller is the
only writer; any number of readers (``rota status``, ``rota report``) may read
at the same time without "database is locked".

Guarantees every implementation gives:

- every transition is committed (durable against a process crash) before the
  engine acts on it: ``launching`` is written before a process is started, the
  handle right after, the end state before dependents are released;
- every transition appends an event to an append-only log (``events``) in the
  same transaction, so history can be replayed and audited;
- transitions are compare-and-set: ``transition(name, expect=..., ...)`` only
  changes a task that is in the expected state, and says whether it did;
- the schema version is in ``PRAGMA user_version``; a database that is not
  rota's, or from a newer rota, is refused with a clear message.

Task states: ``pending``, ``launching``, ``running``, ``succeeded``, ``cached``
(outputs already there), ``failed``, ``skipped`` (a need failed),
``interrupted`` (Ctrl-C), ``cancelled`` (``rota cancel``: not retried, kept as it is by the next
run until ``rota retry``, ``--rerun`` or a changed command). A ``pending`` task may also be
*held* (the ``held`` column, ``rota hold``): not a state of its own.
"""

from __future__ import annotations

PENDING = "pending"
LAUNCHING = "launching"
RUNNING = "running"
SUCCEEDED = "succeeded"
CACHED = "cached"
FAILED = "failed"
SKIPPED = "skipped"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
HELD = "held"
"""Not a stored state: what ``rota status``' table shows for a held pending task (JSON: ``held: true``)."""

ACTIVE = frozenset({LAUNCHING, RUNNING})
DONE_OK = frozenset({SUCCEEDED, CACHED})
FINAL = frozenset({SUCCEEDED, CACHED, FAILED, SKIPPED, INTERRUPTED, CANCELLED})
STATES = (PENDING, LAUNCHING, RUNNING, SUCCEEDED, CACHED, FAILED, SKIPPED, INTERRUPTED, CANCELLED)
RETRYABLE = frozenset({FAILED, CANCELLED, SKIPPED, INTERRUPTED})
"""What ``rota retry`` sends back to pending (``--force``: ``DONE_OK`` too)."""

QUEUED = "queued"
"""Not a stored state: what ``rota status`` shows (and ``--state`` selects) for a queued running task."""
QUEUED_PREFIX = "queued in "
"""A ``running`` task whose ``reason`` starts with this (``queued in slurm``) was submitted to a
backend that queues and has not been started by it yet; the reason is cleared when it starts."""


def is_queued(state: str, reason: str) -> bool:
    """Submitted to a backend that queues (SLURM, Ray) and not started by it yet (see QUEUED_PREFIX)."""
    return state == RUNNING and reason.startswith(QUEUED_PREFIX)
