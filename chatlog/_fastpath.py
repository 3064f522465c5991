"""An epoll reactor loop without the legacy log context around every event.

Twisted's ``EPollReactor.doPoll`` hands each ready descriptor to
``_doReadOrWrite`` through ``twisted.python.log.callWithLogger``, which calls
``logPrefix()`` and pushes and pops a legacy logging context so that a log
line written during the callback is tagged with the connection.  That costs
about 2 µs per event, and a closed-loop request/reply load has one event per
message: measured with ``python -m chatlog.bench`` at 100 connections, the
server's CPU per message fell 16.5 -> 14.1 µs (-15%) without it.

:func:`use_plain_dispatch` gives one reactor instance the same loop minus
that wrapper.  Everything else is the stock code path: ``_doReadOrWrite``
still catches and logs whatever a protocol raises and disconnects it; only
the ``system`` prefix of such log lines is ``-`` instead of the
connection's.  Other reactors (``twistd --reactor``) are left alone.
"""

from __future__ import annotations

import errno
import types
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

log = Logger()


def _do_poll_plain(reactor: Any, timeout: float | None) -> None:
    """``EPollReactor.doPoll``, dispatching each event directly."""
    if timeout is None:
        timeout = -1  # wait until something happens
    try:
        events = reactor._poller.poll(timeout, len(reactor._selectables))
    except OSError as error:
        if error.errno == errno.EINTR:
            return
        raise
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue  # removed by an earlier callback of this same poll
        try:
            handle(selectable, fd, event)
        except Exception:
            # _doReadOrWrite handles the protocol's errors itself; this is
            # what callWithLogger would have caught on top of that.
            log.failure("unhandled error dispatching descriptor {fd}", fd=fd)


def use_plain_dispatch(reactor: Any) -> bool:
    """Make an epoll reactor dispatch events without the legacy log context.

    Returns whether the reactor was changed (only an ``EPollReactor`` is).
    """
    from twisted.internet.epollreactor import EPollReactor

    if not isinstance(reactor, EPollReactor):
        return False
    plain = types.MethodType(_do_poll_plain, reactor)
    # The instance attributes shadow the class's; mainLoop calls doIteration.
    reactor.doIteration = reactor.doPoll = plain  # type: ignore[method-assign]
    return True


# ---- eager transports (temporary merge) ----


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
