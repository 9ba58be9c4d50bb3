"""``python -m rota.cli``: the ``rota`` command.

``rota status`` is answered by :mod:`rota.cli.status_fast` before click (and
everything the other commands import) is loaded: it is polled during runs on
machines whose cores the run needs. It is the one parser of ``rota status``
(help and usage errors included); the click command passes its words to it.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point: the fast ``status`` path, else the full click CLI."""
    if sys.argv[1:2] == ["status"]:
        from rota.cli.status_fast import main as status_main

        code = status_main(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    from rota.cli.main import main as full_main

    full_main()


if __name__ == "__main__":
    main()
