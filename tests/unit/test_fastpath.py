"""The plain epoll dispatch: same events delivered, errors still handled, others untouched."""

from __future__ import annotations

import socket

from twisted.internet.abstract import FileDescriptor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock

from chatlog._fastpath import use_plain_dispatch


class Reader(FileDescriptor):
    def __init__(self, sock: socket.socket, reactor: EPollReactor, fail: bool = False) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.fail = fail
        self.read: list[bytes] = []
        self.lost: list[object] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.read.append(self.sock.recv(100))
        if self.fail:
            raise RuntimeError("protocol bug")

    def connectionLost(self, reason: object) -> None:
        self.lost.append(reason)
        self.reactor.removeReader(self)


def test_only_epoll_reactors_are_changed() -> None:
    """A reactor that is not epoll (here a Clock) is left as it is."""
    assert use_plain_dispatch(Clock()) is False


def test_events_are_dispatched_and_errors_handled() -> None:
    """A ready descriptor gets doRead; one that raises is disconnected, the loop goes on."""
    reactor = EPollReactor()
    try:
        assert use_plain_dispatch(reactor) is True
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        good = Reader(a, reactor)
        bad = Reader(c, reactor, fail=True)
        reactor.addReader(good)
        reactor.addReader(bad)
        b.sendall(b"hello")
        d.sendall(b"boom")
        reactor.doIteration(1)
        assert good.read == [b"hello"] and good.lost == []
        assert bad.read == [b"boom"] and len(bad.lost) == 1
        b.sendall(b"again")
        reactor.doIteration(1)
        assert good.read == [b"hello", b"again"]
    finally:
        reactor.removeAll()
        reactor._poller.close()
        for sock in (a, b, c, d):
            sock.close()
