"""``--workers N``: N processes serving one listening socket, each with its own log.

The twistd process opens N listening sockets on the same address with
``SO_REUSEPORT`` and serves the first itself (worker 0); :class:`WorkerPool`
starts workers 1..N-1 with ``python -m chatlog.server.workers``, handing worker ``i``
socket ``i`` as file descriptor 3.  The kernel spreads new connections evenly
over the sockets (one shared socket would let whichever process wakes first
accept a whole burst), so N processes use N cores.  The parent keeps every
socket open, so a restarted worker serves the connections that queued on its
socket meanwhile.

Each worker writes its own log, ``LOGFILE.w<i>`` (one ``O_APPEND`` writer per
file keeps "ack implies logged" per process with no locking), and numbers its
connections ``i+1, i+1+N, i+1+2N...``, so connection ids stay unique across
the files; ``python -m chatlog.report chatlog.log.w*`` reads them together.

The pool relays SIGHUP to every worker (log rotation), stops them all on
SIGTERM before twistd exits, and restarts a worker that dies.  A worker whose
parent is gone sees its standard input close and stops by itself, so no
worker outlives a ``kill -9`` of the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

LISTEN_FD = 3
#: Seconds a worker gets to stop cleanly after SIGTERM before it is killed.
STOP_GRACE = 10.0
#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0


def worker_logfile(logfile: str, worker: int, workers: int) -> str:
    """The log file of one worker: the path itself for a single process."""
    return logfile if workers == 1 else f"{logfile}.w{worker}"


class WorkerProcess(protocol.ProcessProtocol):
    """One worker child: relays its output to our log, tells the pool when it ends."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._relay(data)

    def errReceived(self, data: bytes) -> None:
        self._relay(data)

    def _relay(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.info("[worker {index}] {line}", index=self.index, line=line)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool.workerEnded(self, reason)


class WorkerPool(service.Service):
    """Start, signal, stop and restart workers 1..N-1 around the listening port."""

    name = "workers"

    def __init__(self, chatlog: Any, argv: list[str], workers: int, reactor: Any) -> None:
        """
        :param chatlog: the :class:`chatlog.server.service.ChatlogService` of worker 0;
            the pool makes it listen on the first of the shared sockets.
        :param argv: the ``twistd chatlog`` options, passed on to each worker.
        """
        self.chatlog = chatlog
        self.sockets: list[socket.socket] = []
        chatlog.listen = self._listen
        self.argv = argv
        self.workers = workers
        self.reactor = reactor
        self.children: dict[int, WorkerProcess] = {}
        self.transports: dict[int, Any] = {}

    def _listen(self, reactor: Any, description: str, factory: Any) -> IListeningPort:
        self.sockets = reuseport_sockets(description, self.workers)
        return adopt_socket(reactor, self.sockets[0].fileno(), description, factory)

    def startService(self) -> None:
        super().startService()
        self.chatlog.reopen_hooks.append(self.relaySighup)
        for index in range(1, self.workers):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        child = WorkerProcess(self, index)
        argv = [sys.executable, "-m", "chatlog.server.workers", str(index), *self.argv]
        self.transports[index] = self.reactor.spawnProcess(
            child,
            sys.executable,
            argv,
            env=os.environ.copy(),
            childFDs={0: "w", 1: "r", 2: "r", LISTEN_FD: self.sockets[index].fileno()},
        )
        self.children[index] = child

    def relaySighup(self) -> None:
        for transport in self.transports.values():
            transport.signalProcess("HUP")

    def workerEnded(self, child: WorkerProcess, reason: Failure) -> None:
        if self.children.get(child.index) is not child:
            return
        del self.children[child.index]
        del self.transports[child.index]
        if self.running:
            log.error(
                "chatlog worker {index} ended ({reason}); starting it again",
                index=child.index,
                reason=reason.value,
            )
            self.reactor.callLater(RESTART_DELAY, self._respawn, child.index)

    def _respawn(self, index: int) -> None:
        if self.running and index not in self.children:
            self.spawn(index)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        waits = []
        for index, transport in list(self.transports.items()):
            transport.signalProcess("TERM")
            child = self.children[index]
            kill = self.reactor.callLater(STOP_GRACE, _kill, transport)
            child.ended.addBoth(_cancel_if_active, kill)
            waits.append(child.ended)
        return DeferredList(waits)


def _cancel_if_active(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def _kill(transport: Any) -> None:
    from twisted.internet.error import ProcessExitedAlready

    with contextlib.suppress(ProcessExitedAlready):
        transport.signalProcess("KILL")


class _ParentWatch(protocol.Protocol):
    """Stops the worker when its standard input closes: the parent is gone."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        from twisted.internet.error import ReactorNotRunning

        with contextlib.suppress(ReactorNotRunning):  # already stopping: SIGTERM came first
            self.reactor.stop()


def reuseport_sockets(description: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on the address of a tcp/tcp6 endpoint, SO_REUSEPORT."""
    from twisted.internet.endpoints import serverFromString

    from chatlog.server.service import fail

    endpoint: Any = serverFromString(None, description)
    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)  # haproxy:
    try:
        # TCP4ServerEndpoint and TCP6ServerEndpoint keep these as given.
        port, interface, backlog = endpoint._port, endpoint._interface, endpoint._backlog
    except AttributeError:
        fail(f"--workers needs a tcp:, tcp6: or haproxy:tcp: port, not {description}")
    is_tcp6 = type(endpoint).__name__ == "TCP6ServerEndpoint"
    family = socket.AF_INET6 if is_tcp6 else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface or ("::" if family == socket.AF_INET6 else ""), port))
            port = sock.getsockname()[1]  # port 0: the others share the one it got
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as error:
        for sock in sockets:
            sock.close()
        fail(f"cannot listen on {description}: {error}")
    return sockets


def adopt_socket(reactor: Any, fd: int, description: str, factory: Any) -> IListeningPort:
    """Serve an already listening socket (wrapped for PROXY if need be)."""
    probe = socket.socket(fileno=os.dup(fd))
    family = probe.family
    probe.close()
    if description.startswith("haproxy:"):
        from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

        factory = HAProxyWrappingFactory(factory)
    port: IListeningPort = reactor.adoptStreamPort(fd, family, factory)
    return port


def adopt_listening_socket(reactor: Any, description: str, factory: Any) -> IListeningPort:
    """A worker serves the listening socket it inherited as fd 3."""
    port = adopt_socket(reactor, LISTEN_FD, description, factory)
    os.close(LISTEN_FD)  # adoptStreamPort made its own copy
    return port


def main(argv: list[str]) -> None:
    """Worker entry point: ``python -m chatlog.server.workers INDEX [chatlog options]``."""
    from twisted.internet import reactor, stdio

    from chatlog.server.tap import Options, build_service

    index = int(argv[0])
    options = Options()
    options.parseOptions(argv[1:])
    top = build_service(options, reactor, worker=index)
    stdio.StandardIO(_ParentWatch(reactor))
    # twistd's default log: the pool relays our stdout into its own log.
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    top.privilegedStartService()
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    main(sys.argv[1:])
