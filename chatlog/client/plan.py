"""What a load run sends and expects: the plan, the messages, the replies.

Every message carries its id, ``c<conn>-s<seq>-`` padded with ``x`` to
``--size`` bytes with its newline (the bench's ``--size`` counts the same
way, so bytes per second mean bytes on the wire in both): replies come back
in order on a connection and are checked against what was sent (``--expect``
and the message), and the server's log can be checked for every id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from chatlog.wire import ERROR_SERVER_BUSY, ERROR_TOO_MANY_FROM_ADDRESS, REPLY_PREFIX

#: The id at the start of every load message: connection and sequence number.
MESSAGE_ID = re.compile(rb"c(\d+)-s(\d+)-")
#: chatlog's answers to a connection it will not serve (it closes it after them).
REFUSALS = frozenset(
    line.rstrip(b"\n") for line in (ERROR_SERVER_BUSY, ERROR_TOO_MANY_FROM_ADDRESS)
)


def payload(conn: int, seq: int, size: int) -> bytes:
    """The load message ``seq`` of connection ``conn``: its id padded to ``size`` bytes."""
    return (b"c%d-s%d-" % (conn, seq)).ljust(size, b"x")


def why_lost(reason: Failure) -> str:
    """A connection's end in a few words: closed, reset, TLS refused..."""
    if reason.check(ConnectionDone):
        return "closed by the server"
    try:
        from OpenSSL.SSL import Error as TLSError
    except ImportError:  # no TLS support installed: no TLS failures either
        return reason.getErrorMessage()
    if reason.check(TLSError):
        args = getattr(reason.value, "args", None) or [[]]
        causes = [entry[-1] for entry in args[0] if entry]
        return "TLS failed: " + ("; ".join(causes) or "handshake error")
    return reason.getErrorMessage()


@dataclass
class LoadPlan:
    """What to send: the load options, checked."""

    connections: int = 1
    messages: int | None = None  # per connection (counted ones, after --warmup)
    duration: float | None = None  # seconds, after --warmup
    size: int = 15  # message bytes before the newline (--size minus one)
    pipeline: int = 1
    rate: float | None = None  # total msgs/s: open loop
    warmup: float = 0.0
    timeout: float = 10.0  # give up when no reply came for this long
    conn_offset: int = 0  # --procs: connection ids of this worker start after it
    expect: bytes = REPLY_PREFIX  # what a reply is: this, then the message

    @classmethod
    def from_options(cls, options: Any) -> LoadPlan:
        return cls(
            connections=options.connections,
            messages=options.messages,
            duration=options.duration,
            size=max(0, options.size - 1),  # --size counts the newline
            pipeline=options.pipeline,
            rate=options.rate,
            warmup=options.warmup,
            timeout=options.timeout,
            conn_offset=options.conn_offset,
            expect=options.expect,
        )
