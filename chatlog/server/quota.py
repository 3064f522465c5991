"""Per-client quotas (``--rate-limit``, ``--byte-limit``, ``--rate-exempt``): a client
over its share is read more slowly, never cut off.

Every client address has one token bucket for messages and one for bytes,
shared by all its connections.  A read takes what it holds from both, even
when that is more than is left: the lines already read are handled (logged
and answered) as usual, and the bucket goes into debt.  An address in debt
is not read (``transport.pauseProducing`` on each of its connections) until
its debt is paid back, by one ``callLater`` per throttled address, never one
per message.  Meanwhile its bytes wait in the kernel's buffers and then its
sends block: the client feels TCP backpressure, and nothing it sent is lost.
Because a debt is paid by a longer pause, an address gets exactly its rate
over time whatever the size of its reads.

The buckets are kept as GCRA's "theoretical arrival time" (one float per
bucket: when the bucket would be full again), which is the token bucket's
arithmetic in two operations a read::

    tokens(now) = (now + burst / rate - tat) * rate

so a read costs a ``max``, a multiply-add and a comparison per bucket in use
(``take`` is the method for the limits set, given the read's bytes and lines,
which the protocol has counted anyway: ~120 ns a read with both limits).

A throttle *episode* is logged twice: a ``throttled`` record (state
``paused``) when an address first goes over, and one (state ``released``)
once it has been read again for :attr:`Quotas.quiet` seconds without going
over (or when the server stops), saying how long it lasted, how long its connections were not read and
how many messages it sent after the first pause (each waited for the
throttle).  Nothing is logged per message or per pause.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from chatlog.server.protocol import ChatProtocol

#: The reasons a throttle has, as logs and metrics name them.
REASONS = ("rate", "bytes")
#: Seconds an address is read again without going over before its episode ends.
QUIET = 1.0
#: Seconds of its quota a throttled address is read at once (see ``paced_read``).
PACE = 0.01
#: The smallest read of a throttled address, in bytes.
MIN_PACED_READ = 128


class Limit(NamedTuple):
    """``N[/BURST]``: ``rate`` per second, at most ``burst`` at once."""

    rate: int
    burst: int

    def __str__(self) -> str:
        return f"{self.rate}/{self.burst}"


def parse_limit(text: str) -> Limit | None:
    """``"1000"`` -> ``Limit(1000, 1000)``; ``"1000/50"`` -> ``Limit(1000, 50)``; ``"0"`` -> None.

    A ``ValueError`` says what was wanted (a ``twisted.python.usage`` coercer).
    """
    rate_text, slash, burst_text = str(text).strip().partition("/")
    try:
        rate = int(rate_text)
        burst = int(burst_text) if slash else rate
    except ValueError:
        rate = burst = -1
    if rate < 0 or burst < 1 and rate:
        raise ValueError(f"{text!r} is not N[/BURST]: whole numbers, N >= 0 (0: none), BURST >= 1")
    return Limit(rate, burst) if rate else None


parse_limit.coerceDoc = "N[/BURST], per second; 0 for none."  # type: ignore[attr-defined]


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.0.0.0/8``, ``::1`` (one address), checked; a ``ValueError`` otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


class _Bucket:
    """One GCRA bucket: ``cost`` seconds per unit, ``tau`` seconds of burst; no limit: 0, inf."""

    __slots__ = ("cost", "tau")

    def __init__(self, limit: Limit | None) -> None:
        self.cost = 1.0 / limit.rate if limit else 0.0
        self.tau = limit.burst / limit.rate if limit else math.inf


class AddressQuota:
    """The buckets, connections and throttle episode of one client address."""

    __slots__ = (
        "take",
        "_take_free",
        "quotas",
        "ip",
        "conns",
        "msg_tat",
        "byte_tat",
        "msg_cost",
        "byte_cost",
        "msg_tau",
        "byte_tau",
        "paused",
        "paused_at",
        "pause_reason",
        "timer",
        "started",
        "reason",
        "held",
        "lines_seen",
        "bytes_seen",
        "paused_total",
        "resumed_at",
    )

    def __init__(self, quotas: Quotas, ip: str, now: float) -> None:
        self.quotas = quotas
        self.ip = ip
        self.conns: set[ChatProtocol] = set()
        # When each bucket is full again (GCRA's theoretical arrival time).
        self.msg_tat = self.byte_tat = now
        self.msg_cost, self.msg_tau = quotas.messages.cost, quotas.messages.tau
        self.byte_cost, self.byte_tau = quotas.bytes.cost, quotas.bytes.tau
        #: ``take(size, lines, now)``: a read of ``size`` bytes holding ``lines``
        #: lines arrived at ``now``; pause if in debt.
        self._take_free = {
            (True, False): self._take_messages,
            (False, True): self._take_bytes,
        }.get(
            (quotas.limits["rate"] is not None, quotas.limits["bytes"] is not None), self._take_both
        )
        self.take = self._take_free
        self.paused = False  # its connections are not read now
        self.paused_at = 0.0
        self.pause_reason = "rate"
        #: The one timer of a throttled address: the end of a pause, or of the quiet after it.
        self.timer: IDelayedCall | None = None
        self.started: float | None = None  # when the episode began; None: not throttled
        self.reason = "rate"
        self.held = 0
        #: Lines and bytes read in the episode (from the read that began it): their mean length.
        self.lines_seen = self.bytes_seen = 0
        self.paused_total = 0.0
        self.resumed_at = 0.0

    # One per set of limits, the hot path of a server with quotas: a read's
    # lines are its ``\n`` bytes.

    def _take_messages(self, size: int, lines: int, now: float) -> None:
        tat = self.msg_tat
        if tat < now:
            tat = now
        tat += lines * self.msg_cost
        self.msg_tat = tat
        if tat - self.msg_tau > now and not self.paused:
            self._pause(now, size, lines)

    def _take_bytes(self, size: int, lines: int, now: float) -> None:
        tat = self.byte_tat
        if tat < now:
            tat = now
        tat += size * self.byte_cost
        self.byte_tat = tat
        if tat - self.byte_tau > now and not self.paused:
            self._pause(now, size, lines)

    def _take_both(self, size: int, lines: int, now: float) -> None:
        tat = self.msg_tat
        if tat < now:
            tat = now
        tat += lines * self.msg_cost
        self.msg_tat = tat
        btat = self.byte_tat
        if btat < now:
            btat = now
        btat += size * self.byte_cost
        self.byte_tat = btat
        if (tat - self.msg_tau > now or btat - self.byte_tau > now) and not self.paused:
            self._pause(now, size, lines)

    def _take_in_episode(self, size: int, lines: int, now: float) -> None:
        """During a throttle episode: also count the messages held back."""
        self.held += lines
        self.lines_seen += lines
        self.bytes_seen += size
        self._take_free(size, lines, now)

    def paced_read(self) -> int:
        """Bytes to read at once from a throttled connection: about :data:`PACE` s of the quota.

        A throttled client's lines come in lumps, one read each, and a lump is
        work the server does at once, in the middle of everyone else's: reads
        of 4 KiB held a 1,000 msgs/s flooder of 16-byte lines to lumps of 241
        lines every quarter second.  Ten milliseconds' worth keeps its rate as
        smooth as its limit and the others' latency their own.  Lines are
        counted in bytes by the episode's mean line length.
        """
        paced = math.inf
        if self.byte_cost:
            paced = PACE / self.byte_cost
        if self.msg_cost:
            line = self.bytes_seen / self.lines_seen if self.lines_seen else MIN_PACED_READ
            paced = min(paced, PACE / self.msg_cost * line)
        return int(max(paced, MIN_PACED_READ))

    def debt(self, now: float) -> float:
        """Seconds until both buckets are out of debt (0 when they are)."""
        return max(self.msg_tat - self.msg_tau - now, self.byte_tat - self.byte_tau - now, 0.0)

    def full(self, now: float) -> bool:
        """Whether both buckets are full (the address has its whole burst)."""
        return self.msg_tat <= now and self.byte_tat <= now

    def _pause(self, now: float, size: int, lines: int) -> None:
        over_messages = self.msg_tat - self.msg_tau - now
        self.pause_reason = (
            "rate" if over_messages >= self.byte_tat - self.byte_tau - now else "bytes"
        )
        self.paused, self.paused_at = True, now
        for proto in self.conns:
            proto.throttle(True)
        quotas = self.quotas
        if self.started is None:
            self.started, self.reason = now, self.pause_reason
            self.held, self.paused_total = 0, 0.0
            self.lines_seen, self.bytes_seen = lines, size
            self.take = self._take_in_episode
            quotas.events[self.reason] += 1
            limit = quotas.limits[self.reason]
            assert limit is not None  # a bucket without a limit is never in debt
            quotas.log(
                {
                    "event": "throttled",
                    "time": now,
                    "state": "paused",
                    "address": self.ip,
                    "reason": self.reason,
                    "limit": limit.rate,
                    "burst": limit.burst,
                }
            )
        self._schedule(self.debt(now))

    def _schedule(self, delay: float) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.quotas.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        """The end of a pause (read again, or wait for a debt a late read added), or of the quiet."""
        self.timer = None
        now = self.quotas.clock.seconds()
        if not self.paused:
            self._release(now)
            return
        debt = self.debt(now)
        if debt > 0 and self.conns:
            self._schedule(debt)
            return
        self._resumed(now)
        for proto in list(self.conns):
            proto.throttle(False)
        if self.conns:
            self._schedule(self.quotas.quiet)
        else:
            self._release(now)

    def _resumed(self, now: float) -> None:
        self.paused = False
        self.paused_total += now - self.paused_at
        self.quotas.seconds[self.pause_reason] += now - self.paused_at
        self.resumed_at = now

    def _release(self, now: float) -> None:
        assert self.started is not None
        self.quotas.log(
            {
                "event": "throttled",
                "time": now,
                "state": "released",
                "address": self.ip,
                "reason": self.reason,
                "seconds": round(self.resumed_at - self.started, 6),
                "paused": round(self.paused_total, 6),
                "held": self.held,
            }
        )
        self.started = None
        self.take = self._take_free
        if not self.conns and self.full(now):
            self.quotas.drop(self)

    def end(self, now: float) -> None:
        """The server stops: no timer is left behind, and an episode running ends now."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.paused:
            self._resumed(now)
        if self.started is not None:
            self._release(now)


class Quotas:
    """The quotas of every client address of one server (one worker)."""

    def __init__(
        self,
        log: Callable[[dict[str, Any]], object],
        clock: IReactorTime,
        rate: Limit | None = None,
        byte_rate: Limit | None = None,
        exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        quiet: float = QUIET,
    ) -> None:
        self.log = log
        self.clock = clock
        self.limits = {"rate": rate, "bytes": byte_rate}
        self.messages = _Bucket(rate)
        self.bytes = _Bucket(byte_rate)
        self.exempt = list(exempt)
        self.quiet = quiet
        self.addresses: dict[str, AddressQuota] = {}
        #: Counters for metrics: throttle episodes begun, seconds not read, by reason.
        self.events = dict.fromkeys(REASONS, 0)
        self.seconds = dict.fromkeys(REASONS, 0.0)
        self._pruned_at = 0.0

    def is_exempt(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:  # a UNIX socket's peer
            return False
        return any(address in network for network in self.exempt)

    def join(self, proto: ChatProtocol) -> AddressQuota | None:
        """``proto`` is admitted: give it its address's quota (none if exempt); paused with it."""
        if self.is_exempt(proto.ip):
            return None
        now = self.clock.seconds()
        if now - self._pruned_at >= 1.0:
            self._prune(now)
        quota = self.addresses.get(proto.ip)
        if quota is None:
            quota = self.addresses[proto.ip] = AddressQuota(self, proto.ip, now)
        quota.conns.add(proto)
        proto.quota = quota
        if quota.paused:
            proto.throttle(True)
        return quota

    def leave(self, proto: ChatProtocol, quota: AddressQuota) -> None:
        """``proto``'s connection is over.  A debt outlives it: reconnecting does not clear it."""
        quota.conns.discard(proto)
        if not quota.conns and quota.started is None and quota.full(self.clock.seconds()):
            self.drop(quota)

    def drop(self, quota: AddressQuota) -> None:
        if self.addresses.get(quota.ip) is quota:
            del self.addresses[quota.ip]

    def _prune(self, now: float) -> None:
        """Forget addresses gone and not throttled, whose buckets have filled up since."""
        self._pruned_at = now
        for quota in [q for q in self.addresses.values() if not q.conns and q.started is None]:
            if quota.full(now):
                self.drop(quota)

    def throttled(self) -> Iterable[AddressQuota]:
        """Addresses in a throttle episode now."""
        return (q for q in self.addresses.values() if q.started is not None)

    def seconds_now(self) -> dict[str, float]:
        """Seconds not read by reason, with the pauses still running counted so far."""
        now = self.clock.seconds()
        seconds = dict(self.seconds)
        for quota in self.addresses.values():
            if quota.paused:
                seconds[quota.pause_reason] += now - quota.paused_at
        return seconds

    def stop(self) -> None:
        """The server stops listening: end every episode (its release record says how long)."""
        now = self.clock.seconds()
        for quota in list(self.addresses.values()):
            quota.end(now)
