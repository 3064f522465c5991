"""twistd's side: the options, makeService, the plugin, clear startup errors, where it listens."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from chatlog.server import listening
from chatlog.server.factory import ChatFactory
from chatlog.server.listening import AcceptGuard, SharedPortEndpoint
from chatlog.server.tap import ChatlogOptions, Options, makeService
from tests.support.twistd import server_env, twistd_command

DEFAULTS = {
    "port": "tcp:5000",
    "logfile": "chatlog.log",
    "format": "event",
    "utc": False,
    "fsync": False,
    "max-line": 65536,
    "idle-timeout": 300.0,
    "line-timeout": 30.0,
    "max-connections": 10000,
    "max-per-ip": 1000,
    "metrics": None,
    "workers": 1,
    "worker": 0,
    "no-fastpath": False,
    "node": None,
    "rate-limit": None,
    "byte-limit": None,
    "rate-exempt": [],
}


def parse(*argv: str) -> dict[str, object]:
    options = ChatlogOptions()
    options.parseOptions(list(argv))
    return dict(options)


def test_defaults() -> None:
    """With no options chatlog listens on tcp:5000 and logs to chatlog.log."""
    assert parse() == DEFAULTS


def test_every_option(tmp_path: Path) -> None:
    """Each option lands in the parsed dict with its type."""
    log = str(tmp_path / "x.log")
    assert parse(
        "--port",
        "5001",
        "--logfile",
        log,
        "--format",
        "json",
        "--utc",
        "--fsync",
        "--max-line",
        "100",
        "--idle-timeout",
        "1.5",
        "--line-timeout",
        "0",
        "--max-connections",
        "0",
        "--max-per-ip",
        "7",
        "--metrics",
        "9100",
        "--workers",
        "1",
        "--no-fastpath",
        "--node",
        "eu-1.node_2",
    ) == {
        "port": "tcp:5001",
        "logfile": log,
        "format": "json",
        "utc": True,
        "fsync": True,
        "max-line": 100,
        "idle-timeout": 1.5,
        "line-timeout": 0.0,
        "max-connections": 0,
        "max-per-ip": 7,
        "metrics": "tcp:9100",
        "workers": 1,
        "worker": 0,
        "no-fastpath": True,
        "node": "eu-1.node_2",
        "rate-limit": None,
        "byte-limit": None,
        "rate-exempt": [],
    }


@pytest.mark.parametrize(
    "port",
    ["tcp:5000:interface=127.0.0.1", "tcp6:5000", "unix:/tmp/chat.sock", "haproxy:tcp:5000"],
)
def test_endpoint_strings_are_kept(port: str) -> None:
    """Any endpoint string Twisted knows is accepted as it is."""
    assert parse("--port", port)["port"] == port


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "nope:1"], "Unknown endpoint type"),
        (["--port", "70000"], "0 to 65535"),
        (["--format", "xml"], "event, dash, json"),
        (["--max-line", "0"], "at least 1"),
        (["--max-line", "lots"], "at least 1"),
        (["--idle-timeout", "-1"], "seconds"),
        (["--max-per-ip", "-3"], "0 for no limit"),
        (["--logfile", "/nonexistent/dir/x.log"], "no such directory"),
        (["--port", "ssl:5000:privateKey=/nonexistent.pem"], "No such file"),
        (["--metrics", "bogus:9100"], "--metrics 'bogus:9100': Unknown endpoint type"),
        (["--workers", "0"], "at least 1"),
        (["--workers", "2", "--logfile", "-"], "each worker writes its own"),
        (["--workers", "2", "--metrics", "9100"], "not supported yet"),
        (["--workers", "2", "--port", "unix:/tmp/chat.sock"], "--workers needs a tcp:"),
        (["--worker", "2", "--workers", "2"], "set by --workers"),
        (["--node", "a b"], "letters, digits"),
        (["--node", ""], "letters, digits"),
        (["--node", "x" * 65], "1 to 64"),
        (["--node", 'n"1'], "letters, digits"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], message: str) -> None:
    """A bad value is a UsageError that says what is wrong."""
    with pytest.raises(UsageError, match=message):
        parse(*argv)


def test_twistd_sees_one_line_and_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """The options twistd parses turn a mistake into one line on stderr, on every Twisted."""
    with pytest.raises(SystemExit) as exited:
        Options().parseOptions(["--max-line", "lots"])
    assert exited.value.code == 2
    assert capsys.readouterr() == (
        "",
        "twistd chatlog: Parameter type enforcement failed: 'lots' is not a whole number "
        "of at least 1 (see twistd chatlog --help)\n",
    )


def test_as_argv_round_trips(tmp_path: Path) -> None:
    """The options passed on to a worker parse back to the same options."""
    argv = [
        "--port",
        "tcp:0:interface=127.0.0.1",
        "--logfile",
        str(tmp_path / "x.log"),
        "--format",
        "dash",
        "--utc",
        "--max-line",
        "99",
        "--workers",
        "3",
        "--node",
        "n1",
    ]
    options = ChatlogOptions()
    options.parseOptions(argv)
    again = ChatlogOptions()
    again.parseOptions(options.as_argv())
    assert dict(again) == dict(options)


def test_make_service_is_a_multiservice(tmp_path: Path) -> None:
    """makeService builds the service tree without listening or importing a reactor."""
    options = Options()
    options.parseOptions(["--logfile", str(tmp_path / "x.log")])
    top = makeService(options, reactor=Clock())
    assert isinstance(top, MultiService)
    chatlog = IService(top).getServiceNamed("chatlog")
    assert chatlog.endpoint_description == "tcp:5000"
    assert chatlog.writer.path == str(tmp_path / "x.log")
    assert chatlog.factory.max_line == 65536
    assert not (tmp_path / "x.log").exists()


def run_twistd(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*twistd_command(), *argv],
        cwd=tmp_path,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
def test_plugin_help(tmp_path: Path) -> None:
    """``twistd chatlog --help`` finds the plugin and lists the options."""
    result = run_twistd(tmp_path, "chatlog", "--help")
    assert result.returncode == 0, result.stderr
    for option in DEFAULTS:
        assert f"--{option}" in result.stdout


@pytest.mark.e2e
def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    """A taken port: one line on stderr naming it, exit status 1, no traceback, no log."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_twistd(
            tmp_path,
            "-n",
            "--pidfile=",
            "chatlog",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--logfile",
            "x.log",
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"chatlog: cannot listen on tcp:{port}:interface=127.0.0.1: "
        "[Errno 98] Address already in use\n"
    )
    assert "Traceback" not in result.stdout


@pytest.mark.e2e
def test_daemon_says_port_in_use_in_one_line_before_daemonizing(tmp_path: Path) -> None:
    """twistd without -n listens after it has daemonized; the taken port is still one line of
    chatlog's on the terminal (not twistd's ``An error has occurred: b'...'``), exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        where = f"haproxy:tcp:{port}:interface=127.0.0.1"
        result = run_twistd(
            tmp_path, "--pidfile", "d.pid", "--logfile", "d.log", "chatlog", "--port", where
        )
    assert (result.returncode, result.stdout) == (1, "")
    assert (
        result.stderr == f"chatlog: cannot listen on {where}: [Errno 98] Address already in use\n"
    )
    assert not (tmp_path / "d.pid").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_a_log_of_another_format_is_refused_untouched(tmp_path: Path, daemon: bool) -> None:
    """--format json on a log that holds event records: one line, exit 1, the log as it was."""
    log = tmp_path / "x.log"
    log.write_bytes(
        b"Server Started: 2026-11-23 15:39:49.201579 - listening on 0.0.0.0:5077 "
        b"(tcp:5077), pid 1, chatlog 0.1.0\n" + b"torn, never acknowledged"
    )
    before = log.read_bytes()
    mode = ["--pidfile", "d.pid", "--logfile", "d.log"] if daemon else ["-n", "--pidfile="]
    result = run_twistd(
        tmp_path,
        *mode,
        "chatlog",
        "--port",
        "tcp:0:interface=127.0.0.1",
        "--logfile",
        "x.log",
        "--format",
        "json",
    )
    assert result.returncode == 1
    assert result.stderr == (
        "chatlog: --format json: x.log holds event records, and a log keeps one format; "
        "give another --logfile, or move x.log away\n"
    )
    assert log.read_bytes() == before


@pytest.mark.e2e
def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    """A bad chatlog option: one line on stderr naming it, exit status 2, nothing else."""
    result = run_twistd(tmp_path, "-n", "chatlog", "--format", "xml")
    assert result.returncode == 2
    assert result.stderr == (
        "twistd chatlog: --format 'xml': choose one of event, dash, json"
        " (see twistd chatlog --help)\n"
    )
    assert result.stdout == ""


def test_setup_cfg_lists_every_package() -> None:
    """Every package folder under chatlog/ is installed (setup.cfg lists them one by one)."""
    import configparser

    root = Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "chatlog").rglob("__init__.py")
    }
    assert found | {"twisted.plugins"} == listed


def test_stdout_log_needs_the_foreground() -> None:
    """--logfile - under a daemonizing twistd is refused: its stdout is /dev/null."""
    options = ChatlogOptions()
    options.parent = {"nodaemon": False}  # type: ignore[attr-defined]  # as twistd sets it
    with pytest.raises(UsageError, match="--logfile - needs twistd -n"):
        options.parseOptions(["--logfile", "-"])
    foreground = ChatlogOptions()
    foreground.parent = {"nodaemon": True}  # type: ignore[attr-defined]
    foreground.parseOptions(["--logfile", "-"])


@pytest.mark.e2e
def test_daemon_with_stdout_log_is_refused(tmp_path: Path) -> None:
    """twistd (a daemon) with --logfile -: one line, exit 2, no daemon left behind."""
    result = run_twistd(
        tmp_path, "--pidfile", "p.pid", "--logfile", "t.log", "chatlog", "--logfile", "-",
        "--port", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "twistd chatlog: --logfile - needs twistd -n: a daemon's standard output is /dev/null"
        " (see twistd chatlog --help)\n"
    )
    assert not (tmp_path / "p.pid").exists()


@pytest.mark.e2e
def test_stdout_log_on_dev_null_is_refused(tmp_path: Path) -> None:
    """A foreground server whose stdout is /dev/null would keep no record: refused at start."""
    with open(os.devnull, "wb") as null:
        result = subprocess.run(
            [*twistd_command(), "-n", "--pidfile=", "chatlog", "--logfile", "-",
             "--port", "tcp:0:interface=127.0.0.1"],
            cwd=tmp_path, env=server_env(), stdout=null, stderr=subprocess.PIPE, text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "chatlog: --logfile -: standard output is /dev/null, where no record would be kept\n"
    )


# -- where the server listens -------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_haproxy_port_listens_on_the_endpoint_after_the_prefix(
    tmp_path: Path, workers: str
) -> None:
    """``haproxy:tcp:...`` listens on ``tcp:...`` itself; the protocol reads the PROXY header.

    No Twisted ``proxyEndpoint`` wrapper: it would hand chatlog unchecked
    addresses, and tracebacks for malformed headers.
    """
    options = Options()
    port = "haproxy:tcp:5000:interface=127.0.0.1"
    options.parseOptions(
        ["--port", port, "--logfile", str(tmp_path / "x.log"), "--workers", workers]
    )
    chatlog = IService(makeService(options, reactor=Clock())).getServiceNamed("chatlog")
    assert chatlog.endpoint_description == port  # as the user wrote it, in Server Started
    assert chatlog.factory.peer_from_proxy_header
    if workers == "1":
        assert isinstance(chatlog.endpoint, TCP4ServerEndpoint)
    else:
        assert isinstance(chatlog.endpoint, SharedPortEndpoint)
        assert chatlog.endpoint.description == "tcp:5000:interface=127.0.0.1"


class FakePort:
    """What the guard uses of a ``tcp.Port``: ``doRead``, ``numberAccepts``, reading on and off."""

    def __init__(self) -> None:
        self.numberAccepts = 100
        self.connected = 1
        self.disconnecting = False
        self.reading = True
        self.rounds: list[int] = []  # numberAccepts of each round of accepts

    def doRead(self) -> None:
        self.rounds.append(self.numberAccepts)

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


def test_the_port_stops_accepting_while_no_descriptor_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rounds of accepts never take more descriptors than are free; none free, none accepted.

    With 64 descriptors, 20 used by the process and 8 kept spare, 36
    connections leave none: the port stops reading (clients wait in the
    backlog) until one closes, and says so on twistd's log.
    """
    from tests.unit.test_protocol import FakeLog, connect

    factory = ChatFactory(FakeLog(), Clock())
    monkeypatch.setattr(listening, "_descriptors_in_use", lambda: 20 + factory.sockets)
    port = FakePort()
    guard = AcceptGuard.install(port, factory, limit=64)
    assert guard is not None
    conns = [connect(factory)[0] for _ in range(30)]
    port.doRead()  # the reactor calls the port's doRead: now the guard's
    assert port.rounds == [6]  # 64 - 20 - 8 - 30
    conns += [connect(factory)[0] for _ in range(6)]
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        port.doRead()
        port.doRead()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert port.rounds == [6] and not port.reading
    assert len(events) == 1 and "no file descriptor free" in str(events[0]["log_format"])
    conns.pop().connectionLost(Failure(ConnectionDone()))
    assert port.reading
    port.doRead()
    assert port.rounds == [6, 1]


def test_the_guard_starts_no_port_that_stopped_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection closing after the port stopped listening does not start it again."""
    from tests.unit.test_protocol import FakeLog, connect

    factory = ChatFactory(FakeLog(), Clock())
    monkeypatch.setattr(listening, "_descriptors_in_use", lambda: 20 + factory.sockets)
    port = FakePort()
    AcceptGuard.install(port, factory, limit=29)
    proto, _ = connect(factory)
    port.doRead()
    assert not port.reading
    port.disconnecting = True  # stopListening
    proto.connectionLost(Failure(ConnectionDone()))
    assert not port.reading


@pytest.mark.e2e
def test_version_is_chatlogs(tmp_path: Path) -> None:
    """``twistd chatlog --version`` prints chatlog's version (twistd's own --version is Twisted's)."""
    import platform

    import chatlog
    import twisted

    result = run_twistd(tmp_path, "chatlog", "--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"chatlog {chatlog.__version__} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()})\n"
    )
