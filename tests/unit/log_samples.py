"""Sample events for the log tests: a server's run and a client's, as the protocol and client emit them."""

from __future__ import annotations

from typing import Any

FORMATS = ("event", "dash", "json")
T = 1795314336.685174  # 2026-11-22, with microseconds
WHEN = 1795332945.123456  # 2026-11-22 07:35:45.123456 UTC
PEER = {"ip": "127.0.0.1", "port": 53122, "conn": 17}


def message(msg: bytes, **extra: object) -> dict[str, object]:
    """A message event from 127.0.0.1:53122, connection 17, at WHEN."""
    return {"event": "message", "time": WHEN, **PEER, "seq": 4, "msg": msg, **extra}


SERVER_EVENTS: list[dict[str, Any]] = [
    {
        "event": "start",
        "time": T,
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 4242,
        "version": "0.1.0",
    },
    {"event": "connect", "time": T, **PEER},
    {"event": "message", "time": T + 0.5, **PEER, "seq": 1, "msg": b"Hello, Server!"},
    {
        "event": "disconnect",
        "time": T + 1,
        **PEER,
        "how": "clean",
        "messages": 1,
        "seconds": 1.000001,
    },
    {"event": "line_too_long", "time": T + 2, **PEER, "limit": 65536},
    {"event": "timeout", "time": T + 3, **PEER, "kind": "idle", "seconds": 300},
    {"event": "timeout", "time": T + 3, **PEER, "kind": "line", "seconds": 2.5},
    {"event": "rejected", "time": T + 4, **PEER, "reason": "server busy", "limit": 10000},
    {
        "event": "rejected",
        "time": T + 4,
        **PEER,
        "reason": "too many connections from this address",
        "limit": 1000,
    },
    {
        "event": "log_error",
        "time": T + 5,
        "seconds": 2.25,
        "error": "[Errno 28] No space left on device",
        "refused": 3,
        "lost": 1,
    },
    {
        "event": "log_error",
        "time": T + 5,
        "seconds": 0.5,
        "error": "[Errno 5] Input/output error",
        "refused": 2,
        "lost": 0,
        "left": 2,
    },
    {"event": "log_reopen", "time": T + 5, "state": "failed", "error": "[Errno 24] EMFILE"},
    {"event": "log_reopen", "time": T + 5, "state": "done", "seconds": 0.25, "attempts": 2},
    {"event": "stop", "time": T + 6, "connections": 1, "messages": 1, "refused": 2},
]

CLIENT_EVENTS: list[dict[str, Any]] = [
    {"event": "sent", "time": T, **PEER, "seq": 1, "msg": b"Hello (rtt 1.000 ms)"},
    {
        "event": "reply",
        "time": T + 0.001,
        **PEER,
        "seq": 1,
        "msg": b"Server received: Hello (rtt 1.000 ms)",
        "rtt_ms": 1.234,
    },
]


def expected(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The fields a format carries: no seq in text formats, no conn for a dash message."""
    out = dict(event)
    if fmt != "json":
        out.pop("seq", None)
    if fmt == "dash" and event["event"] == "message":
        out.pop("conn", None)
    return out
