"""The running server: listen, keep the log open, stop without losing a record.

:class:`ChatlogService` ties the protocol layer to a process lifetime:

- ``privilegedStartService`` opens the log and listens (before twistd sheds
  privileges), and turns "address already in use" and the like into one clear
  line on stderr and a non-zero exit instead of a traceback;
- ``startService`` writes ``Server Started`` (with the real address, so
  ``--port tcp:0`` is usable) and installs a SIGHUP handler that reopens the
  log, for logrotate;
- ``stopService`` (SIGTERM, Ctrl-C) stops listening, sends the replies that
  are due, closes every connection (aborting those that do not read within a
  grace period), writes ``Server Stopped`` and closes the log.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, NoReturn

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

import chatlog
from chatlog._fastpath import use_eager_transport, use_plain_dispatch
from chatlog.log import LogWriter
from chatlog.server.protocol import ChatFactory, peer_address
from chatlog.wire import format_address

log = Logger()


class StartupError(Exception):
    """A problem a user must fix (port in use, log not writable): one line, exit 1."""


def _report_startup_error(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if isinstance(value, StartupError):
        # twistd has replaced sys.stderr with its log by now; the user's
        # terminal is the original stderr.
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"chatlog: {value}\n")
        stream.flush()
        return
    sys.__excepthook__(kind, value, tb)


def fail(message: str) -> NoReturn:
    """Stop startup with ``message`` as one line on stderr and exit status 1."""
    # twistd shows a traceback for any exception at startup; a user who
    # typed a busy port deserves one line.  The hook changes only how
    # StartupError is printed; every other exception keeps its traceback.
    sys.excepthook = _report_startup_error
    raise StartupError(message)


def listen_now(reactor: Any, description: str, factory: Any) -> IListeningPort:
    """Listen on endpoint ``description`` at once, or fail startup with one clear line."""
    endpoint = serverFromString(reactor, description)
    outcome: list[Any] = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        # Twisted's server endpoints all listen at once; one that does not
        # is refused rather than left half-started.
        fail(f"{description} did not start listening at once")
    if isinstance(outcome[0], Failure):
        problem = outcome[0].value
        reason = getattr(problem, "socketError", None) or problem
        fail(f"cannot listen on {description}: {reason}")
    port: IListeningPort = outcome[0]
    return port


def describe_address(address: Any) -> str:
    """``127.0.0.1:5000``, ``[::1]:5000`` or a UNIX socket's path."""
    ip, port = peer_address(address)
    if ip == "unix":
        return str(getattr(address, "name", address))
    return format_address(ip, port)


class ChatlogService(service.Service):
    """Listen on one endpoint and keep the message log for its connections."""

    name = "chatlog"

    def __init__(
        self, endpoint: str, factory: ChatFactory, writer: LogWriter, reactor: Any
    ) -> None:
        self.endpoint_description = endpoint
        self.factory = factory
        self.writer = writer
        self.reactor = reactor
        self.port: IListeningPort | None = None
        #: How to listen: on the endpoint; a worker adopts an inherited socket instead.
        self.listen: Callable[[Any, str, ChatFactory], IListeningPort] = listen_now
        #: Called after the log was reopened on SIGHUP (the worker pool relays it).
        self.reopen_hooks: list[Callable[[], object]] = []
        self._previous_sighup: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self.writer.open()
        except OSError as error:
            fail(f"cannot open log {self.writer.path}: {error.strerror or error}")
        self.port = self.listen(self.reactor, self.endpoint_description, self.factory)
        use_eager_transport(self.port)
        use_plain_dispatch(self.reactor)

    @property
    def address(self) -> str:
        """Where the server listens, as ``host:port`` (the real port for ``tcp:0``)."""
        return describe_address(self.port.getHost()) if self.port is not None else "-"

    def startService(self) -> None:
        super().startService()
        if self.port is None:  # started without privilegedStartService (tests)
            self.privilegedStartService()
        self.writer(
            {
                "event": "start",
                "time": self.reactor.seconds(),
                "listen": self.address,
                "endpoint": self.endpoint_description,
                "pid": os.getpid(),
                "version": chatlog.__version__,
            }
        )
        self.writer.flush()
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        # Said once the reactor runs, so its SIGTERM handler is in place by
        # the time anyone acts on this line.
        self.reactor.callWhenRunning(
            log.info,
            "chatlog {version} listening on {address}, logging to {path}",
            version=chatlog.__version__,
            address=self.address,
            path=self.writer.path,
        )

    def _sighup(self, signum: int, frame: FrameType | None) -> None:
        # A signal can arrive in the middle of a flush: do the work in the reactor.
        self.reactor.callFromThread(self.reopenLog)

    def reopenLog(self) -> None:
        """Continue the log in a fresh file at the same path (logrotate's postrotate)."""
        self.writer.reopen()
        log.info("chatlog: reopened log {path}", path=self.writer.path)
        for hook in self.reopen_hooks:
            hook()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        port, self.port = self.port, None
        stopped: Deferred[Any] = maybeDeferred(port.stopListening) if port else succeed(None)
        # Replies already due go out before the connections are closed.
        stopped.addCallback(lambda _: self.writer.flush())
        stopped.addCallback(lambda _: self.factory.closeAll())
        stopped.addCallback(self._write_stopped)
        return stopped

    def _write_stopped(self, _: object) -> None:
        self.writer(
            {
                "event": "stop",
                "time": self.reactor.seconds(),
                "connections": self.factory.connections_total,
                "messages": self.factory.messages_total,
            }
        )
        self.writer.close()
        log.info("chatlog stopped")


class MetricsService(service.Service):
    """Serve Prometheus metrics over HTTP on one endpoint."""

    name = "metrics"

    def __init__(self, endpoint: str, site: Any, reactor: Any) -> None:
        self.endpoint_description = endpoint
        self.site = site
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.port = listen_now(self.reactor, self.endpoint_description, self.site)

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self.privilegedStartService()
        assert self.port is not None
        self.reactor.callWhenRunning(
            log.info,
            "chatlog metrics at http://{address}/metrics",
            address=describe_address(self.port.getHost()),
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)
