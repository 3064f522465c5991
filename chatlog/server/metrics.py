"""Prometheus metrics for ``--metrics DESC``: counters that agree with the log.

The counters are not incremented on the hot path: a collector reads the
factory's and the log writer's own totals when Prometheus scrapes, so
``chatlog_messages_total`` is exactly the number of ``Message Received``
records staged, at no cost per message.  Only the log batch histogram is
observed as it happens, once per batch write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chatlog.log import LogWriter
from chatlog.server.factory import ChatFactory

#: Limit events, by the reason label they carry.
LIMIT_REASONS = ("line_too_long", "timeout", "rejected_busy", "rejected_per_ip")


class ChatlogCollector(Collector):
    """Reads the factory's and the writer's totals at scrape time."""

    def __init__(self, factory: ChatFactory, writer: LogWriter) -> None:
        self.factory = factory
        self.writer = writer

    def collect(self) -> Iterator[Any]:
        factory = self.factory
        yield CounterMetricFamily(
            "chatlog_messages", "Messages received and logged.", value=factory.messages_total
        )
        yield CounterMetricFamily(
            "chatlog_connections", "Connections admitted.", value=factory.connections_total
        )
        yield GaugeMetricFamily(
            "chatlog_connections_active",
            "Connections open now.",
            value=sum(factory.per_ip.values()),
        )
        limits = CounterMetricFamily(
            "chatlog_limit_events",
            "Connections closed or refused by a limit, by reason.",
            labels=["reason"],
        )
        counts = dict(factory.limits_total)
        for reason in LIMIT_REASONS:
            limits.add_metric([reason], counts.get(reason, 0))
        yield limits
        yield CounterMetricFamily(
            "chatlog_log_write_errors",
            "Log batch writes that failed (their messages were answered ERROR).",
            value=self.writer.write_errors,
        )


def make_registry(factory: ChatFactory, writer: LogWriter) -> CollectorRegistry:
    """A registry with chatlog's metrics; hooks the batch histogram into ``writer``."""
    registry = CollectorRegistry()
    registry.register(ChatlogCollector(factory, writer))
    batch_seconds = Histogram(
        "chatlog_log_batch_write_seconds",
        "Time to write (and fdatasync, with --fsync) one batch of log records.",
        buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
        registry=registry,
    )
    writer.on_batch = lambda size, seconds: batch_seconds.observe(seconds)
    return registry


def metrics_site(registry: CollectorRegistry) -> Any:
    """A twisted.web Site serving ``/metrics`` with prometheus_client's resource."""
    # Imported here: prometheus_client.twisted imports the reactor.
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    site = Site(root)
    site.noisy = False
    return site
