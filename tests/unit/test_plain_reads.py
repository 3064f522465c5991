"""The whole-read lane gives the very bytes of the line path: records and replies, any input.

:mod:`chatlog.server.lines` stages a read's complete lines whole when none
needs a look of its own.  These tests run the same reads through the
protocol twice, with the lane and without it (``plain_reads = False``: every
read split into lines), through the real log writer of each format, and
compare the log files and the replies byte for byte.  The inputs lean to
text, so that many reads are clean and the lane is taken, with the bytes that
must keep it off mixed in: ``\\r``, controls, backslashes, non-ASCII, and
lines over --max-line.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatlog.log import PLAIN_LINES, LogWriter, escape_text, make_formatter
from chatlog.server.factory import ChatFactory
from chatlog.server.lines import LINES_PER_TURN, whole
from chatlog.server.protocol import ChatProtocol
from tests.unit.test_protocol import FakeLog, connect

FORMATS = ["event", "dash", "json"]

# Text with the bytes each format treats apart ("[" for dash, '"' and "%"
# for json) and, rarely, the ones that must keep a read off the lane.
_CLEAN = st.sampled_from([b"a", b"Hello, Server!", b"[", b'"', b"%", b"%d", b" ", b"~"])
_DIRTY = [b"\r", b"\\", b"\x00", b"\t", b"\x1b", b"\x7f", b"\xc3\xa9", b"\xff", b"\xe2\x80\xa8"]
_LINE = st.tuples(
    st.lists(_CLEAN, max_size=8).map(b"".join),
    st.sampled_from([b""] * 100 + _DIRTY),  # about one line in 12
    st.lists(_CLEAN, max_size=3).map(b"".join),
).map(b"".join)
_ENDS = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b""])
STREAMS = st.one_of(
    st.lists(st.tuples(_LINE, _ENDS), max_size=40).map(
        lambda parts: b"".join(line + end for line, end in parts)
    ),
    # Runs of one long line: at, just under and over --max-line.
    st.lists(st.integers(min_value=0, max_value=130), max_size=6).map(
        lambda sizes: b"".join(b"x" * size + b"\n" for size in sizes)
    ),
)


class Writer(LogWriter):
    """The real writer, counting the reads the protocol staged whole."""

    plain = 0

    def stagePlainLines(self, fields: dict[str, Any], body: bytes, count: int) -> None:
        self.plain += 1
        super().stagePlainLines(fields, body, count)


def run(
    path: Path, fmt: str, stream: bytes, cuts: list[int], max_line: int, lane: bool, eof: bool
) -> tuple[bytes, bytes, int]:
    """The log file and the replies ``stream`` read in pieces makes; how many reads went whole."""
    clock = Clock()
    clock.advance(1795332945.0)
    writer = Writer(str(path), make_formatter(fmt, utc=True), clock)
    writer.open()
    factory = ChatFactory(writer, clock, max_line=max_line)
    proto = factory.buildProtocol(None)
    proto.plain_reads = lane
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 53122))
    proto.makeConnection(transport)
    points = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for start, end in pairwise(points):
        clock.advance(0.001)
        proto.dataReceived(stream[start:end])
        clock.advance(0)
    if eof:
        proto.readConnectionLost()
    for _ in range(20):  # held-back lines: a slice a turn
        clock.advance(0)
    writer.close()
    return path.read_bytes(), transport.value(), writer.plain


@settings(max_examples=300, deadline=None)
@given(
    STREAMS,
    st.lists(st.integers(min_value=1, max_value=400), max_size=10),
    st.sampled_from(FORMATS),
    st.one_of(st.integers(min_value=0, max_value=120), st.just(65536)),
    st.booleans(),
)
def test_the_lane_writes_the_line_paths_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    stream: bytes,
    cuts: list[int],
    fmt: str,
    max_line: int,
    eof: bool,
) -> None:
    """Any reads, any format, any limit: the same log file and replies with the lane as without."""
    where = tmp_path_factory.mktemp("lane")
    with_lane = run(where / "lane.log", fmt, stream, cuts, max_line, True, eof)
    without = run(where / "lines.log", fmt, stream, cuts, max_line, False, eof)
    assert without[2] == 0
    event(f"reads staged whole: {min(with_lane[2], 3)}")
    assert with_lane[:2] == without[:2]


def test_clean_reads_take_the_lane_and_others_do_not(tmp_path: Path) -> None:
    """The comparison above judges something: clean reads go whole, the rest line by line."""
    reads = [
        b"one\ntwo\nthr",
        b"ee\nfour\n",
        b"five\n",
        b"tab\t\nx\n",
        b"cr\r\nx\n",
        b"x" * 50 + b"\n",
    ]
    cuts = [sum(map(len, reads[:i])) for i in range(1, len(reads))]
    _, replies, plain = run(tmp_path / "a.log", "event", b"".join(reads), cuts, 40, True, False)
    # Whole: the first two.  Line by line: one line, a tab, a \r, a line over the limit.
    assert plain == 2
    assert replies.startswith(
        b"Server received: one\nServer received: two\nServer received: three\n"
    )
    assert replies.endswith(b"ERROR line too long (max 40 bytes)\n")


@given(
    st.lists(st.lists(_CLEAN, max_size=6).map(b"".join), min_size=1, max_size=30),
    st.sampled_from(FORMATS),
    st.integers(min_value=1, max_value=10**12),
    st.sampled_from(
        [("127.0.0.1", None), ("fe80::1%eth0", None), ("::1", "node-%d"), ("10.0.0.1", 'n"1')]
    ),
)
def test_plain_lines_is_messages_of_the_split(
    lines: list[bytes], fmt: str, seq: int, where: tuple[str, str | None]
) -> None:
    """Each format's records of a clean read given whole are those of its lines given one by one."""
    ip, node = where
    fields = {"event": "message", "time": 1795332945.25, "ip": ip, "port": 4, "conn": 3, "seq": seq}
    body = b"\n".join(lines)
    assert not body.translate(None, PLAIN_LINES)
    whole = make_formatter(fmt, utc=True, node=node).plain_lines(fields, body, len(lines))
    split = make_formatter(fmt, utc=True, node=node).messages(fields, lines)
    assert whole == split


@given(
    st.one_of(st.binary(max_size=300), STREAMS),
    st.integers(min_value=0, max_value=300),
)
def test_whole_only_for_what_the_line_path_leaves_alone(data: bytes, max_line: int) -> None:
    """Lines go whole only when each is its own text, has no \\r and fits; all such lines do."""
    body = data.rpartition(b"\n")[0]
    lines = body.split(b"\n")
    count = len(lines)
    plain = all(line.isascii() and escape_text(line)[0] == line for line in lines)
    unchanged = all(escape_text(line)[0] == line and line[-1:] != b"\r" for line in lines)
    fits = all(len(line) <= max_line for line in lines) and len(body) <= max_line
    if whole(body, count, max_line):
        assert unchanged and fits and count < LINES_PER_TURN
    else:
        assert not (plain and fits and count < LINES_PER_TURN)


@pytest.mark.parametrize("count", [249, 250, 251, 1000])
def test_a_clean_flood_is_still_handled_250_lines_a_turn(count: int) -> None:
    """The lane never stages more than a turn's lines: a flood is the line path's, a slice a turn."""
    log = FakeLog()
    proto, transport = connect(ChatFactory(log, Clock()))
    proto.dataReceived(b"ab\n" * count)
    assert len(log.messages()) == min(count, 250)
    log.settle()
    assert transport.value() == b"Server received: ab\n" * count


def test_a_refused_write_answers_each_line_of_a_read_staged_whole() -> None:
    """``ERROR log unavailable`` once per line, not once per read."""
    clock = Clock()
    writer_fails = ChatFactory(_RefusingLog(), clock)
    proto: ChatProtocol = writer_fails.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv6Address("TCP", "::1", 4000))
    proto.makeConnection(transport)
    proto.dataReceived(b"a\nb\nc\n")
    proto.dataReceived(b"d\n")
    proto.logWritten(False)
    assert transport.value() == b"ERROR log unavailable\n" * 4


class _RefusingLog:
    """A log that stages and never writes: the test says how the write went."""

    def __call__(self, event: dict[str, Any]) -> None:
        pass

    def stageMessages(self, fields: dict[str, Any], lines: list[bytes]) -> None:
        pass

    def stagePlainLines(self, fields: dict[str, Any], body: bytes, count: int) -> None:
        pass

    def ackAfterWrite(self, waiter: ChatProtocol) -> None:
        pass
