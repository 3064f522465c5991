"""End-to-end: --rate-limit per client address on the real twistd, clients on 127.0.0.2, .3, .4.

Every 127/8 address is local, so binding a client's socket to 127.0.0.2 makes
it another client address.  The flooders send everything at once; the server
must answer and log every line, read each address at its rate (the
connections of one address sharing its bucket), spare an exempt address, and
log one Throttled record when an address is paused and one when released.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.support.clients import REPLY, LineClient
from tests.support.waiting import wait_until

RATE = 1000  # messages per second per address, and the burst
PER_ADDRESS = 3000  # 1,000 of burst + 2 s at 1,000/s
#: Lines of 40 bytes: a read (at most 16 KiB) holds at most ~400 of them, all
#: answered at once; the rest is read at the address's rate.
PAD = b"." * 30


def flood(server: Any, source: str, count: int, key: str, results: dict[str, Any]) -> None:
    """Send ``count`` lines at once from ``source``; read every reply; note when done."""
    started = time.monotonic()
    with LineClient(server.address, timeout=15.0, source=source) as client:
        lines = [b"%s-%04d%s" % (key.encode(), n, PAD) for n in range(count)]
        sender = threading.Thread(target=client.send, args=(b"".join(m + b"\n" for m in lines),))
        sender.start()
        replies = client.lines(count, timeout=15.0)
        sender.join(15.0)
    results[key] = (replies == [REPLY + m for m in lines], time.monotonic() - started)


@pytest.mark.e2e
def test_each_address_is_read_at_its_rate_and_every_line_answered_and_logged(
    chatlog_server: Any,
) -> None:
    """Two throttled addresses (one with two connections) and an exempt one, flooding at once."""
    server = chatlog_server(
        "--format", "json", "--rate-limit", str(RATE), "--rate-exempt", "127.0.0.4/32",
        "--metrics", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    results: dict[str, Any] = {}
    floods = [
        ("127.0.0.2", PER_ADDRESS // 2, "a1"),  # two connections, one bucket
        ("127.0.0.2", PER_ADDRESS // 2, "a2"),
        ("127.0.0.3", PER_ADDRESS, "b"),
        ("127.0.0.4", PER_ADDRESS, "x"),  # exempt
    ]
    threads = [threading.Thread(target=flood, args=(server, *f, results)) for f in floods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20.0)
    assert all(results[key][0] for _, _, key in floods), "a reply missing or wrong"
    # Per address, 2,000 messages over the burst at 1,000/s: 2 s, less what its
    # connections' last reads held (~400 lines each, answered at once); unthrottled
    # it takes milliseconds.  A generous upper bound for a shared machine.
    for took in (max(results["a1"][1], results["a2"][1]), results["b"][1]):
        assert 1.2 <= took <= 6.0, results
    assert results["x"][1] < 1.5, results

    def records() -> list[dict[str, Any]]:
        return [json.loads(r) for r in server.records()]

    def released() -> list[dict[str, Any]]:
        done = [r for r in records() if r["event"] == "throttled" and r["state"] == "released"]
        return done if len(done) == 2 else []

    wait_until(released, 5.0, "two Throttled ... released records")
    logged = records()
    messages = [r for r in logged if r["event"] == "message"]
    by_ip = {ip: sum(r["ip"] == ip for r in messages) for ip in ("127.0.0.2", "127.0.0.3")}
    assert by_ip == {"127.0.0.2": PER_ADDRESS, "127.0.0.3": PER_ADDRESS}
    assert sum(r["ip"] == "127.0.0.4" for r in messages) == PER_ADDRESS
    throttles = [r for r in logged if r["event"] == "throttled"]
    # One record on entry and one on release per throttled address: never per message or pause.
    assert sorted((r["address"], r["state"]) for r in throttles) == [
        ("127.0.0.2", "paused"),
        ("127.0.0.2", "released"),
        ("127.0.0.3", "paused"),
        ("127.0.0.3", "released"),
    ]
    for record in throttles:
        if record["state"] == "paused":
            assert (record["reason"], record["limit"], record["burst"]) == ("rate", RATE, RATE)
        else:
            assert 1.5 <= record["seconds"] <= 6.0 and 0 < record["paused"] <= record["seconds"]
            assert 0 < record["held"] <= PER_ADDRESS
    line = server.wait_output(rb"metrics at http://\S+/metrics")
    url = re.search(rb"http://\S+/metrics", line).group().decode()  # type: ignore[union-attr]
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'chatlog_throttle_events_total{reason="rate"} 2.0' in text
    assert 'chatlog_throttle_events_total{reason="bytes"} 0.0' in text
    seconds = float(re.search(r'chatlog_throttled_seconds_total\{reason="rate"\} (\S+)', text)[1])  # type: ignore[index]
    assert 2.0 <= seconds <= 12.0
