"""The sweep's search without sockets: a model server of known capacity answers each step."""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Awaitable, Callable

import pytest
from twisted.internet.defer import Deferred

from chatlog.client import report_sweep
from chatlog.client.options import parse
from chatlog.client.stats import Summary
from chatlog.client.sweep import SweepResult, judge, ramp, sweep
from chatlog.latency import new_histogram


def model(
    capacity: float, client_max: float = math.inf, tried: list[float] | None = None
) -> Callable[[float, str, int], Awaitable[Summary]]:
    """A server that answers in 1 ms up to ``capacity`` msgs/s and in 200 ms above it, measured
    by a client whose CPU is saturated above ``client_max`` msgs/s."""

    async def measure(rate: float, phase: str, number: int) -> Summary:
        if tried is not None:
            tried.append(rate)
        histogram = new_histogram()
        over = rate > capacity or rate > client_max
        histogram.record_value(200_000 if over else 1000, 1000)
        achieved = min(rate, capacity, client_max)
        return Summary(
            messages=1000,
            errors=0,
            duration_s=1000 / achieved,
            connections=10,
            histogram=histogram,
            offered=rate,
            cpu_fraction=1.0 if rate > client_max else 0.3,
        )

    return measure


def options(*argv: str) -> argparse.Namespace:
    return parse(["--sweep", "--connections", "10", *argv])


def run_sweep(opts: argparse.Namespace, measure: Callable[..., Awaitable[Summary]]) -> SweepResult:
    result: SweepResult = Deferred.fromCoroutine(sweep(opts, measure)).result
    return result


def test_ramp_doubles_then_bisection_finds_the_capacity() -> None:
    """Steps double from 1000 until one fails; bisection narrows the gap; the answer is the best good step."""
    tried: list[float] = []
    result = run_sweep(options(), model(5000, tried=tried))
    assert tried == [1000, 2000, 4000, 8000, 6000, 5000, 5500, 5250]
    assert [s.phase for s in result.steps] == ["ramp"] * 4 + ["bisect"] * 4
    assert result.max_rate == 5000 and result.limited_by == "server"
    assert "5,000 msgs/s is the highest rate with p99 <= 10 ms" in result.text()
    data = result.to_json()
    assert data["max_rate_msgs_per_s"] == 5000 and data["limited_by"] == "server"
    assert [s["ok"] for s in data["steps"]] == [True, True, True, False, False, True, False, False]


def test_given_rates_stop_at_the_first_failure() -> None:
    """--rates: run in rising order until one fails; nothing above it is tried."""
    tried: list[float] = []
    result = run_sweep(
        options("--rates", "3000,1000,2000,9000", "--bisect", "0"), model(2500, tried=tried)
    )
    assert tried == [1000, 2000, 3000]
    assert result.max_rate == 2000


def test_a_step_the_client_could_not_drive_is_never_the_servers_capacity() -> None:
    """Above what the client can send, failed steps are marked as the client's limit and
    the answer is only a lower bound on the server's capacity."""
    result = run_sweep(options("--rate-max", "8000"), model(1e9, client_max=3000))
    failed = [s for s in result.steps if not s.ok]
    assert failed and all(s.client_limited for s in failed)
    assert all(s.client == ["client CPU 100% of a core"] for s in failed)
    assert result.max_rate == 3000 and result.limited_by == "client"
    text = result.text()
    assert "CLIENT LIMIT (client CPU 100% of a core)" in text
    assert "at least 3,000 msgs/s" in text and "the client, not the server, was the limit" in text
    assert "highest rate" not in text
    data = result.to_json()
    assert data["limited_by"] == "client"
    assert all(s["client_limited"] for s in data["steps"] if not s["ok"])


def test_every_step_passing_is_a_lower_bound() -> None:
    """No step failed: the server's limit was not reached."""
    result = run_sweep(options("--rates", "1000,2000"), model(1e9))
    assert result.max_rate == 2000 and result.limited_by == "not reached"
    assert "at least 2,000 msgs/s" in result.text()


def test_no_rate_meeting_the_slo_exits_1() -> None:
    """The lowest rate already fails: no answer, and the exit status says so."""
    opts = options("--rates", "1000,2000")
    result = run_sweep(opts, model(500))
    assert result.max_rate is None and len(result.steps) == 1
    out = io.StringIO()
    assert report_sweep(result, opts, out) == 1
    assert "answer: none: the lowest rate tried, 1,000 msgs/s, failed" in out.getvalue()
    opts.json = True
    out = io.StringIO()
    report_sweep(result, opts, out)
    assert json.loads(out.getvalue())["max_rate_msgs_per_s"] is None


def test_judge_fails_a_step_on_latency_errors_refusals_or_throughput() -> None:
    """A step passes only with p99 within the SLO, no errors or refusals, and 95% of the rate back."""
    fast = new_histogram()
    fast.record_value(1000, 100)
    slow = new_histogram()
    slow.record_value(20_000, 100)
    assert judge(Summary(100, 0, 1.0, 1, fast), 100.0, 10.0) == ([], [])
    assert judge(Summary(100, 0, 1.0, 1, slow), 100.0, 10.0)[0] == ["p99 20.015 ms > 10 ms"]
    assert judge(Summary(100, 2, 1.0, 1, fast), 100.0, 10.0)[0] == ["2 errors"]
    assert judge(Summary(100, 0, 1.0, 1, fast, refused=1), 100.0, 10.0)[0] == ["1 refused"]
    assert judge(Summary(100, 0, 1.0, 1, fast), 110.0, 10.0)[0] == ["achieved 91% of offered"]
    assert judge(Summary(0, 0, 0.0, 1), 100.0, 10.0)[0] == ["no replies"]


def test_ramp_rates() -> None:
    """--rate-max: doubling from 1000 up to it; below 1000, the one rate."""
    assert list(ramp(options("--rate-max", "5000"))) == [1000, 2000, 4000, 5000]
    assert list(ramp(options("--rate-max", "300"))) == [300]
    assert list(ramp(options("--rates", "5,1,3"))) == [1, 3, 5]


@pytest.mark.parametrize(
    "argv",
    [
        ["--connections", "2", "--slo-p99", "5"],
        ["--connections", "2", "--rates", "1,2"],
        ["--sweep", "--messages", "10"],
        ["--sweep", "--rate", "100"],
        ["--sweep", "--rates", "1000", "--rate-max", "2000"],
        ["--sweep", "--rates", "0,100"],
        ["--hlog", "x.hlog", "hello"],
    ],
)
def test_sweep_options_that_mean_nothing_are_refused(argv: list[str]) -> None:
    """Sweep-only options without --sweep, and a sweep with a fixed size or rate, are usage errors."""
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2


def test_sweep_defaults() -> None:
    """A sweep's steps: 5 s after 1 s of warm-up, SLO p99 10 ms, 4 bisection steps."""
    opts = options()
    assert (opts.duration, opts.warmup, opts.slo_p99, opts.bisect) == (5.0, 1.0, 10.0, 4)
    assert opts.expect == b"Server received: "
    assert parse(["--connections", "1"]).warmup == 0.0
