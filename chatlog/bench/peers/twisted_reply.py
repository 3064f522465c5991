"""REFERENCE PEER for the bench, not part of chatlog: a bare Twisted reply server.

The stock shape: a ``LineReceiver`` that writes ``Server received: <line>``
for every line, on the stock transport (no ``TCP_NODELAY``, no eager send),
and logs nothing.

    python -m chatlog.bench.peers.twisted_reply [PORT]
"""

from __future__ import annotations

import sys

from twisted.internet import epollreactor

epollreactor.install()

from typing import Any  # noqa: E402

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import ServerFactory  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402


class Reply(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536
    transport: Any

    def lineReceived(self, line: bytes) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        self.transport.write(b"Server received: " + line + b"\n")


def main() -> None:
    factory: Any = ServerFactory.forProtocol(Reply)
    factory.noisy = False
    loop: Any = (
        reactor  # the epoll reactor installed above; some Twisted releases type it as a module
    )
    port = loop.listenTCP(
        int(sys.argv[1]) if len(sys.argv) > 1 else 0, factory, backlog=4096, interface="127.0.0.1"
    )
    address: Any = port.getHost()
    print(f"listening on 127.0.0.1:{address.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
