"""What the report reads: log files as time-ordered event streams, and bench rows.

Every log is read in one streaming pass by :class:`chatlog.log.LogReader`,
which detects its format (event, dash, json) and role (a server's or a
client's log), so the order of the files does not matter and rotated or
per-worker logs can simply be listed together.  The events of all server
files are merged by time, and so are those of all client files.

``--bench FILE`` is a benchmark's results: a JSON list of rows, one per
server and load, as written by ``python -m chatlog.bench``::

    [{"server": "chatlog", "connections": 100, "msgs_per_s": 41250.0,
      "p99_ms": 3.1, "p50_ms": 1.2, "mode": "closed"}, ...]

``server``, ``connections``, ``msgs_per_s`` and ``p99_ms`` are required;
``mode`` (``closed``, ``pipelined``, ``open``...) separates curves of one
server when several modes are present; other keys are ignored.  An object
``{"rows": [...]}`` is accepted too.
"""

from __future__ import annotations

import heapq
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chatlog.log import LogReader, Parsed


def open_streams(
    readers: Sequence[LogReader],
) -> tuple[list[Iterator[Parsed]], list[Iterator[Parsed]]]:
    """Each file's events, split into (server streams, client streams).

    A file's role is known once its first records are read, so each stream
    is started, its first event taken and put back in front.  Every event is
    tagged with its file's index (``source``), so that connections and
    round trips of different files are never mixed up.
    """
    servers: list[Iterator[Parsed]] = []
    clients: list[Iterator[Parsed]] = []
    for source, reader in enumerate(readers):
        events = iter(reader)
        first = next(events, None)
        if first is None:
            continue
        stream = _tagged(_chain_one(first, events), source)
        (clients if reader.client else servers).append(stream)
    return servers, clients


def _chain_one(first: Parsed, rest: Iterator[Parsed]) -> Iterator[Parsed]:
    yield first
    yield from rest


def _tagged(events: Iterable[Parsed], source: int) -> Iterator[Parsed]:
    for event in events:
        event["source"] = source
        yield event


def merged(streams: list[Iterator[Parsed]]) -> Iterator[Parsed]:
    """The events of several files in time order (each file is nearly in order)."""
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=operator.itemgetter("time"))


def load_bench(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a bench result file (see the module docstring)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("rows", [])
    rows = [
        row
        for row in data
        if isinstance(row, dict) and {"server", "connections", "msgs_per_s", "p99_ms"} <= row.keys()
    ]
    if not rows:
        raise ValueError(f"{path}: no rows with server, connections, msgs_per_s and p99_ms")
    return rows
