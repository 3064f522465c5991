"""Checked numbers for command-line options, shared by ``twistd chatlog`` and the client.

``number(int, 1, "a whole number of at least 1")`` is a function that turns
option text into a number or refuses it with ``'abc' is not a whole number
of at least 1``.  It works as a ``twisted.python.usage`` coercer (which wants
a ``ValueError`` and reads ``coerceDoc`` for ``--help``) and as an
``argparse`` type (which prints an ``ArgumentTypeError``'s text as it is).
``duration(0.0, "...")`` is the same for durations with units, as wrk and hey
take them: ``30s``, ``2m``, ``500ms``, ``1m30s``; a plain number is seconds.
"""

from __future__ import annotations

import argparse
import math
import re
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


#: Seconds per unit of a duration.
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a plain number, or parts with units (``1m30s``, ``500ms``).

    Raises ``ValueError`` for anything else.
    """
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(stripped)
    if not parts or "".join(number + unit for number, unit in parts) != stripped:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def duration(minimum: float, what: str, *, above: bool = False) -> Callable[[str], float]:
    """A checker for durations of at least ``minimum`` seconds (more than it, with ``above``)."""
    check = number(parse_duration, minimum, what, above=above)

    def coerce(text: str) -> float:
        value = check(text)
        if not math.isfinite(value):
            raise NumberError(f"{text!r} is not {what}")
        return value

    coerce.coerceDoc = check.coerceDoc  # type: ignore[attr-defined]
    return coerce
