"""What client and server both speak on the wire.

A client sends lines ending in ``\\n`` (a trailing ``\\r`` is dropped); the
server answers each line with ``Server received: <the line's bytes>\\n``, or
with a line beginning ``ERROR `` when it cannot.  The server sends one of the
error lines below and then closes, except ``ERROR log unavailable``, which
answers one line and keeps the connection open.

This module is the one place these bytes are spelled, so the server, the
client and the report cannot disagree about them.
"""

from __future__ import annotations

DELIMITER = b"\n"
REPLY_PREFIX = b"Server received: "
ERROR_PREFIX = b"ERROR "

#: The line's record could not be written: the message was not logged.
ERROR_LOG_UNAVAILABLE = b"ERROR log unavailable\n"
#: Refused at connect: the server has ``--max-connections`` open.
ERROR_SERVER_BUSY = b"ERROR server busy\n"
#: Refused at connect: this address has ``--max-per-ip`` open.
ERROR_TOO_MANY_FROM_ADDRESS = b"ERROR too many connections from your address\n"
#: Closed: idle for ``--idle-timeout``, or a line unfinished for ``--line-timeout``.
ERROR_TIMEOUT = b"ERROR timeout\n"


def error_line_too_long(limit: int) -> bytes:
    """The reply to a line longer than ``--max-line``; the connection is closed after it."""
    return b"ERROR line too long (max %d bytes)\n" % limit


#: What stands between two lines' replies sent as one piece: the replies to
#: ``lines`` are ``REPLY_PREFIX + REPLY_SEPARATOR.join(lines) + DELIMITER``.
REPLY_SEPARATOR = DELIMITER + REPLY_PREFIX


def format_address(ip: str, port: int) -> str:
    """``127.0.0.1:5000``, or ``[::1]:5000`` for IPv6, so the port stays unambiguous."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
