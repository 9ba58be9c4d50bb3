"""The limits on how many tasks run at once that a run obeys beyond the machine's resources.

``rota run`` starts a task only where the policy fits it on the free GPUs, CPUs,
RAM and devices pool (the simulator calls the same policy, so those hold by
construction) *and* where every engine hook's ``may_launch`` allows it. Today one
hook gates launches: a sweep's ``parallel:`` (:meth:`rota.engine.sweep.SweepHook.may_launch`),
at most ``parallel`` running trials per study, lowest trial numbers first. This
module states those gates as data the simulator can obey: a :class:`Cap` per
capped task (its group and the group's limit).

Not a limit on what runs at once, so not modelled: retry back-off, ``--fail-fast``;
Ray's queue-ahead CPU slots (``rota.core.resources.with_cpu_headroom``) book attempts
that wait in Ray's own queue, so what *runs* at once is still the machine's.

Pure; imports no Optuna. A new gate in the engine must be added here too
(``tests/integration/test_plan_limits.py`` compares the plan's concurrency per
group with a real run's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rota.spec.model import Task
from rota.studies.names import study_name


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` tasks of ``group`` run at once; among ready ones, lowest ``order`` first."""

    group: str
    limit: int
    order: int = 0


def concurrency_caps(tasks: Sequence[Task]) -> dict[str, Cap]:
    """Task name -> its cap, for every task a run would gate (sweep trials with ``parallel:``).

    The group is the study (:func:`rota.studies.names.study_name`, as the
    engine groups them) and the order the trial number, as ``may_launch`` sorts them.
    """
    out: dict[str, Cap] = {}
    for t in tasks:
        sw = t.sweep
        if sw is not None and sw.parallel is not None:
            out[t.name] = Cap(f"sweep {study_name(t)}", sw.parallel, t.trial or 0)
    return out


def cap_bound_s(caps: Mapping[str, Cap], durations_s: Mapping[str, float]) -> tuple[float, str]:
    """The least makespan the caps allow: per group, its work over its limit (the largest
    group and its name; ``(0.0, "")`` without caps). Only tasks in ``durations_s`` count."""
    work: dict[str, float] = {}
    limit: dict[str, int] = {}
    for name, c in caps.items():
        d = durations_s.get(name)
        if d is None:
            continue
        work[c.group] = work.get(c.group, 0.0) + d
        limit[c.group] = c.limit
    best, which = 0.0, ""
    for g, w in work.items():
        b = w / limit[g]
        if b > best:
            best, which = b, g
    return best, which
