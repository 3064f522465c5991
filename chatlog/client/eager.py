"""A TCP client transport that sends at once when nothing is queued.

Twisted's ``transport.write`` buffers: it registers the socket for writing,
and the next reactor turn sends the data and unregisters it.  For a load
generator that is two ``epoll_ctl`` calls, a reactor dispatch and a turn of
delay per batch of messages; measured at 100 connections in closed loop it
was over a third of the client's CPU time, and the delay is counted in every
round trip.  :class:`EagerClient` tries ``send`` first when its buffer is
empty and leaves whatever the kernel did not take to the stock path, so
ordering, backpressure and errors stay Twisted's own.  (The server does the
same with :class:`chatlog.eager.EagerServer`.)

:class:`EagerConnecting` is a stand-in reactor for ``TCP4ClientEndpoint``
and ``TCP6ClientEndpoint`` whose ``connectTCP`` uses that transport, so the
endpoints (timeouts, TLS wrapping, ``connectProtocol``) work unchanged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

from chatlog.eager import EagerWriteMixin


class EagerClient(EagerWriteMixin, tcp.Client):
    """A ``tcp.Client`` whose ``write`` tries ``send`` first on an empty buffer."""


class EagerConnector(tcp.Connector):
    def _makeTransport(self) -> EagerClient:
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)


class EagerConnecting:
    """Enough of a reactor for a TCP client endpoint: ``connectTCP`` with :class:`EagerClient`."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
    ) -> EagerConnector:
        connector = EagerConnector(host, port, factory, timeout, bindAddress, self.reactor)
        connector.connect()
        return connector

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)
