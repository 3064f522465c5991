"""The report reads interval logs (.hlog): load points, percentiles over time, two plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatlog import latency
from chatlog.report import main
from chatlog.report.hlogs import load_hlogs
from tests.unit.test_report import png_size

START = 1_800_000_000.0


def write_sweep(path: Path, capacity: float, steps: list[float], answer: float) -> None:
    """A sweep's interval log as the client writes it: two 1 s intervals per step."""
    hlog = latency.HlogWriter(path, start_wall=START)
    hlog.note(mode="sweep", connections=10, procs=1, slo_p99_ms=10.0)
    t = START
    for number, rate in enumerate(steps, 1):
        start = t
        for _ in range(2):
            histogram = latency.new_histogram()
            rtt = 500 if rate <= capacity else 50_000 * number
            histogram.record_value(rtt, int(min(rate, capacity)))
            hlog.interval(histogram, t, t + 1.0)
            t += 1.0
        hlog.note(
            step=number,
            offered=rate,
            phase="ramp",
            start=start,
            end=t,
            achieved=min(rate, capacity),
            ok=rate <= capacity,
            client_limited=False,
        )
        t += 0.2  # connecting the next step
    hlog.note(max_rate_msgs_per_s=answer, limited_by="server")
    hlog.close()


def test_a_sweeps_interval_log_becomes_load_points(tmp_path: Path) -> None:
    """Each step's intervals add up to one point: offered, achieved, percentiles, verdict."""
    path = tmp_path / "server-a.hlog"
    write_sweep(path, capacity=3000, steps=[1000, 2000, 4000], answer=2000)
    (file,) = load_hlogs([path])
    assert (file["label"], file["mode"], file["slo_p99_ms"]) == ("server-a", "sweep", 10.0)
    assert len(file["intervals"]) == 6
    assert file["intervals"][2]["start"] == pytest.approx(2.2)
    points = file["steps"]
    assert [p["offered_msgs_per_s"] for p in points] == [1000, 2000, 4000]
    assert [p["count"] for p in points] == [2000, 4000, 6000]
    assert [p["ok"] for p in points] == [True, True, False]
    assert points[0]["rtt_ms"]["p99"] == 0.5
    assert points[2]["rtt_ms"]["p99"] == pytest.approx(150.0, rel=1e-3)
    assert (file["max_rate_msgs_per_s"], file["limited_by"]) == (2000, "server")


def test_report_draws_latency_against_load_for_hlogs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m chatlog.report A.hlog B.hlog: the load table, both plots, summary.json's hlog."""
    a, b = tmp_path / "chatlog.hlog", tmp_path / "threaded.hlog"
    write_sweep(a, capacity=3000, steps=[1000, 2000, 4000], answer=2000)
    write_sweep(b, capacity=1500, steps=[1000, 2000], answer=1000)
    out = tmp_path / "report"
    assert main([str(a), str(b), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the highest rate with p99 <= 10 ms: 2,000 msgs/s" in printed
    assert "the highest rate with p99 <= 10 ms: 1,000 msgs/s" in printed
    assert "chatlog report" not in printed  # no log was given: no empty log table
    summary = json.loads((out / "summary.json").read_text())
    assert [f["label"] for f in summary["hlog"]] == ["chatlog", "threaded"]
    assert {"latency_vs_load.png", "percentiles_over_time.png"} <= set(summary["plots"])
    assert png_size(out / "latency_vs_load.png") == (1200, 500)
    width, height = png_size(out / "percentiles_over_time.png")
    assert width == 1200 and height > 600  # one panel per file
    page = (out / "report.html").read_text()
    assert "Interval log" in page and "Round trips against offered load" in page


def test_a_plain_rate_run_is_one_point(tmp_path: Path) -> None:
    """An --hlog of a --rate run: the whole run is one load point at its rate."""
    path = tmp_path / "run.hlog"
    hlog = latency.HlogWriter(path, start_wall=START)
    hlog.note(mode="load", offered=500.0, connections=4, procs=1)
    for second in range(3):
        histogram = latency.new_histogram()
        histogram.record_value(800, 500)
        hlog.interval(histogram, START + second, START + second + 1)
    hlog.close()
    (file,) = load_hlogs([path])
    (point,) = file["steps"]
    assert point["offered_msgs_per_s"] == 500.0 and point["achieved_msgs_per_s"] == 500.0
    assert point["count"] == 1500


def test_a_file_that_is_not_an_interval_log_is_refused(tmp_path: Path) -> None:
    """A file that starts like an interval log but holds none: exit 2, nothing written."""
    bad = tmp_path / "bad.hlog"
    bad.write_text("#[not really]\nhello\n")
    out = tmp_path / "report"
    assert main([str(bad), "-o", str(out)]) == 2
    assert not out.exists()
