"""``python -m chatlog.bench``: measure chatlog against reference servers on loopback.

- :mod:`chatlog.bench.__main__`: the command line and the sweep;
- :mod:`chatlog.bench.run`: one load point against one server, repeated, medians;
- :mod:`chatlog.bench.servers`: how each server is started (chatlog under
  ``twistd``, ``--workers 2`` for ``--workers-scaling``, and the peers);
- :mod:`chatlog.bench.peers`: the REFERENCE servers (not part of chatlog);
- ``loadgen.c``: the native load generator (epoll, closed or open loop,
  per-message round trips in a log-linear histogram, JSON out), compiled by
  :mod:`chatlog.bench.build` with the machine's ``gcc`` into a cache directory;
- :mod:`chatlog.bench.targets`: what chatlog aims for, and judging a run
  against it (``--targets``, ``--check``);
- :mod:`chatlog.bench.drivers`: ``--client``, chatlog's own client against
  the native load generator on one server;
- :mod:`chatlog.bench.output`: the table, rst, JSON and the plot.
"""
