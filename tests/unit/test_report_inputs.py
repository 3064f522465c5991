"""What the report is given: every file said for what it was taken, mistakes refused
before reading, mixed formats and unrelated runs said loudly, nothing readable an error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chatlog import report
from chatlog.log import make_formatter
from tests.unit.test_report import synthetic_run, write_events


def client_run(start: float) -> list[dict[str, object]]:
    """A client's log: one message sent and its reply, at ``start``."""
    peer = {"ip": "127.0.0.1", "port": 5000, "conn": 1, "seq": 1}
    return [
        {"event": "sent", "time": start, "msg": b"m", **peer},
        {
            "event": "reply",
            "time": start + 0.001,
            "msg": b"Server received: m",
            "rtt_ms": 1.0,
            **peer,
        },
    ]


def test_each_file_is_said_for_what_it_was_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = write_events(tmp_path / "server.log", "event", synthetic_run(2, 3))
    client = write_events(tmp_path / "client.log", "json", client_run(1795000000.05))
    assert report.main([str(server), str(client), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert f"read {server}: server log, event format, 12 records\n" in captured.out
    assert f"read {client}: client log, json format, 2 records\n" in captured.out
    assert captured.err == ""


def test_another_format_appended_is_a_loud_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first hour's trap: json appended to an event log. The report still reads the event
    records, and says on stderr how many lines were not records of the file's format."""
    log = write_events(tmp_path / "chatlog.log", "event", synthetic_run(2, 3))
    json_records = b"".join(map(make_formatter("json"), synthetic_run(1, 4, start=1795000100.0)))
    with open(log, "ab") as f:
        f.write(json_records)
    assert report.main([str(log), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "server log, event format, 12 records, 8 unparsed" in captured.out
    assert captured.err == (
        f"chatlog.report: warning: {log}: 8 of 20 lines are not event records (another format "
        "appended, or not a chatlog log?); they are counted as unparsed, in nothing else\n"
    )


def test_server_and_client_logs_of_different_runs_are_said_to_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = write_events(tmp_path / "server.log", "event", synthetic_run(2, 3))
    client = write_events(tmp_path / "client.log", "event", client_run(1795003600.0))
    assert report.main([str(server), str(client), "-o", str(tmp_path / "out")]) == 0
    assert "do not overlap in time: two different runs?" in capsys.readouterr().err


def test_nothing_readable_is_an_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(4000) + b"\n")
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    out = tmp_path / "out"
    assert report.main([str(garbage), str(text), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"chatlog.report: {text}: not a chatlog log (no line is a record)\n" in err
    assert err.endswith("chatlog.report: nothing to report: no line of these files is a record\n")
    assert not out.exists()


@pytest.mark.parametrize("case", ["directory", "output under a file", "output unwritable"])
def test_mistakes_are_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    log = write_events(tmp_path / "server.log", "event", synthetic_run(1, 1))
    argv, expected = {
        "directory": ([str(tmp_path), "-o", str(tmp_path / "out")], f"{tmp_path} is a directory"),
        "output under a file": ([str(log), "-o", str(log / "out")], "is not a directory"),
        "output unwritable": ([str(log), "-o", "/proc/chatlog-report"], "cannot write the report"),
    }[case]
    status = report.main(argv)
    assert status == (1 if case == "output unwritable" else 2)
    err = capsys.readouterr().err
    assert err.startswith("chatlog.report: ") and expected in err and err.count("\n") == 1


def test_summary_lists_the_files(tmp_path: Path) -> None:
    log = write_events(tmp_path / "server.log", "dash", synthetic_run(1, 2))
    out = tmp_path / "out"
    assert report.main([str(log), "-o", str(out)]) == 0
    files = json.loads((out / "summary.json").read_text())["files"]
    assert [(f["path"], f["format"], f["role"]) for f in files] == [(str(log), "dash", "server")]


def test_partial_first_and_last_seconds_are_scaled_not_drawn_as_ramps() -> None:
    """A run from x.5 s to y.75 s at 1,000/s: its first and last seconds plot at 1,000/s
    (not 500 and 750); a sliver of a second is left out rather than scaled into a spike."""
    from chatlog.report.plots import per_second
    from chatlog.report.stats import PerSecond

    rate = PerSecond()
    for i in range(2251):  # 100.5 s to 102.75 s
        rate.add(100.5 + i / 1000)
    assert per_second(rate) == pytest.approx({100: 1000.0, 101: 1000.0, 102: 751 / 0.75})
    sliver = PerSecond()
    for when in (100.95, 101.0, 101.5, 102.1):
        sliver.add(when)
    assert per_second(sliver) == {101: 2}  # 0.05 s and 0.1 s covered: left out


def test_the_page_says_p99_9_as_the_client_does(tmp_path: Path) -> None:
    server = write_events(tmp_path / "server.log", "event", synthetic_run(2, 3))
    client = write_events(tmp_path / "client.log", "json", client_run(1795000000.05))
    out = tmp_path / "out"
    assert report.main([str(server), str(client), "-o", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<th>p99.9</th>" in page and "<th>p999</th>" not in page


@pytest.mark.parametrize("fmt", ["event", "dash", "json"])
def test_throttle_episodes_are_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    run = synthetic_run(1, 2)
    when = run[1]["time"]
    episode = {"event": "throttled", "address": "10.0.0.1", "reason": "rate"}
    run[2:2] = [
        {**episode, "time": when, "state": "paused", "limit": 1000, "burst": 2000},
        {**episode, "time": when + 0.01, "state": "released", "seconds": 9.5, "paused": 8.25,
         "held": 9000},
    ]  # fmt: skip
    log = write_events(tmp_path / "server.log", fmt, run)
    out = tmp_path / "out"
    assert report.main([str(log), "-o", str(out)]) == 0
    throttled = json.loads((out / "summary.json").read_text())["limits"]["throttled"]
    assert throttled == {
        "events": {"rate": 1}, "seconds": 9.5, "paused_seconds": 8.25, "held": 9000,
        "addresses": 1, "by_address": [{"address": "10.0.0.1", "episodes": 1}],
    }  # fmt: skip
    assert "throttled s / not read s / held back" in capsys.readouterr().out
