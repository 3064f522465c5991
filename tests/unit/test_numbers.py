"""Option numbers: one checker for twistd's options and the client's."""

from __future__ import annotations

import argparse

import pytest
from twisted.python import usage

from chatlog.numbers import NumberError, number

port = number(int, 1, "a TCP port (1 to 65535)", maximum=65535)
rate = number(float, 0.0, "a rate above 0", above=True)


@pytest.mark.parametrize("text, value", [("1", 1), ("65535", 65535), (" 80 ", 80)])
def test_numbers_in_range_are_taken(text: str, value: int) -> None:
    """Text that is a number in range comes back as that number."""
    assert port(text) == value


@pytest.mark.parametrize("text", ["0", "65536", "-1", "http", "1.5", ""])
def test_others_are_refused_saying_what_was_wanted(text: str) -> None:
    """Out of range or not a number: the error quotes the text and says what was wanted."""
    with pytest.raises(NumberError, match=r"is not a TCP port \(1 to 65535\)"):
        port(text)


def test_above_excludes_the_minimum() -> None:
    """``above=True``: the minimum itself is refused."""
    assert rate("0.5") == 0.5
    with pytest.raises(NumberError):
        rate("0")


def test_usage_and_argparse_both_report_it() -> None:
    """twistd's usage.Options and argparse both show the checker's message."""

    class Options(usage.Options):
        optParameters = [["port", None, 5000, "", port]]

    with pytest.raises(usage.UsageError, match="'99999' is not a TCP port"):
        Options().parseOptions(["--port", "99999"])
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=port)
    with pytest.raises(argparse.ArgumentTypeError):
        port("99999")
    assert parser.parse_args(["--port", "80"]).port == 80
    assert port.coerceDoc == "Must be a TCP port (1 to 65535)."  # type: ignore[attr-defined]
