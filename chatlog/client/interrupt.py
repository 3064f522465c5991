"""Ctrl-C: end what is running with its partial figures, instead of dropping them.

Twisted's own SIGINT handler stops the reactor, which would close every
connection under a run still in progress: its figures lost and every
connection reported as lost.  While the client runs, :class:`Interrupts`
takes SIGINT instead and calls whatever registered for it (the load run, the
sweep, the conversation, the ``--procs`` parent), on the reactor's thread.
A second Ctrl-C stops the reactor as Twisted would, except in a ``--procs``
worker: the terminal sends Ctrl-C to the workers and their parent alike, and
the parent passes it on too, so a worker may get it twice and must still end
with its summary.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupts:
    """Who to tell when Ctrl-C comes; ``install`` makes SIGINT tell them."""

    def __init__(self, reactor: Any, forceful_second: bool = True) -> None:
        self.reactor = reactor
        self.forceful_second = forceful_second
        self.requested = False
        self._handlers: list[Callable[[], None]] = []
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and self.forceful_second:
            self.reactor.callFromThread(self.reactor.stop)
            return
        # A signal handler runs between two bytecodes of whatever was running:
        # the reactor's thread does the work, at its next turn.
        self.reactor.callFromThread(self.trigger)

    def trigger(self) -> None:
        """Ctrl-C (or a test saying so): tell everyone registered (they make it idempotent)."""
        self.requested = True
        for handler in list(self._handlers):
            handler()

    @contextmanager
    def watch(self, handler: Callable[[], None]) -> Iterator[None]:
        """Call ``handler`` on Ctrl-C while in the block (at once if it already came)."""
        if self.requested:
            handler()
        self._handlers.append(handler)
        try:
            yield
        finally:
            self._handlers.remove(handler)
