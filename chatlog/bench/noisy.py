"""``python -m chatlog.bench.noisy``: per-client quotas measured against their targets.

Two measurements, each on a fresh ``twistd chatlog`` (json log) on loopback:

- *noisy neighbour* (default): 50 well-behaved connections from 127.0.0.1
  at a steady open-loop rate (``python -m chatlog.client --rate``), alone
  and beside one pipelined flooder from 127.0.0.2, without and with
  ``--rate-limit``: the well-behaved clients' p99 in each case, and the
  flooder's rate held over the window, every message it sent answered and
  logged (its ``message`` records counted in the server's log); the four
  points run ``--noisy-rounds`` times, their order rotated from round to
  round, and the medians are judged (one run's p99 is at the mercy of the
  machine);
- *fairness* (default): four equal flooders from 127.0.0.2-5 with and
  without ``--rate-limit``: each one's rate and Jain's fairness index
  ``(sum x)^2 / (n sum x^2)``;

What quotas cost when on but never hit is a server of the main bench:
``python -m chatlog.bench --servers chatlog,chatlog-quotas`` (its C load
generator is not the limit, as a Python client would be).

A flooder is this module run with ``--flooder SOURCE``: one connection bound
to SOURCE (every 127/8 address is local) that keeps ``--pipeline`` lines in
flight, counts the replies of the measuring window after a warm-up, then
stops sending and reads until every line it sent is answered.  Its
first line of JSON on stdout says what it saw.

Nothing is pinned: the machine has two cores for the server, the clients and
the flooders, as a shared host would.  Each noisy-neighbour run waits for a
quiet machine and is run again when other processes took CPU during it
(:mod:`chatlog.bench.quiet`).  Run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import json
import selectors
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatlog.bench import quiet, servers
from chatlog.server.command import twistd_command

REPLY = b"Server received: "
#: CPU seconds other processes may take during a run before it counts as spoiled.
FOREIGN_LIMIT = 0.5
RETRIES = 3
#: The target: the well-behaved clients' p99 beside a held flooder, against alone.
P99_LIMIT = 1.2
WELL_SOURCE = "127.0.0.1"
FLOOD_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


# -- the flooder (a process of its own) ----------------------------------------------


def flood(
    host: str, port: int, source: str, warmup: float, duration: float, pipeline: int, size: int
) -> dict[str, Any]:
    """Keep ``pipeline`` lines in flight from ``source`` for warmup + duration; then drain."""
    line = source.encode().replace(b".", b"-") + b"x" * max(0, size - len(source)) + b"\n"
    reply = REPLY + line
    sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    batch = 64
    chunk = line * batch
    sent = answered = 0
    pending = b""  # bytes of lines accepted for sending, not yet written
    tail = b""  # an unfinished reply line
    bad = 0
    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + duration
    window_first: int | None = None
    window_last = 0
    sending = True
    drain_deadline = window_end + 60.0
    while True:
        now = time.monotonic()
        if sending and now >= window_end:
            sending = False
        if window_first is None and now >= window_start:
            window_first = answered
        if now >= window_end and window_last == 0:
            window_last = answered
        if not sending and not pending and answered >= sent:
            break
        if now > drain_deadline:
            break
        want_write = bool(pending) or (sending and sent - answered + batch <= pipeline)
        selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0))
        for _key, events in selector.select(timeout=0.05):
            if events & selectors.EVENT_READ:
                data = sock.recv(262144)
                if not data:
                    raise ConnectionError("the server closed the connection")
                data = tail + data
                cut = data.rfind(b"\n") + 1
                whole, tail = data[:cut], data[cut:]
                count = whole.count(b"\n")
                if whole != reply * count:
                    bad += count - whole.count(reply)
                answered += count
            if events & selectors.EVENT_WRITE:
                if not pending and sending and sent - answered + batch <= pipeline:
                    pending = chunk
                    sent += batch
                if pending:
                    try:
                        written = sock.send(pending)
                    except BlockingIOError:
                        written = 0
                    pending = pending[written:]
    drained = time.monotonic() - window_end
    sock.close()
    in_window = window_last - (window_first or 0)
    return {
        "source": source,
        "sent": sent,
        "answered": answered,
        "bad_replies": bad,
        "all_answered": answered == sent and bad == 0,
        "window_s": duration,
        "window_answered": in_window,
        "msgs_per_s": in_window / duration,
        "drain_s": round(drained, 3),
    }


# -- one run: a fresh server, the well-behaved clients and the flooders ---------------------


def start_server(scratch: Path, extra: Sequence[str]) -> servers.Running:
    def argv(binaries: dict[str, Path], where: Path) -> list[str]:
        return [
            *twistd_command(), "-n", "--pidfile=", "chatlog",
            "--port", "tcp:0:interface=127.0.0.1",
            "--logfile", str(where / "chatlog.log"), "--format", "json",
            "--max-per-ip", "0", *extra,
        ]  # fmt: skip

    spec = servers.ServerSpec("chatlog", argv, "twistd chatlog " + " ".join(extra), False)
    (scratch / "chatlog.log").unlink(missing_ok=True)
    return servers.start(spec, {}, scratch, None)


def run_client(server: servers.Running, options: list[str], timeout: float) -> dict[str, Any]:
    """``python -m chatlog.client`` against ``server`` with ``options``; its ``--json`` summary."""
    argv = [
        sys.executable,
        "-m",
        "chatlog.client",
        "--host",
        server.host,
        "--port",
        str(server.port),
    ]
    done = subprocess.run(
        [*argv, *options, "--json"], capture_output=True, timeout=timeout, check=True
    )
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def count_records(log: Path, needles: Sequence[bytes]) -> list[int]:
    """How many records of a json log hold each of ``needles``, read a chunk of whole lines at a time.

    An unthrottled flooder leaves gigabytes of log: read whole, and split
    into lines, it took this process 8 GB and minutes.
    """
    counts = [0] * len(needles)
    tail = b""
    with log.open("rb") as file:
        while chunk := file.read(1 << 24):
            chunk = tail + chunk
            cut = chunk.rfind(b"\n") + 1
            whole, tail = chunk[:cut], chunk[cut:]
            for i, needle in enumerate(needles):
                counts[i] += whole.count(needle)
    return counts


def run(
    scratch: Path,
    limit: Sequence[str],
    flooders: Sequence[str],
    well: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One point: returns the well-behaved summary (if any) and each flooder's."""
    server = start_server(scratch, limit)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for source in flooders:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "chatlog.bench.noisy",
                        "--flooder",
                        source,
                        "--host",
                        server.host,
                        "--port",
                        str(server.port),
                        "--warmup",
                        str(args.warmup),
                        "--duration",
                        str(args.duration),
                        "--pipeline",
                        str(args.pipeline),
                        "--size",
                        str(args.size),
                    ],  # fmt: skip
                    stdout=subprocess.PIPE,
                )
            )
        well_result = None
        if well:
            well_result = run_client(
                server,
                ["--connections", str(args.well_connections), "--rate", str(args.well_rate),
                 "--duration", str(args.duration), "--warmup", str(args.warmup),
                 "--size", str(args.size)],
                timeout=args.duration + args.warmup + 120,
            )  # fmt: skip
        floods = []
        for proc in procs:
            out, _ = proc.communicate(timeout=args.duration + args.warmup + 120)
            floods.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.stop()
    log = scratch / "chatlog.log"
    needles = [b'"event": "message", "ip": "%s"' % f["source"].encode() for f in floods]
    *logged, throttled = count_records(log, [*needles, b'"event": "throttled"'])
    for result, count in zip(floods, logged, strict=True):
        result["logged"] = count
        result["all_logged"] = count == result["sent"]
    return {"well": well_result, "floods": floods, "throttled_records": throttled}


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


# -- the reports ------------------------------------------------------------------------


def measured(scratch: Path, extra: Sequence[str], flooders: Sequence[str], well: bool,
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """:func:`run` on a quiet machine; a run the neighbours spoiled is run again.

    What other processes took of the CPUs during a run is the machine's busy
    time less ours and that of the server, clients and flooders (all children,
    reaped by then): over :data:`FOREIGN_LIMIT` seconds, the run measured them too.
    """
    for _ in range(RETRIES + 1):
        quiet.wait_quiet()
        busy0, own0 = quiet.busy_cpu_s(), quiet.own_cpu_s()
        result = run(scratch, extra, flooders, well, args)
        foreign = (quiet.busy_cpu_s() - busy0) - (quiet.own_cpu_s() - own0)
        result["foreign_cpu_s"] = round(foreign, 2)
        if foreign <= FOREIGN_LIMIT:
            break
        result["spoiled"] = True
    return result


def noisy(scratch: Path, args: argparse.Namespace) -> list[str]:
    """The noisy-neighbour points; each run is printed as it ends, the medians are returned."""
    limit = ["--rate-limit", args.rate_limit]
    rate = float(args.rate_limit.split("/")[0])
    heading = [
        f"noisy neighbour: {args.well_connections} connections from {WELL_SOURCE} at "
        f"{args.well_rate:g} msgs/s in total (open loop), one flooder from {FLOOD_SOURCES[0]} "
        f"with {args.pipeline} lines in flight; {args.duration:g} s measured after "
        f"{args.warmup:g} s of warm-up; {args.noisy_rounds} rounds, each point once a round "
        "(order rotated), on a quiet machine (a run others took CPU from is run again)",
        "",
    ]
    print("\n".join(heading), flush=True)
    alone, alone_limited = "alone, no limit", "alone, --rate-limit " + args.rate_limit
    free, held = "with flooder, no limit", "with flooder, --rate-limit " + args.rate_limit
    points = {
        alone: ([], False),
        alone_limited: (limit, False),
        free: ([], True),
        held: (limit, True),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in points}
    names = list(points)
    for round_ in range(args.noisy_rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            extra, with_flooder = points[name]
            flooders = FLOOD_SOURCES[:1] if with_flooder else []
            result = measured(scratch, extra, flooders, True, args)
            results[name].append(result)
            rtt = result["well"]["rtt_ms"]
            flood = ""
            if result["floods"]:
                f = result["floods"][0]
                flood = (
                    f", flooder {f['msgs_per_s']:,.0f} msgs/s, answered "
                    f"{'all' if f['all_answered'] else 'NOT ALL'}, logged "
                    f"{'all' if f['all_logged'] else 'NOT ALL'}"
                )
            print(
                f"round {round_ + 1}  {name:40} well p50 {rtt['p50']:.3f} p99 {rtt['p99']:.3f} ms"
                f"{flood}; others' CPU {result['foreign_cpu_s']:.2f} s"
                + ("  SPOILED (retries used up)" if result.get("spoiled") else ""),
                flush=True,
            )

    def median_p99(name: str) -> float:
        return float(statistics.median(r["well"]["rtt_ms"]["p99"] for r in results[name]))

    out = [
        "",
        f"medians of {args.noisy_rounds} rounds",
        f"{'run':44} {'well p50 ms':>11} {'well p99 ms':>11} {'p99 x alone':>11} "
        f"{'flooder msgs/s':>14} {'answered':>9} {'logged':>7}",
    ]
    for name, runs in results.items():
        p50 = statistics.median(r["well"]["rtt_ms"]["p50"] for r in runs)
        flood_cols = ""
        if runs[0]["floods"]:
            floods = [r["floods"][0] for r in runs]
            flood_cols = (
                f"{statistics.median(f['msgs_per_s'] for f in floods):14,.0f} "
                f"{'all' if all(f['all_answered'] for f in floods) else 'NO':>9} "
                f"{'all' if all(f['all_logged'] for f in floods) else 'NO':>7}"
            )
        out.append(
            f"{name:44} {p50:11.3f} {median_p99(name):11.3f} "
            f"{median_p99(name) / median_p99(alone):11.2f} " + flood_cols
        )
    ratio = median_p99(held) / median_p99(alone_limited)
    out.append(
        f"\nwell-behaved p99 with the held flooder / alone (both --rate-limit "
        f"{args.rate_limit}): {ratio:.2f}x ({'within' if ratio <= P99_LIMIT else 'OVER'} "
        f"{P99_LIMIT}x)"
    )
    for run_ in results[held]:
        f = run_["floods"][0]
        out.append(
            f"flooder held: {f['msgs_per_s']:,.1f} msgs/s = {100 * (f['msgs_per_s'] / rate - 1):+.1f}% "
            f"of {rate:,.0f} over {args.duration:g} s; sent {f['sent']:,}, answered "
            f"{f['answered']:,}, logged {f['logged']:,}, Throttled records {run_['throttled_records']}"
        )
    f = statistics.median(r["floods"][0]["msgs_per_s"] for r in results[free])
    out += [f"flooder unthrottled: {f:,.0f} msgs/s = {f / rate:.1f}x the limit", ""]
    for name, runs in results.items():
        for i, result in enumerate(runs):
            out.append(f"raw {name} (round {i + 1}): " + json.dumps(result, sort_keys=True))
    return out


def fairness(scratch: Path, args: argparse.Namespace) -> list[str]:
    out = [
        "",
        f"fairness: 4 equal flooders from {', '.join(FLOOD_SOURCES)}, {args.pipeline} lines in "
        f"flight each, {args.duration:g} s after {args.warmup:g} s of warm-up",
        "",
    ]
    for name, extra in (
        ("no limit", []),
        ("--rate-limit " + args.rate_limit, ["--rate-limit", args.rate_limit]),
    ):
        result = run(scratch, extra, FLOOD_SOURCES, False, args)
        rates = [f["msgs_per_s"] for f in result["floods"]]
        answered = all(f["all_answered"] for f in result["floods"])
        logged = all(f["all_logged"] for f in result["floods"])
        out.append(
            f"{name:28} rates {' / '.join(f'{r:,.0f}' for r in rates)} msgs/s; "
            f"Jain's index {jain(rates):.4f}; all answered: {answered}; all logged: {logged}; "
            f"Throttled records {result['throttled_records']}"
        )
        out.append(f"raw {name}: " + json.dumps(result, sort_keys=True))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlog.bench.noisy", description=__doc__)
    parser.add_argument("--rate-limit", default="1000", help="the server's --rate-limit")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--pipeline", type=int, default=1000, help="a flooder's lines in flight")
    parser.add_argument("--size", type=int, default=16, help="line size in bytes, newline included")
    parser.add_argument("--well-connections", type=int, default=50)
    parser.add_argument("--well-rate", type=float, default=500.0, help="msgs/s in total")
    parser.add_argument(
        "--noisy-rounds", type=int, default=3, help="rounds of the noisy-neighbour points"
    )
    parser.add_argument("--no-fairness", action="store_true")
    flooder = parser.add_argument_group("one flooder (what the bench starts)")
    flooder.add_argument("--flooder", metavar="SOURCE", help="flood from SOURCE; JSON out")
    flooder.add_argument("--host", default="127.0.0.1")
    flooder.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.flooder:
        result = flood(
            args.host, args.port, args.flooder, args.warmup, args.duration, args.pipeline, args.size
        )
        print(json.dumps(result), flush=True)
        return 0
    print("$ " + shlex.join(["python", "-m", "chatlog.bench.noisy", *(argv or sys.argv[1:])]))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {servers.ROOT}", flush=True)
    with tempfile.TemporaryDirectory(prefix="chatlog-noisy-") as where:
        scratch = Path(where)
        lines = noisy(scratch, args)
        if not args.no_fairness:
            lines += fairness(scratch, args)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
