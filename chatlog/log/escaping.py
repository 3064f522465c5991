"""Escaping client bytes so that they stay inside one record, and undoing it exactly.

A text record (``event`` and ``dash`` formats) must never contain a byte that
could end it, start a new one or rewrite a field the server knows.  Client
text is therefore escaped: printable characters stay as they are (UTF-8
encoded), a backslash becomes ``\\\\``, C0 controls and DEL become ``\\xNN``,
an invalid UTF-8 byte becomes ``\\xNN`` (always ``>= \\x80``, so never
confused with a control), and any other non-printable character (C1,
U+2028/2029, format characters) becomes ``\\uNNNN`` or ``\\UNNNNNNNN``.

The same decision is taken at three speeds, and all three agree exactly
(the property tests hold them to :func:`escape_reference`, the rule above
applied one character at a time):

1. :func:`is_plain`: bytes that are all printable ASCII but the backslash
   stay as they are.  One C pass over the bytes (``bytes.translate``), ~0.4 ns
   a byte; the formatters ask it once for all the lines of a read.
2. Valid UTF-8 without a backslash whose characters are all printable
   (``café``, ``日本``) stays as it is too: one decode and ``str.isprintable``.
3. Otherwise ASCII is escaped with one ``bytes.replace`` per kind of byte
   to escape, and other text run by run: the stretches of plain ASCII
   between the characters to look at are copied as they are, by ``re``.
"""

from __future__ import annotations

import re

#: Bytes that go into a text record as they are: printable ASCII but the backslash.
TEXT_SAFE = bytes(range(0x20, 0x5C)) + bytes(range(0x5D, 0x7F))


def keep_table(safe: bytes) -> bytes:
    """A ``bytes.translate`` table that keeps the ``safe`` bytes and changes every other one.

    ``data.translate(table) == data`` then says, in one C pass, that every
    byte of ``data`` is safe: no per-call table to build (as ``translate(None,
    delete)`` does), and no copy kept (CPython hands back ``data`` itself
    when nothing changed, which also makes the comparison one pointer test).
    """
    return bytes(byte if byte in safe else byte ^ 1 for byte in range(256))


#: ``data.translate(TEXT_KEEP) == data`` is :func:`is_plain` without the call,
#: for the formatters' one-line reads (a call is ~1.3% of a message's work).
TEXT_KEEP = keep_table(TEXT_SAFE)


def is_plain(data: bytes) -> bool:
    """Whether ``data`` is all printable ASCII but the backslash: a text record takes it as it is.

    True means :func:`escape_text` returns ``data`` unchanged.  (Some bytes that
    are not plain are left unchanged too, printable non-ASCII text: the second
    speed of :func:`escape_text` finds those.)  For several lines, ask once
    about ``b"".join(lines)``: the answer is the same for each line alone.
    """
    return data.translate(TEXT_KEEP) == data


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that is not valid UTF-8, smuggled through by surrogateescape.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if ch.isprintable():
        return ch
    # C1 controls, U+2028/2029, bidi overrides, unassigned code points...
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_reference(raw: bytes) -> bytes:
    """The escaping rule applied one character at a time: slow, and the definition.

    :func:`escape_text` must give the same bytes for every input; tests hold it to this.
    """
    return "".join(map(_escape_char, raw.decode("utf-8", "surrogateescape"))).encode("utf-8")


# What each ASCII byte that is not plain becomes (backslash, C0, DEL).
_ASCII_ESCAPES = {
    byte: _escape_char(chr(byte)).encode() for byte in range(0x80) if byte not in TEXT_SAFE
}


def _escape_ascii(raw: bytes) -> bytes:
    """Escape ASCII bytes: one ``bytes.replace`` (a C search) per kind of byte to escape."""
    found = set(raw.translate(None, TEXT_SAFE))
    if 0x5C in found:
        # First: the escapes put in below begin with a backslash of their own.
        raw = raw.replace(b"\\", b"\\\\")
        found.discard(0x5C)
    for byte in found:
        raw = raw.replace(bytes((byte,)), _ASCII_ESCAPES[byte])
    return raw


# What the characters whose escape Unicode's tables do not decide become:
# backslash, C0, DEL, C1, and the lone surrogates that stand for invalid bytes.
_FIXED_ESCAPES = {
    chr(code): _escape_char(chr(code))
    for code in [0x5C, *range(0x20), *range(0x7F, 0xA0), *range(0xDC80, 0xDD00)]
}

# What to look at in text that is not plain: one such character, or a run of
# other non-ASCII characters (printable, most likely).  What lies between,
# plain ASCII, is copied as it is without a Python call per character.
_LOOK_AT = re.compile(r"[\x00-\x1f\\\x7f-\x9f\udc80-\udcff]|[^\x00-\x9f\udc80-\udcff]+")


def _escape_run(match: re.Match[str]) -> str:
    run = match.group()
    fixed = _FIXED_ESCAPES.get(run)
    if fixed is not None:
        return fixed
    if run.isprintable():
        return run
    # U+2028, a bidi override, an unassigned code point...: Unicode decides.
    return "".join(map(_escape_char, run))


def escape_text(raw: bytes) -> tuple[bytes, bool]:
    """Escape client bytes for a text record; also say whether they were UTF-8.

    The result never contains a control byte, so it can never end or split a
    record, and :func:`unescape_text` gives back ``raw`` exactly.  Input that
    needs no escaping (see the module's speeds) is returned as the same object.
    """
    if raw.translate(TEXT_KEEP) == raw:
        return raw, True
    if raw.isascii():
        return _escape_ascii(raw), True
    try:
        text = raw.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        # Each invalid byte becomes a lone surrogate, escaped as \xNN.
        text = raw.decode("utf-8", "surrogateescape")
        valid = False
    else:
        if "\\" not in text and text.isprintable():
            return raw, True
    return _LOOK_AT.sub(_escape_run, text).encode("utf-8"), valid


_UNESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(\\))")


def unescape_text(escaped: str) -> bytes:
    """Undo :func:`escape_text`: give back the exact bytes the client sent."""
    out = bytearray()
    pos = 0
    for match in _UNESCAPE.finditer(escaped):
        out += escaped[pos : match.start()].encode("utf-8")
        byte_hex, u4, u8, backslash = match.groups()
        if backslash:
            out += b"\\"
        elif byte_hex:
            # \xNN below 0x80 is a control character; at or above it, a raw
            # byte that was not valid UTF-8.  Both are that single byte.
            out.append(int(byte_hex, 16))
        else:
            out += chr(int(u4 or u8, 16)).encode("utf-8", "surrogatepass")
        pos = match.end()
    out += escaped[pos:].encode("utf-8")
    return bytes(out)


def unescape(text: bytes) -> bytes:
    """:func:`unescape_text` for the bytes of a record, skipping text with no escape in it."""
    if b"\\" not in text:
        # Nothing was escaped: the record holds the client's bytes as they came.
        return text
    return unescape_text(text.decode("utf-8"))
