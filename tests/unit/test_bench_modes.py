"""The bench's opt-in comparisons, without running them: what they run, how they pair rounds.

``--client`` (chatlog's client against the native generator) and
``--workers-scaling`` (two workers against one) have their own defaults and
report ratios round by round; a default run stays what it was.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import chatlog.bench.__main__ as bench_main
from chatlog.bench import drivers, servers
from chatlog.bench.run import Load, Settings, contention, machine_other_pct


def loads(argv: list[str]) -> tuple[list[str], list[Load]]:
    """(server names, loads) a command line would run."""
    points = bench_main.plan(bench_main.parse_args(argv))
    names = list(dict.fromkeys(spec.name for spec, _ in points))
    return names, list(dict.fromkeys(load for _, load in points))


def test_default_run_is_unchanged_and_leaves_the_opt_in_server_out() -> None:
    """No mode: every default server over closed 1..1000, 16 in flight x10 and 20000/s; no chatlog-w2."""
    names, points = loads([])
    assert "chatlog-w2" not in names
    assert names[:3] == ["chatlog", "chatlog-fsync", "chatlog-stock"]
    assert [p.describe() for p in points] == [
        "closed x1",
        "closed x10",
        "closed x100",
        "closed x1000",
        "16 in flight x10",
        "open 20000/s x100",
    ]


def test_client_mode_drives_chatlog_at_100_connections() -> None:
    """--client: one server, chatlog, closed x100 unless told otherwise."""
    assert loads(["--client"]) == (["chatlog"], [Load("closed", 100)])
    assert loads(["--client", "--connections", "10", "--pipelined", "10x16"]) == (
        ["chatlog"],
        [Load("closed", 10), Load("pipelined", 10, 16)],
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--client", "--check"],
        ["--client", "--servers", "chatlog,uvloop"],
        ["--client", "--workers-scaling"],
    ],
)
def test_client_mode_refuses_what_it_cannot_do(argv: list[str]) -> None:
    """--client judges no server target, drives one server, and is one mode at a time."""
    with pytest.raises(SystemExit) as exit_info:
        bench_main.parse_args(argv)
    assert exit_info.value.code == 2


def test_workers_scaling_compares_two_workers_with_one_unpinned() -> None:
    """--workers-scaling: chatlog and chatlog-w2, closed x100 and 16 in flight x10, nothing pinned."""
    argv = ["--workers-scaling"]
    assert loads(argv) == (
        ["chatlog", "chatlog-w2"],
        [Load("closed", 100), Load("pipelined", 10, 16)],
    )
    server, loadgen, text = bench_main.pinning(bench_main.parse_args(argv))
    assert (server, loadgen) == ((), ())
    assert text.startswith("not pinned: servers and load generator share all")


def test_two_workers_wait_for_the_second_worker() -> None:
    """chatlog-w2 runs --workers 2 and is ready only once worker 1 says it listens."""
    spec = servers.CHATLOG_W2
    assert spec in servers.named_servers() and spec not in servers.all_servers()
    argv = spec.argv({}, servers.ROOT)
    assert argv[argv.index("--workers") + 1] == "2"
    (ready,) = spec.ready
    assert re.search(ready, b"[worker 1] chatlog 0.1 listening on 127.0.0.1:4242, logging to x")
    assert not re.search(ready, b"chatlog 0.1 listening on 127.0.0.1:4242, logging to x")


def driver_row(driver: str, rounds: list[int], msgs: list[float], **extra: Any) -> dict[str, Any]:
    return {"driver": driver, "rounds": rounds, "msgs_per_s_all": msgs, **extra}


def test_ratios_pair_runs_of_the_same_round() -> None:
    """Each ratio is of two runs of one round; a round only one side kept gives none."""
    rows = [
        driver_row("loadgen", [0, 1, 3], [100.0, 200.0, 400.0]),
        driver_row("chatlog.client", [0, 2, 3], [90.0, 50.0, 360.0]),
    ]
    assert drivers.pair_ratios(rows, "chatlog.client", "loadgen", "driver") == [0.9, 0.9]
    line = drivers.ratio_line(rows, "chatlog.client", "loadgen", "driver", "closed x100")
    assert line == (
        "chatlog.client / loadgen, closed x100: 0.90x median, "
        "0.90-0.90x over 2 side-by-side rounds (0.90, 0.90)"
    )
    rows[0]["contended"] = True
    assert "(c) other processes took > 10% of a CPU" in drivers.ratio_line(
        rows, "chatlog.client", "loadgen", "driver", "closed x100"
    )
    assert drivers.ratio_line(rows[:1], "chatlog.client", "loadgen", "driver", "x") == (
        "chatlog.client / loadgen, x: not measured"
    )


def test_client_runs_the_generators_load_in_its_own_words() -> None:
    """The client gets the same connections, window and line length (--size counts the newline in both)."""
    running: Any = type("Running", (), {"host": "127.0.0.1", "port": 4242})()
    settings = Settings(duration=3.0, warmup=1.0, size=16)
    closed = drivers.client_argv(running, Load("pipelined", 10, 16), settings)
    assert closed[1:3] == ["-m", "chatlog.client"]

    def value(flag: str) -> str:
        return closed[closed.index(flag) + 1]

    assert (value("--connections"), value("--pipeline")) == ("10", "16")
    assert (value("--duration"), value("--warmup"), value("--size")) == ("3", "1", "16")
    assert "--json" in closed
    opened = drivers.client_argv(running, Load("open", 100, 1, 20000), settings)
    assert "--rate" in opened and "--pipeline" not in opened


def test_unpinned_runs_count_other_processes_machine_wide() -> None:
    """Unpinned: CPU beyond the server's and the generator's, in % of one CPU, makes a run contended."""
    cpus = os.cpu_count() or 1
    # Over 1 s, the machine was busy 150 ticks of 100 * cpus; ours took 1 s of CPU.
    busy = 150 * cpus / 2
    other = machine_other_pct((0, 0), (int(busy), 100 * cpus), own_cpu_s=1.0, wall=1.0)
    assert other == pytest.approx(50.0)
    assert contention({"machine_other_pct": other}) == pytest.approx(50.0)
    assert machine_other_pct((0, 0), (10, 100), own_cpu_s=5.0, wall=1.0) == 0.0


def test_a_servers_processes_are_it_and_its_children(tmp_path: Path) -> None:
    """--workers: the server's CPU is its own process's and its workers' (its children)."""
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())  # the shell says once its child runs
        with open(tmp_path / "out", "wb") as out:
            running = servers.Running(servers.CHATLOG_W2, proc, "", 0, tmp_path / "out", out)
            assert running.pids() == [proc.pid, child]
    finally:
        proc.kill()
        proc.wait()
        os.kill(child, signal.SIGKILL)


def no_uvloop(spec: servers.ServerSpec) -> str | None:
    return "uvloop is not installed (pip install '.[bench]')" if spec.name == "uvloop" else None


def test_a_server_that_cannot_run_is_said_never_dropped_silently(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the bench extra: a default run says it skipped uvloop; naming it is an error."""
    monkeypatch.setattr(servers, "missing", no_uvloop)
    names = {spec.name for spec, _ in bench_main.plan(bench_main.parse_args([]))}
    assert "uvloop" not in names and "chatlog" in names
    assert capsys.readouterr().err == (
        "chatlog.bench: skipped uvloop: uvloop is not installed (pip install '.[bench]')\n"
    )
    with pytest.raises(SystemExit, match=r"cannot run uvloop: uvloop is not installed"):
        bench_main.plan(bench_main.parse_args(["--servers", "chatlog,uvloop"]))


def test_an_empty_run_keeps_the_earlier_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(servers, "missing", no_uvloop)
    results = tmp_path / "bench-results.json"
    results.write_text('[{"server": "chatlog"}]\n')
    with pytest.raises(SystemExit):
        bench_main.main(["--servers", "uvloop", "--json", str(results), "--quick"])
    assert results.read_text() == '[{"server": "chatlog"}]\n'
