"""The command that starts this install's ``twistd``: for the bench, the tests and soak runs.

A program that runs ``twistd chatlog`` as a child wants the ``twistd`` of the
Python it runs in, not whichever one ``PATH`` finds first: the script
installed next to ``sys.executable``, or Twisted's entry point run by this
interpreter when there is no such script (a fresh pyenv may not have made
its shims yet).
"""

from __future__ import annotations

import sys
from pathlib import Path


def twistd_command() -> list[str]:
    """The argv prefix that runs this Python's ``twistd``."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
