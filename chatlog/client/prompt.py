"""The ``>`` prompt on a terminal, with line editing and history from ``readline``.

``input()`` with the stdlib :mod:`readline` imported edits the line (arrow
keys, Ctrl-A/E, ...) and keeps a history (up and down arrows), as a shell
does; without it the terminal's own line discipline passes ``\\x1b[D`` on
as part of the line.  ``input()`` blocks, so it runs in a daemon thread, one
line at a time, while the reactor goes on (an unsolicited ``ERROR timeout``
from the server is still printed, Ctrl-C still ends the conversation); its
line comes back to the reactor's thread.  A thread left waiting at the end
(Ctrl-C, a lost connection) is a daemon: it does not hold the process, and
the terminal's settings, which ``readline`` changes while it edits, are put
back.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

PROMPT = "> "


def load_readline() -> bool:
    """Import :mod:`readline` (which is what gives ``input()`` editing); False without it."""
    try:
        import readline  # noqa: F401  (imported for its effect on input())
    except ImportError:  # a Python built without it: input() still works, unedited
        return False
    return True


class Prompt:
    """Ask for one line at a time on the terminal; each arrives through ``on_line``."""

    def __init__(
        self,
        reactor: Any,
        on_line: Callable[[bytes], None],
        on_eof: Callable[[], None],
        ask: Callable[[str], str] = input,
    ) -> None:
        self.reactor = reactor
        self.on_line = on_line
        self.on_eof = on_eof
        self.ask = ask
        self.editing = load_readline()
        self._terminal: Any = None
        with contextlib.suppress(ImportError, OSError, ValueError):
            import termios

            self._terminal = termios.tcgetattr(sys.stdin.fileno())

    def next_line(self) -> None:
        """Show the prompt and read a line in a thread; ``on_line`` (or ``on_eof``) follows."""
        threading.Thread(target=self._read, name="chatlog prompt", daemon=True).start()

    def _read(self) -> None:
        try:
            text = self.ask(PROMPT)
        except (EOFError, OSError, ValueError):
            self.reactor.callFromThread(self.on_eof)
            return
        self.reactor.callFromThread(self.on_line, text.encode("utf-8", "surrogateescape"))

    def stop(self) -> None:
        """Put the terminal back as it was, should a read still be in progress."""
        if self._terminal is not None:
            with contextlib.suppress(ImportError, OSError, ValueError):
                import termios

                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._terminal)
