"""End-to-end deployment: daemon mode, TLS, HAProxy's PROXY protocol, contrib/ files, JSON Lines.

Every test runs the real ``twistd chatlog`` on loopback, on ports the kernel
picks, and waits on what the server says (its log lines), never on sleeps.
HAProxy and logrotate are the Debian packages (``.ci/system-deps`` installs
them); a test that needs one skips, saying so, where it is missing.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlog.server.command import twistd_command
from tests.support.certs import self_signed
from tests.support.clients import free_port, read_to_eof
from tests.support.process import process_gone
from tests.support.twistd import LISTENING, ROOT, RunningServer, launch, server_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

LOOPBACK = "tcp:0:interface=127.0.0.1"
CONTRIB = ROOT / "contrib"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """Read exactly ``count`` ``\\n``-terminated lines (the socket has a timeout)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data.split(b"\n")[:count]


def converse(sock: socket.socket, *messages: bytes) -> None:
    """Send each message as a line and check each reply."""
    sock.sendall(b"".join(m + b"\n" for m in messages))
    assert read_lines(sock, len(messages)) == [b"Server received: " + m for m in messages]


def json_records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends mid-record: {data[-80:]!r}"
    records = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            records.append(json.loads(line))
        except ValueError as error:
            raise AssertionError(f"{path.name}:{number} is not a JSON record: {line!r}") from error
    return records


@pytest.fixture
def launched() -> Iterator[list[RunningServer]]:
    """Servers started by :func:`launch`; each is stopped after the test."""
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------
# 1. Daemon mode
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("umask_options", "mode"),
    [((), 0o600), (("--umask", "022"), 0o644)],
    ids=["daemon-umask-0077", "umask-022"],
)
def test_daemon_detaches_and_stops_on_sigterm(
    tmp_path: Path, umask_options: tuple[str, ...], mode: int
) -> None:
    """twistd without -n detaches, writes its pidfile; SIGTERM: Server Stopped, pidfile gone."""
    pidfile, twistd_log, chat_log = (
        tmp_path / n for n in ("chatlog.pid", "twistd.log", "chat.log")
    )
    cmd = [
        *twistd_command(),
        "--pidfile", str(pidfile), "--logfile", str(twistd_log), *umask_options,
        "chatlog", "--port", LOOPBACK, "--logfile", str(chat_log),
    ]  # fmt: skip
    # The foreground twistd returns once the daemon reported its start.
    started = subprocess.run(cmd, cwd=tmp_path, env=server_env(), capture_output=True, timeout=20)
    assert started.returncode == 0, started
    pid = 0
    try:
        line = wait_until(
            lambda: twistd_log.exists() and LISTENING.search(twistd_log.read_bytes()),
            10,
            "'listening on' in twistd.log",
        )
        port = int(line.group(2))
        pid = int(
            wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
        )
        assert not process_gone(pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            converse(sock, b"hello daemon", b"second")
            client_port = sock.getsockname()[1]
        assert (chat_log.stat().st_mode & 0o777) == mode
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: process_gone(pid), 15, "the daemon to exit")
        assert not pidfile.exists()
        records = chat_log.read_bytes().split(b"\n")[:-1]
        assert records[0].startswith(b"Server Started: ")
        assert records[-1].startswith(b"Server Stopped: ")
        messages = [r.split(b" - ", 1)[1] for r in records if r.startswith(b"Message Received: ")]
        assert messages == [
            b"127.0.0.1:%d #1 - %s" % (client_port, m) for m in (b"hello daemon", b"second")
        ]
        assert b"Server Shut Down" in twistd_log.read_bytes()
    finally:
        if pid and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# 2. TLS
# --------------------------------------------------------------------------


@pytest.fixture
def tls_server(
    tmp_path: Path, chatlog_server: Callable[..., RunningServer]
) -> tuple[RunningServer, Path]:
    cert, key = self_signed(tmp_path)
    server = chatlog_server(port=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    return server, cert


def test_tls_endpoint(tls_server: tuple[RunningServer, Path]) -> None:
    """An ssl: port answers a client that verifies the server against cert.pem, and logs it."""
    server, cert = tls_server
    context = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection(server.address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        converse(tls, b"over tls", b"caf\xc3\xa9")
        client_port = tls.getsockname()[1]
    # A client that does not trust the certificate is refused by its own TLS.
    with (
        socket.create_connection(server.address, timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    assert server.stop() == -signal.SIGTERM
    records = server.records()
    assert b"Message Received: " in records[2]
    assert records[2].endswith(b" - 127.0.0.1:%d #1 - over tls" % client_port)
    assert records[3].endswith(b" - 127.0.0.1:%d #1 - caf\xc3\xa9" % client_port)
    assert records[-1].startswith(b"Server Stopped: ")


def test_tls_with_chatlog_client(tls_server: tuple[RunningServer, Path]) -> None:
    """``python -m chatlog.client --tls --ca cert.pem`` talks to the ssl: port."""
    if not (ROOT / "chatlog" / "client" / "__main__.py").exists():
        pytest.skip("python -m chatlog.client is not there yet")
    server, cert = tls_server
    done = subprocess.run(
        [sys.executable, "-m", "chatlog.client", "--tls", "--ca", str(cert),
         "--host", "127.0.0.1", "--port", str(server.port), "tls hello", "again"],
        cwd=ROOT, env=server_env(), capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done
    assert b"Server received: tls hello" in done.stdout
    assert b"Server received: again" in done.stdout
    messages = [r for r in server.records() if r.startswith(b"Message Received: ")]
    assert [m.rsplit(b" - ", 1)[1] for m in messages] == [b"tls hello", b"again"]


# --------------------------------------------------------------------------
# 3. Behind HAProxy (PROXY protocol)
# --------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend chat
    bind 127.0.0.1:{front}
    default_backend chatlog
backend chatlog
    server chatlog1 127.0.0.1:{back} {proxy}
"""


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[int, str], int]]:
    """Start a real HAProxy in front of a backend port; return its frontend port."""
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (.ci/system-deps installs it with apt-get)")
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[Any] = []

    def start(backend_port: int, proxy: str) -> int:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, back=backend_port, proxy=proxy))
        output = (tmp_path / "haproxy.out").open("wb")
        outputs.append(output)
        # -db: stay in the foreground, no daemon; SIGTERM stops it at once.
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=output, stderr=output)
        procs.append(proc)

        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "haproxy.out").read_text()
            with socket.socket() as probe:
                # A bare connect would reach chatlog as a connection: only
                # check that the port is bound, by failing to bind it.
                try:
                    probe.bind(("127.0.0.1", front))
                except OSError:
                    return True
                return False

        wait_until(listening, 10, "haproxy to listen")
        return front

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for output in outputs:
        output.close()


@pytest.mark.parametrize("proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_real_client_address(
    proxy: str, haproxy: Callable[[int, str], int], chatlog_server: Callable[..., RunningServer]
) -> None:
    """Behind HAProxy, the log shows each client's own address and port, not HAProxy's."""
    server = chatlog_server("--format", "json", port=f"haproxy:{LOOPBACK}")
    front = haproxy(server.port, proxy)
    clients: list[tuple[str, int]] = []
    # The clients come from 127.0.0.2 and .3; HAProxy reaches chatlog from 127.0.0.1.
    for n, source in enumerate(["127.0.0.2", "127.0.0.3"]):
        with socket.create_connection(
            ("127.0.0.1", front), timeout=10, source_address=(source, 0)
        ) as sock:
            converse(sock, b"via haproxy %d" % n)
            clients.append(sock.getsockname()[:2])
    wait_until(
        lambda: sum(r["event"] == "disconnect" for r in json_records(server.log_path)) == 2,
        10,
        "two disconnect records",
    )
    records = json_records(server.log_path)
    # HAProxy may close the second backend connection before the first.
    for kind in ("connect", "message", "disconnect"):
        logged = sorted((r["ip"], r["port"]) for r in records if r["event"] == kind)
        assert logged == sorted(clients), kind
    assert [r["msg"] for r in records if r["event"] == "message"] == [
        "via haproxy 0",
        "via haproxy 1",
    ]


# --------------------------------------------------------------------------
# 4. contrib/: the logrotate file and the systemd unit
# --------------------------------------------------------------------------


def test_logrotate_config_against_running_server(
    tmp_path: Path, chatlog_server: Callable[..., RunningServer]
) -> None:
    """logrotate -f with contrib/chatlog.logrotate: every acknowledged message once across both files."""
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if logrotate is None:
        pytest.skip("logrotate is not installed (.ci/system-deps installs it with apt-get)")
    text = (CONTRIB / "chatlog.logrotate").read_text()
    directives = [
        line.split()[0]
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "copytruncate" not in directives and "postrotate" in directives
    pidfile = tmp_path / "chatlog.pid"
    config = tmp_path / "logrotate.conf"
    config.write_text(
        text.replace("/var/log/chatlog/", f"{tmp_path}/").replace(
            "/run/chatlog/chatlog.pid", str(pidfile)
        )
    )
    server = chatlog_server(
        "--format", "json", logfile="chatlog.log", twistd_options=("-n", "--pidfile", str(pidfile))
    )
    assert int(pidfile.read_text()) == server.proc.pid

    acked: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def talk(name: str) -> None:
        try:
            with server.connect() as sock:
                n = 0
                while not stop.is_set():
                    batch = [f"{name}-{n + i}" for i in range(5)]
                    converse(sock, *(m.encode() for m in batch))
                    acked.extend(batch)
                    n += 5
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    talkers = [threading.Thread(target=talk, args=(f"c{i}",)) for i in range(3)]
    for thread in talkers:
        thread.start()
    try:
        wait_until(lambda: len(acked) > 200, 10, "some traffic")
        done = subprocess.run(
            [logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
            capture_output=True, timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done
        server.wait_output(rb"reopened log")
        before = len(acked)
        wait_until(lambda: len(acked) > before + 200, 10, "traffic after the reopen")
    finally:
        stop.set()
        for thread in talkers:
            thread.join(timeout=10)
    assert not errors, errors
    assert server.stop() == -signal.SIGTERM
    rotated = tmp_path / "chatlog.log.1"
    assert sorted(p.name for p in tmp_path.glob("chatlog.log*")) == ["chatlog.log", "chatlog.log.1"]
    old, new = json_records(rotated), json_records(tmp_path / "chatlog.log")
    assert old[0]["event"] == "start" and new[-1]["event"] == "stop"
    assert sum(r["event"] == "message" for r in new) > 0
    logged = [r["msg"] for r in old + new if r["event"] == "message"]
    assert len(logged) == len(set(logged)), "a message logged twice"
    assert sorted(logged) == sorted(acked)


def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((CONTRIB / "chatlog.service").read_text())
    return unit


def test_systemd_unit_keys() -> None:
    """contrib/chatlog.service parses as INI and has the keys a service needs."""
    unit = read_unit()
    service = unit["Service"]
    assert unit["Unit"]["Description"]
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["LimitNOFILE"] == "20000"
    assert service["User"] and service["User"] != "root"
    assert service["StateDirectory"] == "chatlog"
    assert service["WorkingDirectory"] == "/var/lib/chatlog"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/") and argv[0].endswith("/twistd")
    at = argv.index("chatlog")
    assert "-n" in argv[:at] and "--pidfile=" in argv[:at]
    assert argv[at + 1 :].count("--logfile") == 1 and argv[at + 1 :].count("--port") == 1


def test_systemd_unit_command_lines(tmp_path: Path, launched: list[RunningServer]) -> None:
    """The unit's ExecStart starts a server; its ExecReload makes it reopen the log; SIGTERM stops it."""
    service = read_unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    at = argv.index("chatlog")
    options = argv[at + 1 :]
    log_path = tmp_path / "chatlog.log"
    options[options.index("--port") + 1] = LOOPBACK
    options[options.index("--logfile") + 1] = str(log_path)
    # tmp_path stands in for WorkingDirectory=/var/lib/chatlog.
    server = launch([*twistd_command(), *argv[1:at], "chatlog", *options], tmp_path, log_path)
    launched.append(server)
    with server.connect() as sock:
        converse(sock, b"before reload")
        log_path.rename(tmp_path / "chatlog.log.1")  # what logrotate does first
        reload = [
            str(server.proc.pid) if a == "$MAINPID" else a
            for a in shlex.split(service["ExecReload"])
        ]
        subprocess.run(reload, check=True, timeout=10)
        server.wait_output(rb"reopened log")
        converse(sock, b"after reload")
    kill = getattr(signal, service.get("KillSignal", "SIGTERM"))
    # twistd ends by re-raising the signal that stopped it, so that is its status.
    assert server.stop(kill) == -kill
    old, new = json_records(tmp_path / "chatlog.log.1"), json_records(log_path)
    assert [r["msg"] for r in old if r["event"] == "message"] == ["before reload"]
    assert [r["msg"] for r in new if r["event"] == "message"] == ["after reload"]
    assert new[-1]["event"] == "stop"


# --------------------------------------------------------------------------
# 5. JSON Lines for log shippers
# --------------------------------------------------------------------------

# The documented fields of each json event and their JSON types (README.rst).
_CONN = {"ts": str, "event": str, "ip": str, "port": int, "conn": int}
NUMBER = (int, float)
JSON_FIELDS: dict[str, dict[str, Any]] = {
    "start": {"ts": str, "event": str, "listen": str, "endpoint": str, "pid": int, "version": str},
    "connect": _CONN,
    "message": {**_CONN, "seq": int, "msg": str},
    "disconnect": {**_CONN, "how": str, "messages": int, "seconds": NUMBER},
    "line_too_long": {**_CONN, "limit": int},
    "timeout": {**_CONN, "kind": str, "seconds": NUMBER},
    "rejected": {**_CONN, "reason": str, "limit": int},
    "log_error": {
        "ts": str,
        "event": str,
        "error": str,
        "seconds": NUMBER,
        "refused": int,
        "lost": int,
    },
    "stop": {"ts": str, "event": str, "connections": int, "messages": int, "refused": int},
}
#: Present only when the message was not valid UTF-8 (then always false), and
#: only when refused records could not be cut back off the file.
OPTIONAL_FIELDS = {"message": {"utf8": bool}, "log_error": {"left": int}}
_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$")


def check_json_record(record: dict[str, Any]) -> None:
    fields = JSON_FIELDS[record["event"]]
    optional = OPTIONAL_FIELDS.get(record["event"], {})
    assert set(fields) <= set(record) <= set(fields) | set(optional), record
    for key, value in record.items():
        kind = fields.get(key) or optional[key]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (
            key,
            record,
        )
    assert _TS.match(record["ts"]), record


def test_json_lines_types(chatlog_server: Callable[..., RunningServer]) -> None:
    """Every record of a real run in --format json parses with json.loads and has the documented types."""
    server = chatlog_server(
        "--format", "json", "--max-line", "32", "--idle-timeout", "0.3", "--max-per-ip", "2"
    )
    with server.connect() as sock:
        sock.sendall(b'plain\n"quoted" \\ \x1b[31m caf\xc3\xa9\n\xff\xfe not utf-8\r\n')
        assert len(read_lines(sock, 3)) == 3
    with server.connect() as sock:
        sock.sendall(b"x" * 40 + b"\n")
        assert read_to_eof(sock).startswith(b"ERROR line too long")
    # Both are gone before the per-address limit is put to the test.
    wait_until(
        lambda: sum(r["event"] == "disconnect" for r in json_records(server.log_path)) == 2,
        10,
        "two disconnect records",
    )
    with server.connect() as first, server.connect() as second:
        converse(first, b"one")
        converse(second, b"two")
        with server.connect() as third:
            assert read_to_eof(third).startswith(b"ERROR too many connections")
        # Both fall silent: the idle timeout closes them.
        assert read_to_eof(first) == read_to_eof(second) == b"ERROR timeout\n"
    wait_until(
        lambda: sum(r["event"] == "disconnect" for r in json_records(server.log_path)) == 4,
        10,
        "every disconnect record",
    )
    assert server.stop() == -signal.SIGTERM
    raw = server.log_bytes()
    assert raw.isascii()
    records = json_records(server.log_path)
    for record in records:
        check_json_record(record)
    seen = {r["event"] for r in records}
    assert seen == set(JSON_FIELDS) - {"log_error"}  # log_error needs a full disk
    messages = [r for r in records if r["event"] == "message"]
    assert [m["msg"] for m in messages[:2]] == ["plain", '"quoted" \\ \x1b[31m caf\u00e9']
    assert messages[2]["utf8"] is False and messages[2]["msg"] == "\\xff\\xfe not utf-8"
    assert [m["seq"] for m in messages] == [1, 2, 3, 1, 1]


def test_json_log_error_types(
    small_tmpfs: Path, chatlog_server: Callable[..., RunningServer]
) -> None:
    """After a disk-full outage, the json log_error record has the documented types."""
    server = chatlog_server("--format", "json", logfile=str(small_tmpfs / "chatlog.log"))
    filler = small_tmpfs / "filler"
    with filler.open("wb", buffering=0) as fill:
        try:
            while True:
                fill.write(b"\0" * 65536)
        except OSError:
            pass
    with server.connect() as sock:
        # The log's last page may still have room for a few records.
        for n in range(1000):
            sock.sendall(b"while full %d\n" % n)
            if read_lines(sock, 1) == [b"ERROR log unavailable"]:
                break
        else:
            pytest.fail("the full disk never refused a message")
        filler.unlink()
        converse(sock, b"accepted")
    assert server.stop() == -signal.SIGTERM
    records = json_records(server.log_path)
    for record in records:
        check_json_record(record)
    outage = [r for r in records if r["event"] == "log_error"]
    assert len(outage) == 1 and outage[0]["refused"] == 1
    assert [r["msg"] for r in records if r["event"] == "message"][-1] == "accepted"
