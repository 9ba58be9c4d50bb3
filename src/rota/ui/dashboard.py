"""The live terminal dashboard (rich Live) and the plain one-line-per-event printer.

``render(snapshot)`` is pure: a frozen Snapshot in, a rich renderable out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rota.store import base as S
from rota.ui.plain import PlainUI, event_line
from rota.ui.snapshot import EtaTracker, Snapshot, snapshot
from rota.ui.view import RunView
from rota.units import format_duration, format_size

__all__ = ["LiveUI", "PlainUI", "event_line", "render"]


def _bar(used: float, total: float, width: int = 24) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=min(used, total), width=width)


def render(s: Snapshot, gpu_notes: Mapping[int, tuple[str, str]] | None = None) -> Group:
    """Everything on one screen: machine, running tasks, counts, failures.

    ``gpu_notes``: per GPU, ``("unhealthy", why)`` (drawn red) or ``("foreign", who holds memory
    there)`` (a line under the GPU), from :class:`rota.engine.gpu_watch.GpuWatch`."""
    notes = gpu_notes or {}
    res = Table.grid(padding=(0, 1))
    res.add_column(justify="left", no_wrap=True)
    res.add_column()
    res.add_column(justify="right", no_wrap=True)
    res.add_column(overflow="ellipsis", no_wrap=True, max_width=60)
    for g in s.gpus:
        live = ""
        if g.util_pct is not None:
            live = f"  util {g.util_pct:.0f}%"
            if g.used_bytes is not None:
                live += f" used {format_size(g.used_bytes)}"
        kind, note = notes.get(g.index, ("", ""))
        if kind == "unhealthy":
            res.add_row(Text(f"GPU {g.index}", style="bold red"), _bar(g.booked_bytes, g.total_bytes),
                        Text(f"unhealthy{live}", style="red"), Text(note, style="red"))
            continue
        res.add_row(
            f"GPU {g.index}", _bar(g.booked_bytes, g.total_bytes),
            f"{format_size(g.booked_bytes)}/{format_size(g.total_bytes)}{live}", ", ".join(g.tasks) or "-",
        )
        if g.given_back:  # live --gpus gave it back: what runs there finishes, nothing new goes there
            res.add_row("", "", Text("given back", style="yellow"),
                        Text("by a live --gpus change: nothing new goes there", style="yellow"))
        if kind == "foreign":
            res.add_row("", "", Text("not rota's", style="yellow"), Text(note, style="yellow"))
    # Booked beyond the limit: attempts queued ahead in the backend (Ray: shown queued), or tasks
    # started before a live --cpus change lowered it (they finish; nothing waits in any queue).
    ahead = s.cpus_booked - s.cpus_total
    queued = sum(1 for r in s.running if r.queued)
    over = (f"{ahead} waiting in the backend's queue" if queued and ahead > 0 else
            f"{ahead} over the limit: tasks started before a live --cpus change finish" if ahead > 0 else "")
    res.add_row("CPU", _bar(s.cpus_booked, s.cpus_total), f"{s.cpus_booked}/{s.cpus_total}", over)
    res.add_row("RAM", _bar(s.memory_booked, s.memory_total),
                f"{format_size(s.memory_booked)}/{format_size(s.memory_total)}", "")
    run = Table(box=None, expand=False, show_edge=False, pad_edge=False)
    run.add_column("running", no_wrap=True, max_width=40)
    run.add_column("GPUs", no_wrap=True)
    run.add_column("elapsed / estimate", no_wrap=True)
    run.add_column("progress", no_wrap=True)
    for r in s.running[:20]:
        prog = ""
        if r.progress and r.progress.get("total"):
            done, total = r.progress.get("done", 0), r.progress["total"]
            rate = r.progress.get("items_per_s")
            eta = r.progress.get("eta_s")
            prog = f"{done}/{total}" + (f" {rate:.1f}/s" if rate else "") + (f" eta {format_duration(eta)}" if eta else "")
        run.add_row(r.name, ",".join(map(str, r.gpus)) or "cpu",
                    "queued" if r.queued else f"{format_duration(r.elapsed_s)} / {format_duration(r.estimate_s)}",
                    prog)
    if len(s.running) > 20:
        run.add_row(f"... {len(s.running) - 20} more", "", "", "")
    c = s.counts
    done = c.get(S.SUCCEEDED, 0) + c.get(S.CACHED, 0)
    finished = done + c.get(S.FAILED, 0) + c.get(S.SKIPPED, 0) + c.get(S.CANCELLED, 0)
    head = Text.assemble(
        ("done ", "bold"), (str(done), "green"), "  ", ("failed ", "bold"), (str(c.get(S.FAILED, 0)), "red"),
        "  ", ("skipped ", "bold"), (str(c.get(S.SKIPPED, 0)), "yellow"), "  ",
        *((("cancelled ", "bold"), (str(c[S.CANCELLED]), "magenta"), "  ") if c.get(S.CANCELLED) else ()),
        ("running ", "bold"),
        str(c.get(S.RUNNING, 0) + c.get(S.LAUNCHING, 0)), "  ", ("pending ", "bold"), str(c.get(S.PENDING, 0)),
        f"   elapsed {format_duration(s.now - s.started_at)}  ETA {format_duration(s.eta_s)}",
    )
    overall = Table.grid(padding=(0, 1))
    overall.add_row(_bar(finished, s.total, 50), f"{finished}/{s.total}")
    parts: list[Any] = [head, overall, res, run]
    if s.waiting:
        wait = Table(box=None, show_edge=False)
        rows = [(name, starts_in(start, s.now), why) for name, why, start in s.waiting]
        # The long reasons give way on a narrow terminal, never the task's name nor its start.
        wait.add_column("waiting", no_wrap=True, max_width=40,
                        min_width=min(max(len("waiting"), *(len(r[0]) for r in rows)), 40))
        wait.add_column("starts", no_wrap=True, min_width=max(len("starts"), *(len(r[1]) for r in rows)))
        wait.add_column("why", overflow="ellipsis", no_wrap=True, ratio=1)
        for row in rows:
            wait.add_row(*row)
        parts.append(wait)
    if s.failures:
        fail = Table(box=None, show_edge=False)
        fail.add_column("latest failures", style="red", no_wrap=True)
        fail.add_column("reason")
        fail.add_column("log", overflow="fold")
        for name, reason, log in s.failures:
            fail.add_row(name, reason, log)
        parts.append(fail)
    return Group(*[Panel(Group(*parts), title="rota", border_style="blue")])


def starts_in(start: float | None, now: float) -> str:
    """``in ~3m`` (``now`` when due), or ``?`` without a prediction."""
    if start is None:
        return "?"
    return "now" if start <= now else f"in ~{format_duration(start - now)}"


class LiveUI:
    """The rich Live dashboard for a TTY."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._live: Live | None = None
        self.gpu_live: dict[int, tuple[float, int]] = {}
        self.gpu_notes: dict[int, tuple[str, str]] = {}  # filled by engine.gpu_watch.GpuWatch
        self.eta = EtaTracker()

    def start(self, engine: RunView) -> None:
        self._live = Live(render(snapshot(engine, eta=self.eta)), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def event(self, engine: RunView, ev: tuple[float, str, str, str]) -> None:
        if ev[1] in (S.FAILED, "retry", "interrupt", "lost", "adopted", "timeout", "halt", "gpu") and self._live is not None:
            self._live.console.print(event_line(ev))

    def flush(self) -> None:
        """Nothing to write out: the dashboard draws at refresh()."""

    def refresh(self, engine: RunView) -> None:
        if self._live is not None:
            self._live.update(render(snapshot(engine, self.gpu_live, self.eta), self.gpu_notes), refresh=True)

    def stop(self, engine: RunView) -> None:
        if self._live is not None:
            self._live.update(render(snapshot(engine, self.gpu_live, self.eta), self.gpu_notes), refresh=True)
            self._live.stop()
            self._live = None
        PlainUI(self.console.file).stop(engine)
