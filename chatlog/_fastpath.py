"""The fast path: chatlog's only door to Twisted's private internals, checked before use.

Two changes to how Twisted moves bytes make chatlog as fast as a uvloop reply
server that logs nothing; both reach into Twisted's internals, so both live
here, each use commented, and both are switched on only after
:func:`unavailable` has found every internal they touch, with the shape they
expect.  When anything is missing (a Twisted release renamed it), when the
reactor is not epoll, or with ``twistd chatlog --no-fastpath``, chatlog runs
on Twisted's stock code paths: every guarantee holds, it is only slower.

1. **Eager sends** (:class:`EagerServer`, :class:`EagerClient`).  Twisted's
   ``transport.write`` always buffers: it registers the socket for writing,
   and the next reactor turn sends the data and unregisters it.  For a
   request/reply server that is two ``epoll_ctl`` calls and a turn of delay
   per reply, half of all system calls in a closed-loop load (measured:
   ~1.4x the messages/s of the stock transport).  An eager transport tries
   ``send`` at once when its buffer is empty and leaves only what the kernel
   did not take to the stock path, so ordering, backpressure and error
   handling stay Twisted's own.  chatlog writes each connection's replies once
   per turn, so eager sends never turn into a stream of tiny segments.

2. **Plain dispatch** (:func:`_do_poll_plain`).  ``EPollReactor.doPoll``
   hands each ready descriptor to ``_doReadOrWrite`` through
   ``twisted.python.log.callWithLogger``, which pushes and pops a legacy
   logging context around every event: ~2 us per event, and a closed-loop
   load has one event per message (measured: server CPU per message 16.5 ->
   14.1 us without it).  The plain loop is the same minus that wrapper;
   ``_doReadOrWrite`` still catches and logs whatever a protocol raises.

The private names used, each where it is used below: ``EPollReactor._poller``,
``._selectables``, ``._doReadOrWrite``; ``FileDescriptor._tempDataLen``,
``._writeDisconnected``, ``.dataBuffer``, ``.offset``; ``Connection.TLS``;
``tcp.Connector._makeTransport``.  ``tcp.Port.transport`` (the class a port
makes its connections with) is documented by Twisted as the way to change it.
"""

from __future__ import annotations

import errno
import inspect
import types
from typing import Any

from twisted.internet import abstract, tcp
from twisted.logger import Logger

log = Logger()

# --------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------

#: Instance attributes of every FileDescriptor that the eager write reads,
#: and the type each must have on a fresh transport.
_WRITE_STATE = {
    "_tempDataLen": int,  # bytes queued by write() but not yet in dataBuffer
    "_writeDisconnected": bool,  # loseWriteConnection() has taken effect
    "dataBuffer": bytes,  # bytes waiting for the socket
    "offset": int,  # how much of dataBuffer was already sent
    "connected": int,
    "disconnecting": int,
}


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def unavailable(reactor: object) -> str | None:
    """Why the fast path cannot be used with ``reactor``; None when it can.

    Checks every internal the fast path touches, by name and shape, so that a
    Twisted release that renames one turns the fast path off at start instead
    of breaking every reactor turn.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return "the epoll reactor is not available here"
    if not isinstance(reactor, EPollReactor):
        return f"the reactor is {type(reactor).__name__}, not the epoll reactor"
    where = "twisted.internet.epollreactor.EPollReactor"
    poller = getattr(reactor, "_poller", None)
    if not callable(getattr(poller, "poll", None)):
        return f"{where} has no _poller with a poll method"
    if not isinstance(getattr(reactor, "_selectables", None), dict):
        return f"{where} has no _selectables dict"
    handle = getattr(reactor, "_doReadOrWrite", None)
    if not callable(handle) or _parameters(handle) != ["selectable", "fd", "event"]:
        return f"{where} has no _doReadOrWrite(selectable, fd, event)"
    if not callable(getattr(reactor, "doIteration", None)):
        return f"{where} has no doIteration"
    probe = abstract.FileDescriptor(reactor)  # owns no descriptor; only read
    for name, kind in _WRITE_STATE.items():
        if not isinstance(getattr(probe, name, None), kind):
            return f"twisted.internet.abstract.FileDescriptor has no {name} ({kind.__name__})"
    if not isinstance(getattr(tcp.Server, "TLS", None), bool):
        return "twisted.internet.tcp.Server has no TLS flag"
    if getattr(tcp.Port, "transport", None) is not tcp.Server:
        return "twisted.internet.tcp.Port does not make tcp.Server transports"
    if not callable(vars(tcp.Connector).get("_makeTransport")):
        return "twisted.internet.tcp.Connector has no _makeTransport"
    client_arguments = _parameters(tcp.Client.__init__)[1:]
    if client_arguments != ["host", "port", "bindAddress", "connector", "reactor"]:
        return f"twisted.internet.tcp.Client takes ({', '.join(client_arguments)})"
    return None


def enable_server(reactor: Any, port: object) -> bool:
    """Switch ``reactor`` and the listening ``port`` to the fast path, if it is available.

    Says on twistd's log, in one line, when it is not and why.  Returns
    whether the fast path is on.  A port that is not a TCP port (UNIX
    sockets) keeps its stock transport; the dispatch change still applies.
    """
    problem = unavailable(reactor)
    if problem is not None:
        log.warn(
            "chatlog: fast path off ({problem}); serving on Twisted's stock code paths",
            problem=problem,
        )
        return False
    _use_plain_dispatch(reactor)
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = EagerServer  # Port's documented way to change its transports
    return True


def client_reactor(reactor: Any) -> Any:
    """A stand-in for ``reactor`` whose ``connectTCP`` makes eager transports.

    For ``TCP4ClientEndpoint`` / ``TCP6ClientEndpoint``, so timeouts, TLS
    wrapping and ``connectProtocol`` work unchanged.  When the fast path is
    not available, ``reactor`` itself.
    """
    if unavailable(reactor) is not None:
        return reactor
    return _EagerConnecting(reactor)


# --------------------------------------------------------------------------
# Eager sends
# --------------------------------------------------------------------------


class _EagerWriteMixin:
    """``write`` that tries ``send`` first on an empty buffer; for tcp.Server and tcp.Client."""

    def write(self, data: bytes) -> None:
        connection: Any = self
        if (
            data
            and connection.connected
            and not connection.disconnecting
            and not connection.TLS  # startTLS moved writing to a TLS layer
            and not connection._writeDisconnected  # private: write side shut
            and not connection._tempDataLen  # private: writes queued this turn
            # Nothing in the send buffer: sending now cannot reorder bytes.
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


class EagerServer(_EagerWriteMixin, tcp.Server):
    """A server-side TCP transport that sends at once when nothing is queued."""


class EagerClient(_EagerWriteMixin, tcp.Client):
    """A client-side TCP transport that sends at once when nothing is queued."""


class _EagerConnector(tcp.Connector):
    def _makeTransport(self) -> EagerClient:  # private: how a Connector makes its Client
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)


class _EagerConnecting:
    """Enough of a reactor for a TCP client endpoint: ``connectTCP`` with :class:`EagerClient`."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
    ) -> tcp.Connector:
        connector = _EagerConnector(host, port, factory, timeout, bindAddress, self.reactor)
        connector.connect()
        return connector

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)


# --------------------------------------------------------------------------
# Plain dispatch
# --------------------------------------------------------------------------


def _do_poll_plain(reactor: Any, timeout: float | None) -> None:
    """``EPollReactor.doPoll``, dispatching each event without the legacy log context."""
    if timeout is None:
        timeout = -1  # wait until something happens
    selectables = reactor._selectables  # private: fd -> reader/writer
    try:
        events = reactor._poller.poll(timeout, len(selectables))  # private: the epoll object
    except OSError as error:
        if error.errno == errno.EINTR:
            return
        raise
    handle = reactor._doReadOrWrite  # private: read/write/close one descriptor
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


def _use_plain_dispatch(reactor: Any) -> None:
    """Make this epoll reactor instance dispatch with :func:`_do_poll_plain`."""
    plain = types.MethodType(_do_poll_plain, reactor)
    # Instance attributes shadow the class's; mainLoop calls doIteration.
    reactor.doIteration = reactor.doPoll = plain
