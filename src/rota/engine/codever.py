"""The code behind each attempt: the git commit of its working directory (dirty or not, with a hash
of the diff, the diff itself kept in the state folder) or, without git, the hash of its command's script.

Looked up once per distinct working directory (and, without git, per script) per run and cached
(:class:`CodeVersions`, one per engine): a 1,000-task run in one folder asks git once. The record
is the attempt row's ``code`` column, JSON text (``None``: nothing to record, e.g. ``command: true``
outside a repository)::

    {"kind": "git", "repo": "/abs/repo", "commit": "<40 hex>", "dirty": false, "diff_sha256": null}
    {"kind": "git", ..., "dirty": true, "diff_sha256": "<64 hex>", "diff_path": "code/<64 hex>.diff"}
    {"kind": "script", "path": "/abs/train.py", "sha256": "<64 hex>"}

``dirty`` means tracked files differ from the commit (``git diff HEAD``); untracked files are not
part of the diff. ``diff_path`` is relative to the state folder. A run records the code as it was
when the run first launched a task there: a file edited later in the same run is not seen (the
cost of asking once; the next ``rota run`` sees it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Any

CODE_DIR = "code"  # in the state folder: one <diff_sha256>.diff per distinct dirty diff
GIT_TIMEOUT_S = 20.0  # a git that hangs (a network file system) must not hold the run forever
_SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".R", ".r", ".jl", ".pl", ".rb", ".js", ".lua")
_SCRIPT_TOKENS = 4  # the script is among the command's first words (python -u train.py ...)


class CodeVersions:
    """Code records for one run's attempts, by working directory; cached for the run.

    ``record(workdir, command)`` returns the JSON text for the attempt row (or None).
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self._by_dir: dict[str, str | None] = {}  # workdir -> git record text, None: not in a repository
        self._by_repo: dict[str, str | None] = {}  # repository root -> git record text
        self._by_script: dict[str, str | None] = {}  # absolute script path -> script record text

    def record(self, workdir: str, command: str) -> str | None:
        """The code record of an attempt running ``command`` in ``workdir`` (JSON text, or None)."""
        if workdir in self._by_dir:
            rec = self._by_dir[workdir]
        else:
            rec = self._by_dir[workdir] = self._git(workdir)
        return rec if rec is not None else self._script(workdir, command)

    def _git(self, workdir: str) -> str | None:
        root = _git_out(workdir, "rev-parse", "--show-toplevel")
        if root is None:
            return None
        root = root.strip()
        if root in self._by_repo:
            return self._by_repo[root]
        rec: str | None = None
        commit = _git_out(root, "rev-parse", "--verify", "-q", "HEAD")
        if commit is not None and commit.strip():
            diff = _git_bytes(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
            data: dict[str, Any] = {"kind": "git", "repo": root, "commit": commit.strip(), "dirty": bool(diff),
                                    "diff_sha256": None}
            if diff:
                digest = hashlib.sha256(diff).hexdigest()
                data["diff_sha256"] = digest
                data["diff_path"] = self._keep_diff(digest, diff)
            rec = json.dumps(data)
        self._by_repo[root] = rec
        return rec

    def _keep_diff(self, digest: str, diff: bytes) -> str | None:
        """Write the diff once under the state folder; its path relative to it (None: not written)."""
        rel = os.path.join(CODE_DIR, f"{digest}.diff")
        path = os.path.join(self.state_dir, rel)
        if os.path.exists(path):
            return rel
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(diff)
            os.replace(tmp, path)  # whole or absent: a reader never sees half a diff
        except OSError:
            return None  # the record still names the diff's hash; the run goes on
        return rel

    def _script(self, workdir: str, command: str) -> str | None:
        path = script_of(workdir, command)
        if path is None:
            return None
        try:
            return self._by_script[path]
        except KeyError:
            pass
        rec: str | None = None
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            rec = json.dumps({"kind": "script", "path": path, "sha256": digest})
        except OSError:
            pass
        self._by_script[path] = rec
        return rec


def script_of(workdir: str, command: str) -> str | None:
    """The script a command runs: the first of its first few words that names a file in ``workdir``
    with a script's suffix (``python train.py``, ``bash run.sh``, ``./eval.py``); absolute, or None."""
    for word in command.split(None, _SCRIPT_TOKENS)[:_SCRIPT_TOKENS]:
        word = word.strip("'\"")
        if not word.endswith(_SCRIPT_SUFFIXES) or word.startswith("-"):
            continue
        path = os.path.normpath(os.path.join(workdir, word))
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _git_bytes(cwd: str, *args: str) -> bytes | None:
    """``git args`` in ``cwd``: its stdout, or None (no git, not a repository, an error, a timeout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the task's folder, not ours
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take index.lock: a user's git command must not fail because of us
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, env=env,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def _git_out(cwd: str, *args: str) -> str | None:
    out = _git_bytes(cwd, *args)
    return None if out is None else out.decode("utf-8", "replace")
