"""Round-trip latency as chatlog counts it: one histogram shape, one summary.

The client records its round trips in an HdrHistogram made by
:func:`new_histogram`, and the report re-reads them from client logs into
histograms of the same shape; both summarise with :func:`rtt_ms`.  Sharing
the settings and the summary is what makes ``python -m chatlog.client
--json`` and ``python -m chatlog.report`` agree to the histogram's precision.

Values are microseconds, from 1 µs to 60 s, at 3 significant digits (each
value is kept to within 0.1 %); longer or shorter round trips are clamped to
the range rather than dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

#: The percentiles of a summary: key (as in ``--json``'s ``rtt_ms``) -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
#: The keys of :func:`rtt_ms`, in order.
RTT_KEYS = ("min", "mean", *PERCENTILES, "max")


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds with chatlog's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_counts(histogram: HdrHistogram, counts: Mapping[int, int]) -> None:
    """Record each value (µs) with its count: one call per distinct value.

    ``HdrHistogram.record_value`` costs about a microsecond in Python, so
    callers count round trips first and record them here in batches.
    """
    record = histogram.record_value
    for micros, count in counts.items():
        # Out-of-range values would be dropped silently: clamp them instead.
        record(min(max(micros, LOWEST_US), HIGHEST_US), count)


def rtt_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """min, mean, p50, p90, p99, p999 and max in ms (to the µs); all None when empty."""
    if not histogram.get_total_count():
        return dict.fromkeys(RTT_KEYS, None)
    # One pass over the counts for all the percentiles; the same values as
    # get_value_at_percentile, which walks them once per percentile.
    at = histogram.get_percentile_to_value_dict(list(PERCENTILES.values()))
    out: dict[str, float | None] = {
        "min": _ms(histogram.get_min_value()),
        "mean": _ms(histogram.get_mean_value()),
    }
    for key, percentile in PERCENTILES.items():
        out[key] = _ms(at[percentile])
    out["max"] = _ms(histogram.get_max_value())
    return out


def _ms(micros: float) -> float:
    return round(micros / 1000, 3)
