"""A fleet on loopback: chatlog nodes behind HAProxy, their logs shipped by rsyslog over RELP.

Every program is the real one, in the foreground, with its own work directory
and pid file under the test's temporary directory: ``twistd -n chatlog
--format json`` per node, ``rsyslogd -n`` per node following the node's log,
one ``rsyslogd -n`` collecting, ``haproxy -db`` in front.  HAProxy and rsyslog
run the files of ``contrib/fleet/`` themselves; only the values on the lines
those files mark ``# test:`` (production addresses and paths) are replaced,
and :func:`configure` fails when a marked line has nothing to replace or a
replaced value sits on an unmarked line, so the files and the test cannot drift
apart unseen.

Nothing here waits a fixed time: starts and stops wait for what each program
shows (a bound port, HAProxy's check states, a process gone), each with a deadline.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatlog.log import LogReader, records_of
from tests.support.clients import free_port
from tests.support.process import process_gone
from tests.support.twistd import ROOT, RunningServer, server_env, start_server
from tests.support.waiting import wait_until

FLEET = ROOT / "contrib" / "fleet"
#: The comment that marks a line of ``contrib/fleet/`` whose value the test replaces.
TEST_MARK = "# test:"
#: The backend in ``contrib/fleet/haproxy.cfg``.
BACKEND = "chatlog"
#: What the nodes' shippers tag their records with, before the node's name.
TAG_PREFIX = "chatlog-"
#: HAProxy's tcplog line for a session: the client's address, and the node it went to.
_SESSION = re.compile(
    rb"(\d+\.\d+\.\d+\.\d+):(\d+) \[[^\]]+\] \S+ " + BACKEND.encode() + rb"/(\w+) "
)


def program(name: str) -> str | None:
    """Where ``name`` is installed: on PATH or in the sbin directories (Debian puts both there)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_programs() -> str | None:
    """Why a fleet cannot run here (a program or an rsyslog module missing), or None."""
    for name, package in (("haproxy", "haproxy"), ("rsyslogd", "rsyslog")):
        if program(name) is None:
            return f"{name} is not installed (.ci/system-deps installs {package} with apt-get)"
    # rsyslog-relp is a package of its own: ask rsyslogd whether it can load it.
    probe = 'module(load="imrelp")\nmodule(load="omrelp")\naction(type="omrelp" target="127.0.0.1" port="9")\n'
    done = subprocess.run(
        [str(program("rsyslogd")), "-N1", "-f", "/dev/stdin"],
        input=probe.encode(), capture_output=True, timeout=30,
    )  # fmt: skip
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return f"rsyslogd cannot load imrelp/omrelp (rsyslog-relp, .ci/system-deps): {why}"
    return None


def configure(name: str, replacements: Mapping[str, str]) -> str:
    """``contrib/fleet/NAME`` with the values of its ``# test:`` lines replaced.

    Every marked line must have something replaced, and nothing may be
    replaced on an unmarked line; comment lines are left as they are.
    """
    out = []
    used = set()
    for number, line in enumerate((FLEET / name).read_text().splitlines(keepends=True), 1):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        found = [old for old in replacements if old in line]
        if bool(found) != (TEST_MARK in line):
            what = "a value replaced on a line not" if found else "nothing to replace on a line"
            raise AssertionError(f"{name}:{number}: {what} marked {TEST_MARK!r}: {line.strip()!r}")
        for old in found:
            line = line.replace(old, replacements[old])
        used.update(found)
        out.append(line)
    unused = set(replacements) - used
    assert not unused, f"{name} no longer holds {sorted(unused)}"
    return "".join(out)


@dataclass(frozen=True)
class CheckTiming:
    """The health check timing of the backend's ``default-server`` line, in seconds."""

    inter: float
    fastinter: float
    fall: int
    rise: int
    timeout: float  # ``timeout check``: how long a check waits for the reply

    @classmethod
    def of(cls, config: str) -> CheckTiming:
        def value(pattern: str) -> float:
            match = re.search(pattern, config, re.MULTILINE)
            assert match, f"haproxy.cfg has no {pattern!r}"
            return int(match.group(1)) / (1000 if match.group(2) == "ms" else 1)

        server = r"^\s*default-server\b.*?"
        return cls(
            inter=value(server + r"\binter (\d+)(ms)?"),
            fastinter=value(server + r"\bfastinter (\d+)(ms)?"),
            fall=int(value(server + r"\bfall (\d+)()")),
            rise=int(value(server + r"\brise (\d+)()")),
            timeout=value(r"^\s*timeout check (\d+)(ms|s)?"),
        )

    def down_within(self, answers_refused: bool) -> float:
        """The longest HAProxy's own timing takes to mark a failed node DOWN.

        The next check comes within ``inter``, the ones after it every
        ``fastinter``; each fails at once when the connection is refused (a
        dead node), or after ``timeout`` when nothing answers (a hung one).
        """
        wait = 0.0 if answers_refused else self.timeout
        return self.inter + (self.fall - 1) * self.fastinter + self.fall * wait


def port_bound(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``, found by failing to bind it (no connection made)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class Daemon:
    """A program in the foreground, its output in a file of its work directory."""

    def __init__(self, name: str, argv: list[str], workdir: Path, pidfile: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.pidfile = pidfile
        self.output = workdir / f"{name}.out"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def started(self, timeout: float = 15.0) -> None:
        """Wait until the program has written its pid file, with its own pid."""
        wait_until(
            lambda: self.running() and self.pidfile.exists() and self.pidfile.read_text().strip(),
            timeout,
            f"{self.name}'s pid file",
        )
        assert int(self.pidfile.read_text()) == self.proc.pid, self.pidfile

    def running(self) -> bool:
        """True while the program runs; fails, with its output, once it has exited."""
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited ({code}): {self.output.read_text()[-2000:]}")
        return True

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; SIGKILL after ``timeout``.  Its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def rsyslogd(name: str, work: Path) -> Daemon:
    """``rsyslogd -n`` on ``work/rsyslog.conf``, its pid file in ``work``."""
    pidfile = work / "rsyslogd.pid"
    argv = [str(program("rsyslogd")), "-n", "-f", str(work / "rsyslog.conf"), "-i", str(pidfile)]
    return Daemon(name, argv, work, pidfile)


@dataclass
class Node:
    """One chatlog node and the rsyslog that ships its log."""

    name: str
    workdir: Path
    server: RunningServer
    pid: int  # the process that serves, from its start record (``server.proc`` may wrap it)
    shipper: Daemon | None = None

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    @property
    def tag(self) -> str:
        return TAG_PREFIX + self.name

    def files(self) -> list[Path]:
        """The node's log files, oldest first (``chatlog.log.1`` after a rotation)."""
        rotated = self.workdir / "chatlog.log.1"
        return [p for p in (rotated, self.log_path) if p.exists()]

    def signal(self, signum: int) -> None:
        if not process_gone(self.pid):
            os.kill(self.pid, signum)


@dataclass
class Fleet:
    """Every process of the fleet, and where to reach it."""

    root: Path
    nodes: list[Node] = field(default_factory=list)
    collector: Daemon | None = None
    central: Path = Path()
    haproxy: Daemon | None = None
    front_port: int = 0
    stats_socket: Path = Path()
    config: dict[str, str] = field(default_factory=dict)  # file name -> the text that runs

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def central_file(self, node: Node) -> Path:
        """The collector's file for ``node``."""
        return self.central / f"{node.tag}.log"

    def stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` for the backend's servers, by server name."""
        assert self.haproxy is not None and self.haproxy.running()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def haproxy_log(self) -> bytes:
        assert self.haproxy is not None
        return self.haproxy.output.read_bytes()

    def sessions(self) -> list[tuple[str, int, str]]:
        """(client ip, client port, node) of every session HAProxy logged (at its end)."""
        return [
            (ip.decode(), int(port), node.decode())
            for ip, port, node in _SESSION.findall(self.haproxy_log())
        ]

    def load(self, logfile: Path, **options: float) -> subprocess.Popen[bytes]:
        """Start ``python -m chatlog.client --json --logfile LOGFILE`` through HAProxy."""
        argv = [sys.executable, "-m", "chatlog.client", "--host", "127.0.0.1"]
        argv += ["--port", str(self.front_port), "--json", "--logfile", str(logfile)]
        for name, value in options.items():
            argv += [f"--{name}", str(value)]
        return subprocess.Popen(
            argv, cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def stop(self) -> None:
        """Stop whatever still runs: HAProxy, the nodes, their shippers, the collector."""
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in self.nodes:
            node.signal(signal.SIGCONT)  # a node a test stopped must take SIGTERM
            node.server.stop()
        for node in self.nodes:
            if node.shipper is not None:
                node.shipper.stop()
        if self.collector is not None:
            self.collector.stop()


def finish(client: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """Wait for a client run of :meth:`Fleet.load` to end: its exit status and JSON summary."""
    try:
        out, err = client.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        client.kill()
        client.communicate()
        raise
    assert out, err
    return client.returncode, json.loads(out)


def start_fleet(root: Path, names: list[str], started: Callable[[Fleet], None]) -> Fleet:
    """Start the whole fleet under ``root``; ``started`` gets it first, so a failed start is cleaned up."""
    fleet = Fleet(root)
    started(fleet)

    # The collector first: the nodes' shippers connect to it.
    work = root / "collector"
    fleet.central = root / "central"
    (work / "spool").mkdir(parents=True)
    relp_port = free_port()
    text = configure(
        "rsyslog-collector.conf",
        {
            "/var/spool/chatlog-collector": str(work / "spool"),
            'address="10.0.0.20"': 'address="127.0.0.1"',
            'port="2514"': f'port="{relp_port}"',
            "/var/log/chatlog-fleet/": f"{fleet.central}/",
        },
    )
    fleet.config["rsyslog-collector.conf"] = text
    (work / "rsyslog.conf").write_text(text)
    collector = fleet.collector = rsyslogd("collector", work)
    collector.started()
    wait_until(lambda: collector.running() and port_bound(relp_port), 15, "imrelp to listen")

    # The nodes, in parallel (each twistd takes a second or so to start).
    def start_node(name: str) -> Node:
        work = root / name
        work.mkdir()
        server = start_server(
            work,
            "--format", "json", "--node", name,
            port="haproxy:tcp:0:interface=127.0.0.1",
            twistd_options=("-n", "--pidfile", str(work / "twistd.pid")),
        )  # fmt: skip
        start = next(iter(LogReader(server.log_path)))
        assert (start["event"], start["node"]) == ("start", name), start
        assert int((work / "twistd.pid").read_text()) == start["pid"]
        return Node(name, work, server, int(start["pid"]))

    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(start_node, name) for name in names]
        errors = [future.exception() for future in futures]
        fleet.nodes += [
            future.result() for future, error in zip(futures, errors, strict=True) if not error
        ]
        for error in errors:
            if error is not None:
                raise error

    # One shipper per node.
    for node in fleet.nodes:
        work = node.workdir / "rsyslog"
        (work / "spool").mkdir(parents=True)
        text = configure(
            "rsyslog-node.conf",
            {
                "/var/spool/chatlog-rsyslog": str(work / "spool"),
                "/var/log/chatlog/chatlog.log": str(node.log_path),
                'tag="chatlog-node1"': f'tag="{node.tag}"',
                'target="10.0.0.20"': 'target="127.0.0.1"',
                'port="2514"': f'port="{relp_port}"',
            },
        )
        fleet.config[f"rsyslog-node.conf ({node.name})"] = text
        (work / "rsyslog.conf").write_text(text)
        node.shipper = rsyslogd("rsyslogd", work)
        node.shipper.started()

    # HAProxy in front of the nodes (contrib/fleet/haproxy.cfg names node1..node3).
    work = root / "haproxy"
    work.mkdir()
    fleet.front_port = free_port()
    fleet.stats_socket = work / "admin.sock"
    text = configure(
        "haproxy.cfg",
        {
            "/run/haproxy/chatlog.sock": str(fleet.stats_socket),
            "bind :4000": f"bind 127.0.0.1:{fleet.front_port}",
            **{
                f"10.0.0.1{i}:5000": f"127.0.0.1:{node.server.port}"
                for i, node in enumerate(fleet.nodes, 1)
            },
        },
    )
    fleet.config["haproxy.cfg"] = text
    (work / "haproxy.cfg").write_text(text)
    pidfile = work / "haproxy.pid"
    # -W -db: master-worker in the foreground (as under systemd); the master
    # writes the pid file, and SIGTERM to it stops its worker and itself.
    argv = [str(program("haproxy")), "-W", "-db", "-f", str(work / "haproxy.cfg")]
    fleet.haproxy = Daemon("haproxy", [*argv, "-p", str(pidfile)], work, pidfile)
    fleet.haproxy.started()
    wait_until(
        lambda: fleet.stats_socket.exists() and port_bound(fleet.front_port),
        15,
        "haproxy to listen",
    )
    wait_until(
        lambda: all(
            row["status"] == "UP" and row["check_status"] == "L7OK"
            for row in fleet.stats().values()
        ),
        15,
        "every node UP after a passed check",
    )
    return fleet


def complete_records(*paths: Path) -> list[bytes]:
    """The records of the given files, in order; a torn last line (never acknowledged) left out."""
    out: list[bytes] = []
    for path in paths:
        if path.exists():
            with path.open("rb") as f:
                out.extend(records_of(f, lambda torn: None))
    return out
