"""The fast path: its guard finds what is missing, and what it changes still behaves."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import abstract, posixbase, tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher

from chatlog import _fastpath


@pytest.fixture
def reactor() -> Iterator[EPollReactor]:
    """A fresh epoll reactor that is never run (only iterated by hand)."""
    reactor = EPollReactor()
    yield reactor
    reactor.removeAll()
    reactor._poller.close()  # what the test opened; no other way to close it


def test_available_on_this_twisted(reactor: EPollReactor) -> None:
    """With the Twisted the tests run on, every internal the fast path needs is there."""
    assert _fastpath.unavailable(reactor) is None


@pytest.mark.parametrize(
    "other, reason",
    [
        (Clock(), "the reactor is Clock, not the epoll reactor"),
        (SelectReactor(), "the reactor is SelectReactor, not the epoll reactor"),
    ],
)
def test_other_reactors_are_refused(other: object, reason: str) -> None:
    """Only the epoll reactor has the loop the fast path replaces."""
    assert _fastpath.unavailable(other) == reason


def _drop_instance_attribute(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """FileDescriptor.__init__ sets ``name``: make it stop, as a renaming release would."""
    original = abstract.FileDescriptor.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.__dict__.pop(name, None)

    monkeypatch.setattr(abstract.FileDescriptor, "__init__", init)


MISSING = [
    (lambda mp: mp.delattr(posixbase._PollLikeMixin, "_doReadOrWrite"), "_doReadOrWrite"),
    (lambda mp: _drop_instance_attribute(mp, "_tempDataLen"), "no _tempDataLen"),
    (lambda mp: mp.delattr(abstract.FileDescriptor, "_writeDisconnected"), "_writeDisconnected"),
    (lambda mp: mp.delattr(abstract.FileDescriptor, "dataBuffer"), "no dataBuffer"),
    (lambda mp: mp.delattr(tcp.Connector, "_makeTransport"), "no _makeTransport"),
    (lambda mp: mp.setattr(tcp.Port, "transport", object), "does not make tcp.Server"),
]


@pytest.mark.parametrize("remove, named", MISSING)
def test_a_missing_internal_is_named(
    reactor: EPollReactor, monkeypatch: pytest.MonkeyPatch, remove: Any, named: str
) -> None:
    """Each internal the fast path touches is checked; a missing one is named."""
    remove(monkeypatch)
    problem = _fastpath.unavailable(reactor)
    assert problem is not None and named in problem


def test_missing_poller_is_named(reactor: EPollReactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The epoll object the plain loop polls is checked on the reactor instance."""
    monkeypatch.delattr(reactor, "_poller")
    assert _fastpath.unavailable(reactor) == (
        "twisted.internet.epollreactor.EPollReactor has no _poller with a poll method"
    )
    monkeypatch.undo()


def test_unavailable_fast_path_changes_nothing_and_says_why(
    reactor: EPollReactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an internal missing, the reactor and the port keep their stock code paths."""
    remove, _ = MISSING[1]
    remove(monkeypatch)
    port = tcp.Port(0, None, reactor=reactor)
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert _fastpath.enable_server(reactor, port) is False
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert "doIteration" not in vars(reactor)
    assert port.transport is tcp.Server
    assert [e["log_format"] for e in logged] == [
        "chatlog: fast path off ({problem}); serving on Twisted's stock code paths"
    ]
    assert "_tempDataLen" in logged[0]["problem"]


def test_enable_server_switches_dispatch_and_transport(reactor: EPollReactor) -> None:
    """When available: the plain loop on this reactor, eager transports on this TCP port."""
    port = tcp.Port(0, None, reactor=reactor)
    assert _fastpath.enable_server(reactor, port) is True
    assert vars(reactor)["doIteration"].__func__ is _fastpath._do_poll_plain
    assert port.transport is _fastpath.EagerServer


def test_client_reactor_falls_back_to_the_reactor() -> None:
    """Without the fast path the client connects with the reactor it was given."""
    memory = MemoryReactor()
    assert _fastpath.client_reactor(memory) is memory


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


def test_plain_dispatch_delivers_events_and_handles_errors(reactor: EPollReactor) -> None:
    """A ready descriptor gets doRead; one that raises is disconnected, the loop goes on."""
    _fastpath._use_plain_dispatch(reactor)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
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
        for sock in (a, b, c, d):
            sock.close()
