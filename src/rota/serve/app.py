"""The Starlette application of ``rota serve``.

Routes (all GET and read-only, but one):

- ``/``: the page (``static/index.html``); ``/plotly.min.js``: plotly.js from the installed plotly
  package (offline; a 404 without plotly, and the page draws no charts);
- ``/api/status?state=a,b&q=TEXT&offset=N&limit=N``: the run's head (run id, spec, controller,
  counts), a page of the task table filtered and searched, and ``error`` while there is no state;
- ``/api/events?pieces=a,b&state=a,b&q=TEXT&offset=N&limit=N``: a server-sent-events stream of what the routes
  below and ``/api/status`` answer, each sent when it changed (:mod:`rota.serve.events`): what the
  page follows the run with;
- ``/api/log?task=NAME&bytes=N``: the end of a task's latest log;
- ``/api/timeline``, ``/api/gpus``, ``/api/results``, ``/api/sweeps``, ``/api/eta``, ``/api/figures``
  (the report's figures of results, sweeps and booked GPU memory, as plotly JSON);
- ``POST /api/control`` ``{"kind": "cancel"|"retry"|"hold"|"release", "task": NAME}``: the one
  route that changes the run, through :func:`rota.engine.control.request` (as ``rota cancel``
  would: a request committed for the controller, or applied under the state lock when none
  runs); it needs the token where there is one, else the ``X-Rota-Control: 1`` header, which a
  page of another site cannot send without a CORS preflight this server never grants. Absent
  (and the page shows no buttons) in a rota without :mod:`rota.engine.control`.

The token: when the app is given one (``rota serve`` does on any address but the loopback
defaults, :func:`needs_token`), every request must carry it, as ``?token=`` or the
``X-Rota-Token`` header: none is 401, a wrong one 403. Without a token, requests must name a
loopback host (``Host:`` header), so a web page elsewhere cannot reach the server through a
DNS name that points at 127.0.0.1.
"""

from __future__ import annotations

import hmac
import os
import time
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rota.errors import RotaError
from rota.serve.bodies import Bodies
from rota.serve.cache import Snapshot, StateCache
from rota.serve.events import NAMES, Hub, Question

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""The addresses ``rota serve`` binds without a token (the default is 127.0.0.1)."""
TOKEN_HEADER = "x-rota-token"
CONTROL_HEADER = "x-rota-control"
CONTROL_KINDS = ("cancel", "retry", "hold", "release")
"""What the page's buttons ask of the run, through :func:`rota.engine.control.request`."""
CONTROL_WAIT_S = 15.0
_NO_STORE = {"Cache-Control": "no-store"}


def needs_token(host: str) -> bool:
    """Whether binding ``host`` requires a token: every address but 127.0.0.1, ::1 and localhost
    (127.0.0.2 too: it is loopback, but not the default, and a user who picks an address means
    others to reach it)."""
    return host.strip("[]") not in LOOPBACK_HOSTS


class RotaApp:
    """The application: ASGI middleware with the token check (when there is a token), else a
    loopback ``Host:`` check, around the routes; :meth:`close_streams` ends the event streams (the
    server calls it when it stops: open streams would otherwise be cancelled mid-write)."""

    def __init__(self, app: ASGIApp, token: str | None, hub: Hub | None = None) -> None:
        self.app = app
        self.token = token
        self.hub = hub

    def close_streams(self) -> None:
        """End every open event stream (callable from a signal handler in the loop's thread)."""
        if self.hub is not None:
            self.hub.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal: Response | None = None
        if self.token is not None:
            given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER)
            if not given:
                refusal = PlainTextResponse("rota serve: this address needs the token (?token=...)\n", 401)
            elif not hmac.compare_digest(given.encode(), self.token.encode()):
                refusal = PlainTextResponse("rota serve: wrong token\n", 403)
        else:
            host = request.headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
            if name not in LOOPBACK_HOSTS:
                refusal = PlainTextResponse("rota serve: unknown Host header\n", 403)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _controls() -> Any:
    """:mod:`rota.engine.control` (the request path of ``rota cancel``, ``retry``, ``hold``), or None
    in a rota without it: the page then offers no buttons."""
    try:
        from rota.engine import control
    except ImportError:
        return None
    return control if hasattr(control, "request") else None


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def _json(body: tuple[bytes, bool]) -> Response:
    """A JSON response of an encoded body (:class:`rota.serve.bodies.Bodies`), gzip'd or not."""
    data, gzipped = body
    headers = {**_NO_STORE, "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type="application/json", headers=headers)


def _question(request: Request) -> Question:
    """The table page a request asks for: ``state=a,b``, ``q``, ``offset``, ``limit``."""
    raw = request.query_params.get("state", "")
    states = frozenset(s for s in raw.split(",") if s) or None
    return states, request.query_params.get("q", ""), _int(request, "offset", 0), _int(request, "limit", 100)


def _gzip_ok(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def create_app(state_dir: str | os.PathLike[str], token: str | None = None, cache: StateCache | None = None) -> RotaApp:
    """The application serving ``state_dir`` (read-only); ``token``: required on every request.
    Each answer is encoded once per value it shows (the cache's snapshot and question), however
    many browsers ask (:mod:`rota.serve.bodies`)."""
    state = cache or StateCache(state_dir)
    bodies = Bodies()
    hub = Hub(state, bodies)
    controls = _controls()
    page = resources.files("rota.serve").joinpath("static", "index.html")

    async def index(request: Request) -> Response:
        return Response(page.read_bytes(), media_type="text/html; charset=utf-8", headers=_NO_STORE)

    async def plotly_js(request: Request) -> Response:
        try:
            import plotly
        except ImportError:
            return PlainTextResponse("plotly is not installed: pip install 'rota[report]'\n", 404)
        path = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
        return FileResponse(path, media_type="application/javascript", headers={"Cache-Control": "max-age=3600"})

    def status_body(snap: Snapshot, page_: Any, question: Question, gzip: bool = False) -> tuple[bytes, bool]:
        def make() -> dict[str, Any]:
            out: dict[str, Any] = {"seq": snap.seq, "read_at": snap.at_s, "error": snap.error,
                                   "controls": list(CONTROL_KINDS) if controls is not None else []}
            if snap.data is not None:
                data = snap.data
                out.update({k: data[k] for k in ("run_id", "spec", "state_dir", "controller", "counts")})
                out["total"] = len(data["tasks"])
                out["queued_count"] = snap.queued
                out["held_count"] = snap.held
                out["running_by_gpu"] = snap.running_by_gpu
                out.update(page_)
            return out

        # "now" (the server's clock) is the one field that changes per request: put in front.
        return bodies.get(("status", question), (snap, page_), make, gzip=gzip, now=time.time())

    async def status(request: Request) -> Response:
        question = _question(request)
        snap, page_ = await run_in_threadpool(state.page, *question)
        return _json(status_body(snap, page_, question, _gzip_ok(request)))

    async def events(request: Request) -> Response:
        asked = frozenset(p for p in request.query_params.get("pieces", "").split(",") if p)
        if asked - NAMES:
            return JSONResponse({"error": f"pieces: unknown {', '.join(sorted(asked - NAMES))}; "
                                          f"expected some of {', '.join(sorted(NAMES))}"}, 400)
        stream = hub.stream(_question(request), lambda snap, page_, q: status_body(snap, page_, q)[0],
                            lambda snap, q: state.page_of(snap, *q), asked or NAMES)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={**_NO_STORE, "X-Accel-Buffering": "no"})

    async def log(request: Request) -> Response:
        task = request.query_params.get("task", "")
        found = await run_in_threadpool(state.log_tail, task, _int(request, "bytes", 16384))
        if found is None:
            return JSONResponse({"error": f"no task {task!r}"}, 404, headers=_NO_STORE)
        return JSONResponse(found, headers=_NO_STORE)

    def slow(name: str) -> Route:
        async def endpoint(request: Request) -> Response:
            value = await run_in_threadpool(getattr(state, name))
            return _json(bodies.get(name, (value,), lambda: value, gzip=_gzip_ok(request)))

        return Route(f"/api/{name}", endpoint)

    async def control(request: Request) -> Response:
        # A POST with JSON and a header a cross-site page cannot send without a CORS preflight
        # (which this server never grants): the token where there is one, else X-Rota-Control.
        if request.headers.get(TOKEN_HEADER) is None and request.headers.get(CONTROL_HEADER) != "1":
            return JSONResponse({"error": f"controls need the {CONTROL_HEADER} or {TOKEN_HEADER} header"}, 403)
        try:
            body = await request.json()
            kind, task = str(body["kind"]), str(body["task"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected JSON {"kind": ..., "task": ...}'}, 400)
        if kind not in CONTROL_KINDS:
            return JSONResponse({"error": f"kind {kind!r}: expected one of {', '.join(CONTROL_KINDS)}"}, 400)
        if task not in (await run_in_threadpool(state.status)).by_name:
            return JSONResponse({"error": f"no task {task!r}"}, 404)
        try:
            # An offline cancel stops the attempt through its backend, as `rota cancel` does.
            from rota.steer import offline_executor

            answer = await run_in_threadpool(lambda: controls.request(
                state.state_dir, kind, [task], {}, wait_s=CONTROL_WAIT_S,
                executor_for=lambda backend: offline_executor(state.state_dir, backend)))
        except RotaError as e:
            return JSONResponse({"error": str(e)}, 409)
        return JSONResponse({"answer": answer}, headers=_NO_STORE)

    routes = [Route("/", index), Route("/plotly.min.js", plotly_js), Route("/api/status", status),
              Route("/api/events", events),
              Route("/api/log", log), slow("timeline"), slow("gpus"), slow("results"), slow("sweeps"),
              slow("eta"), slow("figures")]
    if controls is not None:
        routes.append(Route("/api/control", control, methods=["POST"]))
    return RotaApp(Starlette(routes=routes), token, hub)
