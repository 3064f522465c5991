"""``python -m chatlog.bench``: chatlog against the reference peers, side by side.

Each server is started afresh for each load point, pinned to one CPU, and
driven by the native load generator pinned to another; each point is run
``--repeats`` times and the medians are reported.  See ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from chatlog.bench import build, output, servers
from chatlog.bench.run import Load, Settings, measure


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [spec.name for spec in servers.all_servers()]
    parser = argparse.ArgumentParser(
        prog="python -m chatlog.bench",
        description=(
            "Run chatlog and the reference peers on loopback under the same loads "
            "(16-byte lines, a native load generator on another CPU) and print "
            "msgs/s, p50/p99 round trip and server CPU per message, with ratios."
        ),
    )
    parser.add_argument(
        "--servers",
        default=",".join(names),
        help=f"comma-separated, from: {', '.join(names)} (default: all available)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="also run chatlog from this other checkout (a change to try), "
        "as server chatlog@DIRNAME; repeatable",
    )
    parser.add_argument(
        "--connections",
        type=_ints,
        default=[1, 10, 100, 1000],
        help="closed-loop connection counts (default 1,10,100,1000)",
    )
    parser.add_argument(
        "--pipelined",
        default="10x16",
        help="CONNSxIN_FLIGHT for the pipelined point, '' for none (default 10x16)",
    )
    parser.add_argument(
        "--fsync-connections",
        type=_ints,
        default=[100],
        help="connection counts for chatlog --fsync (default 100)",
    )
    parser.add_argument(
        "--rates",
        type=_ints,
        default=[20000],
        help="open-loop total rates in msgs/s, '' for none (default 20000: a rate every "
        "server sustains, to compare latency rather than throughput)",
    )
    parser.add_argument(
        "--rate-connections",
        type=int,
        default=100,
        help="connections for the open-loop rates (default 100)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (1)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per point; medians are shown (3)"
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=0,
        help="runs per point at most when other processes take CPU from "
        "the pinned cores (default 3 x --repeats)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of 1 s after 0.3 s of warm-up per point"
    )
    parser.add_argument(
        "--size", type=int, default=16, help="bytes per line, newline included (16)"
    )
    parser.add_argument("--server-cpu", type=_ints, default=[0], help="CPUs for the server (0)")
    parser.add_argument(
        "--loadgen-cpu", type=_ints, default=[1], help="CPUs for the load generator (1)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="results file (default bench-results.json)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path("bench-results.png"),
        help="plot file (default bench-results.png); '' for none",
    )
    parser.add_argument(
        "--rst", action="store_true", help="also print the table as rst for README.rst"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats = 1.0, 0.3, 1
    return args


def plan(args: argparse.Namespace) -> list[tuple[servers.ServerSpec, Load]]:
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    specs = {spec.name: spec for spec in servers.all_servers()}
    for checkout in args.compare:
        for fsync in (False, True):
            extra = servers.compare_spec(checkout, fsync)
            specs[extra.name] = extra
            if ("chatlog-fsync" if fsync else "chatlog") in wanted:
                wanted.append(extra.name)
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; choose from {', '.join(specs)}")
    loads = [Load("closed", n) for n in args.connections]
    if args.pipelined:
        conns, _, depth = args.pipelined.partition("x")
        loads.append(Load("pipelined", int(conns), int(depth)))
    loads += [Load("open", args.rate_connections, 1, rate) for rate in args.rates]
    points = []
    for name in wanted:
        spec = specs[name]
        if not servers.available(spec):
            continue
        if spec.name.startswith("chatlog-fsync"):
            points += [(spec, Load("closed", n)) for n in args.fsync_connections]
        else:
            points += [(spec, load) for load in loads]
    return points


def pinning(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    usable = os.sched_getaffinity(0)
    server, loadgen = set(args.server_cpu), set(args.loadgen_cpu)
    if server <= usable and loadgen <= usable and not server & loadgen:
        return (
            tuple(sorted(server)),
            tuple(sorted(loadgen)),
            (
                f"server on CPU {','.join(map(str, sorted(server)))}, "
                f"load generator on CPU {','.join(map(str, sorted(loadgen)))}"
            ),
        )
    return (), (), "not pinned (fewer usable CPUs than asked for): results are rough"


def _interrupted(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C, so every server started so far is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    server_cpus, loadgen_cpus, pin_text = pinning(args)
    if loadgen_cpus:
        # Keep this process off the server's core too.
        os.sched_setaffinity(0, set(loadgen_cpus))
    settings = Settings(
        args.duration,
        args.warmup,
        args.repeats,
        args.size,
        server_cpus,
        loadgen_cpus,
        args.max_attempts,
    )
    points = plan(args)
    binaries = {"loadgen": build.build("loadgen")}
    if any(spec.name == "c-epoll" for spec, _ in points):
        binaries["epoll_reply"] = build.build("epoll_reply")

    info = output.machine()
    date = output.today()
    describe_run = (
        f"load: {args.size}-byte lines over loopback; {pin_text}; each point "
        f"{settings.repeats} x {settings.duration:g} s after {settings.warmup:g} s warm-up, "
        "medians shown; fresh server per point; runs in which other processes took "
        "> 10% of a pinned core are retried"
    )
    say = (
        (lambda text: None)
        if args.quiet
        else (lambda text: print(text, file=sys.stderr, flush=True))
    )
    say(output.header(info, date, describe_run))

    rows: list[dict[str, Any]] = []
    by_load: dict[Load, list[servers.ServerSpec]] = {}
    for spec, load in points:
        by_load.setdefault(load, []).append(spec)
    with tempfile.TemporaryDirectory(prefix="chatlog-bench-") as scratch:
        for load, specs in by_load.items():
            rows += measure(specs, load, binaries, Path(scratch), settings, say)
    order = {name: i for i, (name, _) in enumerate(dict.fromkeys((s.name, 0) for s, _ in points))}
    rows.sort(key=lambda row: order.get(row["server"], len(order)))
    for row in rows:
        row["machine"] = output.machine_line(info)
        row["date"] = date
        row["nproc"] = info["nproc"]
        row["cpu"] = info["cpu"]

    good = [row for row in rows if row["msgs_per_s"] is not None]
    print(output.header(info, date, describe_run))
    print()
    print(output.text_table(good))
    for note in output.notes(good):
        print(note)
    failed = [row for row in rows if row["msgs_per_s"] is None]
    for row in failed:
        print(f"FAILED: {row['server']} {output.load_name(row)}: {row['error']}")
    verdicts = output.targets_text(good)
    if verdicts:
        print("\ntargets:")
        print(verdicts)
    if args.rst:
        print("\n.. rst table for README.rst\n")
        print(
            f"{args.size}-byte lines over loopback, {date}, on {output.machine_line(info)}; "
            f"{pin_text}; {settings.repeats} x {settings.duration:g} s per point, medians. "
            "``chatlog ×`` is chatlog's msgs/s divided by the row's.\n"
        )
        print(output.rst_table(good))
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nresults: {args.json}", end="")
    if str(args.plot) not in ("", "."):
        output.plot(good, args.plot, f"chatlog bench, {date}, {output.machine_line(info)}")
        print(f", plot: {args.plot}", end="")
    print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
