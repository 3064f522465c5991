"""REFERENCE servers for ``python -m chatlog.bench``: not part of chatlog.

Each one answers ``\\n``-terminated lines with ``Server received: <line>\\n``,
listens on ``127.0.0.1`` (port 0 by default: the kernel picks a free one) and
prints ``listening on 127.0.0.1:PORT`` once it listens, which is how the bench
finds it.  They are deliberately the plain, idiomatic shape of each design, so
that chatlog is compared with what a user would otherwise write:

- :mod:`~chatlog.bench.peers.twisted_reply`: a bare Twisted ``LineReceiver``, no log;
- :mod:`~chatlog.bench.peers.asyncio_reply`: asyncio streams, no log (``--uvloop``
  runs the same code on uvloop's event loop);
- :mod:`~chatlog.bench.peers.threaded_seed`: the seeds' thread-per-client
  ``socket`` server, appending ``Event_Type: Timestamp - Message`` to ``log.txt``
  with an open/append/close per event;
- ``epoll_reply.c``: a minimal C epoll server, no log, compiled at bench time;
  the floor for server CPU per message.
"""
