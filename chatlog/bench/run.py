"""Drive one load at one server with the native load generator, and take medians."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatlog.bench import servers

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
        "--pid", str(server.pid),
        "--label", server.spec.name,
    ]  # fmt: skip
    if load.mode == "open":
        argv += ["--rate", str(load.rate)]
    if len(settings.server_cpus) == 1:
        argv += ["--server-core", str(settings.server_cpus[0])]
    if len(settings.loadgen_cpus) == 1:
        argv += ["--loadgen-core", str(settings.loadgen_cpus[0])]
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
    result["contended"] = contention(result) > CONTENDED_PCT
    return result


def contention(result: dict[str, Any]) -> float:
    """The most CPU that other processes took on either pinned core during the run (%)."""
    server = float(result.get("server_core_other_pct", -1))
    loadgen = float(result.get("loadgen_core_other_pct", -1))
    return max(server, loadgen, 0.0)


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
                mine.append(result)
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
        # The least contended runs (all clean ones when there are enough).
        kept = sorted(mine, key=lambda run: (run["contended"], contention(run)))[: settings.repeats]
        rows.append(summarize(spec, load, kept))
    return rows


def failed_row(spec: servers.ServerSpec, load: Load, error: str) -> dict[str, Any]:
    return {
        "server": spec.name, "mode": load.mode, "connections": load.connections,
        "pipeline": load.pipeline, "rate": load.rate, "msgs_per_s": None,
        "p50_ms": None, "p99_ms": None, "cpu_us_per_msg": None,
        "loadgen_cpu_pct": None, "error": error[:500],
    }  # fmt: skip
