"""A quick smoke test of ``python -m chatlog.bench``: a tiny run, every server answers.

Performance itself is asserted by the bench (its targets section), never here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.twistd import server_env

ROW_KEYS = {
    "server", "mode", "connections", "pipeline", "msgs_per_s", "p50_ms", "p99_ms",
    "cpu_us_per_msg", "loadgen_cpu_pct",
}  # fmt: skip


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs gcc")
def test_tiny_bench_run_answers_from_every_server(tmp_path: Path) -> None:
    """A half-second run (2 connections; 4 in flight x 2; 500/s open loop) gives a row per server and load."""
    results, plot = tmp_path / "results.json", tmp_path / "results.png"
    env = dict(server_env(), CHATLOG_BENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlog.bench",
            "--connections",
            "2",
            "--pipelined",
            "2x4",
            "--fsync-connections",
            "2",
            "--rates",
            "500",
            "--rate-connections",
            "2",
            "--duration",
            "0.4",
            "--warmup",
            "0.1",
            "--repeats",
            "1",
            "--max-attempts",
            "1",
            "--json",
            str(results),
            "--plot",
            str(plot),
            "--rst",
            "--quiet",
        ],  # fmt: skip
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(results.read_text())
    expected = {
        "chatlog", "chatlog-fsync", "chatlog-stock", "twisted", "asyncio", "threaded", "c-epoll"
    }  # fmt: skip
    try:
        import uvloop  # noqa: F401

        expected.add("uvloop")
    except ImportError:
        pass
    assert {row["server"] for row in rows} == expected
    # closed, pipelined and open loop each; chatlog-fsync runs only the closed point
    assert len(rows) == 3 * len(expected) - 2
    for row in rows:
        assert row.keys() >= ROW_KEYS, row
        assert row["msgs_per_s"] > 0, row
        assert row["errors"] == 0 and row["connect_failed"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["cpu_us_per_msg"] is not None and row["cpu_us_per_msg"] >= 0, row
        assert row["nproc"] >= 1 and row["date"], row
    assert plot.stat().st_size > 0
    assert "msgs/s" in done.stdout and "machine:" in done.stdout
    assert "=====" in done.stdout  # the rst table
