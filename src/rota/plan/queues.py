"""The simulator's working sets: ready tasks in policy order, running tasks as the policy
sees them (with the bookings outside rota), the concurrency-cap gates. Internal to
:mod:`rota.plan.simulate`."""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

from rota.core.policy import Running
from rota.core.resources import Placement
from rota.plan.limits import Cap

REMAINING_FLOOR_S = 1.0  # the engine's floor on a running task's remaining estimate


class ReadyQueue:
    """Ready tasks in policy order: a sorted front list over the rest.

    Items are positions in the global policy order (ints compare fast). The rest is
    ``base``, the tasks ready at the start (sorted; consumed from ``base_at``), and
    a heap ``back`` of tasks that became ready later. Invariant: every item of
    ``front`` sorts before every other item.
    """

    _SPILL = 256

    def __init__(self, initial: list[int]) -> None:
        """``initial``: sorted positions of the tasks ready at the start (kept, not copied)."""
        self.front: list[int] = []
        self.base = initial
        self.base_at = 0
        self.back: list[int] = []

    def __len__(self) -> int:
        return len(self.front) + len(self.base) - self.base_at + len(self.back)

    def add(self, item: int) -> None:
        if self.front and item < self.front[-1]:
            insort(self.front, item)
        else:
            heapq.heappush(self.back, item)

    def prefix(self, k: int) -> list[int]:
        """The first ``k`` items (fewer if there are fewer), in order."""
        front, base, back = self.front, self.base, self.back
        while len(front) < k:
            at = self.base_at
            if not back:  # only the sorted base: take a slice
                take = base[at:at + k - len(front)]
                front += take
                self.base_at = at + len(take)
                break
            if at < len(base) and base[at] < back[0]:
                front.append(base[at])
                self.base_at = at + 1
            else:
                front.append(heapq.heappop(back))
        return front[:k]

    def remove(self, done: set[int]) -> None:
        """Drop ``done`` (items of the last prefix)."""
        front = self.front
        for x in done:
            del front[bisect_left(front, x)]
        if len(front) > self._SPILL * 2:
            spill = front[self._SPILL:]
            del front[self._SPILL:]
            if self.base_at >= len(spill):  # back into base's consumed cells: still sorted
                self.base_at -= len(spill)
                self.base[self.base_at:self.base_at + len(spill)] = spill
            else:
                for x in spill:
                    heapq.heappush(self.back, x)


class RunningAt(Sequence[Running]):
    """The running tasks as the policy sees them at ``now``: built only when it reads them.

    rota's policy reads ``running`` only to reserve for a task that does not fit
    (it gets the free ledger directly), so most calls build none of these.
    Remaining time is ``max(end - now, REMAINING_FLOOR_S)``, as the engine's.
    """

    def __init__(self, running: Mapping[int, tuple[Placement, float]]) -> None:
        self._running = running
        self.now = 0.0

    def __len__(self) -> int:
        return len(self._running)

    def __iter__(self) -> Iterator[Running]:
        now = self.now
        for p, end in self._running.values():
            yield Running(p, max(end - now, REMAINING_FLOOR_S))

    @overload
    def __getitem__(self, k: int) -> Running: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[Running]: ...

    def __getitem__(self, k: int | slice) -> Running | Sequence[Running]:
        return list(self)[k]


class Gates:
    """The cap groups of a simulation: which tasks wait outside the ready queue, which may enter.

    ``group[i]``: task ``i``'s group number, -1 when uncapped. ``inflight[g]``:
    tasks of group ``g`` admitted to the ready queue or running.
    """

    def __init__(self, names: Sequence[str], caps: Mapping[str, Cap]) -> None:
        self.group = [-1] * len(names)
        self.order: list[int] = [0] * len(names)
        self.limit: list[int] = []
        number: dict[str, int] = {}
        if caps:
            for i, name in enumerate(names):
                c = caps.get(name)
                if c is None:
                    continue
                g = number.get(c.group)
                if g is None:
                    g = number[c.group] = len(self.limit)
                    self.limit.append(c.limit)
                self.group[i], self.order[i] = g, c.order
        self.inflight = [0] * len(self.limit)
        self.heaps: list[list[tuple[int, int]]] = [[] for _ in self.limit]
        self.touched: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.limit)

    def wait(self, i: int) -> None:
        g = self.group[i]
        heapq.heappush(self.heaps[g], (self.order[i], i))
        self.touched.add(g)

    def done(self, i: int) -> None:
        g = self.group[i]
        if g >= 0:
            self.inflight[g] -= 1
            self.touched.add(g)

    def admit_all(self) -> list[int]:
        """The waiting tasks that may enter the ready queue now, lowest order first per group."""
        out = []
        for g in self.touched:
            heap = self.heaps[g]
            while heap and self.inflight[g] < self.limit[g]:
                out.append(heapq.heappop(heap)[1])
                self.inflight[g] += 1
        self.touched.clear()
        return out

    def waiting(self) -> int:
        return sum(map(len, self.heaps))


class RunningBeside(RunningAt):
    """:class:`RunningAt` and the bookings outside rota after it, with no remaining time."""

    def __init__(self, running: Mapping[int, tuple[Placement, float]], outside: Sequence[Placement]) -> None:
        super().__init__(running)
        self._outside = [Running(p, None, outside=True) for p in outside]

    def __len__(self) -> int:
        return super().__len__() + len(self._outside)

    def __iter__(self) -> Iterator[Running]:
        yield from super().__iter__()
        yield from self._outside
