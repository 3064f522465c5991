"""Escaping client bytes for text records: every hostile byte class, and exactly reversible."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlog.log import escape_text, unescape_text
from chatlog.log.escaping import find_unsafe, unescape

# Every class of hostile byte the log format names, each with what it must become.
HOSTILE = {
    b"CR\rinside": rb"CR\x0dinside",
    b"LF\ninside": rb"LF\x0ainside",
    b"NUL\x00": rb"NUL\x00",
    b"ESC\x1b[31mred": rb"ESC\x1b[31mred",
    b"DEL\x7f": rb"DEL\x7f",
    "C1 \x85 next-line".encode(): rb"C1 \u0085 next-line",
    "LS \u2028 PS \u2029".encode(): rb"LS \u2028 PS \u2029",
    b"invalid \xff\xfe utf8": rb"invalid \xff\xfe utf8",
    b"truncated \xe2\x82": rb"truncated \xe2\x82",
    b"{braces} and %s %d %%": b"{braces} and %s %d %%",
    b"back\\slash \\x41": b"back\\\\slash \\\\x41",
    "caf\u00e9 \u65e5\u672c".encode(): "caf\u00e9 \u65e5\u672c".encode(),
    "bidi \u202e override".encode(): rb"bidi \u202e override",
}


@pytest.mark.parametrize("raw, escaped", HOSTILE.items())
def test_escape_each_hostile_class(raw: bytes, escaped: bytes) -> None:
    """Each hostile byte class is escaped as the log format says and comes back exactly."""
    text, _ = escape_text(raw)
    assert text == escaped
    assert unescape_text(text.decode()) == raw


def test_clean_ascii_is_returned_as_is() -> None:
    """The fast path: printable ASCII without a backslash is not copied or changed."""
    raw = b"Hello, Server! 0123456789 ~"
    text, valid = escape_text(raw)
    assert text is raw and valid
    assert find_unsafe(raw) is None


@pytest.mark.parametrize("raw", [b"back\\slash", b"tab\t", b"caf\xc3\xa9", b"\x7f", b"\xff"])
def test_find_unsafe_sends_anything_else_to_escaping(raw: bytes) -> None:
    """The formatters' quick check lets only printable ASCII without a backslash skip escaping."""
    assert find_unsafe(raw) is not None


@given(st.binary(max_size=200))
def test_escape_round_trip_and_no_control_bytes(raw: bytes) -> None:
    """Any bytes escape to printable text without control bytes, and unescape exactly."""
    text, valid = escape_text(raw)
    assert not re.search(rb"[\x00-\x1f\x7f]", text)
    decoded = text.decode("utf-8")
    assert all(ch.isprintable() for ch in decoded)
    assert unescape_text(decoded) == raw
    assert unescape(text) == raw
    if find_unsafe(raw) is None:
        assert text is raw
    try:
        raw.decode("utf-8")
        assert valid
    except UnicodeDecodeError:
        assert not valid
