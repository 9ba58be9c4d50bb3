"""The end of a run on a terminal: Ctrl-C under the live dashboard (a real pty, a real ^C key)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

from tests.helpers import rota, write_spec


def _run_in_pty(argv: list[str], ctrl_c_after_s: float, timeout_s: float = 60.0) -> tuple[int, bytes]:
    """Run ``argv`` on a new 80x30 terminal, press Ctrl-C once (the key: the tty sends SIGINT), read all."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr are the terminal
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    out = b""
    start = time.monotonic()
    pressed = False
    while time.monotonic() - start < timeout_s:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last process exited
                break
            if not chunk:
                break
            out += chunk
        if not pressed and b"\x1b[?25l" in out and time.monotonic() - start > ctrl_c_after_s:
            os.write(fd, b"\x03")
            pressed = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_ctrl_c_under_the_dashboard_leaves_no_echo_and_restores_the_terminal(tmp_path):
    spec = write_spec(tmp_path, """\
        tasks:
          - {name: a, command: sleep 30}
          - {name: b, command: sleep 30}
    """)
    rota_run = [sys.executable, "-m", "rota.cli", "run", str(spec), "--gpus", "none", "--grace", "1"]
    # A shell of sorts: runs rota in the foreground, ignores the Ctrl-C itself, then reports on the terminal.
    wrapper = (
        "import signal, subprocess, termios\n"
        f"p = subprocess.Popen({rota_run!r})\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('rc=%d' % p.wait())\n"
        "print('echoctl' if termios.tcgetattr(0)[3] & termios.ECHOCTL else 'no-echoctl')\n"
    )
    code, out = _run_in_pty([sys.executable, "-c", wrapper], ctrl_c_after_s=1.5)
    text = out.decode("utf-8", "replace")
    assert code == 0 and "rc=130" in text, text[-2000:]
    # Before: the terminal echoed ^C after the dashboard's bottom border; the wrapped cursor made every
    # later frame land one line lower, leaving a stray box border behind.
    assert "^C" not in text
    assert "rota: stopped; 'rota run" in text and "continues where this run stopped" in text
    assert "echoctl" in text.replace("\r", "").splitlines()  # the terminal's settings are back


def test_a_failed_run_ends_naming_the_log_of_a_failed_task(tmp_path):
    spec = write_spec(tmp_path, """\
        tasks:
          - {name: ok, command: "true"}
          - {name: bad, command: exit 3}
    """)
    p = rota("run", spec, "--plain")
    assert p.returncode == 1, p.stdout + p.stderr
    last = [line for line in p.stdout.splitlines() if line.startswith("rota: next:")]
    assert last and "'rota logs bad " in last[0], p.stdout
