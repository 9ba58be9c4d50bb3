"""The end of a task's log file, for failure reasons (the engine) and failure sections (reports).

Neutral: standard library only, so layers above and beside the engine share it.
"""

from __future__ import annotations

import os


def tail(path: str | None, max_bytes: int = 64 * 1024) -> str:
    """The last ``max_bytes`` of the file at ``path``, decoded leniently; ``""`` when there is no
    path or it cannot be read (a missing log is not an error here)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
