"""Startup errors a user must fix: one line on stderr and exit status 1, not a traceback.

twistd prints a traceback for any exception raised while services start; a
user who typed a busy port or an unwritable log path deserves one line
naming the problem.  :func:`fail` raises :class:`StartupError` and installs an
excepthook that prints just its message; every other exception keeps its
traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import NoReturn


class StartupError(Exception):
    """A problem a user must fix (port in use, log not writable): one line, exit 1."""


def _report_startup_error(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if isinstance(value, StartupError):
        # twistd has replaced sys.stderr with its log by now; the user's
        # terminal is the original stderr.
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"chatlog: {value}\n")
        stream.flush()
        return
    sys.__excepthook__(kind, value, tb)


def fail(message: str) -> NoReturn:
    """Stop startup with ``message`` as one line on stderr and exit status 1."""
    sys.excepthook = _report_startup_error
    raise StartupError(message)
