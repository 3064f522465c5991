"""What chatlog aims for, and judging a bench run against it.

Each target is a ratio between two rows of the same run (chatlog and a
reference server under the same load), so it holds on any machine, unlike a
number of messages per second.  :data:`TARGETS` is the one list: the bench
prints it (``--targets``), README.rst quotes that output, and ``--check``
makes the exit status say whether the run met every target it could judge.

A target is *not judged* when a row it needs is missing (that server or load
was not run, or failed) or is flagged: a load generator at >= 90% of its core
``(!)`` measures itself as much as the server, and a run that other
processes disturbed ``(c)`` measures the machine.  Either could turn a short
into a met, or the reverse, so neither decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

#: The columns of the bench's table that a target can compare.
MEASURES = {"msgs_per_s": "msgs/s", "cpu_us_per_msg": "CPU µs/msg"}


@dataclass(frozen=True)
class Target:
    """``server``'s ``measure`` divided by ``peer``'s, at the same load, ``op`` ``goal``."""

    mode: str  # "closed" or "pipelined", as in the bench's rows
    connections: int
    pipeline: int
    server: str
    peer: str
    measure: str  # a key of MEASURES
    op: str  # ">=" (at least) or "<=" (at most)
    goal: float

    @property
    def load(self) -> str:
        """The load as the bench's table names it."""
        if self.pipeline > 1:
            return f"{self.pipeline} in flight x{self.connections}"
        return f"closed x{self.connections}"

    @property
    def name(self) -> str:
        """``closed x100: chatlog msgs/s >= 1.00 x uvloop``: in the table's words."""
        return (
            f"{self.load}: {self.server} {MEASURES[self.measure]} "
            f"{self.op} {self.goal:.2f} x {self.peer}"
        )

    def met_by(self, value: float) -> bool:
        return value >= self.goal if self.op == ">=" else value <= self.goal


TARGETS = [
    Target("closed", 100, 1, "chatlog", "uvloop", "msgs_per_s", ">=", 1.0),
    Target("closed", 100, 1, "chatlog", "twisted", "msgs_per_s", ">=", 0.95),
    Target("closed", 100, 1, "chatlog", "threaded", "msgs_per_s", ">=", 4.0),
    Target("pipelined", 10, 16, "chatlog", "twisted", "msgs_per_s", ">=", 0.8),
    Target("closed", 100, 1, "chatlog", "c-epoll", "cpu_us_per_msg", "<=", 2.0),
    Target("closed", 100, 1, "chatlog-fsync", "chatlog", "msgs_per_s", ">=", 0.5),
]


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None  # the measured ratio, when both rows were there
    met: bool | None  # None: not judged (``why`` says why)
    why: str = ""


def _row(rows: Sequence[Row], server: str, target: Target) -> Row | None:
    for row in rows:
        if (
            row["server"] == server
            and row["mode"] == target.mode
            and row["connections"] == target.connections
            and row["pipeline"] == target.pipeline
            and row.get("rate", 0) == 0
        ):
            return row
    return None


def judge_one(rows: Sequence[Row], target: Target) -> Verdict:
    """The verdict of one target over a run's rows."""
    pair = []
    for server in (target.server, target.peer):
        row = _row(rows, server, target)
        if row is None or not row.get(target.measure):
            return Verdict(target, None, None, f"not measured: no {server} {target.load} figure")
        pair.append(row)
    mine, theirs = pair
    value = float(mine[target.measure]) / float(theirs[target.measure])
    for row in pair:
        where = f"{row['server']} {target.load}"
        if row.get("loadgen_saturated"):
            return Verdict(
                target, value, None, f"not judged: {where} measured the load generator (!)"
            )
        if row.get("contended"):
            return Verdict(target, value, None, f"not judged: {where} was contended (c)")
    return Verdict(target, value, target.met_by(value))


def judge(rows: Sequence[Row], targets: Sequence[Target] = TARGETS) -> list[Verdict]:
    """Every target's verdict, in the list's order."""
    return [judge_one(rows, target) for target in targets]


def verdict_word(verdict: Verdict) -> str:
    if verdict.met is None:
        return verdict.why
    return "met" if verdict.met else "SHORT"


def verdicts_text(verdicts: Sequence[Verdict]) -> str:
    """One line per target: its name, the measured ratio, met / SHORT / why not judged."""
    width = max((len(v.target.name) for v in verdicts), default=0)
    lines = []
    for verdict in verdicts:
        value = "-" if verdict.value is None else f"{verdict.value:.3f}"
        lines.append(f"  {verdict.target.name:{width}}  {value:>6}  {verdict_word(verdict)}")
    return "\n".join(lines)


def short(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.met is False]


def judged(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.met is not None]


def check_line(verdicts: Sequence[Verdict]) -> str:
    """What ``--check`` says: every judged target met, or which fell short and by what."""
    missed = short(verdicts)
    count = len(judged(verdicts))
    if missed:
        names = "; ".join(f"{v.target.name} (measured {v.value:.3f})" for v in missed)
        return f"{len(missed)} of {count} judged targets SHORT: {names}"
    if count == 0:
        return f"no target could be judged by this run (0 of {len(verdicts)})"
    return f"all {count} judged targets met ({len(verdicts) - count} not judged)"


def listing() -> str:
    """The list as README.rst shows it (``python -m chatlog.bench --targets``)."""
    return "\n".join(target.name for target in TARGETS)
