"""Closing a connection without throwing its last replies away.

The protocol decides *when* a connection closes and *why* (:class:`Ending`);
this module is *how*.  A close the client started (it shut its write side, so
nothing is left to read) is simple: :func:`close_when_sent` closes once the
replies are sent.  A close the server decides (a policy close: a line too long, a
timeout, a refused connection; or the server stopping) must deal with a client
that is still sending, and that is what :class:`ServerClose` is for.

Closing a TCP socket whose receive queue holds bytes the server has not read
makes the kernel answer with a reset (RST) instead of a FIN, and a reset
throws away what the client has not received yet: replies the log already
holds, still in the server's send queue.  That is the common case, not a rare
one: a client that sends faster than it reads is exactly the one the server
stops reading (backpressure), so its input piles up unread (measured: at a
stop, a client that had sent a megabyte more than the server read got the
replies to ~33,000 of the ~97,000 lines the log held, then a reset).  So a
server close:

1. stops being the transport's producer: with a paused producer registered,
   Twisted would wait for it to be resumed before closing;
2. shuts only the write side after the replies already queued
   (``loseWriteConnection``): the client reads them, then the end of stream;
3. reads on and throws away whatever the client still sends (the protocol
   ignores bytes read after the close decision), so nothing is left unread;
   when the client closes its side, the socket is closed cleanly;
4. aborts the connection if that has not happened within the grace period:
   a client that neither reads nor closes cannot hold the server.

A transport that cannot shut one side by itself (TLS, whose stream the TCP
connection below must not end under it, or a test's ``StringTransport``) gets
``loseConnection`` instead, and still reads on (TLS waits for the client's
``close_notify``).
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.interfaces import IReactorTime


class Phase(enum.Enum):
    """Where a connection is in its life; each phase reads less than the one before."""

    #: Behind a PROXY-protocol balancer, before the header that names the client.
    AWAITING_PEER = enum.auto()
    #: Admitted: every line is logged and answered.
    OPEN = enum.auto()
    #: Takes nothing more it reads; sends the replies and notice that are due,
    #: then closes (how: :mod:`chatlog.server.closing`).
    CLOSING = enum.auto()
    #: ``connectionLost`` has run.
    CLOSED = enum.auto()


class Ending(enum.Enum):
    """Why a connection is closing."""

    #: Refused at connect (over a connection limit): no disconnect record.
    REFUSED = enum.auto()
    #: The server closed it: a line too long or a timeout.
    POLICY = enum.auto()
    #: The server is stopping.
    SHUTDOWN = enum.auto()
    #: The client shut its write side and has every reply.
    CLIENT_DONE = enum.auto()


def can_half_close(transport: object) -> bool:
    """Whether ``transport`` itself can shut its write side and go on reading.

    Asked of the class: a wrapper such as Twisted's TLS transport hands names
    it lacks to the TCP transport below, whose ``loseWriteConnection`` would
    end the TCP stream before the TLS layer has sent what it holds.
    """
    return callable(getattr(type(transport), "loseWriteConnection", None))


def _stop_producing(transport: Any) -> None:
    if transport.producer is not None:
        # With a paused producer registered, Twisted would wait for it to be
        # resumed before honouring a close.
        transport.unregisterProducer()


def close_when_sent(transport: Any) -> None:
    """Close ``transport`` once what it has queued is sent (the client sends nothing more)."""
    _stop_producing(transport)
    transport.loseConnection()


class ServerClose:
    """A close the server decided: replies out, write side shut, input drained, abort if slow."""

    def __init__(
        self, transport: Any, clock: IReactorTime, grace: float, client_done: bool
    ) -> None:
        """Start closing ``transport``: its client gets ``grace`` seconds to read and close.

        :param client_done: the client already shut its write side (nothing
            is left to read: close as soon as the replies are sent).
        """
        self.transport = transport
        #: Only our write side is shut: the connection ends when the client closes.
        self.half_closed = False
        self._abort = clock.callLater(grace, transport.abortConnection)
        if client_done or transport.disconnecting:
            close_when_sent(transport)
            return
        _stop_producing(transport)
        # The protocol may have paused reading (a full send buffer, lines held
        # back): unread input is what would turn the close into a reset.
        transport.resumeProducing()
        if can_half_close(transport):
            self.half_closed = True
            transport.loseWriteConnection()
        else:
            transport.loseConnection()

    def client_closed(self) -> None:
        """The client shut its side: nothing can be left unread, close the socket."""
        if self.half_closed:
            self.transport.loseConnection()

    def cancel(self) -> None:
        """The connection is gone: the abort is not needed."""
        if self._abort.active():
            self._abort.cancel()
