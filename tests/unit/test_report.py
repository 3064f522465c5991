"""The report: counts checked against a real run, plots that are real PNGs, one HTML page."""

from __future__ import annotations

import ast
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from chatlog import latency, report
from chatlog.log import TORN_MARK, make_formatter
from chatlog.report.inputs import load_bench
from chatlog.report.timeline import RttTimeline
from tests.support.twistd import server_env

PLOTS = ("messages_per_second.png", "connections.png", "rtt.png", "rtt_over_time.png", "bench.png")
BENCH_ROWS = [
    {
        "server": server,
        "connections": n,
        "msgs_per_s": rate * (1 + math.log10(n)),
        "p99_ms": 0.2 * n**0.5,
        "mode": "closed",
    }
    for server, rate in (("chatlog", 30000.0), ("threaded", 9000.0))
    for n in (1, 10, 100, 1000)
]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def read_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class LoggingClient:
    """A plain-socket client that logs what it sends and receives like chatlog.client."""

    def __init__(self, fmt: str) -> None:
        self.format = make_formatter(fmt)
        self.records: list[bytes] = []
        self.rtts_us: list[int] = []

    def exchange(self, sock: socket.socket, conn: int, seq: int, msg: bytes) -> None:
        """Send one line, wait for its reply, log both."""
        ip, port = sock.getpeername()[:2]
        fields = {"ip": ip, "port": port, "conn": conn, "seq": seq}
        started = time.perf_counter_ns()
        self.records.append(
            self.format({"event": "sent", "time": time.time(), "msg": msg, **fields})
        )
        sock.sendall(msg + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "server closed early"
            reply += chunk
        rtt_ns = time.perf_counter_ns() - started
        assert reply == b"Server received: " + msg + b"\n"
        self.rtts_us.append(rtt_ns // 1000)
        self.records.append(
            self.format(
                {
                    "event": "reply",
                    "time": time.time(),
                    "msg": reply[:-1],
                    "rtt_ms": round(rtt_ns / 1e6, 6),
                    **fields,
                }
            )
        )


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["event", "dash", "json"])
def test_report_of_a_real_run(fmt: str, chatlog_server: Any, tmp_path: Path) -> None:
    """Counts, limits and round trips in the report are exactly what the run did."""
    server = chatlog_server("--format", fmt, "--max-line", "100", "--max-per-ip", "3")
    client = LoggingClient(fmt)
    hostile = b"\xff[Connection] \\x41 \xe2\x80\xa8 \xc2\x85 tab\t"
    sent = {1: 3, 2: 5, 3: 7}
    socks = {conn: server.connect() for conn in sent}
    for conn, count in sent.items():
        for seq in range(1, count + 1):
            client.exchange(socks[conn], conn, seq, hostile if seq == 2 else b"hello %d" % seq)
    with server.connect() as refused:  # a fourth from the same address: over --max-per-ip
        assert read_until_eof(refused).startswith(b"ERROR")
    for sock in socks.values():
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
        sock.close()
    with server.connect() as long_line:
        long_line.sendall(b"x" * 200 + b"\n")
        assert read_until_eof(long_line).startswith(b"ERROR")
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    client_log = tmp_path / "client.log"
    client_log.write_bytes(b"".join(client.records))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH_ROWS))
    out = tmp_path / "report"

    assert (
        report.main([str(server.log_path), str(client_log), "-o", str(out), "--bench", str(bench)])
        == 0
    )

    summary = json.loads((out / "summary.json").read_text())
    total = sum(sent.values())
    assert [(f["format"], f["role"], f["unparsed"]) for f in summary["files"]] == [
        (fmt, "server", 0),
        (fmt, "client", 0),
    ]
    assert summary["connections"]["total"] == 4
    assert summary["connections"]["peak_concurrent"] == 3
    assert summary["messages"]["total"] == total
    assert summary["messages"]["per_s"]["peak"] <= total
    assert summary["clients"]["by_ip"] == [{"ip": "127.0.0.1", "messages": total, "connections": 4}]
    assert sorted(r["messages"] for r in summary["clients"]["by_address"]) == [0, 3, 5, 7][1:]
    assert summary["disconnections"] == {"clean": 3, "lost": 0, "closed": 1, "without_connect": 0}
    assert summary["limits"]["line_too_long"] == 1
    assert summary["limits"]["rejected"] == {"too many connections from this address": 1}
    assert summary["server_runs"]["reported_at_stop"] == {
        "connections": 4,
        "messages": total,
        "refused": 0,
    }
    assert summary["unparsed"]["count"] == 0

    got = summary["client"]
    assert (got["sent"], got["replies"], got["errors"], got["unanswered"]) == (total, total, 0, 0)
    expected = HdrHistogram(1, 60_000_000, 3)
    for rtt in client.rtts_us:
        expected.record_value(max(rtt, 1))
    # The text formats keep the round trip to the microsecond: allow one.
    slack = 0.0 if fmt == "json" else 0.001
    for name, percentile in latency.PERCENTILES.items():
        want = round(expected.get_value_at_percentile(percentile) / 1000, 3)
        assert got["rtt_ms"][name] == pytest.approx(want, abs=slack + want * 0.001)
    assert got["rtt_ms"]["count"] == total

    html = (out / "report.html").read_text()
    for name in PLOTS:
        width, height = png_size(out / name)
        assert 600 <= width <= 3000 and 300 <= height <= 2000
        assert f'data-file="{name}"' in html
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert "127.0.0.1" in html and "<table>" in html


def write_events(path: Path, fmt: str, events: list[dict[str, Any]]) -> Path:
    formatter = make_formatter(fmt)
    path.write_bytes(b"".join(map(formatter, events)))
    return path


def synthetic_run(conns: int, per_conn: int, start: float = 1795000000.0) -> list[dict[str, Any]]:
    """A run with ``conns`` overlapping connections of ``per_conn`` messages, 10 ms apart."""
    events: list[dict[str, Any]] = [
        {
            "event": "start",
            "time": start,
            "listen": "x:1",
            "endpoint": "tcp:1",
            "pid": 1,
            "version": "t",
        }
    ]
    now = start
    for conn in range(1, conns + 1):
        now += 0.01
        events.append(
            {
                "event": "connect",
                "time": now,
                "ip": f"10.0.0.{conn}",
                "port": 1000 + conn,
                "conn": conn,
            }
        )
    for seq in range(1, per_conn + 1):
        for conn in range(1, conns + 1):
            now += 0.01
            events.append(
                {
                    "event": "message",
                    "time": now,
                    "ip": f"10.0.0.{conn}",
                    "port": 1000 + conn,
                    "conn": conn,
                    "seq": seq,
                    "msg": b"m",
                }
            )
    for conn in range(1, conns + 1):
        now += 0.01
        events.append(
            {
                "event": "disconnect",
                "time": now,
                "ip": f"10.0.0.{conn}",
                "port": 1000 + conn,
                "conn": conn,
                "how": "lost" if conn == 1 else "clean",
                "messages": per_conn,
                "seconds": 1.0,
            }
        )
    events.append(
        {
            "event": "stop",
            "time": now,
            "connections": conns,
            "messages": conns * per_conn,
            "refused": 0,
        }
    )
    return events


def test_rotated_logs_in_different_formats_add_up(tmp_path: Path) -> None:
    """A run split over a rotated log and its successor, in two formats, reads as one."""
    events = synthetic_run(conns=5, per_conn=40)
    half = len(events) // 2
    older = write_events(tmp_path / "chatlog.log.1", "event", events[:half])
    newer = write_events(tmp_path / "chatlog.log", "json", events[half:])
    whole = write_events(tmp_path / "whole.log", "dash", events)
    split = report.build_report([newer, older]).summary  # order does not matter
    single = report.build_report([whole]).summary
    for summary in (split, single):
        assert summary["connections"]["total"] == 5
        assert summary["connections"]["peak_concurrent"] == 5
        assert summary["messages"]["total"] == 200
        assert summary["disconnections"]["lost"] == 1
        assert summary["disconnections"]["clean"] == 4
        assert summary["messages"]["per_s"]["mean"] == pytest.approx(100, rel=0.02)
    assert [f["format"] for f in split["files"]] == ["json", "event"]


def test_unparseable_records_are_reported_not_fatal(tmp_path: Path, capsys: Any) -> None:
    """Garbage in a log is counted and shown with its line number; the rest is reported."""
    path = write_events(tmp_path / "chatlog.log", "event", synthetic_run(2, 3))
    with open(path, "ab") as f:
        f.write(b"this is not a record\n\xff\xfe\n")
    out = tmp_path / "out"
    assert report.main([str(path), "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages"]["total"] == 6
    assert summary["unparsed"]["count"] == 2
    assert summary["unparsed"]["examples"][0]["text"] == "this is not a record"
    assert "this is not a record" in capsys.readouterr().out
    # No client log: no round-trip plots, and the page says nothing about them.
    assert sorted(p.name for p in out.glob("*.png")) == [
        "connections.png",
        "messages_per_second.png",
    ]


def test_torn_lines_and_outages_are_reported_apart(tmp_path: Path, capsys: Any) -> None:
    """A torn line is no message and no garbage; refused messages and failed reopens are counted."""
    events = synthetic_run(2, 3)
    stop = events.pop()
    events += [
        {
            "event": "log_error",
            "time": stop["time"],
            "error": "EIO",
            "seconds": 1.0,
            "refused": 4,
            "lost": 1,
            "left": 2,
        },
        {"event": "log_reopen", "time": stop["time"], "state": "failed", "error": "EMFILE"},
        {**stop, "refused": 4},
    ]
    path = write_events(tmp_path / "chatlog.log", "event", events)
    lines = path.read_bytes().split(b"\n")
    message = next(line for line in lines if line.startswith(b"Message Received"))
    lines.insert(3, message[:-3] + TORN_MARK)
    path.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    assert report.main([str(path), "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages"]["total"] == 6
    assert (summary["torn"], summary["unparsed"]["count"]) == (1, 0)
    assert summary["files"][0]["torn"] == 1
    assert summary["limits"]["log_error"] == {
        "events": 1,
        "refused": 4,
        "lost": 1,
        "left": 2,
        "seconds": 1.0,
    }
    assert summary["limits"]["log_reopen"]["failed"] == 1
    assert summary["server_runs"]["reported_at_stop"] == {
        "connections": 2,
        "messages": 6,
        "refused": 4,
    }
    table = capsys.readouterr().out
    assert "up to 2 refused left in the log" in table and "failed log reopens" in table


def test_a_stop_record_of_an_earlier_version_is_read(tmp_path: Path) -> None:
    """A Server Stopped record without refused (an earlier version's) still counts its messages."""
    events = synthetic_run(2, 3)
    stop = events.pop()
    path = write_events(tmp_path / "chatlog.log", "event", events)
    with open(path, "ab") as f:
        f.write(b"Server Stopped: 2026-11-22 07:35:45.123456 - 2 connections, 6 messages\n")
    summary = report.build_report([path]).summary
    assert summary["unparsed"]["count"] == 0
    assert summary["server_runs"]["reported_at_stop"] == {
        "connections": stop["connections"],
        "messages": 6,
        "refused": 0,
    }


def test_missing_file_is_an_error(tmp_path: Path, capsys: Any) -> None:
    """A log that does not exist is a usage error (exit 2), not a traceback."""
    assert report.main([str(tmp_path / "nope.log"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_rtt_timeline_stays_bounded() -> None:
    """A long run coarsens the round-trip timeline instead of growing it."""
    timeline = RttTimeline(max_slots=10)
    for second in range(1000):
        timeline.add(1795000000 + second + 0.5, 1.0 + second % 7)
    rows = timeline.rows()
    assert len(rows) <= 10
    assert timeline.width == 128
    assert sum(row["count"] for row in rows) == 1000
    assert all(1.0 <= row["p50"] <= 7.1 and row["max"] == 7.0 for row in rows)


def test_bench_rows_are_validated(tmp_path: Path) -> None:
    """A bench file without the required keys is refused with a clear message."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"rows": BENCH_ROWS}))
    assert load_bench(path) == BENCH_ROWS
    path.write_text(json.dumps([{"server": "x"}]))
    with pytest.raises(ValueError, match="msgs_per_s"):
        load_bench(path)


@pytest.mark.e2e
def test_agrees_with_the_clients_own_summary(chatlog_server: Any, tmp_path: Path) -> None:
    """python -m chatlog.client --json and the report of its log give the same numbers."""
    pytest.importorskip("chatlog.client")
    server = chatlog_server("--format", "json")
    client_log = tmp_path / "client.log"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlog.client",
            "--host",
            server.host,
            "--port",
            str(server.port),
            "--connections",
            "3",
            "--messages",
            "200",
            "--json",
            "--logfile",
            str(client_log),
            "--format",
            "json",
        ],
        capture_output=True,
        env=server_env(),
        timeout=60,
        check=True,
    )
    own = json.loads(result.stdout)
    server.stop()
    summary = report.build_report([server.log_path, client_log]).summary
    assert summary["messages"]["total"] == own["messages"] == 600
    assert summary["client"]["replies"] == own["messages"]
    assert summary["client"]["errors"] == own["errors"] == 0
    assert {k: summary["client"]["rtt_ms"][k] for k in own["rtt_ms"]} == own["rtt_ms"]


def report_imports() -> dict[str, list[ast.ImportFrom | ast.Import]]:
    """Each module of chatlog.report (by dotted name) and its import statements."""
    package = Path(report.__file__).parent
    return {
        f"chatlog.report.{path.stem}".removesuffix(".__init__"): [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        for path in sorted(package.glob("*.py"))
    }


def imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads (``from chatlog.report import x`` loads x too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    if module == "chatlog.report":
        return [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return [module]


def test_report_modules_keep_to_the_layering() -> None:
    """Each report module says what it is for, reads chatlog.log by its public names only,
    never touches the server, and the modules import each other without a cycle."""
    modules = report_imports()
    assert "chatlog.report.cli" in modules and "chatlog.report.plots" in modules
    graph: dict[str, set[str]] = {}
    for name, nodes in modules.items():
        path = Path(report.__file__).parent / f"{name.rpartition('.')[2]}.py"
        if name == "chatlog.report":
            path = Path(report.__file__)
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"
        targets = [target for node in nodes for target in imported_names(node)]
        assert [t for t in targets if t.startswith("chatlog.log.")] == [], name
        assert [t for t in targets if t.startswith("chatlog.server")] == [], name
        graph[name] = {t for t in targets if t in modules and t != "chatlog.report"}

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import cycle: " + " -> ".join([*path, name])
        for target in graph[name]:
            visit(target, (*path, name))

    for name in graph:
        visit(name, ())
