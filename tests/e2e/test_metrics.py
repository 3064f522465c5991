"""End-to-end: ``--metrics`` serves Prometheus text whose counters match the log."""

from __future__ import annotations

import re
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import LineClient
from tests.support.waiting import wait_until


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.e2e
def test_metrics_agree_with_the_log(chatlog_server) -> None:
    """Messages, connections, limit events and batch writes: the same counts as the log."""
    server = chatlog_server("--metrics", "tcp:0:interface=127.0.0.1", "--max-line", "10")
    line = server.wait_output(rb"metrics at http://\S+/metrics")
    url = re.search(rb"http://\S+/metrics", line).group().decode()
    for n in range(3):
        with server.connect() as sock:
            sock.sendall(b"m%d\n" % n * (n + 1))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    with server.connect() as sock:  # one over-long line
        sock.sendall(b"x" * 20 + b"\n")
        while sock.recv(65536):
            pass
    with server.connect() as held:
        held.sendall(b"held\n")
        assert held.recv(100) == b"Server received: held\n"
        metrics = scrape(url)
    records = server.records()
    logged = sum(r.startswith(b"Message Received:") for r in records)
    assert logged == 1 + 2 + 3 + 1
    assert metrics[("chatlog_messages_total", ())] == logged
    assert metrics[("chatlog_connections_total", ())] == 5
    assert metrics[("chatlog_connections_active", ())] == 1
    assert metrics[("chatlog_limit_events_total", (("reason", "line_too_long"),))] == 1
    assert metrics[("chatlog_limit_events_total", (("reason", "timeout"),))] == 0
    assert metrics[("chatlog_log_write_errors_total", ())] == 0
    assert metrics[("chatlog_log_batch_write_seconds_count", ())] >= 5


def metrics_url(server: Any) -> str:
    line = server.wait_output(rb"metrics at http://\S+/metrics")
    return re.search(rb"http://\S+/metrics", line).group().decode()


@pytest.mark.e2e
def test_refused_messages_are_not_counted_as_logged(chatlog_server) -> None:
    """/dev/full: every message refused, none counted logged; the write errors are counted."""
    server = chatlog_server("--metrics", "tcp:0:interface=127.0.0.1", logfile="/dev/full")
    url = metrics_url(server)
    with LineClient(server.address) as client:
        client.send(b"".join(b"m%d\n" % n for n in range(5)))
        assert client.lines(5) == [b"ERROR log unavailable"] * 5
        metrics = scrape(url)
    assert metrics[("chatlog_messages_total", ())] == 0
    assert metrics[("chatlog_messages_refused_total", ())] == 5
    assert metrics[("chatlog_messages_received_total", ())] == 5
    # Server Started, the connection and the messages: at least two batches failed.
    assert metrics[("chatlog_log_write_errors_total", ())] >= 2
    assert metrics[("chatlog_log_records_lost_total", ())] >= 2
    assert metrics[("chatlog_log_refused_left_total", ())] == 0


@pytest.mark.e2e
def test_limit_and_timeout_metrics_count_what_the_log_says(chatlog_server) -> None:
    """Rejections (busy, per address) and timeouts (idle, line) are counted as the log has them."""
    server = chatlog_server(
        "--metrics", "tcp:0:interface=127.0.0.1",
        "--max-connections", "2", "--max-per-ip", "1",
        "--idle-timeout", "1", "--line-timeout", "0.3",
    )  # fmt: skip
    url = metrics_url(server)
    with LineClient(server.address) as idle:
        idle.round_trip(b"one")
        with LineClient(server.address) as same_address:
            assert same_address.rest().startswith(b"ERROR too many connections")
        with LineClient(server.address, source="127.0.0.2") as slow:
            slow.round_trip(b"two")
            idle.round_trip(b"again")  # not idle yet when the third address knocks
            with LineClient(server.address, source="127.0.0.3") as third:
                assert third.rest() == b"ERROR server busy\n"
            slow.send(b"a line never finished")
            assert slow.rest() == b"ERROR timeout\n"
        assert idle.rest() == b"ERROR timeout\n"
    wait_until(
        lambda: sum(r.startswith(b"Disconnection:") for r in server.records()) == 2,
        10,
        "both timed-out connections logged as gone",
    )
    metrics = scrape(url)
    records = server.records()
    timeouts = [r for r in records if r.startswith(b"Timeout:")]
    rejected = [r for r in records if r.startswith(b"Rejected:")]
    assert len(timeouts) == 2 and len(rejected) == 2
    limit = "chatlog_limit_events_total"
    assert metrics[(limit, (("reason", "timeout"),))] == len(timeouts)
    assert metrics[(limit, (("reason", "rejected_busy"),))] == sum(
        b"server busy" in r for r in rejected
    )
    assert metrics[(limit, (("reason", "rejected_per_ip"),))] == sum(
        b"too many connections" in r for r in rejected
    )
    assert metrics[(limit, (("reason", "rejected_busy"),))] == 1
