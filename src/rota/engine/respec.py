"""Live edits of a run: a new spec (control kind ``spec``) or new limits (kind ``limits``).

``rota run SPEC`` against a state folder whose controller is alive commits one of
these requests (:func:`rota.engine.control.request`); the controller takes it in
its loop and calls :func:`handle`, whose text is the requester's answer. With no
live controller, :func:`handle_offline` answers instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rota.store.sqlite import Control, SqliteStore

if TYPE_CHECKING:
    from rota.engine.loop import Engine

__all__ = ["handle", "handle_offline"]


def handle(engine: Engine, control: Control) -> str:
    """Apply a ``spec`` or ``limits`` request to the live ``engine``; returns what changed."""
    if control.kind not in ("spec", "limits"):
        raise ValueError(f"respec handles spec and limits requests, not {control.kind!r}")
    return f"{control.kind}: live edits are not applied by this controller yet; nothing changed"


def handle_offline(store: SqliteStore, control: Control) -> str:
    """Answer a request no controller is alive to take. A new spec needs nothing: the next
    ``rota run`` reads the file anyway. Limits belong to a live run: refused."""
    if control.kind == "spec":
        return "no controller is running: the next `rota run` reads the spec as it is now; nothing to hand over"
    if control.kind == "limits":
        return "refused: no controller is running, so there are no live limits to change; give them to `rota run`"
    raise ValueError(f"respec handles spec and limits requests, not {control.kind!r}")
