"""Escaping client bytes for text records: every hostile byte class, exactly reversible,
and the fast paths deciding exactly as the character-by-character rule does."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.log import escape_text, make_formatter, unescape_text
from chatlog.log.escaping import TEXT_SAFE, escape_reference, is_plain, unescape

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
    assert is_plain(raw)


def test_printable_utf8_is_returned_as_is() -> None:
    """The second speed: printable non-ASCII text without a backslash is not copied either."""
    raw = "caf\u00e9 \u65e5\u672c \U0001f600".encode()
    assert not is_plain(raw)
    text, valid = escape_text(raw)
    assert text is raw and valid


@pytest.mark.parametrize(
    "raw", [b"back\\slash", b"tab\t", b"caf\xc3\xa9", b"\x7f", b"\xff", b"\x00"]
)
def test_is_plain_sends_anything_else_to_escaping(raw: bytes) -> None:
    """The formatters' quick check lets only printable ASCII without a backslash skip escaping."""
    assert not is_plain(raw)


def test_plain_is_exactly_the_safe_bytes() -> None:
    """Each of the 256 byte values alone: plain exactly when it is printable ASCII but ``\\``."""
    assert bytes(b for b in range(0x20, 0x7F) if b != 0x5C) == TEXT_SAFE
    assert [b for b in range(256) if is_plain(bytes((b,)))] == list(TEXT_SAFE)


#: Bytes at the edges of every class the escaping tells apart: C0, space, the
#: quote, the brackets, the backslash, DEL, C1, NBSP, the soft hyphen, the
#: leads of 2-, 3- and 4-byte UTF-8 sequences, U+2028's bytes, a lone
#: surrogate's lead (0xED) and bytes that are never UTF-8.
EDGES = [0x00, 0x09, 0x0A, 0x0D, 0x1B, 0x1F, 0x20, 0x22, 0x5B, 0x5C, 0x5D, 0x7E, 0x7F]
EDGES += [0x80, 0x85, 0x9F, 0xA0, 0xA8, 0xAD, 0xC2, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xFF]

#: Client lines of every kind: random bytes, mostly printable ASCII with edge
#: bytes among it, any Unicode text (surrogates too), plain ASCII.
ANY_LINE = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(st.sampled_from(EDGES), st.integers(0x20, 0x7E)), max_size=64).map(bytes),
    st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64).map(str.encode),
)


@settings(max_examples=600)
@given(ANY_LINE)
def test_every_speed_escapes_as_the_reference_does(raw: bytes) -> None:
    """escape_text's fast paths give exactly what the character-by-character rule gives."""
    text, _ = escape_text(raw)
    assert text == escape_reference(raw)


@settings(max_examples=600)
@given(ANY_LINE)
def test_fast_paths_keep_exactly_what_the_reference_leaves_unchanged(raw: bytes) -> None:
    """is_plain says "as it is" only for bytes the rule leaves unchanged, and for every such
    ASCII line; escape_text hands back the same object exactly when the rule changes nothing."""
    unchanged = escape_reference(raw) == raw
    if is_plain(raw):
        assert unchanged
    if raw.isascii():
        assert is_plain(raw) == unchanged
    assert (escape_text(raw)[0] is raw) == unchanged


@given(st.lists(ANY_LINE, max_size=8))
def test_one_check_of_joined_lines_answers_for_each(lines: list[bytes]) -> None:
    """The formatters check a read's lines joined: plain together exactly when each is plain."""
    assert is_plain(b"".join(lines)) == all(map(is_plain, lines))


#: Lines of a read as the formatters may be handed them: any line, plain ones
#: (which the one check must pass), and ones that start with "[" (which the
#: dash format escapes) or hold a newline (which no read's line does, but a
#: formatter must still escape).
READ_LINE = st.one_of(
    ANY_LINE,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64).map(str.encode),
    st.sampled_from([b"[", b"[Connection] #1 x", b"a\nb", b"\n", b"", b"\\"]),
)


@settings(max_examples=400)
@given(st.sampled_from(["event", "dash"]), st.lists(READ_LINE, min_size=1, max_size=8))
def test_a_reads_records_are_each_lines_record_whatever_the_lines(
    fmt: str, lines: list[bytes]
) -> None:
    """The one-check path of a read's records writes exactly what one record per line writes."""
    fields = {"event": "message", "time": 1795332945.25, "ip": "::1", "port": 4, "conn": 3}
    batched = make_formatter(fmt, utc=True).messages({**fields, "seq": 7}, lines)
    single = make_formatter(fmt, utc=True)
    each = [single({**fields, "seq": seq, "msg": line}) for seq, line in enumerate(lines, 7)]
    assert batched == b"".join(each)
    assert batched.count(b"\n") == len(lines)


@given(st.binary(max_size=200))
def test_escape_round_trip_and_no_control_bytes(raw: bytes) -> None:
    """Any bytes escape to printable text without control bytes, and unescape exactly."""
    text, valid = escape_text(raw)
    assert not re.search(rb"[\x00-\x1f\x7f]", text)
    decoded = text.decode("utf-8")
    assert all(ch.isprintable() for ch in decoded)
    assert unescape_text(decoded) == raw
    assert unescape(text) == raw
    if is_plain(raw):
        assert text is raw
    try:
        raw.decode("utf-8")
        assert valid
    except UnicodeDecodeError:
        assert not valid
