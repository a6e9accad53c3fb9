"""Which input offsets are processed, and committing exactly those: the worker's job, not Faust's.

Why not Faust's acking (faust-streaming 0.15.3, read from its source and reproduced by
``tests/pipeline/test_broker_restart.py``: after a broker SIGKILL and restart, the worker
reported lag 0 while the group's committed offsets stayed up to 106 messages behind the end,
and in the issue's runs six events messages were committed without being evaluated):

- ``Consumer._drain_messages`` records a message's offset as *read* even when its hand-off to
  the stream was abandoned because flow was suspended for a rebalance, and afterwards drops
  (``DROPPED MESSAGE ROFF``) every fetched message whose offset is below the read offset;
- offsets between the read offset and a later fetched message are recorded as a *gap* and
  committed as if processed (meant for compacted topics and transaction markers);
- its commit raises on broker errors, which crashes the worker, and skips commits silently
  after a generation reset;
- around a rebalance its fetch loop can lose messages it fetched and never read them again
  (``getmany`` leaves a batch midway when the flow stops or the generation changes; a
  hand-off abandoned for a suspended flow is not retried). Seen in a fault test, one run in
  about thirty: a partition's last messages fetched (the consumer's position at the end)
  and never delivered. The ledger below sees such a gap only when a newer message comes,
  so `pipeline.watchdog` seeks a partition back after ``rewind_after`` seconds without a
  commit.

So the worker's input topics are declared with ``acks=False`` (Faust then never commits
them) and this module keeps, per input partition, the next offset to process. A message is
*admitted* only if it is exactly that offset: an older one was processed already, a newer
one means messages were skipped, and the partition is sought back to the missing offset
(unless retention removed it: then the loss is counted and logged). `OffsetLedger.commit`
takes the processed offsets, waits until the producer has every output of those messages
acknowledged (acks=all), and only then commits them. A rebalance commits what is done, then
forgets the revoked partitions; a partition is re-read from its committed offset when it
comes back. Duplicates are possible (at-least-once), gaps are not.

>>> import asyncio
>>> port = FakePort(committed={("raw", 0): 5})
>>> ledger = OffsetLedger(port)
>>> run = asyncio.run
>>> run(ledger.admit("raw", 0, 5)); ledger.done("raw", 0, 5)
True
>>> run(ledger.admit("raw", 0, 5))  # fetched again: processed already
False
>>> run(ledger.admit("raw", 0, 8)), port.seeks  # 6 and 7 were skipped: read them again
(False, [(('raw', 0), 6)])
>>> run(ledger.admit("raw", 0, 6)); ledger.done("raw", 0, 6); run(ledger.commit()), port.commits
True
(True, [{('raw', 0): 7}])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["TP", "ConsumerPort", "FakePort", "FaustPort", "LedgerStats", "OffsetLedger"]

log = logging.getLogger("klaxon.offsets")

#: ``(topic, partition)``.
TP = tuple[str, int]


class ConsumerPort(Protocol):
    """What the ledger needs from a Kafka consumer (the Faust one, or a test double)."""

    async def committed(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp`` (None if none)."""

    async def log_start(self, tp: TP) -> int | None:
        """The first offset still in ``tp`` (retention may have removed older ones)."""

    async def seek(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next."""

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit ``offsets`` for the group; False (logged) if the broker refused."""

    async def flush(self) -> None:
        """Wait until every produced message is acknowledged; raise if one failed."""

    def assigned(self) -> set[TP]:
        """The partitions this consumer owns now."""


@dataclass
class LedgerStats:
    """Counters of the ledger (shown in the health snapshot)."""

    redelivered: int = 0  # messages fetched again after they were processed (skipped)
    gaps: int = 0  # times a partition skipped offsets and was sought back
    lost_to_retention: int = 0  # offsets removed by retention before they were processed
    commits: int = 0
    commit_failures: int = 0


@dataclass
class OffsetLedger:
    """Next offset to process per input partition, and what has been committed."""

    port: ConsumerPort
    clock: Callable[[], float] = time.monotonic
    #: next offset to process, per partition (absent: not started since assignment)
    next: dict[TP, int] = field(default_factory=dict)
    #: the offset this worker last committed (or found committed), per partition
    committed: dict[TP, int] = field(default_factory=dict)
    #: when ``committed`` last moved, per partition (stall detection)
    moved_at: dict[TP, float] = field(default_factory=dict)
    seeking: dict[TP, int] = field(default_factory=dict)
    stats: LedgerStats = field(default_factory=LedgerStats)
    _committing: asyncio.Task[bool] | None = None
    _generation: int = 0

    async def start(self, tp: TP) -> int:
        """The offset to process first in ``tp``: its committed offset, else the log start."""
        committed = await self.port.committed(tp)
        if committed is None:
            committed = await self.port.log_start(tp) or 0
        if tp in self.next:  # started meanwhile by another caller (agent or watchdog)
            return self.next[tp]
        self.next[tp] = committed
        self.committed[tp] = committed
        self.moved_at[tp] = self.clock()
        return committed

    async def admit(self, topic: str, partition: int, offset: int) -> bool:
        """Whether to process this message now (exactly the next offset of its partition)."""
        tp = (topic, partition)
        nxt = self.next.get(tp)
        if nxt is None:
            nxt = await self.start(tp)
        if offset == nxt:
            self.seeking.pop(tp, None)
            return True
        if offset < nxt:
            self.stats.redelivered += 1
            return False
        if self.seeking.get(tp) == nxt:
            return False  # fetched before our seek back took effect
        start = await self.port.log_start(tp)
        if start is not None and start > nxt:
            lost = start - nxt
            self.stats.lost_to_retention += lost
            log.error(
                "%s:%d: offsets %d..%d were deleted by retention before they were processed",
                topic,
                partition,
                nxt,
                start - 1,
            )
            self.next[tp] = nxt = start
            if offset == start:
                return True
        self.stats.gaps += 1
        self.seeking[tp] = nxt
        log.warning(
            "%s:%d: offset %d arrived while %d was expected; reading again from %d",
            topic,
            partition,
            offset,
            nxt,
            nxt,
        )
        await self.port.seek(tp, nxt)
        return False

    def done(self, topic: str, partition: int, offset: int) -> None:
        """Record that the message at ``offset`` was processed (its outputs are queued).

        Ignored unless ``offset`` is the partition's next offset: a message that was in flight
        while its partition was revoked (and perhaps assigned again) moves nothing.
        """
        tp = (topic, partition)
        if self.next.get(tp) == offset:
            self.next[tp] = offset + 1

    def pending(self) -> dict[TP, int]:
        """Processed but not yet committed: ``{tp: offset to commit}`` of assigned partitions."""
        owned = self.port.assigned()
        return {tp: n for tp, n in self.next.items() if tp in owned and n != self.committed.get(tp)}

    async def commit(self) -> bool:
        """Commit what is processed once its output is acknowledged; False if not (retried
        next time). One commit at a time: a commit hanging on a dead broker is not doubled."""
        if self._committing is not None and not self._committing.done():
            return False
        self._committing = asyncio.ensure_future(self._commit())
        return await asyncio.shield(self._committing)

    async def _commit(self) -> bool:
        offsets = self.pending()
        if not offsets:
            return True
        generation = self._generation
        await self.port.flush()  # raises if any output was not delivered: no commit then
        if generation != self._generation:
            return False  # revoked meanwhile
        offsets = {tp: n for tp, n in offsets.items() if tp in self.port.assigned()}
        if not offsets:
            return True
        if not await self.port.commit(offsets):
            self.stats.commit_failures += 1
            return False
        self.stats.commits += 1
        now = self.clock()
        for tp, n in offsets.items():
            if self.committed.get(tp) != n:
                self.moved_at[tp] = now
            self.committed[tp] = n
        return True

    async def revoke(self, tps: Iterable[TP], *, commit: bool = True) -> None:
        """Before partitions go: commit what is done (best effort), then forget them."""
        tps = set(tps)
        if commit:
            try:
                await asyncio.wait_for(self.commit(), timeout=10.0)
            except Exception as exc:  # another owner re-reads from the last commit: duplicates
                log.warning("commit before a rebalance failed: %r", exc)
        self._generation += 1
        for tp in tps:
            self.next.pop(tp, None)
            self.committed.pop(tp, None)
            self.moved_at.pop(tp, None)
            self.seeking.pop(tp, None)

    def lag(self, ends: Mapping[TP, int]) -> dict[TP, int]:
        """Messages not committed yet per partition: end offset minus committed offset."""
        return {tp: max(0, end - self.committed.get(tp, 0)) for tp, end in ends.items()}

    def stuck_for(self, tp: TP, end: int) -> float:
        """Seconds ``tp`` has had uncommitted messages without its commit moving (0: moving)."""
        committed = self.committed.get(tp)
        if committed is None or end <= committed:
            self.moved_at[tp] = self.clock()
            return 0.0
        return self.clock() - self.moved_at.get(tp, self.clock())


class FaustPort:
    """`ConsumerPort` over a running Faust app: its consumer thread's aiokafka consumer."""

    def __init__(
        self,
        app: Any,
        *,
        timeout: float = 10.0,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self._flush = flush
        self._refused = 0

    def _thread(self) -> Any:
        return self.app.consumer._thread

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        thread = self._thread()
        return await asyncio.wait_for(thread.call_thread(fn, *args), timeout=self.timeout)

    @staticmethod
    def _aiotp(tp: TP) -> Any:
        from aiokafka import TopicPartition

        return TopicPartition(tp[0], tp[1])

    async def committed(self, tp: TP) -> int | None:
        aio = self._thread()._ensure_consumer()
        value = await self._call(aio.committed, self._aiotp(tp))
        return None if value is None else int(value)

    async def log_start(self, tp: TP) -> int | None:
        aio = self._thread()._ensure_consumer()
        try:
            found = await self._call(aio.beginning_offsets, [self._aiotp(tp)])
        except Exception as exc:
            log.warning("cannot read the log start of %s:%d: %r", tp[0], tp[1], exc)
            return None
        value = found.get(self._aiotp(tp))
        return None if value is None else int(value)

    async def end_offsets(self, tps: Iterable[TP], timeout: float | None = None) -> dict[TP, int]:
        """The broker's end offsets (raises on a timeout, default the port's, or a broker
        error)."""
        aio = self._thread()._ensure_consumer()
        request = self._thread().call_thread(aio.end_offsets, [self._aiotp(tp) for tp in tps])
        found = await asyncio.wait_for(request, timeout=timeout or self.timeout)
        return {(tp.topic, tp.partition): int(end) for tp, end in found.items()}

    def highwater(self, tp: TP) -> int | None:
        """The end offset the consumer saw in its last fetch of ``tp`` (cached, no request)."""
        value = self._thread()._ensure_consumer().highwater(self._aiotp(tp))
        return None if value is None else int(value)

    async def seek(self, tp: TP, offset: int) -> None:
        # In the consumer's own thread: Faust's plain ``seek`` touches the fetcher from the
        # event loop's thread and races a fetch in progress (KeyError in fetched_records).
        await asyncio.wait_for(
            self._thread().seek_wait({self._aiotp(tp): offset}), timeout=self.timeout
        )

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        from aiokafka.structs import OffsetAndMetadata

        aio = self._thread()._ensure_consumer()
        request = {self._aiotp(tp): OffsetAndMetadata(n, "") for tp, n in offsets.items()}
        try:
            await self._call(aio.commit, request)
        except Exception as exc:  # broker away, rebalance under way: retried next time
            self._refused += 1
            if self._refused == 1 or self._refused % 100 == 0:
                log.warning("commit refused (%d so far), will retry: %r", self._refused, exc)
            return False
        if self._refused:
            log.warning("commits accepted again after %d refusals", self._refused)
            self._refused = 0
        return True

    async def flush(self) -> None:
        """Everything produced and every sink delivered (``flush`` given), else the producer."""
        if self._flush is not None:
            await self._flush()
        else:
            await self.app.producer.flush()

    def assigned(self) -> set[TP]:
        try:
            return {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()}
        except Exception:  # consumer not started or being rebalanced
            return set()


class FakePort:
    """An in-memory `ConsumerPort` for tests and doctests: committed offsets, log starts,
    and the seeks, commits and flushes it was asked for."""

    def __init__(
        self,
        committed: dict[TP, int] | None = None,
        starts: dict[TP, int] | None = None,
        owned: set[TP] | None = None,
    ) -> None:
        self.committed_ = dict(committed or {})
        self.starts = dict(starts or {})
        self.owned = owned
        self.refuse = False
        self.seeks: list[tuple[TP, int]] = []
        self.commits: list[dict[TP, int]] = []
        self.flushes = 0

    async def committed(self, tp: TP) -> int | None:
        return self.committed_.get(tp)

    async def log_start(self, tp: TP) -> int | None:
        return self.starts.get(tp, 0)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        if self.refuse:
            return False
        self.commits.append(dict(offsets))
        self.committed_.update(offsets)
        return True

    async def flush(self) -> None:
        self.flushes += 1

    def assigned(self) -> set[TP]:
        if self.owned is not None:
            return set(self.owned)
        return set(self.committed_) | set(self.starts) | {tp for tp, _ in self.seeks}
