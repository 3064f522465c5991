"""Soak: the long variants of the end-to-end hardening tests, with figures printed.

Not part of the test run (pytest collects only ``test_*.py``).  Each scenario
starts the real ``twistd -n chatlog`` on loopback in a temporary directory,
drives it, checks that every acknowledged message is logged (exactly once,
except across ``kill -9``) and that memory stays bounded, and prints what it
measured.  Run it from the checkout, as a module of the ``tests`` package::

    python -m tests.soak                   # every scenario, default sizes
    python -m tests.soak held churn        # some of them
    python -m tests.soak --scale 0.2       # shorter (durations and counts scaled)

Scenarios: ``load`` (sustained closed-loop load, RSS over time, exactly once),
``rotate`` (SIGHUP every few seconds under load), ``crash`` (repeated kill -9
and restart on the same log), ``fair`` (a long tiny-line flood against a probe),
``held`` (10,000 connections held for a minute, pinged every 10 s), ``churn``
(100 rounds of 1,000 connections opened and closed), ``powercut`` (200 power
cuts under load with ``--fsync`` on a filesystem that forgets what was not
synced, then 20 without it, with what each cut took), ``faults`` (100 separate
log outages under load made with strace: failed writes, then failed
``fdatasync`` under ``--fsync``).  Exit status 1 if any check failed; a
scenario whose tools are missing here says so and is skipped.
"""

from __future__ import annotations

import argparse
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import powercut_fs, strace
from tests.support.clients import LineClient
from tests.support.connections import close_all, open_many, ping_all
from tests.support.load import Load, flood
from tests.support.logfile import logged_messages, missing_and_doubled, read_records
from tests.support.process import raise_nofile, rss_kib
from tests.support.stats import percentiles
from tests.support.twistd import RunningServer, start_server
from tests.support.waiting import wait_until

SCALE = 1.0


def scaled(value: float) -> float:
    return value * SCALE


def say(name: str, **values: object) -> None:
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def check_once(acked: list[bytes], *logs: Path) -> tuple[int, int]:
    """(acknowledged but missing, logged more than once) over the given logs."""
    missing, doubled = missing_and_doubled(acked, logged_messages(*logs))
    return len(missing), len(doubled)


def server_in(workdir: Path, *options: str, **kwargs: Any) -> tuple[RunningServer, int]:
    """A server started in ``workdir``, and the pid of the process that really serves."""
    server = start_server(workdir, *options, **kwargs)
    return server, server.serving_pid()


# -- scenarios: each returns True when its checks held -------------------------------


def soak_load(workdir: Path) -> bool:
    """Sustained closed-loop load: throughput, RSS over time, exactly once."""
    seconds = scaled(60)
    server, pid = server_in(workdir)
    try:
        load = Load(server.address, connections=100, pipeline=4, tag="soak")
        start_rss = rss_kib(pid)
        load.start()
        started = time.monotonic()
        samples = []
        while time.monotonic() - started < seconds:
            time.sleep(min(5.0, seconds / 6))
            samples.append(round(rss_kib(pid) / 1024, 1))
        load.finish(30)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    missing, doubled = check_once(load.acked, server.log_path)
    say(
        "load",
        seconds=round(elapsed, 1),
        acked=len(load.acked),
        msgs_per_s=int(len(load.acked) / elapsed),
        rss_start_mib=round(start_rss / 1024, 1),
        rss_mib_samples=samples,
        missing=missing,
        doubled=doubled,
    )
    return missing == doubled == 0 and not load.errors


def soak_rotate(workdir: Path) -> bool:
    """A SIGHUP rotation every 2 s under load: every ack in exactly one file."""
    rotations = int(scaled(20)) or 1
    server, _ = server_in(workdir)
    files = []
    try:
        load = Load(server.address, connections=20, pipeline=4, tag="rot")
        load.start()
        for n in range(1, rotations + 1):
            load.wait_acked(len(load.acked) + 500, timeout=30)
            time.sleep(2)  # the rotation period, not a synchronisation
            rotated = server.log_path.with_name(f"chatlog.log.{n}")
            server.log_path.rename(rotated)
            files.append(rotated)
            server.send_signal(signal.SIGHUP)
            server.wait_output_count(b"reopened log", n, 10)
        load.wait_acked(len(load.acked) + 500, timeout=30)
        load.finish(30)
        alive = server.proc.poll() is None
    finally:
        code = server.stop()
    missing, doubled = check_once(load.acked, *files, server.log_path)
    say(
        "rotate",
        rotations=rotations,
        acked=len(load.acked),
        missing=missing,
        doubled=doubled,
        alive_after_sighups=alive,
        exit_code=code,
    )
    return missing == doubled == 0 and alive and code == -signal.SIGTERM


def soak_crash(workdir: Path) -> bool:
    """Repeated kill -9 under load and restart on the same log: no ack lost, fresh lines."""
    rounds = int(scaled(20)) or 1
    all_acked: list[bytes] = []
    torn_by_kill = 0
    for r in range(rounds):
        server, _ = server_in(workdir)
        load = Load(server.address, connections=8, pipeline=16, tag=f"crash{r}")
        load.start()
        load.wait_acked(2000, timeout=30)
        server.stop(signal.SIGKILL)
        load.finish(30)
        all_acked += load.acked
        data = server.log_path.read_bytes()
        torn_by_kill += not data.endswith(b"\n")
    server, _ = server_in(workdir)
    server.stop()
    records = read_records(workdir / "chatlog.log")
    starts = [i for i, rec in enumerate(records) if rec.startswith(b"Server Started: ")]
    misplaced = [i for i in starts if b"Server Started: " in records[i][1:]]
    missing = len(missing_and_doubled(all_acked, logged_messages(workdir / "chatlog.log"))[0])
    ok = missing == 0 and not misplaced and len(starts) == rounds + 1
    say(
        "crash",
        rounds=rounds,
        acked=len(all_acked),
        missing=missing,
        kills_that_tore_a_record=torn_by_kill,
        server_started_records=len(starts),
    )
    return ok


def soak_fair(workdir: Path) -> bool:
    """A long tiny-line flood from one client; a probe's round trips meanwhile."""
    seconds = scaled(60)
    server, _ = server_in(workdir)
    flooder = socket.create_connection(server.address)
    state: dict[str, Any] = {}
    # The flood's own deadline is a backstop: the probe loop below sets "stop".
    thread = threading.Thread(
        target=flood,
        args=(flooder, b"f\n" * 32768, 1 << 40, seconds + 60, True, state),
        daemon=True,
    )
    try:
        with LineClient(server.address) as probe:
            thread.start()
            wait_until(lambda: state.get("replies", 0) > 10_000, 10, "the flood")
            flood_from, started, rtts, i = state["replies"], time.monotonic(), [], 0
            while time.monotonic() - started < seconds:
                rtts.append(probe.round_trip(b"probe-%d" % i))
                i += 1
            rate = (state["replies"] - flood_from) / (time.monotonic() - started)
            state["stop"] = True
            thread.join(5)
    finally:
        flooder.close()
        server.stop()
    stats = percentiles(rtts)
    say(
        "fair", flood_lines_per_s=int(rate), probe_rtt_ms={k: round(v, 2) for k, v in stats.items()}
    )
    return stats["p99"] < 100


def soak_held(workdir: Path) -> bool:
    """10,000 connections held for a minute, all pinged every 10 s; RSS per connection."""
    count, seconds = 10_000, scaled(60)
    raise_nofile(count * 2)
    server, pid = server_in(
        workdir,
        "--max-connections",
        "20000",
        "--max-per-ip",
        "0",
        port="tcp:0:interface=127.0.0.1:backlog=1024",
    )
    try:
        baseline = rss_kib(pid)
        started = time.monotonic()
        socks = open_many(server.address, count, "held", timeout=120)
        connect_s = time.monotonic() - started
        held_from = time.monotonic()
        pings, samples = [], []
        n = 0
        while time.monotonic() - held_from < seconds:
            t0 = time.monotonic()
            ping_all(socks, f"ping{n}", timeout=60)
            pings.append(round(time.monotonic() - t0, 2))
            samples.append(round(rss_kib(pid) / 1024, 1))
            n += 1
            time.sleep(max(0.0, 10 - (time.monotonic() - t0)))  # the ping period
        peak = rss_kib(pid)
        close_all(socks)
        wait_until(
            lambda: server.log_bytes().count(b"\nDisconnection: ") >= count, 60, "disconnections"
        )
        after = rss_kib(pid)
    finally:
        server.stop()
    per_conn = (peak - baseline) * 1024 / count
    say(
        "held",
        connections=count,
        held_s=round(time.monotonic() - held_from, 1),
        connect_s=round(connect_s, 2),
        ping_all_s=pings,
        rss_baseline_mib=round(baseline / 1024, 1),
        rss_mib_samples=samples,
        rss_after_close_mib=round(after / 1024, 1),
        bytes_per_connection=int(per_conn),
    )
    return per_conn < 8 * 1024


def soak_churn(workdir: Path) -> bool:
    """100 rounds of 1,000 connections opened, answered and closed: RSS plateau."""
    rounds, per_round = int(scaled(100)) or 2, 1000
    server, pid = server_in(
        workdir, "--max-per-ip", "0", port="tcp:0:interface=127.0.0.1:backlog=1024"
    )
    rss = []
    try:
        started = time.monotonic()
        for r in range(rounds):
            close_all(open_many(server.address, per_round, f"churn{r}", timeout=60))
            expected = per_round * (r + 1)
            wait_until(
                lambda n=expected: server.log_bytes().count(b"\nDisconnection: ") >= n,
                30,
                f"{expected} disconnections",
            )
            rss.append(rss_kib(pid))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    half = len(rss) // 2
    growth = rss[-1] - rss[max(0, half - 1)]
    say(
        "churn",
        rounds=rounds,
        connections=rounds * per_round,
        conns_per_s=int(rounds * per_round / elapsed),
        rss_mib_first_mid_last=[round(rss[i] / 1024, 1) for i in (0, half, -1)],
        second_half_growth_kib=growth,
    )
    return growth < 2048


def soak_powercut(workdir: Path) -> bool:
    """Power cuts under load: with --fsync no ack lost; without it, what each cut takes."""
    reason = powercut_fs.unavailable()
    if reason:
        say("powercut", skipped=reason)
        return True
    cuts, default_cuts = int(scaled(200)) or 1, int(scaled(20)) or 1
    seed = int(time.time())
    with powercut_fs.PowercutMount(workdir / "fsync", workdir / "disk-fsync") as disk:
        kept = powercut_fs.run_cuts(disk, workdir, cuts, fsync=True, seed=seed, partial=True)
    with powercut_fs.PowercutMount(workdir / "default", workdir / "disk-default") as disk:
        lost = powercut_fs.run_cuts(disk, workdir, default_cuts, fsync=False, seed=seed)
    acked = sum(a for a, *_ in lost.cuts)
    taken = [m for _, m, *_ in lost.cuts]
    say(
        "powercut --fsync",
        cuts=len(kept.cuts),
        acked=len(kept.acked),
        acks_per_fdatasync=round(len(kept.acked) / max(1, kept.syncs.get("fsyncs", 0)), 1),
        torn_lines_left=kept.torn,
        problems=kept.problems[:3] or "none",
    )
    say(
        "powercut default",
        cuts=len(lost.cuts),
        acked=acked,
        lost=sum(taken),
        lost_per_cut=taken,
        seconds_per_run=[round(s, 2) for *_, s, _ in lost.cuts],
        fdatasyncs=lost.syncs.get("fsyncs"),
        problems=lost.problems[:3] or "none",
        seed=seed,
    )
    return not kept.problems and not lost.problems


def soak_faults(workdir: Path) -> bool:
    """Many separate log outages under load, made with strace: every ack once, refusals owned."""
    reason = strace.unavailable()
    if reason:
        say("faults", skipped=reason)
        return True
    outages = int(scaled(50)) or 1
    ok = True
    cases = [
        ("write EIO", strace.Fault("write", "EIO", f"20..{20 + 40 * (outages - 1)}+40"), ()),
        (
            "fdatasync EIO",
            strace.Fault("fdatasync", "EIO", f"20..{20 + 40 * (outages - 1)}+40"),
            ("--fsync",),
        ),
    ]
    for name, fault, options in cases:
        where = workdir / name.replace(" ", "-")
        where.mkdir()
        started = time.monotonic()
        with strace.traced_server(where, [fault], *options) as (server, trace):
            load = Load(server.address, connections=16, pipeline=8, tag="f", size=8)
            load.start()
            server.wait_output_count(b"chatlog: log ", outages, timeout=scaled(600) + 60)
            load.wait_acked(len(load.acked) + 1000, timeout=60)
            load.finish(30)
            strace.stop_traced(server)
        elapsed = time.monotonic() - started
        failed = strace.injected(trace)
        try:
            found = strace.check_refusals(server.log_path, load.acked, load.errors)
            problem = ""
        except AssertionError as error:
            found, problem = [], str(error)[:300]
        good = (
            not problem
            and len(found) == outages
            and sum(o.refused for o in found) == len(load.errors)
        )
        ok = ok and good
        say(
            f"faults {name}",
            outages=len(found),
            injected=dict(failed),
            acked=len(load.acked),
            refused=len(load.errors),
            left=sum(o.left for o in found),
            seconds=round(elapsed, 1),
            problem=problem or "none",
        )
    return ok


SCENARIOS: dict[str, Callable[[Path], bool]] = {
    "load": soak_load,
    "rotate": soak_rotate,
    "crash": soak_crash,
    "fair": soak_fair,
    "held": soak_held,
    "churn": soak_churn,
    "powercut": soak_powercut,
    "faults": soak_faults,
}


def main(argv: list[str] | None = None) -> int:
    global SCALE
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description=__doc__.replace("``", "").replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply durations and rounds")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}"
        )
    SCALE = args.scale
    failed = []
    for name in args.scenarios or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as workdir:
            try:
                ok = SCENARIOS[name](Path(workdir))
            except Exception as error:  # report and go on with the next scenario
                print(f"{name}: ERROR {type(error).__name__}: {error}", flush=True)
                ok = False
        if not ok:
            failed.append(name)
            print(f"{name}: FAILED", flush=True)
    print("soak:", "all passed" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
