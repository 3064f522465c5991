"""End-to-end: system calls made to fail under the real server, from outside, with strace.

The real ``twistd -n chatlog`` runs under ``strace -e inject``
(:mod:`tests.support.strace`): the log's ``write`` fails with EIO or ENOSPC,
its ``fdatasync`` with EIO under ``--fsync`` (alone, or with the
``fdatasync`` that makes the cut back durable, or with the ``ftruncate``
that cuts the refused batch back off the file), and ``accept4`` with EMFILE.  Each fault hits a window of calls (``when=N..M``)
while clients keep sending, then stops by itself.  In each case the server
keeps serving; every acknowledged message is in the log exactly once; every
message answered ``ERROR log unavailable`` is absent, unless the writer could
not cut it back, and then its ``Log Error`` record says how many may remain;
and once the fault stops the server recovers on its own.

The log is read as bytes (:mod:`tests.support.logfile`), and with chatlog's
reader only for its verdict on torn lines.
"""

from __future__ import annotations

import re
import signal
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.support.clients import REPLY, LineClient
from tests.support.load import Load
from tests.support.logfile import logged_messages, message_text, read_records
from tests.support.strace import (
    Fault,
    check_refusals,
    injected,
    stop_traced,
    traced_server,
    unavailable,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

_STOPPED = re.compile(
    rb"^Server Stopped: .* - (\d+) connections?, (\d+) messages? logged, (\d+) refused$"
)
#: twistd's log when the log is writable again ("cannot write log ... until it is
#: writable again" says it is not).
RECOVERED = rb"chatlog: log .* writable again"
#: A Load message: TAG-cCONN-mSEQ-PAD.
_LOAD_MESSAGE = re.compile(rb"^(\w+)-c(\d+)-m(\d+)-p+$")


def last_refused_seq(refused: list[bytes]) -> dict[int, int]:
    """Per load connection, the highest seq it had refused: its later messages followed the outage."""
    last: dict[int, int] = defaultdict(int)
    for message in refused:
        match = _LOAD_MESSAGE.match(message)
        assert match, message
        conn, seq = int(match.group(2)), int(match.group(3))
        last[conn] = max(last[conn], seq)
    return last


def stopped_counts(records: list[bytes]) -> tuple[int, int]:
    """(messages logged, refused) from the last record, ``Server Stopped``."""
    match = _STOPPED.match(records[-1])
    assert match, records[-1]
    return int(match.group(2)), int(match.group(3))


@pytest.mark.parametrize(
    "error, says", [("EIO", b"Input/output error"), ("ENOSPC", b"No space left on device")]
)
def test_failed_log_writes_are_refused_then_recovered(
    tmp_path: Path, error: str, says: bytes
) -> None:
    """40 log writes fail under load: their messages refused, none logged; then back to acks."""
    window = Fault("write", error, "6..45")
    with traced_server(tmp_path, [window]) as (server, trace):
        load = Load(server.address, connections=4, pipeline=8, tag="w", size=8)
        load.start()
        server.wait_output(b"cannot write log", timeout=30)
        server.wait_output(RECOVERED, timeout=30)
        load.wait_acked(len(load.acked) + 500, timeout=30)
        load.finish()
        with LineClient(server.address) as late:
            late.round_trip(b"after the outage")
        assert server.proc.poll() is None
        assert stop_traced(server) == -signal.SIGTERM
    assert injected(trace) == Counter(write=40)
    assert load.errors, "no message was refused: the fault never met a message"
    acked = [*load.acked, b"after the outage"]
    [outage] = check_refusals(server.log_path, acked, load.errors)
    # Nothing reached the file, so nothing had to be cut back.
    assert (outage.refused, outage.left) == (len(load.errors), 0)
    assert says in outage.error
    records = read_records(server.log_path)
    # Each connection's messages after its refused ones were logged after
    # the Log Error record that ended the outage.
    last_refused = last_refused_seq(load.errors)
    for index, record in enumerate(records):
        match = _LOAD_MESSAGE.match(message_text(record) or b"")
        if match and int(match.group(3)) > last_refused.get(int(match.group(2)), 1 << 60):
            assert index > outage.index, record
    assert stopped_counts(records) == (len(acked), len(load.errors))


#: (name, faults, separate outages): the batch's fdatasync fails, and then
#: nothing else; or the fdatasync that makes the cut back durable too; or the
#: cut back itself (ftruncate), every time.
FDATASYNC_CASES = [
    ("cut-back", [Fault("fdatasync", "EIO", "6..60+10")], 6),
    ("cut-back-unsynced", [Fault("fdatasync", "EIO", "6..7")], 1),
    (
        "cannot-cut-back",
        [Fault("fdatasync", "EIO", "6..60+10"), Fault("ftruncate", "EIO", "1+")],
        6,
    ),
]


@pytest.mark.parametrize(
    "case, faults, count", FDATASYNC_CASES, ids=[case for case, *_ in FDATASYNC_CASES]
)
def test_failed_fdatasync_is_refused_and_cut_back(
    tmp_path: Path, case: str, faults: list[Fault], count: int
) -> None:
    """--fsync, fdatasync fails under load: the written batch is refused and cut back off.

    When the cut back cannot be made durable, the records are gone from the
    file all the same; when it fails outright (``ftruncate``), they stay, and
    the ``Log Error`` record says how many may remain.
    """
    with traced_server(tmp_path, faults, "--fsync") as (server, trace):
        load = Load(server.address, connections=4, pipeline=8, tag="s", size=8)
        load.start()
        server.wait_output(b"cannot write log", timeout=30)
        # Separate outages: each ends before the next begins.
        server.wait_output_count(b"chatlog: log ", count, timeout=30)
        load.wait_acked(len(load.acked) + 200, timeout=30)
        load.finish()
        with LineClient(server.address) as late:
            late.round_trip(b"after the outages")
        if case != "cut-back":
            server.wait_output(b"cannot cut refused records back", timeout=10)
        assert stop_traced(server) == -signal.SIGTERM
    failed = injected(trace)
    assert failed["fdatasync"] == (2 if case == "cut-back-unsynced" else 6), failed
    assert load.errors, "no message was refused: the fault never met a message"
    acked = [*load.acked, b"after the outages"]
    found = check_refusals(server.log_path, acked, load.errors)
    assert len(found) == count
    assert sum(outage.refused for outage in found) == len(load.errors)
    counts = logged_messages(server.log_path)
    remaining = [m for m in load.errors if counts[m]]
    if case == "cannot-cut-back":
        assert failed["ftruncate"] >= 1
        # Each failed batch stayed whole in the file (its write succeeded),
        # so every message it refused is there, and said to be.
        assert remaining, "the refused batches vanished although they could not be cut back"
        assert sum(outage.left for outage in found) == len(remaining)
    else:
        assert not remaining
        if case == "cut-back":
            assert all(outage.left == 0 for outage in found)
    assert stopped_counts(read_records(server.log_path)) == (len(acked), len(load.errors))


def test_accept_emfile_keeps_serving_and_recovers(tmp_path: Path) -> None:
    """accept4 fails with EMFILE 300 times: open connections are served meanwhile, new ones after."""
    # Each failed accept is held 5 ms, so the 300 last over a second, not a
    # few milliseconds of the reactor retrying a listening socket still readable.
    window = Fault("accept4", "EMFILE", "2..301", delay_exit_us=5000)
    with traced_server(tmp_path, [window], log_only=False) as (server, trace):
        with LineClient(server.address) as first:
            first.round_trip(b"before")
            with LineClient(server.address, timeout=30) as waiting:
                waiting.send(b"while accept fails\n")
                for i in range(5):
                    first.round_trip(b"served-%d" % i)
                # Still nothing for the newcomer: its accept was failing all along.
                waiting.sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    waiting.sock.recv(1)
                # Then the fault stops: the newcomer is served, or closed unserved
                # (Twisted's EMFILE recovery); either way nothing is answered
                # that was not logged.
                try:
                    outcome: bytes | None = waiting.line()
                except EOFError:
                    outcome = None
            with LineClient(server.address) as after:
                after.round_trip(b"after")
            first.round_trip(b"still here")
        assert stop_traced(server) == -signal.SIGTERM
    assert injected(trace) == Counter(accept4=300)
    counts = logged_messages(server.log_path)
    served = [b"before", *(b"served-%d" % i for i in range(5)), b"after", b"still here"]
    assert all(counts[m] == 1 for m in served), counts
    records = read_records(server.log_path)
    connections = sum(r.startswith(b"Connection: ") for r in records)
    if outcome is None:
        assert counts[b"while accept fails"] == 0
        assert connections == 2
    else:
        assert outcome == REPLY + b"while accept fails"
        assert counts[b"while accept fails"] == 1
        assert connections == 3
    assert records[-1].startswith(b"Server Stopped: ")
