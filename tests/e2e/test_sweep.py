"""End-to-end: ``python -m chatlog.client --sweep`` finds a capacity known by design.

The reference is :mod:`chatlog.bench.peers.capped_reply`, a reply server that
serves at most N messages per second: the sweep must put the knee within
±15% of N, for two different N (run side by side, to keep the test short).
And a step the client itself cannot drive must be marked as the client's
limit, never given as the server's capacity.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.twistd import ROOT, server_env

pytestmark = pytest.mark.e2e

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


@contextlib.contextmanager
def peer(module: str, *args: str) -> Iterator[int]:
    """Run a bench peer; yield the port it listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"chatlog.bench.peers.{module}", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=server_env(),
    )
    try:
        assert proc.stdout is not None
        match = LISTENING.match(proc.stdout.readline())
        assert match, f"{module} did not say where it listens"
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.wait()


def sweep(port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatlog.client", "--port", str(port), "--sweep", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=server_env(),
    )


def result_of(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def knee_sweep(port: int, capacity: int) -> subprocess.Popen[bytes]:
    """The sweep of the "done when": --slo-p99 10, ramp 0.6 N then 1.2 N, three bisections."""
    rates = f"{0.6 * capacity:g},{1.2 * capacity:g}"
    return sweep(
        port,
        "--slo-p99",
        "10",
        "--connections",
        "4",
        "--rates",
        rates,
        "--bisect",
        "3",
        "--warmup",
        "0.3",
        "--duration",
        "1.5",
    )


def knee_problems(capacity: int, data: dict[str, Any]) -> list[str]:
    """What is wrong with a sweep's answer for a server capped at ``capacity`` (nothing: [])."""
    steps = data["steps"]
    problems = []
    if [s["phase"] for s in steps] != ["ramp", "ramp", "bisect", "bisect", "bisect"]:
        problems.append("not two ramp steps then three bisections")
    if not (steps[0]["ok"] and not steps[1]["ok"]):
        problems.append("0.6 N should pass and 1.2 N fail")
    if any(s["client_limited"] for s in steps) or data["limited_by"] != "server":
        problems.append("a step was marked as the client's limit")
    if not 0.85 * capacity <= data["max_rate_msgs_per_s"] <= 1.15 * capacity:
        problems.append(f"answer {data['max_rate_msgs_per_s']} not within 15% of {capacity}")
    if data["max_rate_msgs_per_s"] != max(s["offered_msgs_per_s"] for s in steps if s["ok"]):
        problems.append("the answer is not the highest rate that passed")
    return problems


def test_sweep_finds_the_knee_of_a_server_of_known_capacity() -> None:
    """Against servers capped at 1,500 and 4,000 msgs/s, --slo-p99 10 answers within ±15%.

    The two sweeps run side by side.  A stall of this shared machine longer than
    the SLO spoils a step's p99 (1% of 1.5 s is 15 ms of messages): a sweep whose
    answer is wrong is run once more, alone, and that run must be right.
    """
    capacities = (1500, 4000)
    with (
        peer("capped_reply", str(capacities[0])) as low,
        peer("capped_reply", str(capacities[1])) as high,
    ):
        ports = (low, high)
        runs = [knee_sweep(port, n) for port, n in zip(ports, capacities, strict=True)]
        results = [result_of(proc) for proc in runs]
        for port, n, data in zip(ports, capacities, results, strict=True):
            if knee_problems(n, data):
                again = result_of(knee_sweep(port, n))
                assert not knee_problems(n, again), (knee_problems(n, again), again, data)


def test_a_rate_the_client_cannot_send_is_the_clients_limit(chatlog_server: Any) -> None:
    """One process offered 10,000,000 msgs/s: that step is marked as the client's limit, and
    the answer is only a lower bound, not the server's capacity.  (At 1,000,000 the client,
    sending each tick's due messages in one write, now keeps up for 0.3 s on a good run.)"""
    server = chatlog_server()
    data = result_of(
        sweep(
            server.port,
            "--connections",
            "4",
            "--rates",
            "1000,10000000",
            "--bisect",
            "0",
            "--warmup",
            "0.1",
            "--duration",
            "0.3",
        )
    )
    first, second = data["steps"]
    assert first["ok"] and not first["client_limited"]
    assert not second["ok"] and second["client_limited"]
    assert second["client_limits"], "the step says why the client was the limit"
    assert (data["max_rate_msgs_per_s"], data["limited_by"]) == (1000, "client")
    late = second["send_late_ms"]["p99"]
    assert late > 5.0  # over half the SLO behind its own schedule


def test_sweep_table_names_the_answer(chatlog_server: Any) -> None:
    """Without --json: the table of steps and one answer line, exit status 0."""
    server = chatlog_server()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlog.client",
            "--port",
            str(server.port),
            "--sweep",
            "--rates",
            "200,400",
            "--warmup",
            "0.1",
            "--duration",
            "0.3",
        ],
        capture_output=True,
        cwd=ROOT,
        env=server_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("sweep       1 connections, 1 process, steps of 0.3 s")
    assert re.match(r"\s+#\s+offered/s\s+achieved/s\s+p50 ms", lines[1])
    assert [line.split()[1] for line in lines[2:4]] == ["200", "400"]
    assert lines[-1] == (
        "answer: at least 400 msgs/s with p99 <= 10 ms: every step met it (try a higher --rate-max)"
    )
