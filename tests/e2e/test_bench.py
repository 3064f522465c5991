"""Quick smoke tests of ``python -m chatlog.bench``: tiny runs, every server answers.

Performance itself is judged by the bench (its targets, ``--check``), never here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatlog.bench import output
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


def tiny_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """``python -m chatlog.bench ARGS`` for 0.4 s per run, once: (the process, its JSON rows)."""
    results = tmp_path / "results.json"
    env = dict(server_env(), CHATLOG_BENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlog.bench",
            *args,
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
            "",
            "--quiet",
        ],  # fmt: skip
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(results.read_text())


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs gcc")
def test_client_against_the_native_generator(tmp_path: Path) -> None:
    """--client: the same chatlog driven by the generator and by chatlog.client, and their ratio."""
    done, rows = tiny_bench(tmp_path, "--client", "--connections", "4")
    assert [(row["driver"], row["server"]) for row in rows] == [
        ("loadgen", "chatlog"),
        ("chatlog.client", "chatlog"),
    ]
    for row in rows:
        assert row["msgs_per_s"] > 0 and row["errors"] == 0, row
        assert row["rounds"] == [0], row
    assert re.search(
        r"^chatlog\.client / loadgen, closed x4: \d+\.\d\dx median", done.stdout, re.MULTILINE
    )


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs gcc")
def test_workers_scaling(tmp_path: Path) -> None:
    """--workers-scaling: one worker and two, both answering, and two workers' ratio to one."""
    done, rows = tiny_bench(
        tmp_path, "--workers-scaling", "--connections", "4", "--pipelined", "2x4"
    )
    assert {(row["server"], output.load_name(row)) for row in rows} == {
        ("chatlog", "closed x4"),
        ("chatlog-w2", "closed x4"),
        ("chatlog", "4 in flight x2"),
        ("chatlog-w2", "4 in flight x2"),
    }
    for row in rows:
        assert row["msgs_per_s"] > 0 and row["errors"] == 0, row
        assert row["cpu_us_per_msg"] is not None and row["cpu_us_per_msg"] > 0, row
    assert "not pinned: servers and load generator share all" in done.stdout
    for load in ("closed x4", "4 in flight x2"):
        assert re.search(rf"^chatlog-w2 / chatlog, {load}: \d+\.\d\dx median", done.stdout, re.M)
