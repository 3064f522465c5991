"""Prometheus metrics for ``--metrics DESC``: counters that agree with the log.

The counters are not incremented on the hot path: a collector reads the
factory's and the log writer's own totals when Prometheus scrapes, at no cost
per message.  Only the log batch histogram is observed as it happens, once
per batch write.

Which message counter is which:

- ``chatlog_messages_total``: messages received *and logged*, their record
  written (and synced, with ``--fsync``) and their reply sent: exactly the
  ``Message Received`` records this run wrote;
- ``chatlog_messages_refused_total``: messages answered ``ERROR log
  unavailable`` because their batch could not be written;
- ``chatlog_messages_received_total``: every message read, the two above
  plus those whose batch is being written at the moment of the scrape.

Per-client quotas (``--rate-limit``, ``--byte-limit``) are counted by reason
(``rate``, ``bytes``): ``chatlog_throttle_events_total`` throttle episodes
begun (the ``Throttled ... reading paused`` records),
``chatlog_throttled_seconds_total`` seconds an address's connections were
not read (summed over addresses, pauses still running included), and
``chatlog_throttled_addresses`` the addresses in an episode now.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chatlog.log import LogWriter
from chatlog.server.factory import ChatFactory
from chatlog.server.quota import REASONS

#: Limit events, by the reason label they carry.
LIMIT_REASONS = ("line_too_long", "timeout", "rejected_busy", "rejected_per_ip", "bad_header")


class ChatlogCollector(Collector):
    """Reads the factory's and the writer's totals at scrape time."""

    def __init__(self, factory: ChatFactory, writer: LogWriter) -> None:
        self.factory = factory
        self.writer = writer

    def collect(self) -> Iterator[Any]:
        factory, writer = self.factory, self.writer
        yield CounterMetricFamily(
            "chatlog_messages",
            "Messages received and logged (their record written, their reply sent).",
            value=writer.messages_logged,
        )
        yield CounterMetricFamily(
            "chatlog_messages_refused",
            "Messages answered ERROR log unavailable: their record could not be written.",
            value=writer.messages_refused,
        )
        yield CounterMetricFamily(
            "chatlog_messages_received",
            "Messages received: logged, refused, or being written now.",
            value=factory.messages_total,
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
        yield from self._quotas()
        yield CounterMetricFamily(
            "chatlog_log_write_errors",
            "Log batch writes that failed (their messages were answered ERROR).",
            value=writer.write_errors,
        )
        yield CounterMetricFamily(
            "chatlog_log_records_lost",
            "Records other than messages (connections, limits...) in batches that failed.",
            value=writer.records_lost,
        )
        yield CounterMetricFamily(
            "chatlog_log_refused_left",
            "Refused messages that may remain in the log: the failed batch could not be cut back.",
            value=writer.refused_left,
        )
        yield CounterMetricFamily(
            "chatlog_log_reopen_errors",
            "Attempts to reopen the log (SIGHUP) that failed; each is retried.",
            value=writer.reopen_errors,
        )
        yield GaugeMetricFamily(
            "chatlog_log_reopen_pending",
            "1 while a failed reopen is retried and records go to the file open before.",
            value=int(writer.reopen_pending),
        )

    def _quotas(self) -> Iterator[Any]:
        quotas = self.factory.quotas
        events = CounterMetricFamily(
            "chatlog_throttle_events",
            "Throttle episodes begun (an address over --rate-limit or --byte-limit), by reason.",
            labels=["reason"],
        )
        seconds = CounterMetricFamily(
            "chatlog_throttled_seconds",
            "Seconds client addresses were not read for being over their quota, by reason.",
            labels=["reason"],
        )
        now_seconds = quotas.seconds_now() if quotas is not None else {}
        for reason in REASONS:
            events.add_metric([reason], quotas.events[reason] if quotas is not None else 0)
            seconds.add_metric([reason], now_seconds.get(reason, 0.0))
        yield events
        yield seconds
        yield GaugeMetricFamily(
            "chatlog_throttled_addresses",
            "Client addresses in a throttle episode now.",
            value=0 if quotas is None else sum(1 for _ in quotas.throttled()),
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
