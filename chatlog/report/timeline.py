"""Round-trip percentiles over time, in memory bounded whatever the run's length.

A full HdrHistogram per second would cost a quarter of a megabyte each, so
each time slot keeps sparse log-scale buckets (1 % wide) instead: coarser
than the run's histogram (:mod:`chatlog.latency`), fine enough to draw.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from chatlog.latency import PERCENTILES

_BUCKETS_PER_E = 1 / math.log(1.01)


def _bucket(micros: float) -> int:
    return 0 if micros < 1 else int(math.log(micros) * _BUCKETS_PER_E) + 1


def _bucket_top_ms(bucket: int) -> float:
    """The upper edge of a bucket, in ms (like HdrHistogram's highest equivalent value)."""
    return 0.001 if bucket == 0 else math.exp(bucket / _BUCKETS_PER_E) / 1000


@dataclass
class _Slot:
    counts: Counter[int] = field(default_factory=Counter)
    count: int = 0
    maximum: float = 0.0

    def merge(self, other: _Slot) -> None:
        self.counts.update(other.counts)
        self.count += other.count
        self.maximum = max(self.maximum, other.maximum)

    def percentiles(self) -> dict[str, float]:
        targets = [(name, math.ceil(self.count * p / 100) or 1) for name, p in PERCENTILES.items()]
        out: dict[str, float] = {}
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            while targets and seen >= targets[0][1]:
                out[targets.pop(0)[0]] = min(_bucket_top_ms(bucket), self.maximum)
        return out


class RttTimeline:
    """Round-trip percentiles per time slot, in bounded memory.

    Slots start one second wide; when a run outlasts ``max_slots`` of them,
    neighbours are merged and the width doubles, so a run of any length has
    at most ``max_slots`` slots.
    """

    def __init__(self, max_slots: int = 600) -> None:
        self.max_slots = max_slots
        self.width = 1
        self.origin: int | None = None
        self.slots: dict[int, _Slot] = {}

    def add(self, when: float, rtt_ms: float) -> None:
        if self.origin is None:
            self.origin = int(when)
        index = int((when - self.origin) // self.width)
        while index >= self.max_slots:
            self._coarsen()
            index = int((when - self.origin) // self.width)
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = _Slot()
        slot.counts[_bucket(rtt_ms * 1000)] += 1
        slot.count += 1
        if rtt_ms > slot.maximum:
            slot.maximum = rtt_ms

    def _coarsen(self) -> None:
        merged: dict[int, _Slot] = {}
        for index, slot in self.slots.items():
            target = merged.get(index // 2)
            if target is None:
                merged[index // 2] = slot
            else:
                target.merge(slot)
        self.slots = merged
        self.width *= 2

    def rows(self) -> list[dict[str, float]]:
        """One row per slot: start (epoch s), count, p50..p999 and max in ms."""
        assert self.origin is not None or not self.slots
        rows = []
        for index in sorted(self.slots):
            slot = self.slots[index]
            row: dict[str, float] = {"start": (self.origin or 0) + index * self.width}
            row["count"] = slot.count
            row.update(slot.percentiles())
            row["max"] = slot.maximum
            rows.append(row)
        return rows
