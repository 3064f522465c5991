"""The client without sockets: load protocols, open loop, summary, client log, options.

Every round trip here is timed on a ``task.Clock``, so its value is known
exactly: a reply fed after ``clock.advance(0.005)`` took 5 ms.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from chatlog.client import clientlog, procs
from chatlog.client import options as client_options
from chatlog.client import run as client_run
from chatlog.client.clientlog import REPLY, REPLY_LINE, SENT_LINE, ClientLog
from chatlog.client.load import MESSAGE_ID, TICK, LoadPlan, LoadRun, payload
from chatlog.client.session import Conversation, argument_lines, show_reply
from chatlog.client.stats import Recorder, Summary, new_histogram
from chatlog.log import unescape_text

PREFIX = b"Server received: "


def clock_ns(clock: Clock) -> Any:
    return lambda: round(clock.seconds() * 1e9)


def start_run(
    plan: LoadPlan, log: ClientLog | None = None
) -> tuple[Clock, LoadRun, list[StringTransport]]:
    """A run over ``StringTransport``s on a fresh clock, started."""
    clock = Clock()
    run = LoadRun(plan, clock, now_ns=clock_ns(clock), log=log)
    transports = []
    for proto in run.build_protocols():
        transport = StringTransport()
        proto.makeConnection(transport)
        transports.append(transport)
    run.start()
    return clock, run, transports


def sent_lines(transport: StringTransport) -> list[bytes]:
    """What the client wrote since the last call (complete lines)."""
    data = transport.value()
    transport.clear()
    assert data == b"" or data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def answer(run: LoadRun, transports: list[StringTransport], only: set[int] | None = None) -> int:
    """Play the server: reply to every line sent so far, one write per connection."""
    answered = 0
    for index, (proto, transport) in enumerate(zip(run.protocols, transports, strict=True)):
        if only is not None and index not in only:
            continue
        lines = sent_lines(transport)
        if lines:
            proto.dataReceived(b"".join(PREFIX + line + b"\n" for line in lines))
            answered += len(lines)
    return answered


def test_payload_carries_its_id_padded_to_size() -> None:
    """A load message is c<conn>-s<seq>- padded with x; a short --size keeps the whole id."""
    assert payload(3, 17, 16) == b"c3-s17-xxxxxxxxx"
    assert payload(123, 45678, 4) == b"c123-s45678-"
    match = MESSAGE_ID.match(payload(7, 9, 32))
    assert match is not None and match.groups() == (b"7", b"9")


def test_size_counts_the_newline_as_the_bench_does() -> None:
    """--size 16 puts 16 bytes on the wire per message: 15 of text and the newline."""
    plan = LoadPlan.from_options(client_options.parse(["--connections", "1", "--size", "16"]))
    clock, run, transports = start_run(plan)
    assert transports[0].value() == b"c1-s1-xxxxxxxxx\n"
    assert LoadPlan.from_options(client_options.parse(["--size", "1", "--messages", "1"])).size == 0


def test_closed_loop_round_trips_are_timed_on_the_clock() -> None:
    """Each connection keeps --pipeline messages in flight; every RTT is exactly the clock's advance."""
    plan = LoadPlan(connections=2, messages=3, pipeline=2, size=10)
    clock, run, transports = start_run(plan)
    assert sent_lines(transports[0]) == [b"c1-s1-xxxx", b"c1-s2-xxxx"]
    assert sent_lines(transports[1]) == [b"c2-s1-xxxx", b"c2-s2-xxxx"]
    clock.advance(0.005)
    run.protocols[0].dataReceived(PREFIX + b"c1-s1-xxxx\n" + PREFIX + b"c1-s2-")  # a split reply
    # One reply in: one message out to refill the pipeline, with the next id.
    assert sent_lines(transports[0]) == [b"c1-s3-xxxx"]
    clock.advance(0.005)
    run.protocols[0].dataReceived(b"xxxx\n")
    run.protocols[1].dataReceived(PREFIX + b"c2-s1-xxxx\n" + PREFIX + b"c2-s2-xxxx\n")
    assert sent_lines(transports[0]) == []  # budget spent: nothing more to send
    assert sent_lines(transports[1]) == [b"c2-s3-xxxx"]
    clock.advance(0.002)
    run.protocols[0].dataReceived(PREFIX + b"c1-s3-xxxx\n")
    run.protocols[1].dataReceived(PREFIX + b"c2-s3-xxxx\n")
    assert run.finished.called
    assert all(t.disconnecting for t in transports)
    summary = run.summary()
    assert (summary.messages, summary.errors, summary.connections) == (6, 0, 2)
    h = summary.histogram
    assert h.get_total_count() == 6
    assert h.get_min_value() == 2000  # µs
    assert h.get_max_value() == pytest.approx(10_000, rel=1e-3)
    assert summary.duration_s == pytest.approx(0.012)
    assert summary.throughput == pytest.approx(6 / 0.012)


def test_error_reply_and_mismatch_count_as_errors() -> None:
    """An ERROR line or a reply that is not the message's echo is an error, not a round trip."""
    clock, run, transports = start_run(LoadPlan(connections=1, messages=3, size=8))
    proto = run.protocols[0]
    clock.advance(0.001)
    proto.dataReceived(b"ERROR log unavailable\n")
    proto.dataReceived(PREFIX + b"c1-s9-xx\n")  # not what was sent
    proto.dataReceived(PREFIX + b"c1-s3-xx\n")
    summary = run.summary()
    assert (summary.messages, summary.errors) == (1, 2)
    assert any("ERROR log unavailable" in p for p in summary.problems)


def test_dropped_connection_counts_missing_replies_and_says_why() -> None:
    """A connection lost mid-run: its messages in flight are errors, the run still ends."""
    clock, run, transports = start_run(LoadPlan(connections=2, messages=5, pipeline=3))
    run.protocols[0].connectionLost(Failure(ConnectionLost("reset by peer")))
    clock.advance(0.001)
    for _ in range(5):
        answer(run, transports, only={1})  # only connection 2 is still there
    assert run.finished.called
    summary = run.summary()
    assert summary.messages == 5
    assert summary.errors == 3
    assert summary.problems and "connection #1 lost" in summary.problems[0]


def test_warmup_messages_are_sent_but_not_counted() -> None:
    """--warmup: messages sent in the first S seconds are not in the figures, nor in the window."""
    step = 1 / 128  # binary fractions add up exactly: the deadline is not a rounding matter
    plan = LoadPlan(connections=1, duration=10 * step, warmup=5 * step)
    clock, run, transports = start_run(plan)
    for _ in range(15):  # 15 round trips of one step: 5 in warmup, 10 counted
        clock.advance(step)
        answer(run, transports)
    assert run.finished.called
    summary = run.summary()
    assert summary.messages == 10
    assert summary.duration_s == pytest.approx(10 * step)
    assert summary.histogram.get_min_value() == round(step * 1e6)


def test_duration_run_stops_sending_and_closes_when_replies_are_in() -> None:
    """--duration: no message after the deadline; each connection closes with its last reply."""
    clock, run, transports = start_run(LoadPlan(connections=3, duration=0.05, pipeline=2))
    total = 0
    while not run.finished.called:
        clock.advance(0.004)
        total += answer(run, transports)
        assert clock.seconds() < 1
    assert run.summary().messages == total == 3 * 2 * 13  # 13 rounds fit before 50 ms
    assert all(t.disconnecting for t in transports)


def test_open_loop_counts_latency_from_the_scheduled_time() -> None:
    """--rate: a server that stalls 50 ms shows 50 ms (and less for later messages) in the figures."""
    step = 1 / 1024
    plan = LoadPlan(connections=2, rate=1024, duration=100 * step)
    clock, run, transports = start_run(plan)
    # Message k is due at k steps on connection k % 2, whether or not replies come.
    for _ in range(50):
        clock.advance(step)
    clock.advance(1e-6)  # timers are floats: let the one due at step 50 fire
    assert [t.value().count(b"\n") for t in transports] == [26, 25]  # messages 0..50
    answer(run, transports)  # the server answers them all at step 50, then each at once
    while not run.finished.called:
        clock.advance(step)
        answer(run, transports)
        assert clock.seconds() < 1
    summary = run.summary()
    assert summary.messages == 100
    h = summary.histogram
    # Message 0 was due at 0 and answered at step 50; 49 messages after 50 waited 0 (1 µs).
    assert h.get_max_value() == pytest.approx(50 * step * 1e6, rel=1e-3)
    assert h.get_value_at_percentile(50) == 1
    assert h.get_value_at_percentile(75) == pytest.approx(25 * step * 1e6, rel=1e-3)
    assert summary.duration_s == pytest.approx(99 * step, abs=2e-6)


def test_open_loop_sends_everything_due_in_one_write_per_connection() -> None:
    """A late timer sends all the messages due since, one write each connection, ids in order."""
    clock, run, transports = start_run(LoadPlan(connections=2, rate=1000, messages=5))
    clock.advance(0.0095)  # 10 messages due (at 0..9 ms); the first went at start
    writes = [t.value() for t in transports]
    assert [w.count(b"\n") for w in writes] == [5, 5]
    assert MESSAGE_ID.findall(writes[0]) == [(b"1", str(s).encode()) for s in range(1, 6)]
    assert not run.sending  # 5 per connection: the schedule is over
    answer(run, transports)
    assert run.finished.called


def test_no_reply_within_timeout_gives_up() -> None:
    """A server that never answers: after --timeout the run ends with the messages as errors."""
    clock, run, transports = start_run(
        LoadPlan(connections=2, messages=10, pipeline=4, timeout=1.0)
    )
    for _ in range(int(2 / TICK)):
        clock.advance(TICK)
    assert run.finished.called
    summary = run.summary()
    assert (summary.messages, summary.errors) == (0, 8)
    assert summary.problems[0] == "8 replies missing: no reply for 1 s"


def test_client_log_has_one_sent_and_one_reply_record_per_message(tmp_path: Path) -> None:
    """--logfile: Message Sent / Message Received records, the reply with its RTT, in time order."""
    path = tmp_path / "client.log"
    log = ClientLog(str(path), "json", utc=True, ip="127.0.0.1", port=5000)
    clock, run, transports = start_run(LoadPlan(connections=2, messages=4, pipeline=2), log=log)
    while not run.finished.called:
        clock.advance(0.003)
        answer(run, transports)
    log.close()
    records = [json.loads(r) for r in path.read_bytes().split(b"\n")[:-1]]
    sent = {(r["conn"], r["seq"]): r for r in records if r["event"] == "sent"}
    replies = {(r["conn"], r["seq"]): r for r in records if r["event"] == "reply"}
    assert len(sent) == len(replies) == len(records) // 2 == 8
    assert set(sent) == set(replies)
    for key, reply in replies.items():
        assert reply["msg"] == "Server received: " + sent[key]["msg"]
        assert reply["rtt_ms"] == pytest.approx(3.0)
        assert (reply["ip"], reply["port"]) == ("127.0.0.1", 5000)
        assert reply["ts"].endswith("+00:00")
    # Each Sent record is at its message's send time, 3 ms before its reply.
    times = [datetime.fromisoformat(r["ts"]).timestamp() for r in records]
    for key, reply in replies.items():
        gap = datetime.fromisoformat(reply["ts"]) - datetime.fromisoformat(sent[key]["ts"])
        assert gap.total_seconds() == pytest.approx(0.003, abs=2e-6)
    assert times == sorted(times)


def test_client_log_puts_records_in_time_order_across_batches(tmp_path: Path) -> None:
    """A closed loop's Sent record comes with its reply, a batch later: the watermark puts it back in order."""
    path = tmp_path / "client.log"
    log = ClientLog(str(path), "json", utc=True)
    log.describe(size=8, expect=b"OK ", derive_sent=True)
    # Message 1 of conn 1 sent at 1 ms, answered at 9 ms; message 1 of conn 2 sent and
    # answered at 2 and 3 ms.  At the first flush conn 1's message is still in flight.
    log.pending.append((REPLY, 2, 1, 2_000_000, 3_000_000))
    log.flush(watermark=1_000_000)
    assert path.read_bytes() == b""  # everything is newer than the oldest message in flight
    log.pending.append((REPLY, 1, 1, 1_000_000, 9_000_000))
    log.flush(watermark=10_000_000)
    log.close()
    records = [json.loads(r) for r in path.read_bytes().split(b"\n")[:-1]]
    assert [(r["event"], r["conn"]) for r in records] == [
        ("sent", 1),
        ("sent", 2),
        ("reply", 2),
        ("reply", 1),
    ]
    assert records[3]["msg"] == "OK c1-s1-xx" and records[3]["rtt_ms"] == 8.0


@pytest.mark.parametrize("format_name", ["event", "dash", "json"])
def test_client_log_formats_and_batched_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format_name: str
) -> None:
    """Each format gives one line per record, written with one write(2) per flush."""
    path = tmp_path / "client.log"
    log = ClientLog(str(path), format_name, ip="10.0.0.1", port=7)
    writes = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    for seq in range(1, 101):
        log.pending.append((SENT_LINE, 3, seq, 1_000_000 * seq, b"hi\\\x1b"))
        log.pending.append(
            (
                REPLY_LINE,
                3,
                seq,
                1_000_000 * seq,
                1_000_000 * seq + 250_000,
                b"Server received: hi\\\x1b",
            )
        )
    log.close()
    assert len(writes) == 1
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 201
    first_sent, first_reply = lines[0], lines[1]
    if format_name == "event":
        assert first_sent.startswith(b"Message Sent: ")
        assert first_sent.endswith(b" - 10.0.0.1:7 #3 - hi\\\\\\x1b")
        assert first_reply.startswith(b"Message Received: ")
        assert re.search(rb"#3 - Server received: hi\\\\\\x1b \(rtt 0\.250\d* ms\)$", first_reply)
    elif format_name == "dash":
        assert first_sent.startswith(b"10.0.0.1 - 7 - ")
        assert b"[Message Sent] #3 hi" in first_sent
    else:
        record = json.loads(first_reply)
        assert record["event"] == "reply" and record["rtt_ms"] == 0.25
        assert unescape_text(json.loads(first_sent)["msg"]) == b"hi\\\x1b"


def test_client_log_is_formatted_by_a_writer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load run's log: this process only spools compact records; another formats them."""
    path = tmp_path / "client.log"

    def not_here(*args: Any) -> bytes:
        raise AssertionError("formatted on the measuring process")

    monkeypatch.setattr(clientlog.Book, "feed", not_here)
    log = ClientLog(str(path), "event", ip="127.0.0.1", port=5000, background=True)
    clock, run, transports = start_run(LoadPlan(connections=2, messages=50, pipeline=4), log=log)
    while not run.finished.called:
        clock.advance(0.001)
        answer(run, transports)
        if int(clock.seconds() * 1000) % 5 == 0:
            run.tick()  # a flush now and then, as the run's ticker does
    log.close()
    assert log._spool is not None and log._spool.proc.returncode == 0
    records = path.read_bytes().split(b"\n")
    assert records[-1] == b"" and len(records) == 201
    assert sum(r.startswith(b"Message Sent: ") for r in records) == 100
    assert all(re.search(rb"\(rtt 1\.000000 ms\)$", r) for r in records if b"Received" in r)


def test_summary_json_has_the_documented_keys() -> None:
    """--json: the documented object, numbers in ms; the histogram travels as base64."""
    recorder = Recorder()
    recorder.pending.extend([1000] * 98 + [5000, 200_000])
    data = json.loads(Summary(100, 1, 2.0, 4, recorder.total()).json_line())
    assert set(data) >= {
        "messages",
        "errors",
        "duration_s",
        "throughput_msgs_per_s",
        "connections",
        "rtt_ms",
    }
    assert set(data["rtt_ms"]) == {"min", "mean", "p50", "p90", "p99", "p999", "max"}
    assert (data["messages"], data["errors"], data["connections"]) == (100, 1, 4)
    assert data["duration_s"] == 2.0 and data["throughput_msgs_per_s"] == 50.0
    rtt = data["rtt_ms"]
    assert rtt["min"] == 1.0 and rtt["p50"] == 1.0
    assert rtt["p99"] == pytest.approx(5.0, rel=1e-3)
    assert rtt["max"] == pytest.approx(200.0, rel=1e-3)
    assert all(isinstance(v, float) for v in rtt.values())
    again = Summary.from_json(data)
    assert again.histogram.get_total_count() == 100


def test_summary_without_replies_has_null_figures() -> None:
    """No reply at all: the figures are null rather than made up."""
    data = Summary(0, 3, 1.0, 1).to_json()
    assert data["rtt_ms"] == dict.fromkeys(["min", "mean", "p50", "p90", "p99", "p999", "max"])
    assert "(no replies)" in Summary(0, 3, 1.0, 1).text()


def test_merged_summary_adds_histograms_not_percentiles() -> None:
    """--procs: counts add up, the window is the longest, percentiles come from all values."""
    fast, slow = new_histogram(), new_histogram()
    fast.record_value(1000, 90)
    slow.record_value(100_000, 10)
    merged = Summary.merge([Summary(90, 0, 1.0, 2, fast), Summary(10, 2, 1.5, 3, slow)])
    assert (merged.messages, merged.errors, merged.connections, merged.procs) == (100, 2, 5, 2)
    assert merged.duration_s == 1.5
    rtt = merged.rtt_ms()
    assert rtt["p50"] == 1.0 and rtt["p99"] == pytest.approx(100.0, rel=1e-3)


def test_conversation_matches_replies_in_order_and_times_them() -> None:
    """Everyday use: each ask() fires with its reply and RTT; a lost connection fails the rest."""
    clock = Clock()
    proto = Conversation(now_ns=clock_ns(clock))
    transport = StringTransport()
    proto.makeConnection(transport)
    first, second = proto.ask(b"Hello, Server!"), proto.ask(b"second")
    assert transport.value() == b"Hello, Server!\nsecond\n"
    clock.advance(0.0025)
    proto.dataReceived(b"Server received: Hello, Server!\nServer rec")
    assert first.result == (b"Server received: Hello, Server!", 2_500_000)
    proto.connectionLost(Failure(ConnectionLost()))
    failures: list[Failure] = []
    second.addErrback(failures.append)
    assert "lost" in str(failures[0].value)
    assert proto.when_lost().called


def test_reply_display_escapes_control_bytes() -> None:
    """A reply is printed with its RTT; terminal control bytes are shown escaped."""
    assert show_reply(b"Server received: hi", 1_234_567) == "Server received: hi  (1.235 ms)"
    assert show_reply(b"Server received: \x1b[2J", 0).startswith("Server received: \\x1b[2J")
    assert argument_lines(["one", "two\nthree"]) == [b"one", b"two", b"three"]


def test_options_choose_the_mode_and_refuse_nonsense() -> None:
    """Load options make a load run (10 s by default); messages and load options do not mix."""
    talk = client_options.parse(["hi"])
    assert not client_options.is_load(talk)
    load = client_options.parse(["--connections", "10"])
    assert client_options.is_load(load)
    assert (load.duration, load.messages, load.size, load.pipeline) == (10.0, None, 16, 1)
    for bad in (
        ["--connections", "2", "hi"],
        ["--messages", "3", "--duration", "1"],
        ["--procs", "4", "--connections", "2"],
        ["--ca", "x.pem"],
        ["--rate", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            client_options.parse(bad)
        assert exit_info.value.code == 2


def test_procs_split_connections_and_rate() -> None:
    """--procs: connections split evenly, each worker gets its share of the rate and its ids."""
    assert procs.shares(10, 3) == [4, 3, 3]
    options = client_options.parse(
        ["--connections", "10", "--rate", "1000", "--procs", "3", "--messages", "5"]
    )
    argv = procs.worker_argv(options, 4, 0)
    assert argv[argv.index("--rate") + 1] == repr(400.0)
    assert argv[argv.index("--connections") + 1] == "4"
    assert "--worker" in argv and "--json" in argv
    assert procs.worker_argv(options, 3, 4)[argv.index("--conn-offset") + 1] == "4"


class FakeStdin:
    """Standard input for :func:`chatlog.client.run`: a pipe's read end, a terminal or not."""

    def __init__(self, fd: int, tty: bool) -> None:
        self.fd = fd
        self.tty = tty

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return self.tty


def start_client(
    reactor: MemoryReactorClock, argv: list[str], stdin: Any = None
) -> tuple[Deferred[int], io.StringIO, io.StringIO]:
    """``python -m chatlog.client ARGV`` on a memory reactor: (exit status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    status = Deferred.fromCoroutine(
        client_run(reactor, argv, stdin=stdin, stdout=stdout, stderr=stderr)
    )
    return status, stdout, stderr


def accept(reactor: MemoryReactorClock) -> tuple[Any, StringTransport]:
    """Let the client's connection attempt succeed: (its protocol, its transport)."""
    host, port, factory, _, _ = reactor.tcpClients[0]
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_connect_gives_up_after_timeout() -> None:
    """A connection attempt that never completes ends at --timeout, with one line and exit 1."""
    reactor = MemoryReactorClock()
    status, stdout, stderr = start_client(reactor, ["--port", "5000", "--timeout", "2", "hi"])
    reactor.advance(1.99)
    assert not status.called
    reactor.advance(0.01)
    assert status.result == 1
    assert reactor.connectors[0].stoppedConnecting
    assert stderr.getvalue() == (
        "chatlog.client: cannot connect to 127.0.0.1:5000: timed out after 2 s (--timeout)\n"
    )
    assert stdout.getvalue() == ""


@pytest.mark.parametrize("mode", ["arguments", "pipe", "terminal"])
def test_each_reply_wait_gives_up_after_timeout(mode: str) -> None:
    """Every mode: each reply is awaited at most --timeout (from its send), then one line and exit 1."""
    reactor = MemoryReactorClock()
    argv = ["--port", "5000", "--timeout", "2"]
    stdin = None
    if mode == "arguments":
        argv += ["first", "second"]
    else:
        read_end, write_end = os.pipe()
        os.write(write_end, b"first\nsecond\n")
        os.close(write_end)
        stdin = FakeStdin(read_end, tty=mode == "terminal")
    try:
        status, stdout, stderr = start_client(reactor, argv, stdin)
        proto, transport = accept(reactor)
        for reader in reactor.getReaders():
            reader.doRead()  # the lines of standard input
        assert transport.value() == b"first\n"
        reactor.advance(1.5)
        proto.dataReceived(b"Server received: first\n")
        assert transport.value() == b"first\nsecond\n"
        # The second reply's wait starts at its send: 1.5 s more is not too long yet.
        reactor.advance(1.99)
        assert not status.called
        reactor.advance(0.01)
        assert status.result == 1
        assert transport.disconnected  # aborted: a late reply cannot be mistaken for another
        assert stderr.getvalue() == (
            "chatlog.client: 127.0.0.1:5000: message 2: no reply within 2 s (--timeout)\n"
        )
        assert "Server received: first  (" in stdout.getvalue()
        if mode == "terminal":
            assert stdout.getvalue().startswith("> ")
    finally:
        if stdin is not None:
            os.close(stdin.fd)


def test_load_run_connect_timeout_names_the_timeout() -> None:
    """Load mode: connections that never complete end at --timeout with the same words."""
    reactor = MemoryReactorClock()
    status, _, stderr = start_client(
        reactor, ["--port", "5000", "--timeout", "3", "--connections", "2", "--messages", "1"]
    )
    reactor.advance(3)
    assert status.result == 1
    assert stderr.getvalue() == (
        "Running 1 message per connection @ 127.0.0.1:5000: 2 connections, closed loop"
        " (pipeline 1)\n"
        "chatlog.client: cannot connect to 127.0.0.1:5000: timed out after 3 s (--timeout)\n"
    )
