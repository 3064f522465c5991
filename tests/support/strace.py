"""Fault injection from outside: the real ``twistd -n chatlog`` run under ``strace -e inject``.

strace stops the server on the system calls it traces and can make chosen
ones fail without running them (``-e inject=write:error=EIO:when=3..5``: the
3rd to the 5th traced ``write`` fail with EIO, the rest run as usual).
``-P PATH`` narrows the traced calls, and so the counted and failed ones, to
those on that file: the log's ``write`` fails while twistd's own log and the
replies go on.  When the window is over the fault stops by itself, so a test
sees both the outage and the recovery.  ``--seccomp-bpf`` stops the server
only on the traced calls, so it runs at nearly full speed.

strace is the server's parent here, so ptrace needs no privilege beyond what
any process has over its children, and it does not survive strace: the
helpers below stop the server itself (its pid is strace's child), never
strace, whose default with ``-o FILE`` is to ignore fatal signals.

:func:`check_refusals` is what the log must show after a failed write,
whatever failed: every ack once, every refusal absent or owned up to by a
``Log Error`` record, and no record torn or malformed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatlog.log import LogReader
from chatlog.server.command import twistd_command
from tests.support.logfile import logged_messages, read_records
from tests.support.process import children, wait_gone
from tests.support.twistd import RunningServer, launch

#: A ``Log Error`` record (event format): the error, refused, lost, and the
#: refused that may remain when the writer could not cut them back.
LOG_ERROR = re.compile(
    rb"^Log Error: \S+ \S+ - log unavailable for [\d.]+ s \((.*)\): "
    rb"(\d+) messages? refused, (\d+) other records? lost"
    rb"(?:; up to (\d+) refused messages? may remain above \(cannot cut back\))?$"
)
#: A traced call that strace made fail:
#: ``1234  write(5, "..."..., 120) = -1 EIO (Input/output error) (INJECTED)``, and
#: `` (DELAYED)`` after it when the failure was held.
_INJECTED = re.compile(r"^(?:\d+ +)?(\w+)\(.* \(INJECTED\)(?: \(DELAYED\))?$")


@dataclass(frozen=True)
class Fault:
    """One ``-e inject=`` rule: ``syscall`` fails with ``error`` on the ``when`` calls.

    ``when`` is strace's: ``"3..5"`` (the 3rd to the 5th call), ``"2+"``
    (from the 2nd on).  ``delay_exit_us`` holds each failed call that long
    before it returns, so a window of failures can be made to last.
    """

    syscall: str
    error: str
    when: str
    delay_exit_us: int = 0

    def option(self) -> str:
        rule = f"inject={self.syscall}:error={self.error}:when={self.when}"
        if self.delay_exit_us:
            rule += f":delay_exit={self.delay_exit_us}"
        return rule


@functools.cache
def unavailable() -> str | None:
    """Why strace cannot inject faults here (no strace, no ptrace, too old), or None."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed (.ci/system-deps installs it)"
    probe = [
        strace, "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null",
        "-e", "trace=getppid", "-e", "inject=getppid:retval=4242",
        sys.executable, "-c", "import os; print(os.getppid())",
    ]  # fmt: skip
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"strace cannot run here: {error}"
    if done.stdout.strip() != "4242":
        return f"strace cannot inject faults here: {done.stderr.strip()[:200]}"
    return None


def strace_command(
    trace_file: Path, faults: Sequence[Fault], paths: Sequence[Path] = ()
) -> list[str]:
    """The argv prefix that runs a program under strace with ``faults``.

    Only the faults' system calls are traced (and written to ``trace_file``),
    and with ``paths`` only those on these files.
    """
    strace = shutil.which("strace")
    assert strace is not None, unavailable()
    syscalls = sorted({fault.syscall for fault in faults})
    cmd = [strace, "-f", "--seccomp-bpf", "-qq", "-o", str(trace_file), "-e", "signal=none"]
    cmd += ["-e", "trace=" + ",".join(syscalls)]
    for path in paths:
        cmd += ["-P", str(path)]
    for fault in faults:
        cmd += ["-e", fault.option()]
    return cmd


def injected(trace_file: Path) -> Counter[str]:
    """How many calls of each system call strace made fail, from its output."""
    counts: Counter[str] = Counter()
    with open(trace_file, encoding="utf-8", errors="replace") as trace:
        for line in trace:
            match = _INJECTED.match(line.rstrip("\n"))
            if match:
                counts[match.group(1)] += 1
    return counts


class Outage:
    """One ``Log Error`` record: where it is in the log and what it says."""

    def __init__(self, index: int, match: re.Match[bytes]) -> None:
        self.index = index
        self.error = match.group(1)
        self.refused = int(match.group(2))
        self.lost = int(match.group(3))
        self.left = int(match.group(4) or 0)


def outages(records: list[bytes]) -> list[Outage]:
    """The log's ``Log Error`` records; each must read as one."""
    found = []
    for index, record in enumerate(records):
        if record.startswith(b"Log Error: "):
            match = LOG_ERROR.match(record)
            assert match, f"a Log Error record that does not say what it should: {record!r}"
            found.append(Outage(index, match))
    return found


def check_refusals(log_path: Path, acked: list[bytes], refused: list[bytes]) -> list[Outage]:
    """Every ack logged once, every refusal absent or owned up to, every record well formed.

    Returns the log's outages, for the caller's own checks.
    """
    counts = logged_messages(log_path)
    missing = [m for m in acked if counts[m] == 0]
    doubled = [m for m in acked if counts[m] > 1]
    assert not missing and not doubled, (missing[:3], doubled[:3])
    records = read_records(log_path)
    found = outages(records)
    remaining = [m for m in refused if counts[m]]
    left = sum(outage.left for outage in found)
    assert len(remaining) <= left, (
        f"{len(remaining)} refused messages are in the log, the Log Error records own up to "
        f"{left}: {remaining[:3]!r}"
    )
    assert not [m for m in refused if counts[m] > 1]
    reader = LogReader(log_path)
    for _event in reader:
        pass
    assert (reader.unparsed, reader.torn) == (0, 0), (reader.examples, reader.torn_lines)
    return found


def stop_traced(server: RunningServer, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal the traced server itself and wait for strace to end with it; strace's exit code."""
    if server.proc.poll() is None:
        pids = children(server.proc.pid)
        for pid in pids:
            os.kill(pid, signum)
        try:
            return server.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A server that does not stop must not outlive the test: ptrace's
            # tracees are let go, not killed, when their tracer dies.
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid)
            server.proc.kill()
            server.proc.wait()
            raise
    return server.proc.returncode


@contextmanager
def traced_server(
    workdir: Path,
    faults: Sequence[Fault],
    *options: str,
    log_only: bool = True,
    logfile: str = "chatlog.log",
) -> Iterator[tuple[RunningServer, Path]]:
    """``twistd -n chatlog`` under strace with ``faults``; yields it and strace's output file.

    With ``log_only`` the faults count and hit only the calls on the log file.
    The server is stopped (SIGTERM to the server itself) on the way out.
    """
    log_path = workdir / logfile
    trace_file = workdir / "strace.out"
    prefix = strace_command(trace_file, faults, [log_path] if log_only else [])
    cmd = [
        *prefix,
        *twistd_command(),
        "-n",
        "--pidfile=",
        "chatlog",
        "--port",
        "tcp:0:interface=127.0.0.1",
        "--logfile",
        str(log_path),
        *options,
    ]
    server = launch(cmd, workdir, log_path, timeout=30)
    try:
        yield server, trace_file
    finally:
        stop_traced(server)
