"""``--client``: ``python -m chatlog.client`` against the native load generator, one server.

Is chatlog's own client fast enough to measure a server?  One server (chatlog
by default), started afresh for each load and pinned like any other, is
driven in turn by the native generator and by one ``python -m chatlog.client``
process, each pinned to the load generator's CPU: generator, client,
generator, client...  So a slow spell of the machine falls on both alike,
and each round gives one ratio of the client's msgs/s to the generator's.

The client's run is watched from outside as the generator watches its own:
the other processes' share of each pinned core over the client's life (a
contended round is run again), and its own CPU use (from its ``--json``).
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatlog.bench import output, servers
from chatlog.bench.run import (
    CONTENDED_PCT,
    SATURATED_PCT,
    Load,
    Settings,
    contention,
    core_ticks,
    loadgen_once,
    process_cpu_s,
)

NATIVE = "loadgen"
CLIENT = "chatlog.client"
#: In the order each round runs them.
DRIVERS = (NATIVE, CLIENT)

Row = dict[str, Any]


def client_argv(server: servers.Running, load: Load, settings: Settings) -> list[str]:
    """``python -m chatlog.client`` for one run: the generator's load, in the client's words."""
    argv = [
        sys.executable, "-m", "chatlog.client",
        "--host", server.host,
        "--port", str(server.port),
        "--connections", str(load.connections),
        "--duration", f"{settings.duration:g}",
        "--warmup", f"{settings.warmup:g}",
        "--size", str(settings.size),  # both count the newline
        "--json",
    ]  # fmt: skip
    if load.mode == "open":
        argv += ["--rate", str(load.rate)]
    else:
        argv += ["--pipeline", str(load.pipeline)]
    return argv


def _other_pct(
    busy: tuple[int, int], before: tuple[int, int], own_cpu_s: float, wall: float
) -> float:
    """The share of a core (%) that processes other than ``own`` took over ``wall`` seconds."""
    ticks = busy[1] - before[1]
    if ticks <= 0 or wall <= 0:
        return -1.0
    return max(0.0, 100.0 * (busy[0] - before[0]) / ticks - 100.0 * own_cpu_s / wall)


def client_once(server: servers.Running, load: Load, settings: Settings) -> dict[str, Any]:
    """One run of ``python -m chatlog.client``: a result shaped like the generator's."""
    server_core = settings.server_cpus[0] if len(settings.server_cpus) == 1 else None
    client_core = settings.loadgen_cpus[0] if len(settings.loadgen_cpus) == 1 else None
    server_pids = server.pids()
    before = {core: core_ticks(core) for core in (server_core, client_core) if core is not None}
    server_cpu0 = sum(process_cpu_s(pid) for pid in server_pids)
    # Files, not pipes: nothing reads them while the client runs.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            client_argv(server, load, settings),
            stdout=stdout,
            stderr=stderr,
            env=servers.server_env(),
            preexec_fn=servers.pin(settings.loadgen_cpus),
        )
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            # A client that hangs is a failed run, not a hung bench.
            status = proc.wait(timeout=settings.duration + settings.warmup + 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - started
        server_cpu = sum(process_cpu_s(pid) for pid in server_pids) - server_cpu0
        # The only child reaped meanwhile is the client: the servers run on.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = (children.ru_utime - children0.ru_utime) + (
            children.ru_stime - children0.ru_stime
        )
        stdout.seek(0)
        stderr.seek(0)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"chatlog.client failed ({status}): {err.strip()[-500:]}")
    data = json.loads(lines[-1])
    rtt = data["rtt_ms"]
    measured = settings.warmup + settings.duration
    result: dict[str, Any] = {
        "msgs_per_s": data["throughput_msgs_per_s"],
        "p50_ms": rtt["p50"],
        "p99_ms": rtt["p99"],
        "errors": data["errors"],
        # The client's CPU from the start of its load to the end (warm-up included).
        "loadgen_cpu_pct": 100.0 * data.get("client_cpu_s", 0.0) / measured if measured else None,
        "server_core_other_pct": (
            _other_pct(core_ticks(server_core), before[server_core], server_cpu, wall)
            if server_core is not None
            else -1.0
        ),
        "loadgen_core_other_pct": (
            _other_pct(core_ticks(client_core), before[client_core], client_cpu, wall)
            if client_core is not None
            else -1.0
        ),
    }
    result["contended"] = contention(result) > CONTENDED_PCT
    return result


def measure_drivers(
    spec: servers.ServerSpec,
    load: Load,
    binaries: dict[str, Path],
    scratch: Path,
    settings: Settings,
    progress: Callable[[str], None] = lambda text: None,
) -> list[Row]:
    """Rounds of (generator, client) against one fresh ``spec`` server: one row per driver.

    A round is the unit: its two runs went one after the other, so their
    ratio is what the comparison is about.  A round in which either run was
    contended is run again (up to ``max_attempts`` rounds), and the rows are
    made of the ``repeats`` least contended rounds.
    """
    rounds: list[dict[str, dict[str, Any]]] = []
    where = scratch / f"{spec.name}-{load.mode}-{load.connections}-{load.pipeline}-{load.rate}"
    error = ""
    server = servers.start(spec, binaries, where, settings.server_cpus)
    try:
        for number in range(settings.max_attempts or 3 * settings.repeats):
            if sum(not _contended(one) for one in rounds) >= settings.repeats:
                break
            runs: dict[str, dict[str, Any]] = {}
            for driver in DRIVERS:
                try:
                    if driver == NATIVE:
                        result = loadgen_once(binaries["loadgen"], server, load, settings)
                    else:
                        result = client_once(server, load, settings)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as failure:
                    error = f"{driver}: {failure}"
                    break
                result["round"] = number
                runs[driver] = result
                progress(
                    f"  {driver:14} {load.describe():22} round {number + 1}: "
                    f"{result['msgs_per_s']:>10,.0f} msgs/s  p99 {result['p99_ms']:.3f} ms  "
                    f"CPU {result['loadgen_cpu_pct']:.0f}%"
                    + (f"  CONTENDED ({contention(result):.0f}%)" if result["contended"] else "")
                )
            if error or not server.alive():
                error = error or f"{spec.name} exited: {server.output()[-2000:]}"
                break
            rounds.append(runs)
    finally:
        server.stop()
        shutil.rmtree(where, ignore_errors=True)
    # The least contended rounds, in the order they ran.
    kept = sorted(rounds, key=lambda one: (_contended(one), _worst(one)))[: settings.repeats]
    kept.sort(key=lambda one: one[NATIVE]["round"])
    return [_row(spec, load, driver, [one[driver] for one in kept], error) for driver in DRIVERS]


def _contended(round_: dict[str, dict[str, Any]]) -> bool:
    return any(run["contended"] for run in round_.values())


def _worst(round_: dict[str, dict[str, Any]]) -> float:
    return max(contention(run) for run in round_.values())


def _row(
    spec: servers.ServerSpec, load: Load, driver: str, kept: list[dict[str, Any]], error: str
) -> Row:
    row: Row = {
        "driver": driver,
        "server": spec.name,
        "mode": load.mode,
        "connections": load.connections,
        "pipeline": load.pipeline,
        "rate": load.rate,
        "repeats": len(kept),
        "rounds": [run["round"] for run in kept],
        "msgs_per_s_all": [run["msgs_per_s"] for run in kept],
        "other_cpu_pct_all": [round(contention(run), 1) for run in kept],
        "contended": any(run["contended"] for run in kept),
        "errors": sum(run["errors"] for run in kept),
    }
    for key in ("msgs_per_s", "p50_ms", "p99_ms", "loadgen_cpu_pct"):
        values = [run[key] for run in kept if run.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    row["loadgen_saturated"] = (row["loadgen_cpu_pct"] or 0) >= SATURATED_PCT
    if error or not kept:
        row["error"] = error or "no run"
    return row


def pair_ratios(rows: Sequence[Row], top: str, bottom: str, key: str) -> list[float]:
    """``top``'s msgs/s over ``bottom``'s, round by round, for rounds both ran.

    ``key`` names what ``top`` and ``bottom`` are (``"driver"`` or ``"server"``).
    """
    one = next((r for r in rows if r[key] == top), None)
    two = next((r for r in rows if r[key] == bottom), None)
    if one is None or two is None:
        return []
    theirs = dict(zip(two.get("rounds", []), two.get("msgs_per_s_all", []), strict=True))
    return [
        mine / theirs[round_]
        for round_, mine in zip(one.get("rounds", []), one.get("msgs_per_s_all", []), strict=True)
        if theirs.get(round_)
    ]


def ratio_line(rows: Sequence[Row], top: str, bottom: str, key: str, load: str) -> str:
    """``chatlog.client / loadgen, closed x100: 0.88x (rounds: 0.87, 0.88, 0.89)``."""
    ratios = pair_ratios(rows, top, bottom, key)
    if not ratios:
        return f"{top} / {bottom}, {load}: not measured"
    each = ", ".join(f"{r:.2f}" for r in ratios)
    shaky = any(row.get("contended") for row in rows if row[key] in (top, bottom))
    return (
        f"{top} / {bottom}, {load}: {statistics.median(ratios):.2f}x median, "
        f"{min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} side-by-side rounds ({each})"
        + (
            "; (c) other processes took > 10% of a CPU meanwhile: rerun on a quiet machine"
            if shaky
            else ""
        )
    )


def table(rows: Sequence[Row]) -> str:
    """The drivers' rows as a text table."""
    head = ["driver", "server", "load", "msgs/s", "p50 ms", "p99 ms", "driver CPU"]
    cells = [
        [
            row["driver"],
            row["server"],
            output.load_name(row),
            "-" if row["msgs_per_s"] is None else f"{row['msgs_per_s']:,.0f}",
            "-" if row["p50_ms"] is None else f"{row['p50_ms']:.3f}",
            "-" if row["p99_ms"] is None else f"{row['p99_ms']:.3f}",
            ("-" if row["loadgen_cpu_pct"] is None else f"{row['loadgen_cpu_pct']:.0f}%")
            + (" (c)" if row.get("contended") else ""),
        ]
        for row in rows
    ]
    return output.aligned(head, cells, left=3)
