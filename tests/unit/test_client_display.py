"""The client as a person meets it: durations with units, header, progress, summary layout.

Issue 14's client findings, without sockets: option parsing, the summary's
text at a narrow terminal, its errors by kind, the progress bar's words
during the warmup, and hdrh's percentile spectrum.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from chatlog.client import options as client_options
from chatlog.client.display import ProgressBar, field_lines, header, progress_figures
from chatlog.client.load import TICK, LoadPlan
from chatlog.client.stats import Recorder, Summary, decode_histogram, percentile_spectrum
from chatlog.numbers import NumberError, duration, parse_duration
from tests.unit.test_client import PREFIX, sent_lines, start_run


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 30.0), ("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5", 1.5)],
)
def test_durations_take_units_and_plain_numbers_are_seconds(text: str, seconds: float) -> None:
    """--duration 30s, 2m, 500ms as wrk and hey take them; a plain number is still seconds."""
    assert parse_duration(text) == seconds
    argv = ["--duration", text, "--warmup", text, "--timeout", text, "--interval", text]
    parsed = client_options.parse(argv)
    assert (parsed.duration, parsed.warmup, parsed.timeout, parsed.interval) == (seconds,) * 4


@pytest.mark.parametrize("text", ["abc", "2x", "s", "1m 30s", "-1s", "0s", "", "inf"])
def test_durations_refuse_what_is_not_one(text: str) -> None:
    """Anything else is refused, the message saying what was wanted."""
    check = duration(0.0, "a duration above 0 (like 30s)", above=True)
    with pytest.raises(NumberError, match=r"is not a duration above 0 \(like 30s\)"):
        check(text)


def test_duration_option_error_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The client's usage error names the option and the forms it takes."""
    with pytest.raises(SystemExit):
        client_options.parse(["--duration", "10x"])
    assert "argument --duration: '10x' is not a duration above 0 (like 30, 30s" in (
        capsys.readouterr().err
    )


def test_header_names_target_connections_and_mode() -> None:
    """One line before a load run, as wrk's ``Running 10s test @ ...``."""
    closed = client_options.parse(["--connections", "10", "--duration", "2m", "--port", "5001"])
    assert header(closed) == (
        "Running 120 s @ 127.0.0.1:5001: 10 connections, closed loop (pipeline 1)"
    )
    opened = client_options.parse(
        ["--connections", "4", "--rate", "20000", "--warmup", "5s", "--procs", "2", "--tls"]
    )
    assert header(opened) == (
        "Running 10 s @ 127.0.0.1:5000 (TLS): 4 connections, open loop at 20,000 msgs/s,"
        " after 5 s of warmup, 2 processes"
    )
    counted = client_options.parse(["--messages", "1000"])
    assert header(counted).startswith("Running 1,000 messages per connection @ ")


def a_summary(**extra: object) -> Summary:
    recorder = Recorder()
    recorder.pending.extend([72, 226, 877, 4983, 8543, 9111] * 1000)
    return Summary(
        messages=4055212, errors=0, duration_s=2.0021, connections=1000, **extra,  # type: ignore[arg-type]
        histogram=recorder.total(), cpu_s=12.83,
    )  # fmt: skip


def test_summary_breaks_between_fields_at_60_columns() -> None:
    """At 60 columns every line fits, and no number (no field) is cut in two."""
    summary = a_summary(procs=2, unanswered=3)
    wide = summary.text()
    narrow = summary.text(width=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert max(len(line) for line in wide.splitlines()) > 60
    # The same words in the same order: a break fell between fields, never inside one.
    assert narrow.split() == wide.split()
    fields = [f for line in wide.splitlines() for f in line[12:].split("  ")]
    for line in narrow.splitlines():
        for piece in line[12:].split("  "):
            assert piece in fields, f"{piece!r} is part of a field"
    # Continuations line up under the first field.
    assert re.search(r"^rtt ms      min .*\n {12}\S", narrow, re.MULTILINE)


def test_field_lines_wraps_a_long_sentence_between_words() -> None:
    """A field longer than the line (the client-limit sentence) breaks between its words."""
    sentence = "the client, not the server, was the limit (client CPU 99% of a core): more --procs"
    lines = field_lines("client", [sentence], 60)
    assert all(len(line) <= 60 for line in lines)
    assert " ".join(lines).split() == ["client", *sentence.split()]


def test_errors_are_counted_by_kind() -> None:
    """An error reply, a dropped connection and a timeout are three kinds, in text and JSON."""
    clock, run, transports = start_run(LoadPlan(connections=3, messages=2, size=8, timeout=2))
    first, second, third = run.protocols
    clock.advance(0.001)
    first.dataReceived(b"ERROR nope\n")  # an error reply; its second message gets no reply
    second.connectionLost(Failure(ConnectionLost("reset")))  # dropped: 1 in flight
    sent_lines(transports[2])
    third.dataReceived(PREFIX + b"c3-s1-xx\n")  # then its second message gets no reply
    for _ in range(int(3 / TICK)):
        clock.advance(TICK)
    assert run.finished.called
    summary = run.summary()
    assert summary.errors == 4
    assert summary.by_kind == {"refused": 0, "timeout": 2, "error_reply": 1, "dropped": 1}
    assert "errors      refused 0  timeout 2  error reply 1  dropped 1" in summary.text()
    data = json.loads(summary.json_line())
    assert data["errors_by_kind"] == summary.by_kind
    merged = Summary.merge([Summary.from_json(data), Summary.from_json(data)])
    assert merged.by_kind == {"refused": 0, "timeout": 4, "error_reply": 2, "dropped": 2}


def test_refused_connections_are_their_own_kind() -> None:
    """A connection the server refused counts as refused, no message error."""
    clock, run, transports = start_run(LoadPlan(connections=2, messages=1, size=8))
    run.protocols[0].dataReceived(b"ERROR server busy\n")
    run.protocols[1].dataReceived(PREFIX + b"c2-s1-xx\n")
    summary = run.summary()
    assert summary.by_kind == {"refused": 1, "timeout": 0, "error_reply": 0, "dropped": 0}
    assert "errors      refused 1  timeout 0" in summary.text()


def test_a_clean_summary_has_no_errors_line() -> None:
    """No errors: the summary is the three lines README shows."""
    assert [line[:12] for line in a_summary().text().splitlines()] == [
        "messages    ",
        "duration    ",
        "rtt ms      ",
    ]


def test_progress_says_warming_up_during_the_warmup() -> None:
    """During --warmup the bar says so, instead of counting 0 msgs at 0 msgs/s."""
    assert progress_figures(0, 0.0, warming=True) == "warming up"
    assert progress_figures(1234, 5678.4, warming=False) == "1,234 msgs  5,678 msgs/s"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    bar = ProgressBar(total=3.0, by_time=True, console=console)
    bar.show(0.5, 0, warming=True)
    bar.progress.refresh()
    assert "warming up" in out.getvalue() and "0 msgs/s" not in out.getvalue()
    bar.show(1.5, 500, warming=False)
    bar.show(2.0, 1000, warming=False)
    bar.progress.refresh()
    bar.stop()
    assert "1,000 msgs  1,000 msgs/s" in out.getvalue()


def test_percentile_spectrum_is_hdrh_own() -> None:
    """--percentiles: HdrHistogram's standard percentile distribution, in ms."""
    summary = a_summary()
    spectrum = percentile_spectrum(summary.histogram)
    assert spectrum.splitlines()[0].split() == [
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    ]  # fmt: skip
    again = io.BytesIO()
    decode_histogram(summary.histogram.encode()).output_percentile_distribution(again, 1000)
    assert spectrum == again.getvalue().decode()
    assert "#[Max     =        9.111" in spectrum


def test_percentiles_option_is_for_load_runs() -> None:
    """--percentiles with a load run; refused for a conversation and a sweep."""
    assert client_options.parse(["--connections", "2", "--percentiles"]).percentiles
    for argv in (["--percentiles", "hi"], ["--sweep", "--percentiles"]):
        with pytest.raises(SystemExit):
            client_options.parse(argv)
