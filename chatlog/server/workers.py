"""``--workers N``: N processes serving one listening address, each with its own log.

The twistd process binds N sockets to the ``--port`` address with
``SO_REUSEPORT`` (:class:`chatlog.server.listening.SharedPortEndpoint`) and
serves the first itself (worker 0).  :class:`WorkerPool` starts workers
1..N-1, each a ``twistd -n chatlog --worker I`` of its own with the same
options, handing worker ``i`` socket ``i`` as file descriptor 3.  The parent
keeps every socket open, so a restarted worker serves the connections that
queued on its socket meanwhile.

Each worker writes its own log, ``LOGFILE.w<i>`` (one ``O_APPEND`` writer per
file keeps "ack implies logged" per process with no locking), and numbers its
connections ``i+1, i+1+N, i+1+2N...``, so connection ids stay unique across
the files; ``python -m chatlog.report chatlog.log.w*`` reads them together.

The pool relays SIGHUP to every worker (log rotation), stops them all on
SIGTERM before twistd exits, and restarts a worker that dies.  A worker says
when it is ready (a line on file descriptor 4, once its SIGHUP handler is in
place); a SIGHUP that comes before is held for it and relayed then, since the
signal's default action would kill a worker that is still starting.  A worker
watches its standard input (:class:`ParentWatch`): when the parent is gone it
closes, and the worker stops by itself, so no worker outlives a ``kill -9``
of the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
from typing import Any

from twisted.application import service
from twisted.internet import protocol, stdio
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready, ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatlog.server.command import twistd_command

log = Logger()

#: The file descriptor a worker finds its listening socket on.
LISTEN_FD = 3
#: The file descriptor a worker says "ready" on, once it handles SIGHUP.
READY_FD = 4
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
        #: The worker handles SIGHUP now (it said so on READY_FD).
        self.ready = False
        #: A SIGHUP came while it was starting: relay it once it is ready.
        self.hup_held = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != READY_FD:
            super().childDataReceived(childFD, data)
        elif not self.ready:
            self.ready = True
            if self.hup_held:
                self.hup_held = False
                self.hangUp()

    def hangUp(self) -> None:
        """Relay a SIGHUP: now if the worker is ready, else as soon as it is."""
        if not self.ready:
            self.hup_held = True
        elif self.transport is not None:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("HUP")

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
    """Start, signal, stop and restart workers 1..N-1 around the shared sockets."""

    name = "workers"

    def __init__(self, sockets: Any, argv: list[str], workers: int, reactor: Any) -> None:
        """
        :param sockets: has ``.sockets``, the listening sockets, one per
            worker, once the server listens (a ``SharedPortEndpoint``).
        :param argv: the ``twistd chatlog`` options, passed on to each worker.
        """
        self.shared = sockets
        self.argv = argv
        self.workers = workers
        self.reactor = reactor
        self.children: dict[int, WorkerProcess] = {}
        self.transports: dict[int, Any] = {}

    def startService(self) -> None:
        super().startService()
        for index in range(1, self.workers):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        child = WorkerProcess(self, index)
        # twistd's own log goes to standard output, which _relay prefixes.
        argv = [
            *twistd_command(), "-n", "--pidfile=", "--logfile=-",
            "chatlog", "--worker", str(index), *self.argv,
        ]  # fmt: skip
        listening: socket.socket = self.shared.sockets[index]
        self.transports[index] = self.reactor.spawnProcess(
            child,
            argv[0],
            argv,
            env=os.environ.copy(),
            childFDs={0: "w", 1: "r", 2: "r", LISTEN_FD: listening.fileno(), READY_FD: "r"},
        )
        self.children[index] = child

    def relaySighup(self) -> None:
        for child in self.children.values():
            child.hangUp()

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
    with contextlib.suppress(ProcessExitedAlready):
        transport.signalProcess("KILL")


class _StdinClosed(protocol.Protocol):
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        with contextlib.suppress(ReactorNotRunning):  # already stopping: SIGTERM came first
            self.reactor.stop()


class ParentWatch(service.Service):
    """In a worker: stop when standard input closes (the parent is gone); leave Ctrl-C to it."""

    name = "parent-watch"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        stdio.StandardIO(_StdinClosed(self.reactor), reactor=self.reactor)
        # Once running: every service has started by then (chatlog's SIGHUP
        # handler is in place), and twistd has installed its own SIGINT handler.
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        # Ctrl-C reaches the whole process group; the parent stops its workers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            # The pool hands a pipe; a worker started by hand may have
            # anything (or nothing) there, and must not write into it.
            if stat.S_ISFIFO(os.fstat(READY_FD).st_mode):
                os.write(READY_FD, b"ready\n")
                os.close(READY_FD)
