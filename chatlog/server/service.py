"""The running server: listen, keep the log open, stop without losing a record.

:class:`ChatlogService` ties the protocol layer to a process lifetime, over
one listening endpoint (built by :mod:`chatlog.server.tap`):

- ``privilegedStartService`` opens the log and listens (before twistd sheds
  privileges), turning "address already in use" and the like into one clear
  line on stderr and a non-zero exit instead of a traceback, then switches on
  the fast path (:mod:`chatlog._fastpath`) unless told not to;
- ``startService`` writes ``Server Started`` (with the real address, so
  ``--port tcp:0`` is usable) and installs a SIGHUP handler that reopens the
  log, for logrotate;
- ``stopService`` (SIGTERM, Ctrl-C) stops listening, sends the replies that
  are due, closes every connection (its write side first, so replies are not lost
  to a reset; aborting those that do not read and close within a grace period), writes ``Server Stopped`` (connections, messages logged
  and refused) and closes the log.

It listens itself rather than through ``StreamServerEndpointService``,
because it needs the listening port (for its address, and to stop it first
on the way down), which that service keeps private.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger

import chatlog
from chatlog import _fastpath
from chatlog.log import LogWriter, format_at_end
from chatlog.server.errors import fail
from chatlog.server.factory import ChatFactory
from chatlog.server.listening import check_port_free, listen_now
from chatlog.server.protocol import peer_address
from chatlog.wire import format_address

log = Logger()


def describe_address(address: Any) -> str:
    """``127.0.0.1:5000``, ``[::1]:5000`` or a UNIX socket's path."""
    ip, port = peer_address(address)
    if ip == "unix":
        return str(getattr(address, "name", address))
    return format_address(ip, port)


def _is_dev_null(fd: int) -> bool:
    """Whether ``fd`` is /dev/null (a daemon's standard output), where writes vanish."""
    try:
        here, null = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (null.st_dev, null.st_ino)


class ChatlogService(service.Service):
    """Listen on one endpoint and keep the message log for its connections."""

    name = "chatlog"

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        factory: ChatFactory,
        writer: LogWriter,
        reactor: Any,
        fastpath: bool = True,
    ) -> None:
        """
        :param endpoint: where to listen.
        :param description: the endpoint as the user wrote it, for messages
            and the ``Server Started`` record.
        :param fastpath: use :mod:`chatlog._fastpath` if it is available.
        """
        self.endpoint = endpoint
        self.endpoint_description = description
        self.factory = factory
        self.writer = writer
        self.reactor = reactor
        self.fastpath = fastpath
        self.port: IListeningPort | None = None
        #: Called on SIGHUP before the log is reopened (the worker pool relays it).
        self.on_sighup: list[Callable[[], object]] = []
        self._previous_sighup: Any = None

    def preflight(self) -> None:
        """Refuse now what starting would refuse later: for twistd without ``-n``,
        which starts services only after it has daemonized (see
        :func:`~chatlog.server.listening.check_port_free`)."""
        self._check_log_format()
        check_port_free(self.endpoint_description)

    def _check_log_format(self) -> None:
        path, fmt = self.writer.path, self.writer.format_record.name
        existing = format_at_end(path) if path != "-" else None
        if existing is not None and existing != fmt:
            # Appended, the new records would read as garbage to the report
            # (and to every tool that follows the file) for as long as it lives.
            fail(
                f"--format {fmt}: {path} holds {existing} records, and a log keeps one "
                f"format; give another --logfile, or move {path} away"
            )

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._check_log_format()
        try:
            self.writer.open()
        except OSError as error:
            fail(f"cannot open log {self.writer.path}: {error.strerror or error}")
        if self.writer.path == "-" and _is_dev_null(1):
            fail("--logfile -: standard output is /dev/null, where no record would be kept")
        self.port = listen_now(self.endpoint, self.endpoint_description, self.factory)
        if self.fastpath:
            self.fastpath = _fastpath.enable_server(self.reactor, self.port)
        else:
            log.info(
                "chatlog: fast path off (--no-fastpath); serving on Twisted's stock code paths"
            )

    @property
    def address(self) -> str:
        """Where the server listens, as ``host:port`` (the real port for ``tcp:0``)."""
        return describe_address(self.port.getHost()) if self.port is not None else "-"

    def startService(self) -> None:
        super().startService()
        if self.port is None:  # started without privilegedStartService (tests)
            self.privilegedStartService()
        start: dict[str, Any] = {}
        node = self.writer.format_record.node
        if node is not None:
            start["node"] = node
        self.writer(
            {
                **start,
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
        """Continue the log in a fresh file at the same path (logrotate's postrotate).

        Workers are told first, so that a reopen that fails here (the writer
        then retries it by itself) never keeps them from reopening theirs.
        """
        for relay in self.on_sighup:
            relay()
        if self.writer.reopen():
            log.info("chatlog: reopened log {path}", path=self.writer.path)

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
        # closeAll fires when the last connection forgets itself, just before
        # it stages its Disconnection record: a turn later, that is staged too.
        stopped.addCallback(lambda _: deferLater(self.reactor, 0, lambda: None))
        stopped.addCallback(self._write_stopped)
        return stopped

    def _write_stopped(self, _: object) -> None:
        # Every message is written or refused by now, so the counts are final.
        self.writer.flush()
        self.writer(
            {
                "event": "stop",
                "time": self.reactor.seconds(),
                "connections": self.factory.connections_total,
                "messages": self.writer.messages_logged,
                "refused": self.writer.messages_refused,
            }
        )
        self.writer.close()
        log.info("chatlog stopped")


class MetricsService(service.Service):
    """Serve Prometheus metrics over HTTP on one endpoint."""

    name = "metrics"

    def __init__(
        self, endpoint: IStreamServerEndpoint, description: str, site: Any, reactor: Any
    ) -> None:
        self.endpoint = endpoint
        self.endpoint_description = description
        self.site = site
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.port = listen_now(self.endpoint, self.endpoint_description, self.site)

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
