"""REFERENCE PEER, not part of chatlog: a reply server whose capacity is known by design.

It answers every ``\\n``-terminated line with ``Server received: <line>``, but
at most RATE replies per second over all its connections: a token bucket
(refilled at RATE per second, holding at most :data:`BURST_S` seconds of
tokens) releases the replies of one first-in, first-out queue, in order.
Below RATE a line is answered at once; above it the queue, and every
reply's wait, grows without end.  So ``python -m chatlog.client --sweep``
against it must find a knee at RATE: the test of the sweep itself.

    python -m chatlog.bench.peers.capped_reply RATE [PORT]

It listens on ``127.0.0.1`` (port 0 by default: the kernel picks a free one)
and prints ``listening on 127.0.0.1:PORT`` once it listens, like the other
peers.
"""

from __future__ import annotations

import sys

from twisted.internet import epollreactor

epollreactor.install()

import time  # noqa: E402
from collections import deque  # noqa: E402
from typing import Any  # noqa: E402

from twisted.internet import reactor  # noqa: E402
from twisted.internet.interfaces import IDelayedCall  # noqa: E402
from twisted.internet.protocol import ServerFactory  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

#: The bucket holds this many seconds of tokens: a client's batch of lines
#: (a timer's worth of an open-loop schedule) is not held back below RATE.
BURST_S = 0.005
#: The queue is looked at again at most this often while replies wait.
MIN_WAIT_S = 0.001


class Bucket:
    """Release queued replies at most ``rate`` per second, in order."""

    def __init__(self, clock: Any, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_S)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.queue: deque[tuple[Any, bytes]] = deque()
        self.call: IDelayedCall | None = None

    def submit(self, transport: Any, reply: bytes) -> None:
        self.queue.append((transport, reply))
        if self.call is None:
            self.release()

    def release(self) -> None:
        self.call = None
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        count = min(int(self.tokens), len(self.queue))
        if count:
            self.tokens -= count
            # One write per connection for what it is due, in order.
            batches: dict[Any, list[bytes]] = {}
            for _ in range(count):
                transport, reply = self.queue.popleft()
                batches.setdefault(transport, []).append(reply)
            for transport, replies in batches.items():
                if not transport.disconnecting:
                    transport.write(b"".join(replies))
        if self.queue:
            wait = (1.0 - (self.tokens % 1.0)) / self.rate
            self.call = self.clock.callLater(max(wait, MIN_WAIT_S), self.release)


class CappedReply(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536
    transport: Any
    factory: Any

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def lineReceived(self, line: bytes) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        self.factory.bucket.submit(self.transport, b"Server received: " + line + b"\n")


def main() -> None:
    if not 2 <= len(sys.argv) <= 3:
        sys.exit("usage: python -m chatlog.bench.peers.capped_reply RATE [PORT]")
    rate = float(sys.argv[1])
    if rate <= 0:
        sys.exit("RATE is replies per second, above 0")
    loop: Any = reactor  # the epoll reactor installed above
    factory: Any = ServerFactory.forProtocol(CappedReply)
    factory.bucket = Bucket(loop, rate)
    factory.noisy = False
    port = loop.listenTCP(
        int(sys.argv[2]) if len(sys.argv) > 2 else 0, factory, backlog=4096, interface="127.0.0.1"
    )
    address: Any = port.getHost()
    print(f"listening on 127.0.0.1:{address.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
