"""The server: ``twistd chatlog``, from its options to each connection.

- :mod:`~chatlog.server.tap`: the options and ``makeService`` (wiring only);
- :mod:`~chatlog.server.protocol`: one connection (lines in, replies out after the log write);
- :mod:`~chatlog.server.closing`: how the server closes a connection (replies first, no reset);
- :mod:`~chatlog.server.proxy`: strict PROXY v1/v2 headers for ``haproxy:`` ports;
- :mod:`~chatlog.server.closing`: how the server closes a connection (replies first, no reset);
- :mod:`~chatlog.server.proxy`: strict PROXY v1/v2 headers for ``haproxy:`` ports;
- :mod:`~chatlog.server.factory`: what connections share (ids, limits, timeouts, counters);
- :mod:`~chatlog.server.service`: listening, the log's lifetime, SIGHUP, a clean stop;
- :mod:`~chatlog.server.listening`: the ``--port`` endpoint, shared or inherited by workers;
- :mod:`~chatlog.server.workers`: ``--workers N`` (the pool and the worker's side);
- :mod:`~chatlog.server.metrics`: ``--metrics`` (Prometheus);
- :mod:`~chatlog.server.errors`: startup errors as one line on stderr;
- :mod:`~chatlog.server.command`: the command that runs this install's twistd.

The speed-ups that reach into Twisted's internals are in :mod:`chatlog._fastpath`.
"""
