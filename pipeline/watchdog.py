"""Honest health: lag from committed offsets, a broker probe that never blocks, stall recovery.

`Watchdog.kick` starts a background read of the broker's end offsets for the worker's input
partitions (bounded by the port's timeout; at most one at a time), and `Watchdog.assess`
judges only from what is cached, so the health timer answers at once even while the broker
is down. Lag is end offset minus **committed** offset (`pipeline.offsets.OffsetLedger`):
what a restart would really process again, not what the fetcher has buffered.

A partition is *stalled* when it has uncommitted messages and its committed offset has not
moved for ``stall_after`` seconds while the broker answers (during an outage the worker is
*degraded*, not stalled). Well before that, a partition whose commit has not moved for
``rewind_after`` seconds is sought back to its next unprocessed offset, once per
``rewind_after`` (Faust can drop fetched messages around a rebalance: `to_rewind`); one
stalled for ``exit_after`` seconds makes `Watchdog.exit_reason` say so and the worker exits,
so that its orchestrator restarts it.

A broker outage alone never makes the worker exit (a restart would not bring the broker back),
unless the worker's own Kafka client is what is broken: after ``exit_after`` seconds without
an answer, `Watchdog.check_client` asks the broker with a new client (``fresh_probe``) once per
``stall_after``; if the broker answers it, the old client is wedged (a library bug ended one of
its background tasks: aio-libs/aiokafka#1038 did) and the worker exits to start with new ones.

>>> import asyncio
>>> from pipeline.offsets import FakePort, OffsetLedger
>>> now = [0.0]
>>> ledger = OffsetLedger(FakePort(committed={("raw", 0): 3}), clock=lambda: now[0])
>>> _ = asyncio.run(ledger.start(("raw", 0)))
>>> dog = Watchdog(ledger, stall_after=30, exit_after=120, clock=lambda: now[0])
>>> dog.record_probe({("raw", 0): 10})
>>> dog.assess().broker, dog.assess().lag, dog.assess().stalled
('ok', {'raw:0': 7}, [])
>>> now[0] = 31.0; dog.record_probe({("raw", 0): 10}); dog.assess().stalled
['raw:0']
>>> dog.record_failure("KafkaConnectionError()"); dog.assess().broker, dog.assess().stalled
('unreachable', [])
>>> now[0] = 200.0; dog.exit_reason(dog.assess()) is None  # down for long: still no exit
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.offsets import TP, OffsetLedger

__all__ = ["Assessment", "Watchdog"]

log = logging.getLogger("klaxon.watchdog")


@dataclass(frozen=True)
class Assessment:
    """What the watchdog knows now: broker state, committed lag, stalled partitions."""

    broker: str  # "ok", "unreachable" or "unknown" (no probe answered yet)
    lag: dict[str, int] = field(default_factory=dict)
    stalled: list[str] = field(default_factory=list)
    stalled_for: float = 0.0
    broker_error: str | None = None


class Watchdog:
    """Probes end offsets in the background and judges lag and stalls from cached state."""

    def __init__(
        self,
        ledger: OffsetLedger,
        *,
        stall_after: float = 60.0,
        exit_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        highwater: Callable[[TP], int | None] | None = None,
        fresh_probe: Callable[[], Awaitable[object]] | None = None,
        rewind_after: float | None = None,
    ) -> None:
        self.ledger = ledger
        #: Seconds without the commit moving before a partition is read again from its next
        #: offset (default ``stall_after``); shorter than ``stall_after``: a seek is cheap.
        self.rewind_after = stall_after if rewind_after is None else rewind_after
        self.fresh_probe = fresh_probe
        self.highwater = highwater
        self.stall_after = stall_after
        self.exit_after = exit_after
        self.clock = clock
        self.ends: dict[TP, int] = {}
        self.broker = "unknown"
        self.broker_error: str | None = None
        self.down_since: float | None = None
        self.rewound_at: dict[TP, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._fresh_task: asyncio.Task[None] | None = None
        self._fresh_at = -1e18
        #: Seconds the broker had been silent to this worker's client when a new client
        #: reached it (None: not seen): the client is wedged.
        self.client_wedged_after: float | None = None

    # -- the probe ---------------------------------------------------------------------------

    def kick(
        self, tps: Iterable[TP], read: Callable[[list[TP]], Awaitable[Mapping[TP, int]]]
    ) -> None:
        """Start reading the end offsets of ``tps`` unless a read is still under way."""
        tps = sorted(tps)
        if not tps or (self._task is not None and not self._task.done()):
            return

        async def probe() -> None:
            try:
                for tp in tps:  # a partition Faust never delivers from is still watched
                    if tp not in self.ledger.next:
                        await self.ledger.start(tp)
                ends = await read(tps)
            except Exception as exc:  # timeout, connection refused, no coordinator...
                self.record_failure(repr(exc))
            else:
                self.record_probe(ends)

        self._task = asyncio.ensure_future(probe())

    def check_client(self) -> None:
        """Start a `fresh_probe` when the broker has not answered for ``exit_after`` seconds
        (at most once per ``stall_after``, never two at once): its answer proves this
        worker's client wedged."""
        now = self.clock()
        if (
            self.fresh_probe is None
            or self.broker != "unreachable"
            or self.down_since is None
            or now - self.down_since < self.exit_after
            or now - self._fresh_at < self.stall_after
            or (self._fresh_task is not None and not self._fresh_task.done())
        ):
            return
        self._fresh_at = now
        probe, silent_for = self.fresh_probe, now - self.down_since

        async def ask() -> None:
            try:
                await probe()
            except Exception as exc:  # the broker is down for a new client too: an outage
                log.info("a new Kafka client cannot reach the broker either: %r", exc)
            else:
                if self.broker == "unreachable":
                    self.client_wedged_after = silent_for

        self._fresh_task = asyncio.ensure_future(ask())

    def record_probe(self, ends: Mapping[TP, int]) -> None:
        """The broker answered with these end offsets."""
        now = self.clock()
        if self.broker == "unreachable" and self.down_since is not None:
            log.warning("broker reachable again after %.0fs", now - self.down_since)
            for tp in self.ledger.moved_at:  # an outage is no stall: restart the clocks
                self.ledger.moved_at[tp] = now
        self.broker, self.broker_error, self.down_since = "ok", None, None
        self.client_wedged_after = None
        self.ends = {tp: int(end) for tp, end in ends.items()}

    def hold(self, since: float) -> None:
        """Restart the partitions' clocks at ``since`` (never back): the streams wait on
        purpose while Faust reads the state back, so a recovery that still reads (``since``:
        when it last read something) is no stall and calls for no seek; one that stops
        reading lets the clocks run from then, toward a stall and the exit.

        >>> from pipeline.offsets import FakePort, OffsetLedger
        >>> ledger = OffsetLedger(FakePort())
        >>> ledger.moved_at[("raw", 0)] = 5.0
        >>> dog = Watchdog(ledger, stall_after=30, exit_after=120)
        >>> dog.hold(9.0); dog.hold(7.0); ledger.moved_at
        {('raw', 0): 9.0}
        """
        moved = self.ledger.moved_at
        for tp, at in moved.items():
            if at < since:
                moved[tp] = since

    def record_failure(self, error: str) -> None:
        """The broker did not answer (logged once per outage)."""
        if self.broker != "unreachable":
            self.down_since = self.clock()
            log.warning("broker unreachable: %s (logged once until it is back)", error)
        self.broker, self.broker_error = "unreachable", error

    # -- judging -----------------------------------------------------------------------------

    def assess(self) -> Assessment:
        """Broker state, lag from committed offsets, partitions stalled (cached data only)."""
        owned = set(self.ledger.committed)
        ends = {tp: self._fresher(tp, end) for tp, end in self.ends.items() if tp in owned}
        lag = {f"{t}:{p}": n for (t, p), n in sorted(self.ledger.lag(ends).items())}
        stalled: list[str] = []
        longest = 0.0
        if self.broker == "ok":
            for tp, end in sorted(ends.items()):
                stuck = self.ledger.stuck_for(tp, end)
                if stuck >= self.stall_after:
                    stalled.append(f"{tp[0]}:{tp[1]}")
                    longest = max(longest, stuck)
        return Assessment(self.broker, lag, stalled, longest, self.broker_error)

    def _fresher(self, tp: TP, end: int) -> int:
        """The probe's end offset, or the consumer's newer one from its last fetch (cached
        by the fetcher, so the probe's snapshot never hides messages fetched since)."""
        if self.highwater is None:
            return end
        try:
            seen = self.highwater(tp)
        except Exception:  # not assigned any more, consumer restarting
            return end
        return end if seen is None or seen < end else int(seen)

    def to_rewind(self) -> dict[TP, int]:
        """Partitions due for a seek back to their next unprocessed offset: uncommitted
        messages and no commit for ``rewind_after`` seconds (once per ``rewind_after``).

        Faust's fetch loop can drop messages it fetched when a rebalance stops its flow
        mid-batch, without reading them again (`pipeline.offsets`): the ledger sees the gap
        only when a newer message comes, so a partition whose last messages were dropped
        waits here. A seek is harmless otherwise: what was processed is skipped.
        """
        now = self.clock()
        out: dict[TP, int] = {}
        if self.broker != "ok":
            return out
        every = self.rewind_after
        for tp, end in self.ends.items():
            stuck = self.ledger.stuck_for(tp, end) if tp in self.ledger.committed else 0.0
            if stuck < every or now - self.rewound_at.get(tp, -1e18) < every:
                continue
            self.rewound_at[tp] = now
            nxt = self.ledger.next.get(tp, self.ledger.committed.get(tp))
            if nxt is not None:
                out[tp] = nxt
        return out

    def exit_reason(self, assessment: Assessment) -> str | None:
        """Why the worker must exit to be restarted (None: it must not): a partition stalled
        for ``exit_after`` seconds, or a wedged client (`check_client`)."""
        if assessment.stalled and assessment.stalled_for >= self.exit_after:
            return (
                f"partitions {', '.join(assessment.stalled)} made no progress for"
                f" {assessment.stalled_for:.0f}s with messages waiting"
            )
        if self.client_wedged_after is not None:  # set while unreachable, cleared by an answer
            return (
                f"the broker answers a new Kafka client, but this worker's has had no answer for"
                f" {self.client_wedged_after:.0f}s (last error: {self.broker_error})"
            )
        return None
