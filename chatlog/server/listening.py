"""Where the server listens: the ``--port`` endpoint, shared or inherited with ``--workers``.

Every listening socket comes from a Twisted endpoint, so every endpoint
string works the same way (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``,
``haproxy:`` in front of any of them):

- one process: ``serverFromString(reactor, description)``;
- ``--workers N``, the first process: :class:`SharedPortEndpoint` binds N
  sockets to the ``--port`` address with ``SO_REUSEPORT``, serves the first
  and keeps the others for the workers (the kernel spreads new connections
  evenly over the sockets; one shared socket would let whichever process
  wakes first accept a whole burst);
- ``--workers N``, worker ``i``: :func:`inherited_endpoint` serves the socket
  it was handed as a file descriptor (``AdoptedStreamServerEndpoint``,
  wrapped by ``proxyEndpoint`` for an ``haproxy:`` port).

:func:`listen_now` listens on any of them at once, or ends startup with one
clear line (port in use, no permission).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from chatlog.server.errors import fail

#: The endpoint kinds --workers can share: TCP, possibly behind a PROXY header.
SHAREABLE = "a tcp:, tcp6: or haproxy:tcp: port"


def listen_now(endpoint: IStreamServerEndpoint, description: str, factory: Any) -> IListeningPort:
    """Listen on ``endpoint`` at once, or fail startup with one clear line naming ``description``."""
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


def inherited_endpoint(reactor: Any, description: str, fd: int) -> IStreamServerEndpoint:
    """The listening socket a worker was handed as ``fd``, served as ``description`` says."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        family = probe.family
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(reactor, fd, family)
    if description.startswith("haproxy:"):
        endpoint = proxyEndpoint(endpoint)
    return endpoint
