"""The quota options of ``twistd chatlog``, their metrics and their place in the report."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from twisted.application.service import IService
from twisted.internet.task import Clock
from twisted.python.usage import UsageError

from chatlog.log import RecordParser, make_formatter
from chatlog.report.stats import ServerStats
from chatlog.report.text import summary_rows
from chatlog.server.factory import ChatFactory
from chatlog.server.metrics import make_registry
from chatlog.server.quota import Limit, Quotas
from chatlog.server.tap import ChatlogOptions, Options, makeService
from tests.unit.test_protocol import FakeLog
from tests.unit.test_quota import START, connect, lines


def parse(*argv: str) -> ChatlogOptions:
    options = ChatlogOptions()
    options.parseOptions(list(argv))
    return options


def test_quota_options_parse() -> None:
    """--rate-limit and --byte-limit take N[/BURST]; --rate-exempt repeats and takes CIDRs."""
    options = parse(
        "--rate-limit", "1000", "--byte-limit", "65536/131072",
        "--rate-exempt", "10.0.0.0/8", "--rate-exempt", "::1",
    )  # fmt: skip
    assert options["rate-limit"] == Limit(1000, 1000)
    assert options["byte-limit"] == Limit(65536, 131072)
    assert options["rate-exempt"] == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    assert parse("--rate-limit", "0")["rate-limit"] is None


@pytest.mark.parametrize(
    "argv",
    [["--rate-limit", "fast"], ["--byte-limit", "10/0"], ["--rate-exempt", "10.0.0.300"]],
)
def test_bad_quota_options_are_usage_errors(argv: list[str]) -> None:
    """A limit that is not N[/BURST] or a network that is not one: a usage error naming it."""
    with pytest.raises(UsageError, match="BURST|rate-exempt"):
        parse(*argv)


def test_workers_get_the_same_quotas() -> None:
    """--workers starts its workers with the quota options (each worker keeps its own buckets)."""
    options = parse("--rate-limit", "1000/50", "--rate-exempt", "10.0.0.0/8")
    again = ChatlogOptions()
    again.parseOptions(options.as_argv())
    assert dict(again) == dict(options)


def test_make_service_wires_the_quotas(tmp_path: Path) -> None:
    """With a limit the factory has quotas that log to the server's log; without, none."""
    options = Options()
    options.parseOptions(["--logfile", str(tmp_path / "x.log"), "--rate-limit", "5"])
    chatlog = IService(makeService(options, reactor=Clock())).getServiceNamed("chatlog")
    quotas = chatlog.factory.quotas
    assert quotas is not None and quotas.limits == {"rate": Limit(5, 5), "bytes": None}
    assert quotas.log is chatlog.writer
    options = Options()
    options.parseOptions(["--logfile", str(tmp_path / "x.log")])
    chatlog = IService(makeService(options, reactor=Clock())).getServiceNamed("chatlog")
    assert chatlog.factory.quotas is None


def test_metrics_count_throttles_and_seconds_by_reason() -> None:
    """/metrics: episodes begun and seconds not read, by reason, pauses running included."""
    clock = Clock()
    clock.advance(START)
    log = FakeLog()
    quotas = Quotas(log, clock, Limit(10, 10), Limit(1000, 1000))
    factory = ChatFactory(log, clock, idle_timeout=0, line_timeout=0, quotas=quotas)
    proto, _ = connect(factory)
    proto.dataReceived(lines(30))  # 20 over: 2 s not read
    clock.pump([0.5] * 7)  # resumed at 2 s, released after the quiet second
    other, _ = connect(factory, "127.0.0.3")
    other.dataReceived(b"x" * 2999 + b"\n")  # 2,000 bytes over: 2 s
    clock.advance(0.5)
    writer = _Writer()
    text = generate_latest(make_registry(factory, writer)).decode()  # type: ignore[arg-type]
    assert 'chatlog_throttle_events_total{reason="rate"} 1.0' in text
    assert 'chatlog_throttle_events_total{reason="bytes"} 1.0' in text
    assert 'chatlog_throttled_seconds_total{reason="rate"} 2.0' in text
    assert 'chatlog_throttled_seconds_total{reason="bytes"} 0.5' in text
    assert "chatlog_throttled_addresses 1.0" in text


class _Writer:
    """What the collector reads of the LogWriter."""

    messages_logged = messages_refused = write_errors = records_lost = refused_left = 0
    reopen_errors = 0
    reopen_pending = False
    on_batch = None


@pytest.mark.parametrize("fmt", ["event", "dash", "json"])
def test_the_report_counts_throttles(fmt: str) -> None:
    """The report folds Throttled records of any format into episodes, seconds and held messages."""
    formatter, parser = make_formatter(fmt, utc=True), RecordParser(fmt, utc=True)
    stats = ServerStats()
    records = [
        {"state": "paused", "address": "127.0.0.2", "reason": "rate", "limit": 10, "burst": 10},
        {"state": "paused", "address": "127.0.0.3", "reason": "bytes", "limit": 9, "burst": 9},
        {
            "state": "released",
            "address": "127.0.0.2",
            "reason": "rate",
            "seconds": 9.5,
            "paused": 8.25,
            "held": 900,
        },
    ]
    for n, fields in enumerate(records):
        record = formatter({"event": "throttled", "time": START + n, **fields})
        stats.add(parser.parse(record[:-1]))
    throttles = stats.throttles
    assert dict(throttles["events"]) == {"rate": 1, "bytes": 1}
    assert (throttles["seconds"], throttles["paused_seconds"], throttles["held"]) == (
        9.5,
        8.25,
        900,
    )
    assert dict(throttles["addresses"]) == {"127.0.0.2": 1, "127.0.0.3": 1}
    rows = summary_rows(_summary(throttles))
    assert ("limits", "throttled", "bytes: 1, rate: 1") in rows
    assert ("limits", "throttled s / not read s / held back", "9.500 / 8.250 / 900") in rows


def _summary(throttles: dict[str, object]) -> dict[str, object]:
    """The smallest summary summary_rows reads, with the throttles under limits."""
    limit = {"events": 0, "refused": 0, "lost": 0, "left": 0, "seconds": 0.0}
    return {
        "time": {"first": None, "last": None, "seconds": 0.0},
        "connections": {"total": 0, "peak_concurrent": 0, "mean_seconds": 0.0},
        "messages": {"total": 0, "per_s": {"mean": 0.0, "peak": 0}},
        "clients": {"addresses": 0, "ports": 0},
        "disconnections": {"clean": 0, "lost": 0, "closed": 0},
        "limits": {
            "line_too_long": 0,
            "timeout": {},
            "rejected": {},
            "log_error": limit,
            "throttled": throttles,
        },
        "client": {"sent": 0, "replies": 0},
        "unparsed": {"count": 0},
    }
