"""A TCP transport that sends at once when nothing is queued.

Twisted's ``transport.write`` always buffers: it registers the socket for
writing, and the next reactor turn sends the data and unregisters it.  For a
request/reply server that is two ``epoll_ctl`` calls and a turn of delay per
reply, half of all system calls in a closed-loop load.  :class:`EagerServer`
tries ``send`` first when its buffer is empty and leaves only what the kernel
did not take to the stock path, so ordering, backpressure and error handling
stay Twisted's own.

chatlog writes each connection's replies once per turn, after the log write,
so eager sends never turn into a stream of tiny segments; ``TCP_NODELAY`` is
set by the protocol so that those single writes are not held back by Nagle.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


class EagerWriteMixin:
    """``write`` that tries ``send`` first on an empty buffer; for tcp.Server and tcp.Client."""

    def write(self, data: bytes) -> None:
        connection: Any = self
        if (
            data
            and connection.connected
            and not connection.disconnecting
            and not connection.TLS
            and not connection._writeDisconnected
            and not connection._tempDataLen
            and connection.offset == len(connection.dataBuffer)
        ):
            try:
                sent = connection.socket.send(data)
            except OSError:
                # EAGAIN: the kernel buffer is full.  Anything else: the stock
                # path meets the same error in doWrite and closes properly.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[misc]


class EagerServer(EagerWriteMixin, tcp.Server):
    """A server-side TCP transport that sends at once when nothing is queued."""


def use_eager_transport(port: Any) -> bool:
    """Make a listening ``tcp.Port`` create :class:`EagerServer` transports.

    Other listening ports (UNIX sockets, anything not ``tcp.Port``) are left
    as they are.  Returns whether the port was changed.
    """
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = EagerServer
        return True
    return False
