"""``rota serve``: a live web page of a run (:mod:`rota.serve`), from its state folder, read-only.

Registered by :mod:`rota.cli.main` through :func:`register`. Needs the ``serve`` extra
(Starlette, uvicorn): without it, one line saying how to install it, exit 2.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from typing import Any

import click

from rota.errors import UsageError

_INSTALL_HINT = "pip install 'rota[serve]'"
NICE = 10
"""``rota serve`` lowers its CPU priority by this much (``nice``): the controller and the tasks first."""


def register(cli: click.Group) -> None:
    cli.add_command(serve)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); UsageError when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})
"""Addresses that mean every interface: not an address to open from another machine."""


def url_of(host: str, port: int, token: str | None, hostname: str | None = None) -> str:
    """The page's address as printed: IPv6 hosts in brackets, the token in the query; a wildcard
    bind (``0.0.0.0``, ``::``) is shown as this machine's name (``hostname``, default
    :func:`socket.gethostname`), the address others open."""
    if host in WILDCARD_HOSTS:
        host = hostname or socket.gethostname()
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False, type=click.Path())
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any but 127.0.0.1, ::1 and localhost needs the token printed in the URL.")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="State folder (default: the spec's, as rota status).")
@click.option("--token", help="The token to require (default: a random one, on addresses that need one).")
def serve(target: str | None, port: int, host: str, state_dir: str | None, token: str | None) -> None:
    """A live web page of the run: counts, ETA, tasks, timeline, GPUs, logs, results.

    Reads the state folder read-only, so it may run beside the controller, before it starts and
    after it ends; the page follows the state within 2 seconds. Watch a remote run through an SSH
    tunnel: ssh -L 8765:127.0.0.1:8765 HOST, then open http://127.0.0.1:8765/ here.
    """
    try:
        import uvicorn

        from rota.serve.app import create_app, needs_token
    except ImportError as e:
        raise UsageError(f"rota serve needs Starlette and uvicorn ({e.name} is missing): {_INSTALL_HINT}") from None
    from rota import api

    if target is not None and not os.path.exists(target):
        raise UsageError(f"{target}: no such spec file or folder")
    sd = api.resolve_state_dir(target, state_dir)
    if token is None and needs_token(host):
        token = secrets.token_urlsafe(24)
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    where = "  (every address of this machine; Ctrl-C stops)" if host in WILDCARD_HOSTS else "  (Ctrl-C stops)"
    click.echo(f"rota serve: {sd} at {url_of(host, bound_port, token)}{where}")
    sys.stdout.flush()
    # The page waits, the run does not: below the controller and its tasks for the CPU.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    app = create_app(sd, token)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.close_streams()  # the pages' streams end: uvicorn need not cancel them mid-write
            super().handle_exit(sig, frame)

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once it has stopped
        Server(config).run(sockets=[sock])
