"""The local executor: each attempt is its own session and process group.

A task runs as ``bash -c PROLOGUE COMMAND``: the prologue's EXIT trap appends the
exit status to the state folder's exit-status log (``rota.executors.exits``), so a
controller that was killed and restarted can still learn how an attempt ended (adoption); its
TERM/INT/HUP traps make a signalled task record 128+signal, never the status of
its last finished command. One process (no extra wrapper shell) per task keeps
the launch cost at that of a bare ``bash -c``. A command that ``exec``s away its
shell records no status: if the controller is gone when it ends, the attempt is
"lost" and runs again without counting against ``retries``. Tasks are in their own session (``setsid``), so a terminal's
Ctrl-C reaches only the controller, which then stops every task group itself,
and a controller killed with SIGKILL leaves its tasks running to be adopted.

Stopping an attempt signals its process group *and* every descendant found at
that moment (a grandchild that called setsid is still a descendant):
SIGTERM, a grace period, then SIGKILL.

Launching is one ``posix_spawn`` (glibc: clone with CLONE_VFORK): the child opens
its own log and ``/dev/null``, starts a new session and restores the signal
dispositions Python changed, so the controller pays no Popen bookkeeping, no
log open/close and no per-launch environment encoding in Python. The working
folder is entered by the script itself (posix_spawn cannot ``chdir``); a
missing one is refused before anything starts. Exits are reaped with
``waitpid`` per known pid, under a lock (``cancel`` may run in a timeout thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from rota.executors import exits
from rota.executors.base import Executor, Handle, Launch, Status, inherited_env
from rota.executors.common import discard_rc_files, read_rc, status_from_code

PROLOGUE = (
    exits.TRAP
    + """trap 'exit 143' TERM; trap 'exit 130' INT; trap 'exit 129' HUP; """
    """cd -- "$ROTA_WORKDIR" || exit 1\n"""
)
NAME = "local"
# A process whose start is this close to our spawn time is ours (pids are not reused that fast).
PID_REUSE_TOLERANCE_S = 2.0


class LocalExecutor(Executor):
    """Runs attempts as local process groups. Thread-safe for cancel()."""

    name = NAME

    def __init__(self, inherit_env: dict[str, str] | None = None) -> None:
        self._pids: dict[str, int] = {}  # attempt key -> pid of its bash, until reaped
        self._exited: dict[str, int] = {}  # attempt key -> exit code, reaped but not yet reported
        self._lock = threading.Lock()
        self._base_env = inherited_env(os.environ if inherit_env is None else inherit_env)
        self._bash = shutil.which("bash") or "/bin/bash"
        self._workdirs: set[str] = set()
        self._exit_logs: dict[str, exits.ExitLog] = {}  # path -> reader
        # One scan of every process's environment serves a whole recovery (it happens before any
        # submit, while no controller can start new attempts); the first submit drops it.
        self._found: dict[str, dict[str, list[int]]] = {}
        _no_inherited_fds()

    def submit(self, launch: Launch) -> Handle:
        self._found.clear()
        log = launch.log_path
        try:
            os.mkdir(os.path.dirname(log))  # one syscall in the common case; parents exist after the first task
        except FileExistsError:
            pass
        except FileNotFoundError:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
        workdir = os.path.abspath(launch.workdir)
        if workdir not in self._workdirs:  # checked once; the script's `cd` reports one that vanished later
            if not os.path.isdir(workdir):
                raise FileNotFoundError(errno.ENOENT, "working folder not found", workdir)
            self._workdirs.add(workdir)
        exit_log = exits.path_for(launch.env.get("ROTA_STATE_DIR") or os.path.dirname(os.path.dirname(log)))
        env = dict(self._base_env)
        env.update(launch.env)
        env["ROTA_ATTEMPT_KEY"] = launch.key
        if launch.attempt_id:
            env["ROTA_ATTEMPT_ID"] = str(launch.attempt_id)  # its exit-status line names it by this
        env["ROTA_EXIT_LOG"] = exit_log
        env["ROTA_WORKDIR"] = workdir
        spawned_at = time.time()
        pid = os.posix_spawn(
            self._bash,
            ["bash", "-c", PROLOGUE + launch.command],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
            setsigmask=(),
            setsigdef=_RESTORED_SIGNALS,
        )
        with self._lock:
            self._pids[launch.key] = pid
        # The spawn time identifies the process against pid reuse. Reading its exact
        # create_time here would wait for the child's exec (/proc/PID/stat blocks on it).
        return Handle(launch.key, NAME, str(pid), _data(pid, spawned_at, exit_log, launch.attempt_id))

    def recover(self, state_dir: str, key: str, log_path: str | None, started_at: float = 0.0, *,
                attempt_id: int | None = None) -> Handle | None:
        """The handle of an attempt whose handle was never committed (the controller died first).

        Found by its id (``ROTA_ATTEMPT_ID``) in its environment while it runs, by its
        line in the exit-status log once it ended; None when neither exists (it never
        started, or ended without recording a status). An attempt of a rota before ids
        (``attempt_id`` None, or its process has none) is found by its key, and its
        exit line only if it ended after ``started_at``, its launch.
        """
        found = self._attempt_processes(state_dir)
        tok = exits.token(key, attempt_id)
        pids = sorted(found.get(tok) or found.get(key, []))
        exit_log = exits.path_for(state_dir)
        for pid in pids:
            try:
                if os.getpgid(pid) != pid:
                    continue
                created = psutil.Process(pid).create_time()
            except (OSError, psutil.Error):
                continue
            # The launch time, not create_time (clock-tick rounding may put that after a quick end):
            # it is what the exit line's end time is compared with, and within the pid-reuse tolerance.
            spawned_at = started_at if abs(created - started_at) < PID_REUSE_TOLERANCE_S else created
            return Handle(key, NAME, str(pid), _data(pid, spawned_at, exit_log, attempt_id))
        reader = self._exit_log(exit_log)
        if attempt_id and reader.status(tok) is not None:
            return Handle(key, NAME, "0", _data(0, started_at, exit_log, attempt_id))
        if reader.status(key, started_at) is not None:  # launched by a rota before attempt ids
            return Handle(key, NAME, "0", _data(0, started_at, exit_log, None))
        return None

    def stop_unrecorded(self, state_dir: str, key: str, *, attempt_id: int | None = None) -> None:
        """SIGKILL the process group of an attempt whose handle was never committed, if it exists
        (found by its id; by its key when it has none, as :meth:`recover`)."""
        found = self._attempt_processes(state_dir)
        for pid in found.get(exits.token(key, attempt_id)) or found.get(key, []):
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    def _attempt_processes(self, state_dir: str) -> dict[str, list[int]]:
        found = self._found.get(state_dir)
        if found is None:
            found = self._found[state_dir] = find_attempt_processes(state_dir)
        return found

    def recorded_status(self, h: Handle) -> int | None:
        """The exit status the attempt's bash recorded, if it did (rota 0.1 handles: its ``.rc`` file)."""
        if h.data.get("exit_log"):
            aid = h.data.get("attempt_id")  # by its id alone; by key and launch time for attempts without one
            after = 0.0 if aid else float(h.data.get("spawned_at") or 0.0)
            return self._exit_log(str(h.data["exit_log"])).status(exits.token(h.key, aid), after)
        return read_rc(str(h.data.get("rc_path", "")))

    def discard_status(self, handles: Sequence[Handle]) -> None:
        """Forget the recorded failures of attempts rota stopped itself, so a next run counts them as lost.

        A success that came first is kept. Best effort: the state folder may be full or read-only.
        """
        voids: dict[str, list[str]] = {}
        for h in handles:
            if h.data.get("exit_log") and self.recorded_status(h) not in (None, 0):
                voids.setdefault(str(h.data["exit_log"]), []).append(exits.token(h.key, h.data.get("attempt_id")))
        discard_rc_files([h for h in handles if not h.data.get("exit_log")])
        for path, keys in voids.items():
            self._exit_log(path).void(keys)

    def _exit_log(self, path: str) -> exits.ExitLog:
        log = self._exit_logs.get(path)
        if log is None:
            log = self._exit_logs[path] = exits.ExitLog(path)
        return log

    def poll(self, handles: Sequence[Handle]) -> dict[str, Status]:
        out: dict[str, Status] = {}
        with self._lock:
            ours = {h.key for h in handles if h.key in self._pids or h.key in self._exited}
            self._reap_locked(list(ours))
            ended = {k: self._exited.pop(k) for k in ours if k in self._exited}
        for h in handles:
            if h.key in ended:
                # waitpid's status is the one the EXIT trap writes (TERM/INT/HUP exit as 128+n);
                # the file matters only to a controller that did not start the attempt.
                _reap_group(int(h.data["pgid"]))
                out[h.key] = status_from_code(ended[h.key])
                continue
            if h.key in ours:
                out[h.key] = Status("running")
                continue
            if _alive(h):
                out[h.key] = Status("running")
                continue
            rc = self.recorded_status(h)
            _reap_group(int(h.data.get("pgid", 0) or 0))
            if rc is None:
                out[h.key] = Status("lost", None, "vanished (no exit status recorded)")
            else:
                out[h.key] = status_from_code(rc)
        return out

    def cancel(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        targets: list[tuple[int, list[psutil.Process]]] = []
        for h in handles:
            pgid = int(h.data.get("pgid", 0) or 0)
            if pgid <= 1:
                continue
            targets.append((pgid, _tree(h)))
        for pgid, procs in targets:
            _signal(pgid, procs, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not any(_group_alive(pgid) or any(_running(p) for p in procs) for pgid, procs in targets):
                break
            self._reap_children()
            time.sleep(0.02)
        for pgid, procs in targets:
            _signal(pgid, procs, signal.SIGKILL)
        self._reap_children()

    def kill_now(self, handles: Sequence[Handle]) -> None:
        for h in handles:
            pgid = int(h.data.get("pgid", 0) or 0)
            if pgid > 1:
                _signal(pgid, _tree(h), signal.SIGKILL)
        self._reap_children()

    def adopt(self, handle: Handle) -> bool:
        if _alive(handle):
            return True
        return self.recorded_status(handle) is not None

    def close(self) -> None:
        self._reap_children()

    def _reap_children(self) -> None:
        with self._lock:
            self._reap_locked(list(self._pids))

    def _reap_locked(self, keys: Sequence[str]) -> None:
        for key in keys:
            pid = self._pids.get(key)
            if pid is None:
                continue
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: the exit-status file is all there is
                got, status = pid, 0
            if got == 0:
                continue
            del self._pids[key]
            self._exited[key] = os.waitstatus_to_exitcode(status)


# Python ignores SIGPIPE and SIGXFSZ for itself; a task must start with the defaults (as Popen does).
_RESTORED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, n))


def _no_inherited_fds() -> None:
    """Make descriptors the controller inherited (fd >= 3) close on exec, as Popen's close_fds did.

    Python's own descriptors are already non-inheritable; this covers ones handed
    to rota by its parent (a lock held by ``flock``, a harness's pipe).
    """
    try:
        fds = [int(f) for f in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd < 3:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
        except OSError:
            pass


def _alive(h: Handle) -> bool:
    pid = int(h.data.get("pid", 0) or 0)
    if pid <= 0:
        return False
    try:
        p = psutil.Process(pid)
        if "create_time" in h.data:  # handles written by rota 0.1.0 before spawned_at
            if abs(p.create_time() - float(h.data["create_time"])) > 0.05:
                return False
        elif abs(p.create_time() - float(h.data.get("spawned_at", 0))) > PID_REUSE_TOLERANCE_S:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tree(h: Handle) -> list[psutil.Process]:
    if not _alive(h):
        # The wrapper is gone; group members (if any) are still reachable by killpg.
        return []
    try:
        root = psutil.Process(int(h.data["pid"]))
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds while zombies remain; check for a live member.
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def _signal(pgid: int, procs: Sequence[psutil.Process], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _reap_group(pgid: int) -> None:
    """Kill what a finished task left behind in its group (``sleep 1000 &``)."""
    if pgid > 1:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _data(pid: int, spawned_at: float, exit_log: str, attempt_id: int | None) -> dict[str, object]:
    """A local handle's data; ``attempt_id`` (when the attempt has one) names its exit-status line."""
    data: dict[str, object] = {"pid": pid, "pgid": pid, "spawned_at": spawned_at, "exit_log": exit_log}
    if attempt_id:
        data["attempt_id"] = attempt_id
    return data


def find_attempt_processes(state_dir: str) -> dict[str, list[int]]:
    """Processes started by rota for ``state_dir``, by :func:`exits.token` (``@<attempt id>``) and by
    attempt key (from their environment; an attempt of a rota before ids has only its key).

    Used after a crash between ``launching`` being committed and the handle
    being recorded: such a process exists but its handle is unknown.
    """
    found: dict[str, list[int]] = {}
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("ROTA_STATE_DIR") == state_dir and "ROTA_ATTEMPT_KEY" in env:
            found.setdefault(env["ROTA_ATTEMPT_KEY"], []).append(p.pid)
            if env.get("ROTA_ATTEMPT_ID"):
                found.setdefault(f"@{env['ROTA_ATTEMPT_ID']}", []).append(p.pid)
    return found
