"""The local executor's exit-status log: one append-only file per state folder.

Each task's bash appends one line when it exits (its EXIT trap, see
``local.PROLOGUE``)::

    <exit status> <end time, $EPOCHREALTIME> @<attempt id>

so a controller that did not start the attempt (it was killed, and a new one
adopted the task) still learns how it ended. One shared file instead of one
file per attempt keeps a task's launch at two new inodes (its log and its
output folder): on ext4 every new inode costs a scan of recently freed ones.

Lines of small appends (``O_APPEND``, one ``write``) never interleave on a
local filesystem. An attempt is named by its id (``$ROTA_ATTEMPT_ID``, unique in
the state folder: :func:`token`), so a line is one attempt's and no time is
compared. Attempts launched by a rota before attempt ids (no ``ROTA_ATTEMPT_ID``)
wrote their key instead, which repeated when a task was reset (``--rerun``): for
those alone a line counts only if it ended after the attempt was launched
(``after``). A ``void`` line in place of the status discards what came before it
for that attempt (the controller stopped the attempt itself and it must run
again, free).
"""

from __future__ import annotations

import os

NAME = "exit-status.log"
# Bash's EXIT trap: "$?" is the status the shell exits with (TERM/INT/HUP traps exit 128+n first).
TRAP = ("""trap 'printf "%s %s %s\\n" "$?" "$EPOCHREALTIME" "${ROTA_ATTEMPT_ID:+@}${ROTA_ATTEMPT_ID:-$ROTA_ATTEMPT_KEY}" """
        """>> "$ROTA_EXIT_LOG"' EXIT; """)
VOID = "void"


def path_for(state_dir: str) -> str:
    return os.path.join(state_dir, NAME)


def token(key: str, attempt_id: int | None) -> str:
    """How the exit-status log names an attempt: ``@<id>``; its key when it has no id (see the module doc)."""
    return f"@{attempt_id}" if attempt_id else key


class ExitLog:
    """Reads one exit-status log incrementally (each byte is parsed once per controller)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._last: dict[str, tuple[int | None, float]] = {}  # key -> (status or None if voided, end time)

    def status(self, key: str, after: float = 0.0) -> int | None:
        """The exit status recorded for :func:`token` ``key``, or None if none is. ``after`` (epoch s):
        for a key without an id only, the attempt's launch; a line that ended before it is an earlier one's."""
        self._read_new()
        got = self._last.get(key)
        if got is None:
            return None
        code, ended = got
        # A missing end time (a bash without EPOCHREALTIME) is 0.0: accepted, as the key alone decides then.
        if code is None or (ended and ended < after):
            return None
        return code

    def void(self, keys: list[str]) -> None:
        """Discard the recorded statuses of ``keys`` (tokens; best effort: the disk may be full or read-only)."""
        if not keys:
            return
        text = "".join(f"{VOID} - {k}\n" for k in keys)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            os.write(fd, text.encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # an unfinished last line is read again next time
        self._offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) != 3:
                continue
            code_text, ended_text, key = parts
            try:
                ended = float(ended_text.replace(",", ".")) if ended_text not in ("", "-") else 0.0
                code = None if code_text == VOID else int(code_text)
            except ValueError:
                continue
            self._last[key] = (code, ended)
