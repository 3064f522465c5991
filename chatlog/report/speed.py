"""How fast, and in how much memory, does the report read a big log?

``python -m chatlog.report.speed [--records N] [--format F] [--dir DIR]``
writes a synthetic server log of N records (default one million: connects,
messages with some hostile text, disconnects, limits) and a client log of
as many records (sends and replies with round trips), both with the real
formatters of :mod:`chatlog.log`, then runs ``python -m chatlog.report``
on them in a child process and prints its wall time and peak resident memory
(the child's own ``ru_maxrss``, so generating the logs does not count).

Not part of the test suite: it takes tens of seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatlog.log import make_formatter

START = 1_795_000_000.0  # 2026-11-18: any fixed time will do
_HOSTILE = [
    b"plain text",
    b"tab\there",
    b"\xff\xfe not utf-8",
    "line\u2028sep \x85".encode(),
    b"[Connection] #1 fake",
    b"back\\slash",
    "caf\u00e9".encode(),
]


def server_events(
    records: int, connections: int, seconds: float, seed: int = 1
) -> Iterator[dict[str, Any]]:
    """About ``records`` server events over ``seconds``: waves of overlapping connections.

    Each wave opens a growing number of connections, interleaves their
    messages at random, and closes them, so concurrency rises and falls.
    """
    rng = random.Random(seed)
    waves = 10
    per_conn = max(1, (records - 2) // connections - 2)
    rate = records / seconds
    now = START
    yield {
        "event": "start",
        "time": now,
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 1,
        "version": "bench",
    }
    budget = records - 2
    conn = 0
    for wave in range(waves):
        size = max(1, connections * 2 * (wave + 1) // (waves * (waves + 1)))
        members: list[tuple[dict[str, Any], list[int]]] = []
        for _ in range(min(size, budget // (per_conn + 2))):
            conn += 1
            fields: dict[str, Any] = {
                "ip": f"10.0.{conn % 7}.{conn % 250 + 1}",
                "port": 1024 + conn % 60000,
                "conn": conn,
            }
            members.append((fields, [0]))
            now += rng.expovariate(rate)
            yield {"event": "connect", "time": now, **fields}
        budget -= len(members) * (per_conn + 2)
        pending = [m for m in members for _ in range(per_conn)]
        rng.shuffle(pending)
        for fields, sent in pending:
            sent[0] += 1
            seq = sent[0]
            now += rng.expovariate(rate)
            msg = _HOSTILE[seq % len(_HOSTILE)] if seq % 97 == 0 else b"message %d" % seq
            yield {"event": "message", "time": now, "seq": seq, "msg": msg, **fields}
        for fields, (count,) in members:
            now += rng.expovariate(rate)
            how = "lost" if fields["conn"] % 50 == 0 else "clean"
            yield {
                "event": "disconnect",
                "time": now,
                "how": how,
                "messages": count,
                "seconds": 1.0,
                **fields,
            }
    if budget >= 2:
        # The remainder, so that the log has exactly ``records`` records.
        conn += 1
        fields = {"ip": "10.0.9.9", "port": 9999, "conn": conn}
        yield {"event": "connect", "time": now, **fields}
        for seq in range(1, budget - 1):
            now += rng.expovariate(rate)
            yield {"event": "message", "time": now, "seq": seq, "msg": b"rest", **fields}
        yield {
            "event": "disconnect",
            "time": now,
            "how": "clean",
            "messages": budget - 2,
            "seconds": 1.0,
            **fields,
        }
    yield {"event": "stop", "time": now, "connections": conn, "messages": 0, "refused": 0}


def client_events(records: int, seconds: float, seed: int = 2) -> Iterator[dict[str, Any]]:
    """Sends and replies (log-normal round trips) over ``seconds``."""
    rng = random.Random(seed)
    now = START
    fields = {"ip": "127.0.0.1", "port": 5000}
    for seq in range(1, records // 2 + 1):
        now += rng.expovariate(records / 2 / seconds)
        rtt = rng.lognormvariate(-0.5, 0.6)
        conn = seq % 100 + 1
        yield {"event": "sent", "time": now, "conn": conn, "seq": seq, "msg": b"hello", **fields}
        yield {
            "event": "reply",
            "time": now + rtt / 1000,
            "conn": conn,
            "seq": seq,
            "msg": b"Server received: hello",
            "rtt_ms": rtt,
            **fields,
        }


def write_log(path: Path, events: Iterator[dict[str, Any]], fmt: str) -> int:
    formatter = make_formatter(fmt)
    count = 0
    with open(path, "wb") as f:
        batch: list[bytes] = []
        for event in events:
            batch.append(formatter(event))
            if len(batch) >= 10000:
                f.write(b"".join(batch))
                count += len(batch)
                batch = []
        f.write(b"".join(batch))
        count += len(batch)
    return count


def run_report(args: list[str]) -> tuple[float, float, int]:
    """Run the report in a child; (wall seconds, CPU seconds, peak RSS in KiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlog.report", *args], stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"report failed with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlog.report.speed", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="records per log")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=600.0, help="span of the run")
    parser.add_argument("--format", default="event", choices=("event", "dash", "json"))
    parser.add_argument("--dir", help="where to write the logs and report (default: a temp dir)")
    parser.add_argument("--no-client", action="store_true", help="no client log")
    args = parser.parse_args(argv)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="chatlog-report-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server_log = workdir / f"server.{args.format}.log"
    n = write_log(
        server_log, server_events(args.records, args.connections, args.seconds), args.format
    )
    logs = [str(server_log)]
    print(f"{server_log}: {n:,} records, {server_log.stat().st_size / 1e6:,.1f} MB")
    if not args.no_client:
        client_log = workdir / f"client.{args.format}.log"
        n = write_log(client_log, client_events(args.records, args.seconds), args.format)
        logs.append(str(client_log))
        print(f"{client_log}: {n:,} records, {client_log.stat().st_size / 1e6:,.1f} MB")
    wall, cpu, rss_kib = run_report([*logs, "-o", str(workdir / "report")])
    print(
        f"report: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss_kib / 1024:.0f} MiB "
        f"-> {workdir / 'report'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
