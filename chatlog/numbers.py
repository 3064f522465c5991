"""Checked numbers for command-line options, shared by ``twistd chatlog`` and the client.

``number(int, 1, "a whole number of at least 1")`` is a function that turns
option text into a number or refuses it with ``'abc' is not a whole number
of at least 1``.  It works as a ``twisted.python.usage`` coercer (which wants
a ``ValueError`` and reads ``coerceDoc`` for ``--help``) and as an
``argparse`` type (which prints an ``ArgumentTypeError``'s text as it is).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


class NumberError(argparse.ArgumentTypeError, ValueError):
    """Option text that is not the number asked for; the message says what was wanted."""


def number(
    kind: Callable[[str], N],
    minimum: N,
    what: str,
    *,
    above: bool = False,
    maximum: N | None = None,
) -> Callable[[str], N]:
    """A checker for numbers of ``kind`` at least ``minimum`` (more than it, with ``above``)."""

    def coerce(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise NumberError(f"{text!r} is not {what}") from None
        too_big = maximum is not None and value > maximum
        if value < minimum or (above and value == minimum) or too_big:
            raise NumberError(f"{text!r} is not {what}")
        return value

    coerce.coerceDoc = f"Must be {what}."  # type: ignore[attr-defined]
    return coerce
