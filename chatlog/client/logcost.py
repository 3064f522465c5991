"""Does the client's own log (``--logfile``) change what the client measures?

``python -m chatlog.client.logcost [--rounds N] [--duration S] [--warmup S]``
starts a chatlog server (this Python's ``twistd``, its log in a scratch
directory), then runs ``python -m chatlog.client ... --json`` under two loads,
closed loop over 100 connections and open loop at 20,000 msgs/s over 50,
each with no ``--logfile``, with ``--format event`` and with ``--format
json``: one run of each per round, their order rotated from round to round,
so that a machine busy with something else spoils all three alike.  It
prints every run, then per load and log the medians of throughput and
p50/p99/p99.9, their ratios to the run without a log, and whether they are
within the targets (p99 and p99.9 at most 1.1x, throughput at least 0.95x;
p50 is shown, not judged).
The machine's load average is printed before and after.

The machine may be shared: before each run it waits (up to a minute) for
the other processes to leave both cores idle, and it measures the CPU they
took during the run (all busy CPU time less the server's and the client's,
its writer's included).  A run where they took more than
:data:`FOREIGN_LIMIT` CPU seconds is printed as spoiled and run again (up
to :data:`RETRIES` times): such a run measures the neighbours, not the log.

Each client run waits for its log to be complete before it exits (the
writer process catches up once the run is over): each run's wall time is
shown, so that wait can be seen; it is not part of the measured window.

Not part of the test suite: a round takes about half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatlog.bench.quiet import QUIET_WAIT_S, busy_cpu_s, own_cpu_s, process_cpu_s, wait_quiet

#: (name, client arguments) of each load.
LOADS = {
    "closed x100": ["--connections", "100"],
    "open 20,000/s": ["--connections", "50", "--rate", "20000"],
}
LOGS = ("none", "event", "json")
KEYS = ("p50", "p99", "p999")
#: The percentiles the targets are about (the tail); p50 is shown, not judged.
JUDGED = ("p99", "p999")
#: The targets: percentiles at most this times the run without a log...
PERCENTILE_LIMIT = 1.1
#: ... and throughput at least this share of it.
THROUGHPUT_LIMIT = 0.95
LISTENING = re.compile(rb"listening on (\S+):(\d+), logging to")
#: CPU seconds other processes may take during a run before it counts as spoiled.
FOREIGN_LIMIT = 0.5
RETRIES = 3


def twistd() -> list[str]:
    """This Python's ``twistd`` (the script beside it, or Twisted's entry point)."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [*twistd(), "-n", "--pidfile=", "chatlog", "--port", "tcp:0:interface=127.0.0.1",
         "--logfile", str(workdir / "server.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        match = LISTENING.search(line)
        if match:
            return proc, int(match.group(2))
    raise RuntimeError("the server did not start")


def run_client(
    server: int, port: int, load: list[str], log: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One client run; ``server``: the server's pid, whose CPU is not foreign."""
    argv = [
        sys.executable, "-m", "chatlog.client", "--port", str(port), *load,
        "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}", "--json",
    ]  # fmt: skip
    path = workdir / "client.log"
    if log != "none":
        argv += ["--logfile", str(path), "--format", log]
    started = time.monotonic()
    cpu0 = (busy_cpu_s(), process_cpu_s(server), own_cpu_s())
    done = subprocess.run(argv, capture_output=True)
    cpu1 = (busy_cpu_s(), process_cpu_s(server), own_cpu_s())
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr.decode(errors='replace')}")
    data: dict[str, Any] = json.loads(done.stdout)
    data["wall_s"] = wall
    data["foreign_cpu_s"] = (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])
    data["log_records"] = path.read_bytes().count(b"\n") if log != "none" else 0
    path.unlink(missing_ok=True)
    # The server's log grows by every message: start each run from an empty one.
    os.truncate(workdir / "server.log", 0)
    return data


def line(round_: int, load: str, log: str, data: dict[str, Any]) -> str:
    rtt = data["rtt_ms"]
    return (
        f"round {round_}  {load:<14} {log:<5} {data['throughput_msgs_per_s']:>10,.0f} msgs/s  "
        + "  ".join(f"{k} {rtt[k]:.3f}" for k in KEYS)
        + f"  client CPU {data['client_cpu_s']:.2f} s  wall {data['wall_s']:.1f} s"
        + f"  others' CPU {data['foreign_cpu_s']:.2f} s"
        + (f"  log {data['log_records']:,} records" if log != "none" else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlog.client.logcost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="chatlog-logcost-") as tmp:
        workdir = Path(tmp)
        server, port = start_server(workdir)
        try:
            for round_ in range(1, args.rounds + 1):
                for load, load_args in LOADS.items():
                    shift = (round_ - 1) % len(LOGS)
                    for log in LOGS[shift:] + LOGS[:shift]:
                        for _ in range(RETRIES + 1):
                            waited = wait_quiet()
                            data = run_client(server.pid, port, load_args, log, args, workdir)
                            text = line(round_, load, log, data)
                            if waited >= QUIET_WAIT_S:
                                text += f"  (the machine was not quiet for {waited:.0f} s)"
                            if data["foreign_cpu_s"] <= FOREIGN_LIMIT:
                                break
                            print(f"{text}  SPOILED by other processes: again", flush=True)
                        results.setdefault((load, log), []).append(data)
                        print(text, flush=True)
        finally:
            server.terminate()
            server.wait()
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print()
    print(f"medians of {args.rounds} rounds; ratio to the run without a log")
    print(
        f"{'load':<14} {'log':<5} {'msgs/s':>10} " + " ".join(f"{k:>8}" for k in KEYS) + "   ratios"
    )
    ok = True
    for load in LOADS:
        base = _medians(results[(load, "none")])
        for log in LOGS:
            m = _medians(results[(load, log)])
            ratios = {k: m[k] / base[k] for k in m}
            within = ratios["msgs"] >= THROUGHPUT_LIMIT and all(
                ratios[k] <= PERCENTILE_LIMIT for k in JUDGED
            )
            ok = ok and within
            print(
                f"{load:<14} {log:<5} {m['msgs']:>10,.0f} "
                + " ".join(f"{m[k]:>8.3f}" for k in KEYS)
                + "   "
                + "  ".join(f"{k} {ratios[k]:.2f}x" for k in ("msgs", *KEYS))
                + ("" if log == "none" else ("  within" if within else "  OUTSIDE the targets"))
            )
    return 0 if ok else 1


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    out = {"msgs": statistics.median(r["throughput_msgs_per_s"] for r in runs)}
    for key in KEYS:
        out[key] = statistics.median(r["rtt_ms"][key] for r in runs)
    return out


if __name__ == "__main__":
    sys.exit(main())
