"""A fleet's logs, node by node: figures per node, and the nodes that went silent.

A node is the ``node`` field of its records (``twistd chatlog --node NAME``;
json has it in every record, the text formats in ``Server Started``, which
names the node of the records of that file that follow it).  So the report
reads a fleet from every node's logs as well as from a central collector's
files (``contrib/fleet``'s rsyslog writes one per node), in any order.
Records of no named node are one row, :data:`UNNAMED`; without a named node
there is no per-node view (rotated or per-worker logs of one server are one
server, not a fleet).

A node that is up answers HAProxy's health check every few hundred
milliseconds, so its log never pauses for long: one whose last record is
:data:`SILENT_S` (``--silent-after``) or more before the fleet's last, and is
not a ``Server Stopped``, went silent (killed, hung, or cut off from the collector), and the
report says so.  The health checks themselves are counted apart per node
(``--health-check LINE``), not as clients' messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chatlog.log import Parsed
from chatlog.report.text import stamp

#: The row of the records that name no node.
UNNAMED = "(no --node)"
#: Seconds of silence before the fleet's last record that make a node "silent".
SILENT_S = 5.0


@dataclass
class NodeFigures:
    """What one node's records add up to."""

    messages: int = 0
    health_checks: int = 0
    connections: int = 0
    live: int = 0
    peak_concurrent: int = 0
    starts: int = 0
    stops: int = 0
    first: float | None = None
    last: float | None = None
    #: The kind of its last record ("stop" when it stopped as it should).
    last_event: str = ""
    #: Clients' messages per calendar second, for the plot.
    per_second: Counter[int] = field(default_factory=Counter)


class NodeFold:
    """Fold a time-ordered stream of server events node by node."""

    def __init__(self, health_check: bytes | None = None, silent_after: float = SILENT_S) -> None:
        self.health_check = health_check
        self.silent_after = silent_after
        self.nodes: dict[str, NodeFigures] = {}
        # A text log names its node only in Server Started: the node of each
        # file from there on (file index -> name).
        self._file_node: dict[int, str] = {}
        self.last: float | None = None

    def add(self, event: Parsed) -> None:
        source = event.get("source", 0)
        kind = event["event"]
        name = event.get("node")
        if name is not None:
            if kind == "start":
                self._file_node[source] = name
        else:
            name = self._file_node.get(source, UNNAMED)
        figures = self.nodes.get(name)
        if figures is None:
            figures = self.nodes[name] = NodeFigures()
        when = event["time"]
        if figures.first is None:
            figures.first = when
        figures.last = self.last = when
        figures.last_event = kind
        if kind == "message":
            if event.get("msg") == self.health_check:
                figures.health_checks += 1
            else:
                figures.messages += 1
                figures.per_second[int(when)] += 1
        elif kind == "connect":
            figures.connections += 1
            figures.live += 1
            figures.peak_concurrent = max(figures.peak_concurrent, figures.live)
        elif kind == "disconnect":
            figures.live = max(figures.live - 1, 0)
        elif kind == "start":
            figures.starts += 1
            figures.live = 0
        elif kind == "stop":
            figures.stops += 1

    def silent(self, figures: NodeFigures) -> float | None:
        """Seconds ``figures``' node was silent before the fleet's last record, if it went silent."""
        if figures.last is None or self.last is None or figures.last_event == "stop":
            return None
        gap = self.last - figures.last
        return gap if gap >= self.silent_after else None


def nodes_summary(fold: NodeFold, utc: bool) -> list[dict[str, Any]]:
    """``summary.json``'s ``nodes``: a row per node, by name (empty for a single unnamed log)."""
    if not fold.nodes.keys() - {UNNAMED}:
        return []
    rows = []
    for name, figures in sorted(fold.nodes.items()):
        span = (figures.last or 0.0) - (figures.first or 0.0)
        silent = fold.silent(figures)
        rows.append(
            {
                "node": name,
                "messages": figures.messages,
                "health_checks": figures.health_checks,
                "connections": figures.connections,
                "peak_concurrent": figures.peak_concurrent,
                "messages_per_s": figures.messages / span if span > 0 else float(figures.messages),
                "first": stamp(figures.first, utc),
                "last": stamp(figures.last, utc),
                "starts": figures.starts,
                "stops": figures.stops,
                "silent_s": silent,
            }
        )
    return rows


#: The columns of the per-node table (console and page alike).
NODE_HEADERS = ["node", "messages", "msgs/s", "conns", "peak", "checks", "first", "last", "ended"]


def node_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The per-node table's rows, the silent nodes' ending said in words."""
    return [
        [
            row["node"],
            row["messages"],
            round(row["messages_per_s"]),
            row["connections"],
            row["peak_concurrent"],
            row["health_checks"],
            (row["first"] or "")[11:19],
            (row["last"] or "")[11:19],
            _ended(row),
        ]
        for row in rows
    ]


def _ended(row: dict[str, Any]) -> str:
    if row["silent_s"] is not None:
        return f"SILENT {row['silent_s']:.1f} s"
    if row["stops"] and row["stops"] >= row["starts"]:
        return "stopped"
    return "running"


def silent_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per node that went silent."""
    return [
        f"node {row['node']} went silent: its last record ({row['last']}) is "
        f"{row['silent_s']:.1f} s before the fleet's last, and is not a Server Stopped"
        for row in rows
        if row["silent_s"] is not None
    ]


__all__ = [
    "NODE_HEADERS",
    "SILENT_S",
    "UNNAMED",
    "NodeFigures",
    "NodeFold",
    "node_rows",
    "nodes_summary",
    "silent_warnings",
]
