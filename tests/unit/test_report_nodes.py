"""The report's per-node view of a fleet: figures per node, health checks apart, silent nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatlog.log import make_formatter
from chatlog.report import build_report
from chatlog.report.cli import main
from chatlog.report.nodes import SILENT_S, UNNAMED

T0 = 1763796945.0


def node_log(
    path: Path, node: str | None, fmt: str, messages: int, until: float, stop: bool
) -> Path:
    """A node's log: Server Started, a health check, one client sending ``messages``
    lines spread until ``until`` seconds, and Server Stopped if ``stop``."""
    formatter = make_formatter(fmt, utc=True, node=node)
    peer = {"ip": "127.0.0.1", "port": 40000, "conn": 1}
    check = {"ip": "127.0.0.9", "port": 50000, "conn": 2}
    start: dict[str, Any] = {"event": "start", "time": T0, "listen": "127.0.0.1:5000"}
    start.update(endpoint="tcp:5000", pid=1, version="0.1.0")
    if node is not None:
        start["node"] = node
    records = [formatter(start)]
    records.append(formatter({"event": "connect", "time": T0 + 0.1, **check}))
    records.append(
        formatter({"event": "message", "time": T0 + 0.1, "seq": 1, "msg": b"hc", **check})
    )
    records.append(formatter({"event": "connect", "time": T0 + 0.2, **peer}))
    for seq in range(1, messages + 1):
        when = T0 + 0.2 + (until - 0.2) * seq / messages
        records.append(
            formatter({"event": "message", "time": when, "seq": seq, "msg": b"hi", **peer})
        )
    if stop:
        records.append(
            formatter(
                {"event": "stop", "time": T0 + until, "connections": 2, "messages": messages + 1}
            )
        )
    path.write_bytes(b"".join(records))
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> list[Path]:
    """n1 (json) and n2 (event, named in Server Started) run 30 s; n3 (json) falls silent at 10 s."""
    return [
        node_log(tmp_path / "n1.log", "n1", "json", 300, 30.0, stop=True),
        node_log(tmp_path / "n2.log", "n2", "event", 200, 30.0, stop=False),
        node_log(tmp_path / "n3.log", "n3", "json", 50, 10.0, stop=False),
    ]


def test_each_node_counted_apart_and_the_silent_one_named(fleet: list[Path]) -> None:
    summary = build_report(fleet, utc=True, health_check=b"hc").summary
    rows = {row["node"]: row for row in summary["nodes"]}
    assert sorted(rows) == ["n1", "n2", "n3"]
    assert [rows[n]["messages"] for n in ("n1", "n2", "n3")] == [300, 200, 50]
    assert all(row["health_checks"] == 1 and row["connections"] == 2 for row in rows.values())
    # The fleet's totals still count every message in the logs, health checks too.
    assert summary["messages"]["total"] == 300 + 200 + 50 + 3
    assert rows["n1"]["silent_s"] is None  # stopped as it should
    assert rows["n2"]["silent_s"] is None  # running to the end
    assert rows["n3"]["silent_s"] == pytest.approx(20.0, abs=0.01)


def test_a_pause_shorter_than_the_threshold_is_not_silence(tmp_path: Path) -> None:
    logs = [
        node_log(tmp_path / "a.log", "a", "json", 10, 30.0, stop=False),
        node_log(tmp_path / "b.log", "b", "json", 10, 30.0 - SILENT_S + 0.5, stop=False),
    ]
    rows = build_report(logs).summary["nodes"]
    assert [row["silent_s"] for row in rows] == [None, None]


def test_logs_of_one_unnamed_server_have_no_node_view(tmp_path: Path) -> None:
    """Rotated or per-worker logs of one server without --node are not a fleet."""
    logs = [
        node_log(tmp_path / "x.log", None, "json", 10, 30.0, stop=False),
        node_log(tmp_path / "x.log.1", None, "dash", 10, 5.0, stop=False),
    ]
    assert build_report(logs).summary["nodes"] == []


def test_records_of_no_node_beside_named_ones_are_one_row(tmp_path: Path) -> None:
    logs = [
        node_log(tmp_path / "a.log", "a", "json", 10, 30.0, stop=True),
        node_log(tmp_path / "x.log", None, "json", 7, 30.0, stop=True),
    ]
    rows = {row["node"]: row["messages"] for row in build_report(logs).summary["nodes"]}
    assert rows == {"a": 11, UNNAMED: 8}  # no --health-check: the check is a message


def test_console_page_and_plot_show_the_fleet(
    fleet: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([*map(str, fleet), "--utc", "--health-check", "hc", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nodes" in printed and "SILENT 20.0 s" in printed
    assert "node n3 went silent" in printed
    page = (out / "report.html").read_text()
    assert "<h2>Nodes</h2>" in page and "node n3 went silent" in page
    assert (out / "nodes.png").stat().st_size > 10_000
