"""The bench's targets: judging a run's rows, ``--check``'s exit status, the one list.

No server runs here: rows are made by hand (the bench's own row shape), and
``main`` runs with its measuring step replaced by one that returns them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import chatlog.bench.__main__ as bench_main
from chatlog.bench import targets
from chatlog.bench.targets import TARGETS, Target, judge, judge_one

README = Path(__file__).resolve().parents[2] / "README.rst"


def row(
    server: str,
    msgs: float,
    cpu: float = 10.0,
    mode: str = "closed",
    connections: int = 100,
    pipeline: int = 1,
    **flags: Any,
) -> dict[str, Any]:
    """One row of the bench's results, as run.summarize makes them."""
    return {
        "server": server,
        "mode": mode,
        "connections": connections,
        "pipeline": pipeline,
        "rate": 0,
        "msgs_per_s": msgs,
        "p50_ms": 0.1,
        "p99_ms": 0.2,
        "cpu_us_per_msg": cpu,
        "loadgen_cpu_pct": 40.0,
        "loadgen_saturated": False,
        "contended": False,
        **flags,
    }


def full_run(**overrides: float) -> list[dict[str, Any]]:
    """Rows that meet every target with room to spare; ``overrides``: msgs/s by server."""
    msgs = {
        "chatlog": 100_000.0,
        "uvloop": 90_000.0,
        "twisted": 60_000.0,
        "threaded": 20_000.0,
        "c-epoll": 300_000.0,
        "chatlog-fsync": 80_000.0,
    }
    msgs.update(overrides)
    rows = [row(name, value, cpu=4.0 if name == "c-epoll" else 7.0) for name, value in msgs.items()]
    rows.append(row("chatlog", 800_000.0, mode="pipelined", connections=10, pipeline=16))
    rows.append(row("twisted", 500_000.0, mode="pipelined", connections=10, pipeline=16))
    return rows


def test_every_target_is_judged_met_from_a_full_run() -> None:
    """A run with every row the targets need, all better than the goals: six targets met."""
    verdicts = judge(full_run())
    assert [v.met for v in verdicts] == [True] * len(TARGETS)
    assert targets.check_line(verdicts) == f"all {len(TARGETS)} judged targets met (0 not judged)"


def test_a_short_target_is_named_with_its_measured_ratio() -> None:
    """chatlog at 0.97x uvloop: that target is SHORT, the others met, and --check says which."""
    verdicts = judge(full_run(uvloop=100_000 / 0.97))
    assert [v.met for v in verdicts] == [False] + [True] * (len(TARGETS) - 1)
    assert verdicts[0].value == pytest.approx(0.97)
    assert targets.check_line(verdicts) == (
        f"1 of {len(TARGETS)} judged targets SHORT: "
        "closed x100: chatlog msgs/s >= 1.00 x uvloop (measured 0.970)"
    )
    assert "SHORT" in targets.verdicts_text(verdicts).splitlines()[0]


def test_the_goal_itself_is_met_at_least_and_at_most() -> None:
    """A ratio equal to the goal meets it, for an 'at least' and an 'at most' target alike."""
    at_least = Target("closed", 100, 1, "chatlog", "twisted", "msgs_per_s", ">=", 0.5)
    at_most = Target("closed", 100, 1, "chatlog", "c-epoll", "cpu_us_per_msg", "<=", 2.0)
    rows = [row("chatlog", 50.0, cpu=8.0), row("twisted", 100.0), row("c-epoll", 1.0, cpu=4.0)]
    assert judge_one(rows, at_least).met is True
    assert judge_one(rows, at_most).met is True
    rows[0]["cpu_us_per_msg"] = 8.01
    assert judge_one(rows, at_most).met is False


def test_flagged_or_missing_rows_judge_nothing() -> None:
    """A row marked (!) or (c), or absent, leaves its target unjudged and out of --check."""
    rows = [
        r
        for r in full_run(uvloop=1_000_000)  # would be SHORT, were it judged
        if r["server"] != "threaded"
    ]
    for r in rows:
        if r["server"] == "uvloop":
            r["contended"] = True
        if r["server"] == "c-epoll":
            r["loadgen_saturated"] = True
    verdicts = {v.target.peer: v for v in judge(rows) if v.target.server == "chatlog"}
    assert verdicts["uvloop"].met is None
    assert verdicts["uvloop"].why == "not judged: uvloop closed x100 was contended (c)"
    assert verdicts["c-epoll"].met is None
    assert verdicts["c-epoll"].why == (
        "not judged: c-epoll closed x100 measured the load generator (!)"
    )
    assert verdicts["threaded"].met is None
    assert verdicts["threaded"].why == "not measured: no threaded closed x100 figure"
    line = targets.check_line(judge(rows))
    assert line == f"all 3 judged targets met ({len(TARGETS) - 3} not judged)"


def test_a_run_that_can_judge_nothing_says_so() -> None:
    """Only chatlog ran: no target has its two rows, and --check says none was judged."""
    verdicts = judge([row("chatlog", 100.0)])
    assert all(v.met is None and v.value is None for v in verdicts)
    assert targets.check_line(verdicts) == (
        f"no target could be judged by this run (0 of {len(TARGETS)})"
    )


@pytest.fixture
def bench_with_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``python -m chatlog.bench`` whose measuring step returns the given rows, once per load."""

    def run(rows: list[dict[str, Any]], *args: str) -> int:
        served: list[bool] = []

        def measure(specs: Any, load: Any, *rest: Any) -> list[dict[str, Any]]:
            if served:
                return []
            served.append(True)
            return rows

        monkeypatch.setattr(bench_main, "measure", measure)
        monkeypatch.setattr(bench_main.build, "build", lambda name: tmp_path / name)
        # Neither pin the test process to a CPU nor take over its SIGTERM.
        monkeypatch.setattr(bench_main, "pinning", lambda args: ((), (), "not pinned"))
        monkeypatch.setattr(bench_main.signal, "signal", lambda *args: None)
        return bench_main.main(
            [*args, "--json", str(tmp_path / "out.json"), "--plot", "", "--quiet"]
        )

    return run


def test_check_makes_a_short_target_the_exit_status(
    bench_with_rows: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check: exit 1 and one line on stderr naming the SHORT target; without it, exit 0."""
    short = full_run(threaded=100_000 / 3.5)
    assert bench_with_rows(short, "--check") == 1
    out, err = capsys.readouterr()
    assert err == (
        "chatlog.bench: 1 of 6 judged targets SHORT: "
        "closed x100: chatlog msgs/s >= 4.00 x threaded (measured 3.500)\n"
    )
    assert re.search(r"closed x100: chatlog msgs/s >= 4.00 x threaded +3.500  SHORT", out)
    assert bench_with_rows(short) == 0
    assert bench_with_rows(full_run(), "--check") == 0
    out, err = capsys.readouterr()
    assert "check: all 6 judged targets met" in out and err == ""


def test_listing_is_the_targets_in_order() -> None:
    """--targets prints one line per target, in the table's words."""
    assert targets.listing().splitlines() == [t.name for t in TARGETS]
    assert targets.listing().splitlines()[0] == "closed x100: chatlog msgs/s >= 1.00 x uvloop"
    assert "16 in flight x10: chatlog msgs/s >= 0.80 x twisted" in targets.listing()


def test_readme_lists_the_targets_the_bench_judges() -> None:
    """README.rst shows the bench's list word for word (python -m chatlog.bench --targets)."""
    text = README.read_text(encoding="utf-8")
    block = "\n".join(f"    {line}" for line in targets.listing().splitlines())
    assert f"::\n\n{block}\n\n" in text
