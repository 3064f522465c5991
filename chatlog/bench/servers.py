"""The servers the bench compares: chatlog itself and the reference peers.

A :class:`ServerSpec` knows how to start one server on ``127.0.0.1`` port 0;
:func:`start` runs it pinned to a CPU, waits for its ``listening on HOST:PORT``
line and returns a :class:`Running` server that :meth:`Running.stop` ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import chatlog
from chatlog.server.command import twistd_command

ROOT = Path(chatlog.__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening on \[?([0-9a-fA-F.:]+)\]?:(\d+)")


@dataclass(frozen=True)
class ServerSpec:
    """How to start one kind of server."""

    name: str
    #: (directory with compiled helpers, scratch directory) -> argv
    argv: Callable[[dict[str, Path], Path], list[str]]
    description: str
    reference: bool = True
    #: The checkout whose ``chatlog`` runs (``--compare``); None: this one.
    root: Path | None = None
    #: Output that says the server is ready, besides its ``listening on`` line
    #: (``--workers``: every worker's own line).
    ready: tuple[bytes, ...] = ()


def _chatlog(*extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    def argv(binaries: dict[str, Path], scratch: Path) -> list[str]:
        return [
            *twistd_command(), "-n", "--pidfile=", "chatlog",
            "--port", "tcp:0:interface=127.0.0.1",
            "--logfile", str(scratch / "chatlog.log"),
            # The bench's clients all come from 127.0.0.1, and a repeat may
            # connect before the server has seen the last one's disconnects.
            "--max-per-ip", "0",
            *extra,
        ]  # fmt: skip

    return argv


def _module(name: str, *extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    def argv(binaries: dict[str, Path], scratch: Path) -> list[str]:
        return [sys.executable, "-m", f"chatlog.bench.peers.{name}", *extra]

    return argv


def _epoll(binaries: dict[str, Path], scratch: Path) -> list[str]:
    return [str(binaries["epoll_reply"])]


CHATLOG = ServerSpec(
    "chatlog", _chatlog(), "twistd chatlog, logging every message (event format)", False
)
CHATLOG_FSYNC = ServerSpec(
    "chatlog-fsync", _chatlog("--fsync"), "twistd chatlog --fsync (fdatasync per batch)", False
)
CHATLOG_STOCK = ServerSpec(
    "chatlog-stock",
    _chatlog("--no-fastpath"),
    "twistd chatlog --no-fastpath (Twisted's stock code paths)",
    False,
)
#: Two processes on one port: opt-in (``--servers chatlog-w2``, ``--workers-scaling``),
#: since pinned to the one server CPU of a default run it could only lose.
CHATLOG_W2 = ServerSpec(
    "chatlog-w2",
    _chatlog("--workers", "2"),
    "twistd chatlog --workers 2 (two processes sharing the port)",
    False,
    ready=(rb"\[worker 1\] .*listening on",),
)
#: chatlog in the other log formats: opt-in (``--formats``, ``--servers chatlog-json``).
CHATLOG_FORMATS = {
    "event": CHATLOG,
    "dash": ServerSpec(
        "chatlog-dash", _chatlog("--format", "dash"), "twistd chatlog --format dash", False
    ),
    "json": ServerSpec(
        "chatlog-json", _chatlog("--format", "json"), "twistd chatlog --format json", False
    ),
}
#: Quotas on but never hit (one address, limits far above any load): opt-in
#: (``--servers chatlog,chatlog-quotas``), what the per-read bucket arithmetic costs.
QUOTAS_NEVER_HIT = ("--rate-limit", "1000000000", "--byte-limit", "100000000000")
CHATLOG_QUOTAS = ServerSpec(
    "chatlog-quotas",
    _chatlog(*QUOTAS_NEVER_HIT),
    "twistd chatlog with --rate-limit and --byte-limit on, never hit",
    False,
)
#: What each chatlog server adds to chatlog's command line: a ``--compare``
#: checkout runs the same variant as ``VARIANT@CHECKOUT``.
VARIANTS: dict[str, tuple[str, ...]] = {
    "chatlog": (),
    "chatlog-fsync": ("--fsync",),
    "chatlog-dash": ("--format", "dash"),
    "chatlog-json": ("--format", "json"),
    "chatlog-quotas": QUOTAS_NEVER_HIT,
}
PEERS = [
    ServerSpec("twisted", _module("twisted_reply"), "bare Twisted LineReceiver reply, no log"),
    ServerSpec("asyncio", _module("asyncio_reply"), "asyncio streams reply, no log"),
    ServerSpec("uvloop", _module("asyncio_reply", "--uvloop"), "asyncio streams on uvloop, no log"),
    ServerSpec(
        "threaded",
        _module("threaded_seed"),
        "seeds' thread per client, log.txt open/append/close per event",
    ),
    ServerSpec("c-epoll", _epoll, "C epoll reply, no log"),
]


def missing(spec: ServerSpec) -> str | None:
    """Why ``spec`` cannot run here (None: it can).  uvloop is optional: the bench extra."""
    if spec.name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (pip install '.[bench]')"
    return None


def available(spec: ServerSpec) -> bool:
    """Whether ``spec`` can run here (see :func:`missing`)."""
    return missing(spec) is None


def all_servers() -> list[ServerSpec]:
    """The servers of a default run."""
    return [CHATLOG, CHATLOG_FSYNC, CHATLOG_STOCK, *PEERS]


def named_servers() -> list[ServerSpec]:
    """Every server ``--servers`` can name: the default ones and the opt-in ones."""
    return [
        *all_servers(),
        CHATLOG_W2,
        CHATLOG_FORMATS["dash"],
        CHATLOG_FORMATS["json"],
        CHATLOG_QUOTAS,
    ]


def compare_spec(checkout: Path, variant: str = "chatlog") -> ServerSpec:
    """chatlog from another checkout (a change to try side by side): ``VARIANT@NAME``.

    ``variant`` is a key of :data:`VARIANTS` (``chatlog``, ``chatlog-fsync``,
    ``chatlog-dash``, ``chatlog-json``): the same options as this checkout's server of that name.
    """
    checkout = checkout.resolve()
    name = f"{variant}@{checkout.name}"
    return ServerSpec(
        name,
        _chatlog(*VARIANTS[variant]),
        f"twistd chatlog {' '.join(VARIANTS[variant])} from {checkout}".replace("  ", " "),
        False,
        checkout,
    )


def trim_logs(scratch: Path) -> None:
    """Empty the logs a server wrote in ``scratch`` (between runs: 16 KiB lines make gigabytes).

    chatlog appends (``O_APPEND``), so its next record lands at the new end.
    """
    for path in scratch.glob("*.log"):
        # Space only: the run's figures do not depend on it.
        with contextlib.suppress(OSError):
            os.truncate(path, 0)


def server_env(root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    first = str(root or ROOT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [first, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pin(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    wanted = set(cpus)
    return lambda: os.sched_setaffinity(0, wanted)


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    output_path: Path
    _output: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's process and its children (``--workers``), whose CPU time is the server's."""
        found = [self.proc.pid]
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # gone, or a kernel without the children file
            pass
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.output_path.read_bytes().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._output.close()
        return self.proc.returncode


def start(
    spec: ServerSpec,
    binaries: dict[str, Path],
    scratch: Path,
    cpus: Sequence[int] | None,
    timeout: float = 30.0,
) -> Running:
    """Start ``spec`` in ``scratch``, pinned to ``cpus``; wait until it listens."""
    scratch.mkdir(parents=True, exist_ok=True)
    output_path = scratch / f"{spec.name}.out"
    # A file, not a pipe: a chatty server never blocks.  Closed by Running.stop.
    output = open(output_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        spec.argv(binaries, scratch),
        cwd=scratch,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        env=server_env(spec.root),
        preexec_fn=pin(cpus),
    )
    running = Running(spec, proc, "", 0, output_path, output)
    deadline = time.monotonic() + timeout
    ready = [re.compile(pattern) for pattern in spec.ready]
    while True:
        said = output_path.read_bytes()
        match = _LISTENING.search(said)
        if match and all(pattern.search(said) for pattern in ready):
            running.host = match.group(1).decode()
            running.port = int(match.group(2))
            return running
        if proc.poll() is not None or time.monotonic() > deadline:
            code = running.stop()
            raise RuntimeError(
                f"{spec.name} did not start listening (exit {code}): {running.output()[-2000:]}"
            )
        time.sleep(0.02)
