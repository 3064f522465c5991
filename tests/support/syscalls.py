"""A running server's system calls, watched from outside with strace.

Some guarantees show only in which system calls the server makes, and in what
order: ``--fsync`` means an ``fdatasync`` of the log between a record's
``write`` and its reply's ``sendto``.  :class:`SyscallWatch` attaches strace to
the server's process (every thread of it), waits until strace says it is
attached, and on :meth:`SyscallWatch.stop` detaches and returns the calls it
saw, so a test can check them without asking chatlog anything.  Linux only;
tests skip where strace is missing (:func:`have_strace`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# "1234 write(6, "Message Received: ..."..., 71) = 71"; an interrupted call is
# split into "<unfinished ...>" and "<... write resumed>" halves, kept as two.
_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(<\.\.\. )?(\w+)(.*)$")


@dataclass(frozen=True)
class Syscall:
    """One line of strace's output: who, which call, and the rest of the line as text."""

    pid: int
    name: str
    text: str

    @property
    def first_arg(self) -> str:
        """The call's first argument as strace printed it (the fd of write, sendto, fdatasync)."""
        return self.text.lstrip("(").split(",", 1)[0].split(")", 1)[0].strip()


def have_strace() -> bool:
    return shutil.which("strace") is not None


def fd_of(pid: int, path: Path) -> int:
    """The file descriptor under which ``pid`` holds ``path`` open (from ``/proc/PID/fd``)."""
    wanted = os.path.realpath(path)
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{entry}") == wanted:
                return int(entry)
        except OSError:
            continue
    raise AssertionError(f"process {pid} does not hold {path} open")


class SyscallWatch:
    """strace attached to a running process, recording the named system calls."""

    def __init__(self, pid: int, calls: Sequence[str], out: Path, string_limit: int = 256) -> None:
        self.pid = pid
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-s", str(string_limit), "-o", str(out),
             "-e", "trace=" + ",".join(calls), "-p", str(pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def wait_attached(self, timeout: float = 10.0) -> None:
        """Wait until every thread of the process has strace as its tracer.

        strace may still be setting up the first calls after that: a test that
        must see every call of an exchange waits until strace shows one made
        after this returns (:meth:`shows`).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"strace exited {self.proc.returncode}: {error.strip()}")
            if all(_tracer(self.pid, task) == self.proc.pid for task in _tasks(self.pid)):
                return
            time.sleep(0.01)
        raise AssertionError(f"strace did not attach to {self.pid} in {timeout} s")

    def shows(self, text: str) -> bool:
        """Whether strace has written a line containing ``text`` so far."""
        return self.out.exists() and text in self.out.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> list[Syscall]:
        """Detach (the process runs on) and return the calls seen, in order."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        calls = []
        for line in self.out.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match and not match.group(2):
                calls.append(Syscall(int(match.group(1)), match.group(3), match.group(4)))
        return calls

    def __enter__(self) -> SyscallWatch:
        self.wait_attached()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _tasks(pid: int) -> list[str]:
    return os.listdir(f"/proc/{pid}/task")


def _tracer(pid: int, task: str) -> int:
    with open(f"/proc/{pid}/task/{task}/status", "rb") as status:
        for line in status:
            if line.startswith(b"TracerPid:"):
                return int(line.split()[1])
    return 0
