"""``python -m chatlog.report``: turn server and client logs into numbers and pictures.

The report reads any number of server and client logs, in any format and
order, in one streaming pass, and writes a summary table, ``summary.json``,
PNG plots and ``report.html``.  Its round trips are counted like the
client's own (:mod:`chatlog.latency`), so the two agree.

Its modules, in the order the data flows:

- :mod:`~chatlog.report.inputs`: the log files as time-ordered event
  streams, and ``--bench`` rows;
- :mod:`~chatlog.report.stats`: events folded into counters (server and
  client), in memory that grows with seconds and connections, not messages;
- :mod:`~chatlog.report.timeline`: round-trip percentiles over time, bounded;
- :mod:`~chatlog.report.summary`: :func:`build_report` and the
  ``summary.json`` dict;
- :mod:`~chatlog.report.text`: numbers, times and headline rows as text;
- :mod:`~chatlog.report.console`: the table printed on stdout;
- :mod:`~chatlog.report.plots`: the PNG plots (matplotlib);
- :mod:`~chatlog.report.page`: ``report.html``, one self-contained page;
- :mod:`~chatlog.report.outputs`: everything written into the output directory;
- :mod:`~chatlog.report.cli`: the command line (``main``);
- :mod:`~chatlog.report.speed`: ``python -m chatlog.report.speed``, how fast
  and in how much memory a big log is read.
"""

from chatlog.report.cli import main
from chatlog.report.console import print_summary
from chatlog.report.inputs import load_bench
from chatlog.report.outputs import write_report
from chatlog.report.summary import Report, build_report

__all__ = ["Report", "build_report", "load_bench", "main", "print_summary", "write_report"]
