"""``python -m chatlog.bench``: chatlog against the reference peers, side by side.

Each server is started afresh for each load point, pinned to one CPU, and
driven by the native load generator pinned to another; each point is run
``--repeats`` times and the medians are reported.  See ``--help``.

With ``--sizes`` and/or ``--formats`` the sweep runs at each line size, with
chatlog in each log format (:mod:`chatlog.bench.sizes`).  Besides that, two
opt-in comparisons: ``--client`` (chatlog's own
client against the native generator, :mod:`chatlog.bench.drivers`) and
``--workers-scaling`` (chatlog with ``--workers 2`` against one process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from chatlog.bench import build, drivers, output, servers, sizes, targets
from chatlog.bench.run import Load, Settings, measure

#: What each mode runs unless told otherwise: servers, closed-loop
#: connections, the pipelined point, open-loop rates.
DEFAULTS: dict[str, tuple[str, list[int], str, list[int]]] = {
    "sweep": (
        ",".join(spec.name for spec in servers.all_servers()),
        [1, 10, 100, 1000],
        "10x16",
        [20000],
    ),
    "client": ("chatlog", [100], "", []),
    "workers": ("chatlog,chatlog-w2", [100], "10x16", []),
    "sizes": (sizes.default_servers(sizes.DEFAULT_FORMATS), [100], "10x16", []),
}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [spec.name for spec in servers.named_servers()]
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
        help=f"comma-separated, from: {', '.join(names)} (default: all available but "
        "chatlog-w2; --client: chatlog; --workers-scaling: chatlog,chatlog-w2)",
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--client",
        action="store_true",
        help="instead of the sweep: drive one server (default chatlog, closed x100) in turn "
        "with the native load generator and with python -m chatlog.client, and print the "
        "client's msgs/s over the generator's, round by round",
    )
    modes.add_argument(
        "--workers-scaling",
        action="store_true",
        help="instead of the sweep: chatlog with --workers 2 (chatlog-w2) against one process, "
        "closed x100 and 16 in flight x10, servers and load generator sharing every CPU; "
        "prints 2 workers' msgs/s over 1 worker's, round by round",
    )
    modes.add_argument(
        "--targets",
        action="store_true",
        help="print the targets (what chatlog aims for) and exit without running anything",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit status 1 when a target this run could judge was SHORT (named on stderr), "
        "0 when every judged target was met",
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
        help="closed-loop connection counts (default 1,10,100,1000; --client and "
        "--workers-scaling: 100)",
    )
    parser.add_argument(
        "--pipelined",
        help="CONNSxIN_FLIGHT for the pipelined point, '' for none (default 10x16; --client: none)",
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
        help="open-loop total rates in msgs/s, '' for none (default 20000: a rate every "
        "server sustains, to compare latency rather than throughput; --client and "
        "--workers-scaling: none)",
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
    parser.add_argument(
        "--sizes",
        type=sizes.parse_sizes,
        help="run every load at each of these line sizes (bytes, newline included; 1k = 1024), "
        "show MiB/s beside msgs/s and plot MiB/s against size; with no --formats: "
        f"{','.join(sizes.DEFAULT_FORMATS)}; default servers: chatlog in each format, "
        f"{', '.join(sizes.PEERS)}; default loads: closed x100 and 16 in flight x10",
    )
    parser.add_argument(
        "--formats",
        type=sizes.parse_formats,
        help=f"chatlog's log formats to run, from {', '.join(sizes.FORMATS)} (as servers "
        f"{', '.join(sizes.FORMATS.values())}); with no --sizes: "
        f"{','.join(map(str, sizes.DEFAULT_SIZES))}",
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
    args.mode = "client" if args.client else "workers" if args.workers_scaling else "sweep"
    if args.sizes is not None or args.formats is not None:
        if args.mode != "sweep":
            parser.error(
                "--sizes and --formats are for the sweep, not --client or --workers-scaling"
            )
        args.mode = "sizes"
        args.sizes = args.sizes or sizes.DEFAULT_SIZES
        args.formats = args.formats or sizes.DEFAULT_FORMATS
    wanted, connections, pipelined, rates = DEFAULTS[args.mode]
    if args.mode == "sizes":
        wanted = sizes.default_servers(args.formats or sizes.DEFAULT_FORMATS)
    #: Whether the servers were named on the command line (a missing one is an error then).
    args.servers_named = args.servers is not None
    args.servers = wanted if args.servers is None else args.servers
    args.connections = connections if args.connections is None else args.connections
    args.pipelined = pipelined if args.pipelined is None else args.pipelined
    args.rates = rates if args.rates is None else args.rates
    if args.client and (args.check or args.compare):
        parser.error("--client compares load drivers: --check and --compare are for servers")
    if args.client and len([n for n in args.servers.split(",") if n.strip()]) != 1:
        parser.error("--client drives one server: give one name to --servers")
    return args


def plan(args: argparse.Namespace) -> list[tuple[servers.ServerSpec, Load]]:
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    specs = {spec.name: spec for spec in servers.named_servers()}
    for checkout in args.compare:
        for variant in servers.VARIANTS:
            extra = servers.compare_spec(checkout, variant)
            specs[extra.name] = extra
            if variant in wanted:
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
        missing = servers.missing(spec)
        if missing is not None:
            if getattr(args, "servers_named", False):
                raise SystemExit(f"chatlog.bench: cannot run {name}: {missing}")
            print(f"chatlog.bench: skipped {name}: {missing}", file=sys.stderr)
            continue
        if spec.name.startswith("chatlog-fsync"):
            points += [(spec, Load("closed", n)) for n in args.fsync_connections]
        else:
            points += [(spec, load) for load in loads]
    return points


def pinning(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    usable = os.sched_getaffinity(0)
    if args.mode == "workers":
        # Two workers pinned to one CPU could only lose: every process gets every CPU.
        return (), (), f"not pinned: servers and load generator share all {len(usable)} CPUs"
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
    if args.targets:
        print(targets.listing())
        return 0
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
    if not points:
        # Never overwrite earlier results with an empty run.
        raise SystemExit("chatlog.bench: nothing to run (see the lines above)")
    binaries = {"loadgen": build.build("loadgen")}
    if any(spec.name == "c-epoll" for spec, _ in points):
        binaries["epoll_reply"] = build.build("epoll_reply")

    info = output.machine()
    date = output.today()
    load_before = output.loadavg()
    line_sizes = args.sizes if args.mode == "sizes" else [args.size]
    describe_run = (
        f"load: {', '.join(map(str, line_sizes))}-byte lines over loopback; {pin_text}; each point "
        f"{settings.repeats} x {settings.duration:g} s after {settings.warmup:g} s warm-up, "
        "medians shown; fresh server per point; runs in which other processes took "
        + ("> 10% of a pinned core" if server_cpus else "> 10% of one CPU, machine-wide")
        + " are retried"
    )
    if args.mode == "client":
        describe_run += (
            "; the server driven in turn by the native load generator and by "
            "python -m chatlog.client, on the same CPU"
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
        for size in line_sizes:
            here = dataclasses.replace(settings, size=size)
            if len(line_sizes) > 1:
                say(f"{sizes.size_label(size)} lines:")
            for load, specs in by_load.items():
                if args.mode == "client":
                    got = drivers.measure_drivers(
                        specs[0], load, binaries, Path(scratch), here, say
                    )
                else:
                    got = measure(specs, load, binaries, Path(scratch), here, say)
                for row in got:
                    row["size"] = size
                    row["mib_per_s"] = sizes.mib_per_s(row)
                rows += got
    order = {name: i for i, (name, _) in enumerate(dict.fromkeys((s.name, 0) for s, _ in points))}
    rows.sort(key=lambda row: order.get(row["server"], len(order)))
    for row in rows:
        row["machine"] = output.machine_line(info)
        row["date"] = date
        row["nproc"] = info["nproc"]
        row["cpu"] = info["cpu"]

    good = [row for row in rows if row["msgs_per_s"] is not None]
    command = sys.argv[1:] if argv is None else argv
    print("command: " + shlex.join(["python", "-m", "chatlog.bench", *command]))
    print(output.header(info, date, describe_run))
    print(f"machine load average (1, 5, 15 min): {load_before} before, {output.loadavg()} after")
    print()
    failed = [row for row in rows if row["msgs_per_s"] is None]
    if args.mode == "client":
        print(drivers.table(rows))
        print()
        for load in by_load:
            load_rows = [
                r
                for r in rows
                if (r["mode"], r["connections"], r["pipeline"], r["rate"]) == load.key()
            ]
            print(
                drivers.ratio_line(
                    load_rows, drivers.CLIENT, drivers.NATIVE, "driver", load.describe()
                )
            )
    elif args.mode == "sizes":
        print(sizes.text_table(good))
        print(
            "MiB/s: the messages' bytes (newline included) answered, and by chatlog logged, per s"
        )
        for note in output.notes(good, sizes.point_name):
            print(note)
    else:
        print(output.text_table(good))
        for note in output.notes(good):
            print(note)
    for row in failed:
        where = sizes.point_name(row) if args.mode == "sizes" else output.load_name(row)
        print(f"FAILED: {row.get('driver', row['server'])} {where}: {row['error']}")
    if args.mode == "workers":
        print()
        for load in by_load:
            load_rows = [
                r
                for r in good
                if (r["mode"], r["connections"], r["pipeline"], r["rate"]) == load.key()
            ]
            print(drivers.ratio_line(load_rows, "chatlog-w2", "chatlog", "server", load.describe()))
    # The targets are of 16-byte lines: a size run judges them on its 16-byte rows.
    verdicts = targets.judge([row for row in good if row.get("size", 16) == 16])
    short: list[object] = list(targets.short(verdicts))
    if args.mode != "client" and any(v.value is not None for v in verdicts):
        print("\ntargets" + (" (16-byte lines):" if args.mode == "sizes" else ":"))
        print(targets.verdicts_text(verdicts))
    size_verdicts: list[sizes.SizeVerdict] = []
    if args.mode == "sizes":
        size_verdicts = sizes.judge(good, sizes.size_targets(line_sizes, args.formats))
        print("\ntargets of issue 15 (line sizes and formats):")
        print(sizes.verdicts_text(size_verdicts))
        short += [v for v in size_verdicts if v.met is False]
    if args.check:
        line = targets.check_line(verdicts)
        if size_verdicts:
            line += "; line sizes and formats: " + sizes.check_line(size_verdicts)
        print(f"\ncheck: {line}")
        if short:
            print(f"chatlog.bench: {line}", file=sys.stderr)
    if args.rst and args.mode == "sizes":
        print("\n.. rst table for README.rst\n")
        print(sizes.rst_table(good))
    elif args.rst and args.mode != "client":
        print("\n.. rst table for README.rst\n")
        print(
            f"{args.size}-byte lines over loopback, {date}, on {output.machine_line(info)}; "
            f"{pin_text}; {settings.repeats} x {settings.duration:g} s per point, medians. "
            "``chatlog ×`` is chatlog's msgs/s divided by the row's.\n"
        )
        print(output.rst_table(good))
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nresults: {args.json}", end="")
    if str(args.plot) not in ("", ".") and args.mode != "client":
        draw = sizes.plot if args.mode == "sizes" else output.plot
        title = f"chatlog bench, {date}, {output.machine_line(info)}"
        if args.quick:
            # A smoke test's figures must not pass for a measurement's.
            title += " - QUICK run (1 x 1 s per point): not figures to quote"
        draw(good, args.plot, title)
        print(f", plot: {args.plot}", end="")
    print()
    return 1 if failed or (args.check and short) else 0


if __name__ == "__main__":
    sys.exit(main())
