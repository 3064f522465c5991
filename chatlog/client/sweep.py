"""``--sweep``: how much can this server take?

A sweep is a series of open-loop load runs (*steps*) of rising offered rate,
each measured for ``--duration`` after ``--warmup``, with latency counted
from each message's scheduled time as ``--rate`` does.  The ramp stops at
the first step that fails: its p99 is over the SLO (``--slo-p99``), errors
appear (error replies, refused or lost connections, missing replies), or
fewer replies per second come back than were offered (below
:data:`FAST_ENOUGH` of it).  Then ``--bisect`` steps halve the gap between
the last good and the first bad rate.  The answer is the highest rate that
met the SLO.

The client is honest about itself: a failed step whose limit was the client
(its CPU, or how late it sent against the schedule; see
:meth:`chatlog.client.stats.Summary.client_limits`) is marked so, and an
answer bounded by such a step is given as a lower bound on the server's
capacity, never as the capacity.

:func:`sweep` is the search alone, over any way of measuring a step (tests
give it a model server); :func:`run_sweep` measures steps for real.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chatlog.client.interrupt import Interrupts
from chatlog.client.runner import ClientError, open_hlog
from chatlog.client.stats import Summary, late_ms

#: A step passes only if at least this share of the offered rate came back.
FAST_ENOUGH = 0.95
#: Bisection stops once the first bad rate is within this factor of the last good one.
BISECT_PRECISION = 1.02
#: Without --rates: steps double from here...
RAMP_START = 1000.0
#: ... up to --rate-max, or this (no Python client sends so much: it fails first).
RAMP_CEILING = 10_000_000.0


@dataclass
class Step:
    """One measured step: its rate, its figures, and the verdict."""

    number: int
    offered: float
    phase: str  # "ramp" or "bisect"
    summary: Summary
    failures: list[str] = field(default_factory=list)
    #: Why the client was the limit (only said of a failed step).
    client: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def client_limited(self) -> bool:
        return bool(self.failures and self.client)

    def verdict(self) -> str:
        if self.ok:
            return "ok"
        text = ", ".join(self.failures)
        if self.client_limited:
            return f"CLIENT LIMIT ({', '.join(self.client)}): {text}"
        return text

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "step": self.number,
            "phase": self.phase,
            "offered_msgs_per_s": self.offered,
            "achieved_msgs_per_s": round(s.throughput, 1),
            "messages": s.messages,
            "errors": s.errors,
            "refused": s.refused,
            "unanswered": s.unanswered,
            "duration_s": round(s.duration_s, 6),
            "rtt_ms": s.rtt_ms(),
            "send_late_ms": late_ms(s.late),
            "client_cpu_fraction": (
                round(s.cpu_fraction, 3) if s.cpu_fraction is not None else None
            ),
            "ok": self.ok,
            "failed": self.failures,
            "client_limited": self.client_limited,
            "client_limits": self.client if self.client_limited else [],
            "problems": s.problems,
        }


def judge(summary: Summary, offered: float, slo_ms: float) -> tuple[list[str], list[str]]:
    """Why a step failed (empty: it passed), and why the client was the limit."""
    failures = []
    p99 = summary.rtt_ms()["p99"]
    if p99 is None:
        failures.append("no replies")
    elif p99 > slo_ms:
        failures.append(f"p99 {p99:,.3f} ms > {slo_ms:g} ms")
    if summary.errors:
        failures.append(f"{summary.errors} errors")
    if summary.refused:
        failures.append(f"{summary.refused} refused")
    if summary.messages and summary.throughput < FAST_ENOUGH * offered:
        failures.append(f"achieved {summary.throughput / offered:.0%} of offered")
    client = summary.client_limits(slo_ms) if failures else []
    return failures, client


def ramp(options: argparse.Namespace) -> Iterator[float]:
    """The ramp's rates: ``--rates``, or doubling from 1000 msgs/s up to ``--rate-max``."""
    if options.rates:
        yield from options.rates
        return
    top = options.rate_max or RAMP_CEILING
    rate = min(RAMP_START, top)
    while rate < top:
        yield rate
        rate *= 2
    yield top


@dataclass
class SweepResult:
    """The steps in the order they ran, and the answer."""

    options: argparse.Namespace
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False

    @property
    def judged(self) -> list[Step]:
        """The steps that ran to their end (an interrupted one judges nothing)."""
        return [s for s in self.steps if not s.summary.interrupted]

    @property
    def best(self) -> Step | None:
        """The highest step that met the SLO."""
        good = [s for s in self.judged if s.ok]
        return max(good, key=lambda s: s.offered) if good else None

    @property
    def bound(self) -> Step | None:
        """The lowest failed step above the answer: what limited it."""
        best = self.best
        floor = best.offered if best is not None else 0.0
        bad = [s for s in self.judged if not s.ok and s.offered > floor]
        return min(bad, key=lambda s: s.offered) if bad else None

    @property
    def max_rate(self) -> float | None:
        best = self.best
        return best.offered if best is not None else None

    @property
    def limited_by(self) -> str:
        """``server``, ``client`` (the answer is only a lower bound) or ``not reached``."""
        bound = self.bound
        if bound is None:
            return "not reached"
        return "client" if bound.client_limited else "server"

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "sweep": {
                "slo_p99_ms": o.slo_p99,
                "connections": o.connections,
                "procs": o.procs,
                "size": o.size,
                "duration_s": o.duration,
                "warmup_s": o.warmup,
            },
            "steps": [step.to_json() for step in self.steps],
            "max_rate_msgs_per_s": self.max_rate,
            "limited_by": self.limited_by,
            "interrupted": self.interrupted,
        }

    def json_line(self) -> str:
        return json.dumps(self.to_json())

    def answer(self) -> str:
        o = self.options
        slo = f"p99 <= {o.slo_p99:g} ms"
        best, bound = self.best, self.bound
        if best is None:
            if bound is None:
                return "answer: none (no step was measured)"
            why = "; the client was the limit" if bound.client_limited else ""
            return (
                f"answer: none: the lowest rate tried, {bound.offered:,.0f} msgs/s, "
                f"failed ({', '.join(bound.failures)}){why}"
            )
        rate = f"{best.offered:,.0f} msgs/s"
        if bound is None:
            return (
                f"answer: at least {rate} with {slo}: every step met it (try a higher --rate-max)"
            )
        if bound.client_limited:
            return (
                f"answer: at least {rate} with {slo}: above it the client, not the server, "
                "was the limit (spread the load with --procs)"
            )
        return f"answer: {rate} is the highest rate with {slo} (above it, the server's limit)"

    def text(self) -> str:
        o = self.options
        procs = f"{o.procs} processes" if o.procs > 1 else "1 process"
        lines = [
            f"sweep       {o.connections} connections, {procs}, steps of {o.duration:g} s "
            f"after {o.warmup:g} s of warm-up, SLO p99 <= {o.slo_p99:g} ms",
            f"{'#':>3} {'offered/s':>11} {'achieved/s':>11} {'p50 ms':>9} {'p90 ms':>9} "
            f"{'p99 ms':>9} {'p99.9 ms':>9} {'errors':>7} {'late p99':>9} {'CPU':>5}  verdict",
        ]
        for step in sorted(self.steps, key=lambda s: (s.offered, s.number)):
            s = step.summary
            rtt = s.rtt_ms()
            late = late_ms(s.late) or {}
            cpu = f"{s.cpu_fraction:.0%}" if s.cpu_fraction is not None else "-"
            lines.append(
                f"{step.number:>3} {step.offered:>11,.0f} {s.throughput:>11,.0f} "
                + " ".join(_ms(rtt[k]) for k in ("p50", "p90", "p99", "p999"))
                + f" {s.errors + s.refused:>7} {_ms(late.get('p99'))} {cpu:>5}  {step.verdict()}"
            )
        lines.append(self.answer())
        if self.interrupted:
            lines.append("interrupted: the sweep did not finish")
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:>9,.3f}" if value is not None else f"{'-':>9}"


Measure = Callable[[float, str, int], Awaitable[Summary]]


async def sweep(
    options: argparse.Namespace,
    measure: Measure,
    interrupted: Callable[[], bool] = lambda: False,
    on_step: Callable[[Step], None] | None = None,
) -> SweepResult:
    """Ramp up until a step fails, then bisect; ``measure(rate, phase, number)`` runs a step."""
    result = SweepResult(options)

    async def step(rate: float, phase: str) -> Step:
        number = len(result.steps) + 1
        summary = await measure(rate, phase, number)
        failures, client = judge(summary, rate, options.slo_p99)
        done = Step(number, rate, phase, summary, failures, client)
        if summary.interrupted:
            result.interrupted = True
            if not done.failures:
                done.failures = ["interrupted"]
        result.steps.append(done)
        if on_step is not None:
            on_step(done)
        return done

    for rate in ramp(options):
        if interrupted() or not (await step(rate, "ramp")).ok:
            break
    for _ in range(options.bisect):
        best, bound = result.best, result.bound
        if interrupted() or result.interrupted or best is None or bound is None:
            break
        if bound.offered <= best.offered * BISECT_PRECISION:
            break
        middle = float(round((best.offered + bound.offered) / 2))
        if middle in (best.offered, bound.offered):
            break
        await step(middle, "bisect")
    result.interrupted = result.interrupted or interrupted()
    return result


async def run_sweep(
    reactor: Any, options: argparse.Namespace, interrupts: Interrupts
) -> SweepResult:
    """Measure the steps for real, one load run each (over ``--procs`` processes)."""
    hlog = open_hlog(options, mode="sweep", slo_p99_ms=options.slo_p99)
    if options.procs > 1:
        from chatlog.client.procs import run_procs as runner
    else:
        from chatlog.client.runner import run_load as runner
    times: dict[int, tuple[float, float]] = {}

    async def measure(rate: float, phase: str, number: int) -> Summary:
        step_options = argparse.Namespace(**vars(options))
        step_options.rate, step_options.messages, step_options.sweep = rate, None, False
        start = time.time()
        try:
            summary = await runner(
                reactor, step_options, interrupts=interrupts, hlog=hlog, label=f"[{rate:,.0f}/s] "
            )
        except ClientError as error:
            if number == 1:
                raise  # nothing measured yet: the server is not there at all
            # The server went away under the previous step: this step failed.
            summary = Summary(0, 0, 0.0, options.connections, problems=[str(error)])
        times[number] = (start, time.time())
        return summary

    def note(step: Step) -> None:
        if hlog is not None:
            start, end = times[step.number]
            hlog.note(
                step=step.number,
                offered=step.offered,
                phase=step.phase,
                start=start,
                end=end,
                achieved=round(step.summary.throughput, 1),
                ok=step.ok,
                client_limited=step.client_limited,
            )

    try:
        result = await sweep(options, measure, lambda: interrupts.requested, note)
        if hlog is not None:
            hlog.note(max_rate_msgs_per_s=result.max_rate, limited_by=result.limited_by)
    finally:
        if hlog is not None:
            hlog.close()
    return result
