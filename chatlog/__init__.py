"""chatlog: a Twisted line server that answers and logs every message, and the tools to measure it."""

__version__ = "0.1.0"
