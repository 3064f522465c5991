"""``python -m chatlog.client``: run :func:`chatlog.client.main` under ``task.react``."""

from __future__ import annotations

import sys

from twisted.internet import task

from chatlog.client import main

if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
