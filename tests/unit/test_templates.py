"""Text templates: one text with typed fields gives both the writing and the reading of it."""

from __future__ import annotations

import pytest

from chatlog.log.templates import Template, Variants


def test_fields_are_written_with_their_type() -> None:
    """Each field type writes its value the way the log shows it."""
    template = Template("{a:int} {b:decimal} {c:number} {d:name} {e:word} {f:text}")
    event = {"a": 42, "b": 1.5, "c": 300.0, "d": "clean", "e": "0.1.0", "f": "any (text)"}
    assert template.format(event) == b"42 1.500000 300 clean 0.1.0 any (text)"
    assert template.parse(b"42 1.500000 300 clean 0.1.0 any (text)") == event


def test_plural_follows_the_count_before_it() -> None:
    """``word(s)`` agrees with the nearest int field before it, both ways."""
    template = Template("{n:int} connection(s), {m:int} message(s)")
    assert template.format({"n": 1, "m": 2}) == b"1 connection, 2 messages"
    assert template.format({"n": 0, "m": 1}) == b"0 connections, 1 message"
    assert template.parse(b"1 connection, 2 messages") == {"n": 1, "m": 2}
    assert template.parse(b"0 connections, 1 message") == {"n": 0, "m": 1}


def test_client_text_is_escaped_and_read_back_exactly() -> None:
    """A ``message`` field is the client's bytes: escaped when written, unescaped when read."""
    template = Template("{msg:message} (rtt {rtt:decimal} ms)")
    event = {"msg": b"a\nb \xff (rtt 1 ms)", "rtt": 0.25}
    text = template.format(event)
    assert text == b"a\\x0ab \\xff (rtt 1 ms) (rtt 0.250000 ms)"
    assert template.parse(text) == event
    alone = Template("{msg:message}")
    assert alone.parse(b"back\\\\slash") == {"msg": b"back\\slash"}


def test_literal_text_is_literal() -> None:
    """Braces, quotes, backslashes and regex characters outside fields are written and matched as they are."""
    template = Template("it's {{x}} \\ [a+b]* {n:int}")
    assert template.format({"n": 3}) == b"it's {{x}} \\ [a+b]* 3"
    assert template.parse(b"it's {{x}} \\ [a+b]* 3") == {"n": 3}
    assert template.parse(b"it's {x} \\ [a+b]* 3") is None
    percent = Template("100% of {s:decimal} s, %d {n:number}")
    assert percent.format({"s": 2, "n": 1e6}) == b"100% of 2.000000 s, %d 1e+06"
    assert percent.parse(b"100% of 2.000000 s, %d 1e+06") == {"s": 2.0, "n": 1e6}


def test_text_of_another_shape_is_none() -> None:
    """A text the template does not write reads as None, not as wrong fields."""
    template = Template("line longer than {limit:int} bytes, connection closed")
    assert template.parse(b"line longer than many bytes, connection closed") is None
    assert template.parse(b"line longer than 5 bytes, connection closed!") is None
    with pytest.raises(UnicodeDecodeError):
        template.parse(b"\xff")


def test_template_mistakes_are_caught_when_the_table_is_built() -> None:
    """An unknown field type, or a plural with no count before it, is an error at once."""
    with pytest.raises(ValueError, match="unknown field type"):
        Template("{x:float}")
    with pytest.raises(ValueError, match="no int field"):
        Template("{x:text} message(s)")


def test_variants_pick_their_text_by_a_field() -> None:
    """Several texts for one event: written by the field's value, read back with it."""
    text = Variants("kind", {"idle": "idle for {s:number} s", "line": "line within {s:number} s"})
    assert text.format({"kind": "idle", "s": 300}) == b"idle for 300 s"
    assert text.format({"kind": "line", "s": 2.5}) == b"line within 2.5 s"
    # Any other value writes the last text, so that a new kind still logs.
    assert text.format({"kind": "other", "s": 1}) == b"line within 1 s"
    assert text.parse(b"idle for 300 s") == {"kind": "idle", "s": 300.0}
    assert text.parse(b"line within 2.5 s") == {"kind": "line", "s": 2.5}
    assert text.parse(b"busy for 3 s") is None
