"""The bench's size and format axes: options, the plan, MiB/s, the table, the targets, the plot.

No server runs here: ``main`` runs with its measuring step replaced by one
that makes a row per server and load, from the line size it was given.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

import chatlog.bench.__main__ as bench_main
from chatlog.bench import servers, sizes
from chatlog.bench.run import Load, Settings


def plan(argv: list[str]) -> tuple[list[str], list[Load]]:
    points = bench_main.plan(bench_main.parse_args(argv))
    names = list(dict.fromkeys(spec.name for spec, _ in points))
    return names, list(dict.fromkeys(load for _, load in points))


# -- options -----------------------------------------------------------------------------------


def test_sizes_are_bytes_with_k_for_kibibytes() -> None:
    """Sizes count the newline; ``1k`` is 1024; repeats are dropped, the order kept."""
    assert sizes.parse_sizes("16,128,1k,16K") == [16, 128, 1024, 16384]
    assert sizes.parse_sizes(" 1024, 16 ,1024,") == [1024, 16]


@pytest.mark.parametrize("text", ["", "1", "0", "x", "1.5k", "65537", "128k"])
def test_sizes_refuse_what_no_line_can_be(text: str) -> None:
    """A line is 2 bytes (one and its newline) to chatlog's 64 KiB limit."""
    with pytest.raises(argparse.ArgumentTypeError):
        sizes.parse_sizes(text)


def test_formats_are_chatlogs_three() -> None:
    """event, dash, json, each once; anything else is refused by name."""
    assert sizes.parse_formats("json,event,json") == ["json", "event"]
    with pytest.raises(argparse.ArgumentTypeError, match="got xml"):
        sizes.parse_formats("event,xml")
    with pytest.raises(argparse.ArgumentTypeError):
        sizes.parse_formats(",")


def test_sizes_run_chatlog_in_each_format_beside_the_peers() -> None:
    """--sizes: chatlog per format, then twisted, uvloop, C epoll; closed x100 and 16 in flight x10."""
    args = bench_main.parse_args(["--sizes", "16,1k"])
    assert (args.mode, args.sizes, args.formats) == ("sizes", [16, 1024], ["event", "dash", "json"])
    names, loads = plan(["--sizes", "16,1k"])
    expected = ["chatlog", "chatlog-dash", "chatlog-json", "twisted", "uvloop", "c-epoll"]
    assert names == [n for n in expected if servers.available(servers_named(n))]
    assert loads == [Load("closed", 100), Load("pipelined", 10, 16)]


def servers_named(name: str) -> servers.ServerSpec:
    return {spec.name: spec for spec in servers.named_servers()}[name]


def test_formats_alone_take_every_default_size() -> None:
    """--formats json: every default size, chatlog in json only beside the peers."""
    args = bench_main.parse_args(["--formats", "json"])
    assert (args.mode, args.sizes, args.formats) == ("sizes", sizes.DEFAULT_SIZES, ["json"])
    assert args.servers.split(",") == ["chatlog-json", *sizes.PEERS]


def test_the_default_run_has_no_size_axis() -> None:
    """No --sizes, no --formats: the sweep as it was, at --size."""
    args = bench_main.parse_args([])
    assert (args.mode, args.sizes, args.formats, args.size) == ("sweep", None, None, 16)


@pytest.mark.parametrize("mode", ["--client", "--workers-scaling"])
def test_sizes_are_for_the_sweep_only(mode: str) -> None:
    """--client and --workers-scaling have loads of their own: with --sizes, a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        bench_main.parse_args([mode, "--sizes", "16"])
    assert exit_info.value.code == 2


def test_format_servers_run_their_format() -> None:
    """chatlog-dash and chatlog-json are chatlog with --format; --compare runs each from a checkout."""
    for name, spec in sizes.FORMATS.items():
        argv = servers_named(spec).argv({}, Path("/tmp"))
        if name == "event":
            assert "--format" not in argv
        else:
            assert argv[argv.index("--format") + 1] == name
    names, _ = plan(["--formats", "event,json", "--servers", "chatlog,chatlog-json", "--compare", "/tmp/old"])  # fmt: skip
    assert names == ["chatlog", "chatlog-json", "chatlog@old", "chatlog-json@old"]
    old = servers.compare_spec(Path("/tmp/old"), "chatlog-json")
    assert old.root == Path("/tmp/old").resolve()
    assert old.argv({}, Path("/tmp"))[-2:] == ["--format", "json"]


# -- rows, table, targets ----------------------------------------------------------------------


def row(server: str, size: int, msgs: float, pipeline: int = 1, **flags: Any) -> dict[str, Any]:
    return {
        "server": server,
        "size": size,
        "mode": "pipelined" if pipeline > 1 else "closed",
        "connections": 10 if pipeline > 1 else 100,
        "pipeline": pipeline,
        "rate": 0,
        "msgs_per_s": msgs,
        "p50_ms": 0.1,
        "p99_ms": 0.2,
        "cpu_us_per_msg": 5.0 if server == "c-epoll" else 7.0,
        "loadgen_cpu_pct": 40.0,
        "loadgen_saturated": False,
        "contended": False,
        **flags,
    }


def test_mib_per_s_counts_the_lines_bytes() -> None:
    """1,048,576 lines of 1 KiB a second are 1024 MiB/s."""
    assert sizes.mib_per_s(row("chatlog", 1024, 1024 * 1024)) == 1024.0
    assert sizes.mib_per_s(row("chatlog", 16, 65536)) == 1.0
    assert sizes.mib_per_s({"size": 16, "msgs_per_s": None}) is None
    assert [sizes.size_label(n) for n in (16, 1024, 1536, 16384)] == [
        "16 B",
        "1 KiB",
        "1536 B",
        "16 KiB",
    ]


def test_table_shows_mib_per_s_and_each_row_over_chatlog_at_its_size() -> None:
    """Rows by size then load; ÷ chatlog divides by the event format's msgs/s at the same point."""
    rows = [
        row("chatlog", 1024, 400_000.0, pipeline=16),
        row("chatlog-json", 1024, 360_000.0, pipeline=16),
        row("chatlog", 16, 100_000.0),
        row("chatlog-json", 16, 95_000.0, contended=True),
    ]
    lines = sizes.text_table(rows).splitlines()
    assert lines[0].split() == [
        "size", "load", "server", "msgs/s", "MiB/s", "p50", "ms", "p99", "ms",
        "CPU", "µs/msg", "÷", "chatlog", "loadgen", "CPU",
    ]  # fmt: skip
    body = [line.split() for line in lines[2:]]
    assert body[0] == ["16", "B", "closed", "x100", "chatlog", "100,000", "1.5", "0.100", "0.200", "7.00", "1.00", "40%"]  # fmt: skip
    assert body[1][4:] == ["chatlog-json", "95,000", "1.4", "0.100", "0.200", "7.00", "0.95", "40%", "(c)"]  # fmt: skip
    assert body[2][:9] == ["1", "KiB", "16", "in", "flight", "x10", "chatlog", "400,000", "390.6"]
    assert body[3][6:9] == ["chatlog-json", "360,000", "351.6"] and body[3][-2] == "0.90"
    rst = sizes.rst_table(rows)
    assert rst.splitlines()[0].startswith("=====  ====") and "351.6" in rst


def full(event_16: float = 100_000.0, json_factor: float = 0.95) -> list[dict[str, Any]]:
    """Rows for sizes 16 and 1 KiB that meet every size target; ``json_factor``: json / event."""
    rows = []
    for size, closed, piped in ((16, event_16, 900_000.0), (1024, 90_000.0, 600_000.0)):
        for pipeline, msgs in ((1, closed), (16, piped)):
            rows.append(row("chatlog", size, msgs, pipeline))
            rows.append(row("chatlog-json", size, msgs * json_factor, pipeline))
            rows.append(row("uvloop", size, msgs * 0.9, pipeline))
            rows.append(row("c-epoll", size, msgs * 2, pipeline))
    return rows


def test_size_targets_name_issue_15s_goals() -> None:
    """At 1 KiB 500 MiB/s; every other format 0.9x event at every size and load; uvloop, C epoll at 16 B."""
    names = [goal.name for goal in sizes.size_targets([16, 1024], ["event", "json"])]
    assert names == [
        "1 KiB, 16 in flight x10: chatlog MiB/s >= 500",
        "16 B, closed x100: chatlog-json msgs/s >= 0.90 x chatlog",
        "16 B, 16 in flight x10: chatlog-json msgs/s >= 0.90 x chatlog",
        "1 KiB, closed x100: chatlog-json msgs/s >= 0.90 x chatlog",
        "1 KiB, 16 in flight x10: chatlog-json msgs/s >= 0.90 x chatlog",
        "16 B, closed x100: chatlog msgs/s >= 1.00 x uvloop",
        "16 B, closed x100: chatlog CPU µs/msg <= 1.50 x c-epoll",
    ]
    assert sizes.size_targets([128], ["json"]) == []


def test_size_targets_are_judged_on_their_own_sizes_rows() -> None:
    """Met with room; a ratio at one size never borrows another size's row; flags judge nothing."""
    goals = sizes.size_targets([16, 1024], ["event", "json"])
    verdicts = sizes.judge(full(), goals)
    assert [v.met for v in verdicts] == [True, True, True, True, True, True, True]
    assert verdicts[0].value == pytest.approx(600_000 * 1024 / 2**20)
    slow = sizes.judge(full(json_factor=0.8), goals)
    assert [v.met for v in slow][1:5] == [False] * 4
    assert "1 KiB, closed x100: chatlog-json msgs/s >= 0.90 x chatlog (measured 0.800)" in (
        sizes.check_line(slow)
    )
    rows = [r for r in full() if not (r["size"] == 1024 and r["server"] == "chatlog")]
    lonely = sizes.judge(rows, goals)
    assert lonely[0].met is None and lonely[0].why.startswith("not measured")
    assert lonely[3].met is None  # the 16-byte chatlog row does not stand in
    flagged = full()
    for r in flagged:
        if (r["server"], r["size"], r["pipeline"]) == ("chatlog", 1024, 16):
            r["loadgen_saturated"] = True
    (first, *_rest) = sizes.judge(flagged, goals)
    assert first.met is None and "(!)" in first.why
    assert re.search(r"500 +586  not judged", sizes.verdicts_text([first]))


# -- main, with the measuring step replaced ----------------------------------------------------


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``python -m chatlog.bench`` whose measuring step makes rows from the size it is given."""

    def run(*args: str, factor: float = 0.95) -> int:
        def measure(
            specs: Any, load: Load, _bins: Any, _scratch: Any, settings: Settings, _say: Any
        ) -> list[dict[str, Any]]:
            base = 1_000_000.0 / (1 + settings.size / 256) * (3 if load.pipeline > 1 else 1)
            speed = {"chatlog-json": factor, "chatlog-dash": factor, "c-epoll": 2.0}
            return [
                row(spec.name, 0, base * speed.get(spec.name, 1.0), load.pipeline) for spec in specs
            ]

        monkeypatch.setattr(bench_main, "measure", measure)
        monkeypatch.setattr(bench_main.build, "build", lambda name: tmp_path / name)
        monkeypatch.setattr(bench_main, "pinning", lambda args: ((), (), "not pinned"))
        monkeypatch.setattr(bench_main.signal, "signal", lambda *args: None)
        return bench_main.main([*args, "--json", str(tmp_path / "out.json"), "--quiet"])

    return run


def test_a_size_run_prints_each_size_judges_and_plots(
    bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every size, the command line first, the JSON rows tagged with size and MiB/s, a PNG."""
    plot = tmp_path / "sizes.png"
    argv = ["--sizes", "16,1k", "--formats", "event,json", "--servers", "chatlog,chatlog-json,uvloop,c-epoll"]  # fmt: skip
    assert bench(*argv, "--plot", str(plot), "--check") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "command: python -m chatlog.bench " + " ".join(argv) + (
        f" --plot {plot} --check --json {tmp_path / 'out.json'} --quiet"
    )
    assert "load: 16, 1024-byte lines over loopback" in out
    assert re.search(r"1 KiB +16 in flight x10 +chatlog +600,000 +585\.9", out)
    assert "targets of issue 15 (line sizes and formats):" in out
    assert "check: " in out and "line sizes and formats: all 7 judged met" in out
    saved = json.loads((tmp_path / "out.json").read_text())
    assert {(r["size"], r["server"]) for r in saved} >= {(16, "chatlog"), (1024, "c-epoll")}
    assert all(r["mib_per_s"] == pytest.approx(r["msgs_per_s"] * r["size"] / 2**20) for r in saved)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_size_target_is_the_exit_status_with_check(
    bench: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """json at 0.8x event: --check exits 1 and names it; without --check, 0."""
    argv = ["--sizes", "16", "--formats", "event,json", "--servers", "chatlog,chatlog-json", "--plot", ""]  # fmt: skip
    assert bench(*argv, "--check", factor=0.8) == 1
    captured = capsys.readouterr()
    assert "16 B, closed x100: chatlog-json msgs/s >= 0.90 x chatlog (measured 0.800)" in (
        captured.err
    )
    assert bench(*argv, factor=0.8) == 0


@pytest.mark.parametrize("quick", [False, True])
def test_a_quick_runs_plot_says_so(
    bench: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quick: bool
) -> None:
    """A --quick run is a smoke test: its plot's title says its figures are not to be quoted."""
    titles: list[str] = []
    monkeypatch.setattr(bench_main.output, "plot", lambda rows, path, title: titles.append(title))
    argv = ["--servers", "chatlog", "--connections", "1", "--pipelined", "", "--rates", ""]
    assert bench(*argv, *(["--quick"] if quick else []), "--plot", str(tmp_path / "p.png")) == 0
    assert len(titles) == 1
    assert ("QUICK run" in titles[0]) == quick
