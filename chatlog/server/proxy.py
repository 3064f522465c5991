"""Who a connection's client is: its peer, or what the PROXY header of a balancer says.

:func:`peer_address` is a connection's own peer.  Behind a balancer (an
``haproxy:`` port) that is the balancer, and the client is named by the
PROXY protocol header the balancer sends first, read strictly here.

HAProxy (``send-proxy`` / ``send-proxy-v2``), AWS NLB, nginx and others
open each backend connection with one header that names the real client,
as specified in haproxy's ``doc/proxy-protocol.txt``:

- version 1, one line of ASCII text:
  ``PROXY TCP4 203.0.113.7 10.0.0.1 56324 5000\\r\\n`` (at most 107 bytes);
- version 2, binary: a 12-byte signature, a version/command byte, a
  family/protocol byte, a 16-bit length, then the addresses.

:func:`parse_header` reads either from the first bytes of a connection.
Everything that reaches the log is checked first, because the header comes
from the network: an address must be one ``inet_pton`` accepts for the
family the header names (and is logged in its canonical form), a port a
decimal number from 0 to 65535 without leading zeros, the text ASCII, the
fields separated by single spaces, the line ended by ``\\r\\n``.  Anything
else is a :class:`BadHeader` whose ``reason`` is a fixed phrase (never the
client's bytes), which the protocol logs as a ``bad_header`` event before it
closes the connection.

As the specification says, ``PROXY UNKNOWN`` (v1) and the ``LOCAL`` command
(v2, the balancer's own health checks) are valid and mean "use the
connection's own addresses"; so do v2 families this server does not serve
(``AF_UNSPEC``, ``AF_UNIX``, datagrams), which the specification asks a
receiver to treat as ``UNSPEC``.

Twisted's ``twisted.protocols.haproxy`` wrapper is not used: it accepts any
space-free token as an address and anything ``int()`` takes as a port, and
turns a malformed header into an unhandled traceback with no record.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import NamedTuple

from twisted.internet.address import IPv4Address, IPv6Address

#: What an ``haproxy:`` endpoint string begins with.
PROXY_PREFIX = "haproxy:"

#: The 12 bytes every version 2 header begins with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: What every version 1 header begins with.
V1_PREFIX = b"PROXY "
#: The longest version 1 header, ``\r\n`` included (``PROXY UNKNOWN`` with IPv6 addresses).
V1_MAX = 107
#: Signature, version/command, family/protocol, length.
_V2_FIXED = struct.Struct("!12sBBH")

_V1_FAMILIES = {b"TCP4": socket.AF_INET, b"TCP6": socket.AF_INET6}
# Decimal 0-65535 as the specification writes it: no sign, no leading zero.
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
# v2 family nibble -> (socket family, bytes of one address).
_V2_FAMILIES = {0x1: (socket.AF_INET, 4), 0x2: (socket.AF_INET6, 16)}
_V2_UNIX_ADDRESSES = 216
_V2_STREAM = 0x1


def peer_address(address: object) -> tuple[str, int]:
    """(ip, port) of a peer; ``("unix", 0)`` for a UNIX socket and the like."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    return "unix", 0


class BadHeader(ValueError):
    """The connection did not begin with a valid PROXY header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: Why, in a few fixed words (logged as the ``bad_header`` event's ``reason``).
        self.reason = reason


class Header(NamedTuple):
    """A complete, valid PROXY header."""

    #: The client's (ip, port); None means "use the connection's own" (UNKNOWN, LOCAL).
    source: tuple[str, int] | None
    #: How many bytes of the stream the header took: the client's data follows.
    length: int


def parse_header(data: bytes) -> Header | None:
    """The PROXY header at the start of ``data``; None while it may still be incomplete.

    :raises BadHeader: ``data`` cannot be the start of a valid header.
    """
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    return _parse_v1(data)


def _parse_v1(data: bytes) -> Header | None:
    if not data.startswith(V1_PREFIX[: len(data)]):
        raise BadHeader("not a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise BadHeader("no end of line within 107 bytes")
        lone = b"\n" in data or b"\r" in data[:-1]  # no CRLF yet: any other is lone
        if lone and not data.startswith(b"PROXY UNKNOWN"):  # whose rest is ignored
            raise BadHeader("a line break other than CRLF")
        return None
    line = data[:end]
    fields = line.split(b" ")
    family = fields[1] if len(fields) > 1 else b""
    if family == b"UNKNOWN":
        # The sender could not tell; the rest of the line is to be ignored.
        return Header(None, end + 2)
    if family not in _V1_FAMILIES:
        raise BadHeader("unknown protocol family")
    if b"\n" in line or b"\r" in line:
        raise BadHeader("a line break other than CRLF")
    if len(fields) != 6:
        raise BadHeader("not six fields separated by single spaces")
    _, _, source, destination, source_port, destination_port = fields
    ip = _v1_address(_V1_FAMILIES[family], source, "source")
    _v1_address(_V1_FAMILIES[family], destination, "destination")
    port = _v1_port(source_port, "source")
    _v1_port(destination_port, "destination")
    return Header((ip, port), end + 2)


def _v1_address(family: int, text: bytes, which: str) -> str:
    """``text`` as the canonical address of ``family``, or BadHeader."""
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text.decode("ascii")))
    except (UnicodeDecodeError, OSError, ValueError):
        name = "IPv4" if family == socket.AF_INET else "IPv6"
        raise BadHeader(f"{which} address is not an {name} address") from None


def _v1_port(text: bytes, which: str) -> int:
    if _V1_PORT.fullmatch(text) is None or int(text) > 65535:
        raise BadHeader(f"{which} port is not a number from 0 to 65535")
    return int(text)


def _parse_v2(data: bytes) -> Header | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise BadHeader("not a PROXY header")
    if len(data) < _V2_FIXED.size:
        return None
    _, version_command, family_protocol, length = _V2_FIXED.unpack_from(data)
    if version_command >> 4 != 2:
        raise BadHeader("unsupported PROXY protocol version")
    command = version_command & 0xF
    if command > 1:
        raise BadHeader("unknown PROXY command")
    family, protocol = family_protocol >> 4, family_protocol & 0xF
    if family > 3 or protocol > 2:
        raise BadHeader("unknown address family or protocol")
    total = _V2_FIXED.size + length
    if len(data) < total:
        return None
    if command == 0:
        # LOCAL: the balancer's own connection (a health check); the
        # addresses, if any, are to be skipped.
        return Header(None, total)
    if family in _V2_FAMILIES:
        socket_family, size = _V2_FAMILIES[family]
        if length < 2 * size + 4:
            raise BadHeader("address block shorter than its family needs")
        if protocol == _V2_STREAM:
            start = _V2_FIXED.size
            ip = socket.inet_ntop(socket_family, data[start : start + size])
            (port,) = struct.unpack_from("!H", data, start + 2 * size)
            return Header((ip, port), total)
    elif family == 3 and length < _V2_UNIX_ADDRESSES:
        raise BadHeader("address block shorter than its family needs")
    # UNSPEC, UNIX sockets, datagrams: valid, but nothing this TCP server can
    # log as an address; the specification says to fall back to UNSPEC.
    return Header(None, total)


class HeaderReader:
    """A connection's first bytes, kept until they make a whole PROXY header."""

    def __init__(self) -> None:
        self._data = b""

    def feed(self, data: bytes) -> tuple[Header, bytes] | None:
        """The header and the bytes after it, once whole; None until then.

        :raises BadHeader: the bytes so far cannot begin a valid header.
        """
        data = self._data + data
        header = parse_header(data)
        if header is None:
            self._data = data
            return None
        self._data = b""
        return header, data[header.length :]
