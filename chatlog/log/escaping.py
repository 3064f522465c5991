"""Escaping client bytes so that they stay inside one record, and undoing it exactly.

A text record (``event`` and ``dash`` formats) must never contain a byte that
could end it, start a new one or rewrite a field the server knows.  Client
text is therefore escaped: printable characters stay as they are (UTF-8
encoded), a backslash becomes ``\\\\``, C0 controls and DEL become ``\\xNN``,
an invalid UTF-8 byte becomes ``\\xNN`` (always ``>= \\x80``, so never
confused with a control), and any other non-printable character (C1,
U+2028/2029, format characters) becomes ``\\uNNNN`` or ``\\UNNNNNNNN``.
"""

from __future__ import annotations

import re

# Bytes that need no escaping in a text record: printable ASCII except the
# backslash (the escape character itself).  Most messages are exactly this,
# and a C-level regex search makes the common case cost next to nothing.
_TEXT_UNSAFE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")

#: ``find_unsafe(raw)`` is None when ``raw`` goes into a text record as it is
#: (the fast check of the formatters' hot path), else the first byte to escape.
find_unsafe = _TEXT_UNSAFE.search


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


def escape_text(raw: bytes) -> tuple[bytes, bool]:
    """Escape client bytes for a text record; also say whether they were UTF-8.

    The result never contains a control byte, so it can never end or split a
    record, and :func:`unescape_text` gives back ``raw`` exactly.  Clean
    input (printable ASCII without a backslash) is returned as the same object.
    """
    if _TEXT_UNSAFE.search(raw) is None:
        return raw, True
    text = raw.decode("utf-8", "surrogateescape")
    valid = not any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text)
    return "".join(map(_escape_char, text)).encode("utf-8"), valid


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
