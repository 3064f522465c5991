"""Percentiles of measured round trips, computed here rather than by chatlog's own client.

The e2e tests and the soak runs time round trips themselves (``LineClient.round_trip``)
and summarise them with this plain nearest-rank computation, so the figures do
not depend on the code they measure.
"""

from __future__ import annotations

import statistics


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """Count, min, p50, p90, p99, max and mean of ``samples_ms`` (nearest rank)."""
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "min": ordered[0],
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }
