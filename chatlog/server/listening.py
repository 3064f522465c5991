"""Where the server listens: the ``--port`` endpoint, shared or inherited with ``--workers``.

Every listening socket comes from a Twisted endpoint, so every endpoint
string works the same way (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``,
``haproxy:`` in front of any of them).  For ``haproxy:`` the endpoint is the
one after the prefix (:func:`listening_description`): chatlog reads the
PROXY header itself, strictly (:mod:`chatlog.server.proxy`), rather than
through Twisted's ``proxyEndpoint`` wrapper.

- one process: ``serverFromString(reactor, description)``;
- ``--workers N``, the first process: :class:`SharedPortEndpoint` binds N
  sockets to the ``--port`` address with ``SO_REUSEPORT``, serves the first
  and keeps the others for the workers (the kernel spreads new connections
  evenly over the sockets; one shared socket would let whichever process
  wakes first accept a whole burst);
- ``--workers N``, worker ``i``: :func:`inherited_endpoint` serves the socket
  it was handed as a file descriptor (``AdoptedStreamServerEndpoint``).

:func:`listen_now` listens on any of them at once, or ends startup with one
clear line (port in use, no permission); for chatlog's own connections it
puts an :class:`AcceptGuard` on the port, which stops accepting while no
file descriptor is free rather than let Twisted accept and drop clients.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatlog.server.errors import fail
from chatlog.server.factory import ChatFactory
from chatlog.server.proxy import PROXY_PREFIX

log = Logger()

#: The endpoint kinds --workers can share: TCP, possibly behind a PROXY header.
SHAREABLE = "a tcp:, tcp6: or haproxy:tcp: port"


def listening_description(description: str) -> str:
    """The endpoint that really listens: ``haproxy:tcp:5000`` listens on ``tcp:5000``."""
    if description.startswith(PROXY_PREFIX):
        return description[len(PROXY_PREFIX) :]
    return description


def listen_now(endpoint: IStreamServerEndpoint, description: str, factory: Any) -> IListeningPort:
    """Listen on ``endpoint`` at once, or fail startup with one clear line naming ``description``.

    A port of chatlog's connections (a :class:`ChatFactory`) gets an
    :class:`AcceptGuard`.
    """
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
    if isinstance(factory, ChatFactory):
        AcceptGuard.install(port, factory)
    return port


#: Descriptors kept free for what is not a client: a log reopened on SIGHUP,
#: a metrics scrape, a worker's pipe.
SPARE_DESCRIPTORS = 8


def _descriptors_in_use() -> int | None:
    """How many file descriptors this process has open (None where /proc cannot say)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return None


class AcceptGuard:
    """Keeps a listening port from accepting while no file descriptor is free.

    When ``accept(2)`` fails with EMFILE, Twisted's ``tcp.Port.doRead``
    closes a descriptor it keeps in reserve, accepts every connection
    waiting in the backlog and closes each at once: the clients get neither
    a reply nor a record, only a line on twistd's log.  The guard wraps the
    port's ``doRead`` so that it never gets there: each round of accepts is
    limited (the port's public ``numberAccepts``) to the descriptors free
    under the open-file limit, less :data:`SPARE_DESCRIPTORS`; with none
    free, the port stops reading and waiting clients stay in the backlog
    until a connection closes, when it starts again.  Both are said once on
    twistd's log.

    Descriptors are counted as those open when the guard started plus the
    factory's sockets, and counted exactly (``/proc/self/fd``) when that
    estimate comes near the limit, so the cost is only paid there.
    """

    def __init__(self, port: Any, factory: ChatFactory, limit: int) -> None:
        self.port = port
        self.factory = factory
        self.limit = limit
        self.paused = False
        self._accept: Callable[[], object] = port.doRead
        self._others = 0
        self._recount()

    @classmethod
    def install(
        cls, port: object, factory: ChatFactory, limit: int | None = None
    ) -> AcceptGuard | None:
        """Guard ``port`` if it accepts (a TCP or UNIX ``Port``) and /proc can count.

        ``limit`` is the open-file limit (by default, this process's own).
        """
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if (
            not isinstance(getattr(port, "numberAccepts", None), int)
            or not callable(getattr(port, "doRead", None))
            or limit == resource.RLIM_INFINITY
            or _descriptors_in_use() is None
        ):
            return None
        guard = cls(port, factory, limit)
        # The reactor calls the port's doRead when connections wait: an
        # instance attribute takes the place of the class's method.
        port.doRead = guard.doRead  # type: ignore[attr-defined]
        factory.on_socket_closed = guard.socket_closed
        return guard

    def _recount(self) -> None:
        used = _descriptors_in_use()
        if used is not None:
            self._others = used - self.factory.sockets

    def free(self) -> int:
        """Descriptors a round of accepts may take now."""
        free = self.limit - SPARE_DESCRIPTORS - self._others - self.factory.sockets
        if free < 256:
            self._recount()  # near the limit: count exactly
            free = self.limit - SPARE_DESCRIPTORS - self._others - self.factory.sockets
        return free

    def doRead(self) -> object:
        free = self.free()
        if free <= 0:
            if not self.paused:
                self.paused = True
                self.port.stopReading()
                log.warn(
                    "chatlog: no file descriptor free (open-file limit {limit}): "
                    "not accepting connections until one closes",
                    limit=self.limit,
                )
            return None
        self.port.numberAccepts = min(self.port.numberAccepts, free)
        return self._accept()

    def socket_closed(self) -> None:
        port = self.port
        if self.paused and port.connected and not port.disconnecting and self.free() > 0:
            self.paused = False
            port.startReading()
            log.info("chatlog: file descriptors free again: accepting connections")


@implementer(IStreamServerEndpoint)
class SharedPortEndpoint:
    """``count`` listening sockets on one TCP address (``SO_REUSEPORT``); serves the first.

    After :meth:`listen`, :attr:`sockets` holds all of them: socket ``i`` is
    for worker ``i``.  The address, port and backlog are whatever Twisted's
    endpoint parser makes of the description.
    """

    def __init__(self, reactor: Any, description: str, count: int) -> None:
        self.reactor = reactor
        self.description = description
        self.count = count
        self.sockets: list[socket.socket] = []

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        # The endpoint Twisted parses from the description asks its reactor
        # to listenTCP(port, factory, backlog, interface): _ReusePortBinder
        # answers that call by binding the shared sockets instead.
        endpoint = serverFromString(_ReusePortBinder(self), self.description)
        listening: Deferred[IListeningPort] = endpoint.listen(protocolFactory)
        return listening


class _ReusePortBinder:
    """Stands in for the reactor of a TCP endpoint: ``listenTCP`` binds N shared sockets."""

    def __init__(self, shared: SharedPortEndpoint) -> None:
        self.shared = shared

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sockets: list[socket.socket] = []
        try:
            for _ in range(self.shared.count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((interface, port))
                port = sock.getsockname()[1]  # port 0: the others share the one it got
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self.shared.sockets = sockets
        listening: IListeningPort = self.shared.reactor.adoptStreamPort(
            sockets[0].fileno(), family, factory
        )
        return listening

    def __getattr__(self, name: str) -> Any:
        # listenSSL, listenUNIX...: endpoints --workers cannot share.
        raise ValueError(f"--workers needs {SHAREABLE}, not {self.shared.description}")


def inherited_endpoint(reactor: Any, fd: int) -> IStreamServerEndpoint:
    """The listening socket a worker was handed as ``fd``."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        family = probe.family
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(reactor, fd, family)
    return endpoint


def check_port_free(description: str) -> None:
    """Fail startup with one clear line if the TCP port of ``description`` is taken.

    For ``twistd`` without ``-n``: it listens only after daemonizing, and a
    failure there reaches the terminal as twistd's ``An error has occurred:
    b'...'`` cut at 100 bytes.  This binds and closes a probe socket before
    (the real listen may still fail if the port is taken in between; it then
    says so in twistd's log).  Endpoints other than TCP are left to the listen.
    """
    outcome: list[Any] = []
    endpoint = serverFromString(_PortProbe(), listening_description(description))
    endpoint.listen(cast(Any, None)).addBoth(outcome.append)
    if outcome and isinstance(outcome[0], Failure):
        fail(f"cannot listen on {description}: {outcome[0].value}")


class _PortProbe:
    """Stands in for the reactor of a TCP endpoint: ``listenTCP`` binds a socket and closes it."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> None:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As Twisted's own tcp.Port does: a port in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((interface, port))

    def __getattr__(self, name: str) -> Any:
        # listenSSL, listenUNIX...: not probed.
        return lambda *args, **kwargs: None
