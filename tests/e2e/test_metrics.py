"""End-to-end: ``--metrics`` serves Prometheus text whose counters match the log."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families


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
