"""The table of events: each event's name and words, written and read back from one entry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatlog.log import EVENT_NAMES, EVENTS, RecordParser, make_formatter
from chatlog.log.events import Scope, event_text, kinds_by_name, parse_text
from chatlog.log.templates import FIELD_TYPES, MESSAGE
from tests.unit.log_samples import FORMATS, WHEN

# Two sample values of each field type, for events generated from the table.
# The ints are 1 and 7, so that every "word(s)" is written both ways.
SAMPLES: dict[str, tuple[Any, Any]] = {
    "int": (1, 7),
    "decimal": (1.5, 0.000001),
    "number": (300.0, 2.5),
    "name": ("clean", "lost"),
    "word": ("0.1.0", "tcp:[::1]:5000"),
    "text": ("server busy", "[Errno 28] No space left on device: a, b - c"),
    "message": (b"Hello, Server!", b"back\\slash \xff [x] - #1 (rtt 1.0 ms)"),
}


def table_events() -> list[tuple[bool, dict[str, Any], set[str]]]:
    """(client, event, the fields its text names) for every event of the table,
    every text it has, both sample values."""
    cases = []
    for kind, event_type in EVENTS.items():
        for picked, template in event_type.text.choices():
            for sample in (0, 1):
                event: dict[str, Any] = {"event": kind, "time": WHEN}
                if event_type.scope is not Scope.SERVER:
                    event.update(ip="10.0.0.1", port=4000 + sample, conn=3 + sample)
                if event_type.scope is Scope.LINE:
                    event["seq"] = 9
                event.update(picked)
                for key, type_name in template.fields:
                    event[key] = SAMPLES[type_name][sample]
                named = {*picked, *(key for key, _ in template.fields)}
                cases.append((event_type.client, event, named))
    return cases


def case_id(case: tuple[bool, dict[str, Any], set[str]]) -> str:
    event = case[1]
    return "-".join(str(event[k]) for k in ("event", "kind", "how") if k in event)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", table_events(), ids=case_id)
def test_every_event_of_the_table_round_trips(
    fmt: str, case: tuple[bool, dict[str, Any], set[str]]
) -> None:
    """Each event of the table, written in each format, reads back as the fields it was written from."""
    client, event, _ = case
    record = make_formatter(fmt, utc=True)(event)
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    parsed = RecordParser(fmt, client=client, utc=True).parse(record[:-1])
    assert parsed.pop("time") == pytest.approx(WHEN, abs=1e-6)
    want = {key: value for key, value in event.items() if key != "time"}
    if fmt != "json":
        want.pop("seq", None)  # the text formats have no seq
    if fmt == "dash" and event["event"] == "message":
        del want["conn"]  # nor has a dash message its conn
    assert parsed == want


@pytest.mark.parametrize("case", table_events(), ids=case_id)
def test_every_text_of_the_table_reads_back(case: tuple[bool, dict[str, Any], set[str]]) -> None:
    """Each event's words, written from the table, read back as exactly the fields they name."""
    _, event, named = case
    assert parse_text(event["event"], event_text(event)) == {key: event[key] for key in named}


def test_every_field_type_has_samples() -> None:
    """A field type added to the templates needs samples here, or the table test cannot cover it."""
    assert set(SAMPLES) == {*FIELD_TYPES, MESSAGE}


def test_event_names() -> None:
    """The json names and the text formats' names, in the order the log format lists them."""
    assert EVENT_NAMES == {
        "start": "Server Started",
        "connect": "Connection",
        "message": "Message Received",
        "disconnect": "Disconnection",
        "line_too_long": "Line Too Long",
        "timeout": "Timeout",
        "rejected": "Rejected",
        "bad_header": "Bad Header",
        "throttled": "Throttled",
        "log_error": "Log Error",
        "log_reopen": "Log Reopen",
        "stop": "Server Stopped",
        "sent": "Message Sent",
        "reply": "Message Received",
    }


def test_a_shared_name_is_the_clients_event_in_a_client_log() -> None:
    """``Message Received`` is the server's message in its log, the client's reply in the client's."""
    assert kinds_by_name(client=False)[b"Message Received"] == "message"
    assert kinds_by_name(client=True)[b"Message Received"] == "reply"
    assert kinds_by_name(client=False)[b"Message Sent"] == "sent"


SERVER_EVENTS = [
    {
        "event": "start",
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 42,
        "version": "0.1.0",
    },
    {"event": "connect", "ip": "10.1.2.3", "port": 4000, "conn": 1},
    {
        "event": "disconnect",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "how": "clean",
        "messages": 3,
        "seconds": 1.5,
    },
    {"event": "line_too_long", "ip": "10.1.2.3", "port": 4000, "conn": 1, "limit": 100},
    {
        "event": "timeout",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "kind": "idle",
        "seconds": 300.0,
    },
    {
        "event": "timeout",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "kind": "line",
        "seconds": 30.0,
    },
    {
        "event": "rejected",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "reason": "server busy",
        "limit": 10,
    },
    {
        "event": "throttled",
        "state": "paused",
        "address": "10.1.2.3",
        "reason": "rate",
        "limit": 1000,
        "burst": 2000,
    },
    {
        "event": "throttled",
        "state": "released",
        "address": "10.1.2.3",
        "reason": "rate",
        "seconds": 9.5,
        "paused": 8.25,
        "held": 9000,
    },
    {
        "event": "log_error",
        "error": "[Errno 28] No space left on device",
        "seconds": 2.5,
        "refused": 7,
        "lost": 1,
    },
    {
        "event": "log_error",
        "error": "[Errno 5] Input/output error",
        "seconds": 0.5,
        "refused": 3,
        "lost": 0,
        "left": 2,
    },
    {"event": "log_reopen", "state": "failed", "error": "[Errno 24] Too many open files"},
    {"event": "log_reopen", "state": "done", "seconds": 1.5, "attempts": 3},
    {"event": "stop", "connections": 1, "messages": 3, "refused": 2},
]

TS = "2026-11-22 07:35:45.123456"

# The human texts of the event format, as README.rst shows them.
EVENT_TEXTS = [
    f"Server Started: {TS} - listening on 127.0.0.1:5000 (tcp:5000), pid 42, chatlog 0.1.0\n",
    f"Connection: {TS} - 10.1.2.3:4000 #1 - connected\n",
    f"Disconnection: {TS} - 10.1.2.3:4000 #1 - clean, 3 messages, 1.500000 s\n",
    f"Line Too Long: {TS} - 10.1.2.3:4000 #1 - line longer than 100 bytes, connection closed\n",
    f"Timeout: {TS} - 10.1.2.3:4000 #1 - idle for 300 s, connection closed\n",
    f"Timeout: {TS} - 10.1.2.3:4000 #1 - line not finished within 30 s, connection closed\n",
    f"Rejected: {TS} - 10.1.2.3:4000 #1 - server busy (limit 10), connection refused\n",
    f"Throttled: {TS} - 10.1.2.3 over its rate limit (1000/s, burst 2000), reading paused\n",
    f"Throttled: {TS} - 10.1.2.3 released from its rate limit after 9.500000 s (8.250000 s not read), 9000 messages held back\n",
    f"Log Error: {TS} - log unavailable for 2.500000 s ([Errno 28] No space left on device): 7 messages refused, 1 other record lost\n",
    f"Log Error: {TS} - log unavailable for 0.500000 s ([Errno 5] Input/output error): 3 messages refused, 0 other records lost; up to 2 refused messages may remain above (cannot cut back)\n",
    f"Log Reopen: {TS} - cannot open the log anew ([Errno 24] Too many open files): records go on here until a retry succeeds\n",
    f"Log Reopen: {TS} - opened anew 1.500000 s late, after 3 failed attempts: the records in between are in the file open before\n",
    f"Server Stopped: {TS} - 1 connection, 3 messages logged, 2 refused\n",
]


@pytest.mark.parametrize("fmt", ["event", "dash", "json"])
@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e["event"])
def test_every_event_is_one_line(fmt: str, event: dict[str, object]) -> None:
    """Every event type formats to exactly one ``\\n``-terminated line naming its type."""
    record = make_formatter(fmt, utc=True)({**event, "time": WHEN})
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    if fmt == "json":
        assert json.loads(record)["event"] == event["event"]
    else:
        assert EVENT_NAMES[str(event["event"])].encode() in record


def test_event_texts() -> None:
    """The human texts of the event format, as README.rst shows them."""
    fmt = make_formatter("event", utc=True)
    lines = [fmt({**event, "time": WHEN}).decode() for event in SERVER_EVENTS]
    assert lines == EVENT_TEXTS


def test_event_texts_read_back() -> None:
    """The same texts, as an operator would find them in a log, read back to their events."""
    parser = RecordParser("event", utc=True)
    for line, event in zip(EVENT_TEXTS, SERVER_EVENTS, strict=True):
        parsed = parser.parse(line.rstrip("\n").encode())
        assert parsed.pop("time") == pytest.approx(WHEN, abs=1e-6)
        assert parsed == event


# Texts earlier versions wrote, and what they read back as.
LEGACY_TEXTS = [
    # Server Stopped before refused messages were counted apart ("messages": all received).
    (
        f"Server Stopped: {TS} - 4 connections, 302 messages",
        {"event": "stop", "connections": 4, "messages": 302},
    ),
    (
        f"Log Error: {TS} - log unavailable for 2.500000 s (disk full): 1 message refused, "
        "0 other records lost",
        {"event": "log_error", "error": "disk full", "seconds": 2.5, "refused": 1, "lost": 0},
    ),
]


@pytest.mark.parametrize("fmt", ["event", "dash"])
@pytest.mark.parametrize(("line", "event"), LEGACY_TEXTS, ids=["stop", "log_error"])
def test_texts_of_earlier_versions_still_read(fmt: str, line: str, event: dict[str, Any]) -> None:
    """A log written before a text changed reads back with the fields that text had."""
    if fmt == "dash":
        name, rest = line.split(": ", 1)
        stamp, text = rest.split(" - ", 1)
        line = f"- - - - {stamp} - [{name}] {text}"
    parsed = RecordParser(fmt, utc=True).parse(line.encode())
    assert parsed.pop("time") == pytest.approx(WHEN, abs=1e-6)
    assert parsed == event


def test_an_optional_field_has_its_words_only_when_present() -> None:
    """``left`` is written only when some refused records may remain; its absence reads back absent."""
    outage = {**next(e for e in SERVER_EVENTS if e["event"] == "log_error"), "time": WHEN}
    assert b"may remain" not in event_text(outage)
    assert b"up to 5 refused messages may remain above" in event_text({**outage, "left": 5})
    assert "left" not in parse_text("log_error", event_text(outage))
