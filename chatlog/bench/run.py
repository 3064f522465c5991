"""Drive one load at one server with the native load generator, and take medians."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatlog.bench import servers
from chatlog.bench.quiet import process_cpu_s as process_cpu_s  # also for drivers, noisy

#: Above this share of its own core the load generator may be what limits
#: the throughput, not the server: such rows are flagged.
SATURATED_PCT = 90.0
#: A run during which other processes (not the server, not the generator)
#: used more than this share of either pinned core is *contended*: it is
#: run again, up to ``Settings.max_attempts`` times, and flagged if it stays so.
CONTENDED_PCT = 10.0


@dataclass(frozen=True)
class Load:
    """One load point: closed loop (``pipeline`` in flight per connection) or open loop."""

    mode: str  # "closed", "pipelined" or "open"
    connections: int
    pipeline: int = 1
    rate: int = 0  # open loop: messages per second in all

    def describe(self) -> str:
        if self.mode == "open":
            return f"open {self.rate}/s x{self.connections}"
        if self.pipeline > 1:
            return f"{self.pipeline} in flight x{self.connections}"
        return f"closed x{self.connections}"

    def key(self) -> tuple[str, int, int, int]:
        return (self.mode, self.connections, self.pipeline, self.rate)


@dataclass(frozen=True)
class Settings:
    duration: float = 3.0
    warmup: float = 1.0
    repeats: int = 3
    size: int = 16
    server_cpus: tuple[int, ...] = (0,)
    loadgen_cpus: tuple[int, ...] = (1,)
    #: Runs per point at most, contended ones included (0: 3 x repeats).
    max_attempts: int = 0


def core_ticks(cpu: int | None = None) -> tuple[int, int]:
    """(busy, total) clock ticks so far of one CPU (None: all), counted as the generator counts."""
    name = "cpu " if cpu is None else f"cpu{cpu} "
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(name):
                v = [int(x) for x in line.split()[1:9]]
                # Interrupt time (v[5], v[6]) is mostly the loopback traffic itself: not counted.
                return v[0] + v[1] + v[2] + v[7], sum(v)
    raise OSError(f"no {name.strip()} in /proc/stat")


def loadgen_once(
    loadgen: Path, server: servers.Running, load: Load, settings: Settings
) -> dict[str, Any]:
    argv = [
        str(loadgen),
        "--host", server.host,
        "--port", str(server.port),
        "--connections", str(load.connections),
        "--pipeline", str(load.pipeline),
        "--duration", str(settings.duration),
        "--warmup", str(settings.warmup),
        "--size", str(settings.size),
        "--label", server.spec.name,
    ]  # fmt: skip
    for pid in server.pids()[:8]:  # the generator's limit
        argv += ["--pid", str(pid)]
    if load.mode == "open":
        argv += ["--rate", str(load.rate)]
    if len(settings.server_cpus) == 1:
        argv += ["--server-core", str(settings.server_cpus[0])]
    if len(settings.loadgen_cpus) == 1:
        argv += ["--loadgen-core", str(settings.loadgen_cpus[0])]
    # With nothing pinned the generator cannot tell its core from the others':
    # the whole machine is watched from here instead.
    pinned = len(settings.server_cpus) == 1 and len(settings.loadgen_cpus) == 1
    pids = server.pids()
    machine0 = None if pinned else (core_ticks(), _cpu_of(pids), _children_cpu(), time.monotonic())
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=settings.duration + settings.warmup + 60,
        preexec_fn=servers.pin(settings.loadgen_cpus),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = done.returncode
    if machine0 is not None:
        ticks0, server0, children0, started = machine0
        result["machine_other_pct"] = machine_other_pct(
            ticks0,
            core_ticks(),
            _cpu_of(pids) - server0 + _children_cpu() - children0,
            time.monotonic() - started,
        )
    result["contended"] = contention(result) > CONTENDED_PCT
    return result


def _cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker that exited counts no more
            total += process_cpu_s(pid)
    return total


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (the generator, once it has run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_other_pct(
    before: tuple[int, int], after: tuple[int, int], own_cpu_s: float, wall: float
) -> float:
    """CPU that processes other than ours used over ``wall`` seconds, in % of one CPU."""
    ticks = after[1] - before[1]
    if ticks <= 0 or wall <= 0:
        return -1.0
    cpus = os.cpu_count() or 1
    busy = 100.0 * cpus * (after[0] - before[0]) / ticks
    return max(0.0, busy - 100.0 * own_cpu_s / wall)


def contention(result: dict[str, Any]) -> float:
    """The most CPU that other processes took on either pinned core (or, unpinned, on the
    machine, in % of one CPU) during the run (%)."""
    server = float(result.get("server_core_other_pct", -1))
    loadgen = float(result.get("loadgen_core_other_pct", -1))
    machine = float(result.get("machine_other_pct", -1))
    return max(server, loadgen, machine, 0.0)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(spec: servers.ServerSpec, load: Load, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result row: the median of each measure over the repeats."""
    row: dict[str, Any] = {
        "server": spec.name,
        "mode": load.mode,
        "connections": load.connections,
        "pipeline": load.pipeline,
        "rate": load.rate,
    }
    for key in ("msgs_per_s", "p50_ms", "p99_ms", "cpu_us_per_msg", "loadgen_cpu_pct"):
        row[key] = _median([run[key] for run in runs])
    for key in ("p90_ms", "p999_ms", "max_ms", "server_cpu_pct"):
        row[key] = _median([run[key] for run in runs])
    row["repeats"] = len(runs)
    row["msgs_per_s_all"] = [run["msgs_per_s"] for run in runs]
    #: The round of each run: runs of one round went one after the other, server by server.
    row["rounds"] = [run.get("round", i) for i, run in enumerate(runs)]
    row["errors"] = sum(run["errors"] for run in runs)
    row["connect_failed"] = max(run["connect_failed"] for run in runs)
    row["closed_early"] = max(run["closed_early"] for run in runs)
    row["dropped"] = sum(run["dropped"] for run in runs)
    row["loadgen_saturated"] = (row["loadgen_cpu_pct"] or 0) >= SATURATED_PCT
    row["other_cpu_pct"] = _median([contention(run) for run in runs])
    row["contended"] = any(run["contended"] for run in runs)
    row["reference"] = spec.reference
    return row


def _start(
    spec: servers.ServerSpec, binaries: dict[str, Path], where: Path, settings: Settings
) -> servers.Running:
    try:
        return servers.start(spec, binaries, where, settings.server_cpus)
    except RuntimeError:
        # On a shared machine a start can fail for reasons of its own: once more.
        return servers.start(spec, binaries, where, settings.server_cpus)


def measure(
    specs: Sequence[servers.ServerSpec],
    load: Load,
    binaries: dict[str, Path],
    scratch: Path,
    settings: Settings,
    progress: Callable[[str], None] = lambda text: None,
) -> list[dict[str, Any]]:
    """Run ``load`` against each of ``specs``: one row per server.

    Every server is started afresh (idle ones cost nothing), then the runs
    go round-robin: server A, B, C, A, B, C...  So a slow spell of the
    machine falls on all servers alike instead of on whichever ran then.
    A contended run is repeated, up to ``max_attempts`` runs per server.
    """
    label = f"{load.mode}-{load.connections}-{load.pipeline}-{load.rate}"
    running: dict[str, servers.Running] = {}
    runs: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
    failed: dict[str, str] = {}
    attempts = settings.max_attempts or 3 * settings.repeats
    try:
        for spec in specs:
            try:
                running[spec.name] = _start(
                    spec, binaries, scratch / f"{spec.name}-{label}", settings
                )
            except (RuntimeError, OSError) as error:
                failed[spec.name] = str(error)
        for _round in range(attempts):
            for spec in specs:
                server = running.get(spec.name)
                mine = runs[spec.name]
                if server is None or spec.name in failed:
                    continue
                if sum(not run["contended"] for run in mine) >= settings.repeats:
                    continue
                try:
                    result = loadgen_once(binaries["loadgen"], server, load, settings)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                    failed[spec.name] = str(error)
                    continue
                result["round"] = _round
                mine.append(result)
                servers.trim_logs(scratch / f"{spec.name}-{label}")
                progress(
                    f"  {spec.name:14} {load.describe():22} #{len(mine)}: "
                    f"{result['msgs_per_s']:>10,.0f} msgs/s  p99 {result['p99_ms']:.3f} ms  "
                    f"loadgen {result['loadgen_cpu_pct']:.0f}%"
                    + (
                        f"  CONTENDED ({contention(result):.0f}% CPU to others)"
                        if result["contended"]
                        else ""
                    )
                )
                if not server.alive():
                    failed[spec.name] = f"{spec.name} exited: {server.output()[-2000:]}"
    finally:
        for server in running.values():
            server.stop()
        for spec in specs:
            # logs of 100k+ records per second add up
            shutil.rmtree(scratch / f"{spec.name}-{label}", ignore_errors=True)
    rows = []
    for spec in specs:
        mine = runs[spec.name]
        if spec.name in failed or not mine:
            rows.append(failed_row(spec, load, failed.get(spec.name, "no run")))
            continue
        # The least contended runs (all clean ones when there are enough), in the order they ran.
        kept = sorted(mine, key=lambda run: (run["contended"], contention(run)))[: settings.repeats]
        kept.sort(key=lambda run: run["round"])
        rows.append(summarize(spec, load, kept))
    return rows


def failed_row(spec: servers.ServerSpec, load: Load, error: str) -> dict[str, Any]:
    return {
        "server": spec.name, "mode": load.mode, "connections": load.connections,
        "pipeline": load.pipeline, "rate": load.rate, "msgs_per_s": None,
        "p50_ms": None, "p99_ms": None, "cpu_us_per_msg": None,
        "loadgen_cpu_pct": None, "error": error[:500],
    }  # fmt: skip
