"""The Faust shell of the stateful detections: state table, by-group agent, watermark timer.

`install_stateful` adds to a worker's app:

- the **state table** ``stateful`` (in-memory store, ``memory://``: a worker rebuilds its
  partitions from the changelog ``<app id>-stateful-changelog`` at start and after every
  rebalance; rocksdict is not installed, and the state is small). Faust assigns changelog
  partition *p* with events partition *p* (same partition count: co-partitioned). The table
  is only Faust's restore mechanism: the detectors work on `pipeline.stateful` dicts, and
  the shell writes their changes to the changelog itself, with the partition explicit.
  Once a partition is rebuilt, its values leave the store (they would be a second copy of
  the state) and Faust's recovery is set to read that changelog partition from its start
  at the next rebalance;
- the agent ``klaxon.stateful-by-group`` on ``<events>.by-group`` (re-keyed correlation
  matches and silence heartbeats, `pipeline.stateful`);
- the timer ``klaxon.stateful`` (every second): per owned partition, the event-time
  watermark advances correlation windows, closes anomaly windows, prunes expired terms and
  checks silent clusters;
- rebalance hooks: every partition is dropped and rebuilt from the table when next used;
- `RecoveryNudge`, in a task of its own from the first rebalance on (Faust starts timers
  only after the first recovery): a recovery of the table that read nothing for
  ``rewind_after`` seconds reads again from where it stopped.

The detectors' options come from the worker's `Settings`
(`pipeline.stateful.options_from_settings`: which families run, lateness, delays,
thresholds, and the offline model of ``KLAXON_ANOMALY_MODEL``, whose alerts are produced
like the others).

The detect agent calls `StatefulShell.bind` (an engine wrapper: the stateless matches go
to the processor, base-rule matches are filtered out) and, after sending the message's
stateless alerts, `StatefulShell.finish`, which queues the stateful alerts and by-group
messages without waiting for the broker. The state changes and the meta key are written
later, once per offset commit (`StatefulShell.write_state`, called by the commit's flush
before any input offset is committed, by the watermark timer and before partitions are
given up), each after that partition's alerts and by-group messages were delivered:
a key changed by a thousand messages between two commits is written once, not a thousand
times. So the changelog is never behind a committed offset (what was committed is in the
state written before it) and never ahead of a delivered alert (a partition with a message
between `bind` and `finish` is written when that message is finished). A crash between the
state write and the commit can repeat an alert (same id), never lose one; the meta key
makes a re-read message not count twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from faust.types import TP

from detections.alert import add_labels
from pipeline.errors import WorkerError
from pipeline.processing import Outgoing, Source
from pipeline.producer import aiokafka_producer
from pipeline.stages import StageTimes
from pipeline.stateful import StatefulOptions, StatefulProcessor, options_from_settings
from pipeline.topics import STATE_TABLE, changelog_topic, rekey_topic

__all__ = ["BoundEngine", "RecoveryNudge", "StatefulShell", "install_stateful"]

log = logging.getLogger("klaxon.stateful")

#: Seconds between two runs of the watermark timer.
TICK_INTERVAL = 1.0


class BoundEngine:
    """The engine seen by `pipeline.processing.detect_message` for one events message."""

    def __init__(self, shell: StatefulShell, engine: Any, message: Any) -> None:
        self.shell = shell
        self.engine = engine
        self.partition: int = message.partition
        self.topic: str = message.topic
        self.offset: int | None = message.offset
        self.skip = shell.processor.applied(self.partition, self.topic, self.offset)

    def evaluate_batch(self, events: list[dict[str, Any]]) -> list[Any]:
        """Stateless matches minus suppressed base rules; stateful alerts are kept for
        `StatefulShell.finish`. Called again per event if the whole batch raised."""
        matches = self.engine.evaluate_batch(events)
        shell = self.shell
        times = shell.times
        started = times.clock()
        alerts = shell.processor.process(
            events,
            matches,
            self.partition,
            topic=self.topic,
            offset=self.offset,
            now=shell.clock(),
            skip=self.skip,
        )
        if alerts:
            shell.pending.setdefault(self.partition, []).extend(alerts)
        kept = shell.processor.suppress(matches)
        spent = times.clock() - started  # detect_message counts the whole call as engine time
        times.add("stateful", spent)
        times.add("engine", -spent)
        return kept


class StatefulShell:
    """Owns the processor, the table and the output of the stateful detections."""

    def __init__(
        self,
        app: Any,
        rt: Any,
        processor: StatefulProcessor,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = rt.settings
        self.app = app
        self.rt = rt
        self.processor = processor
        self.clock = clock
        self.engine = rt.holder.engine
        self.table = app.Table(
            STATE_TABLE, partitions=settings.partitions, key_type=bytes, value_type=bytes
        )
        name = self.table.changelog_topic.get_topic_name()
        if name != changelog_topic(settings):
            raise WorkerError(
                f"Faust names the state changelog {name!r}, expected "
                f"{changelog_topic(settings)!r}; it would not be pre-created"
            )
        self.changelog = name
        self.topic_alerts = settings.topic_alerts
        self.topic_events = settings.topic_events
        self.topic_rekey = rekey_topic(settings)
        self.loaded: set[int] = set()
        #: Watches Faust's recovery of the table (set by `install_stateful`).
        self.nudge: RecoveryNudge | None = None
        #: Messages between bind and finish, per partition (the detect and by-group agents).
        self.busy: dict[int, int] = {}
        #: Partitions whose state changed since their last changelog write.
        self.dirty: set[int] = set()
        #: `write_state` waiting for a busy partition's message to finish.
        self.waiting: dict[int, asyncio.Future[None]] = {}
        #: By-group sends not yet known delivered, and partitions with stateful alerts not
        #: yet flushed through the sinks: both settled before the partition's state is written.
        self.unacked: dict[int, list[asyncio.Future[Any]]] = {}
        self.unflushed: set[int] = set()
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self.alerts = 0
        self.state_writes = 0  # changelog records sent
        #: The worker's stage timers (`pipeline.stages`; test doubles without them get their own).
        self.times: StageTimes = getattr(rt, "stages", None) or StageTimes()

    # -- partitions --------------------------------------------------------------------------

    def ensure_loaded(self, partition: int) -> None:
        """Rebuild ``partition`` from the table the first time it is used since a rebalance
        (the table has been recovered by then: Faust resumes streams only afterwards), then
        release the table's copy of it (`_release_recovered`)."""
        if partition in self.loaded:
            return
        data = self.table.data
        items = [(k, v) for k, v in data.items() if isinstance(k, bytes)]
        used = self.processor.load(partition, items, now=self.clock())
        self.loaded.add(partition)
        del items
        self._release_recovered(partition, data)
        if used:
            log.info("stateful: partition %d restored from %d changelog keys", partition, used)

    def _release_recovered(self, partition: int, data: Any) -> None:
        """Drop the recovered changelog values of a loaded ``partition`` from Faust's memory
        store (one more copy of its state, as JSON: ~1 KB a principal) and have Faust's
        recovery read that changelog partition from its start next time (it resumes where it
        stopped reading, so the table would lack every key unchanged since)."""
        recovery = faust_recovery(self.app)
        offsets = getattr(recovery, "active_offsets", None)
        if offsets is None or getattr(recovery, "in_recovery", True):
            return  # not Faust's recovery, or it is reading: keep the copy
        prefix = f"{partition}|".encode()
        where = getattr(data, "_key_partition", {})  # the memory store's key -> partition
        for key in [k for k in data if isinstance(k, bytes) and k.startswith(prefix)]:
            del data[key]
            where.pop(key, None)
        offsets[TP(self.changelog, partition)] = -1  # as at start: from the earliest offset

    def reset(self) -> None:
        """Forget every partition (called on rebalance, after `write_state`)."""
        for p in list(self.processor.parts):
            self.processor.drop(p)
        self.loaded.clear()
        self.pending.clear()
        self.busy.clear()
        self.dirty.clear()
        self.unacked.clear()
        self.unflushed.clear()
        for partition in list(self.waiting):
            self._release(partition)

    def _enter(self, partition: int) -> None:
        self.busy[partition] = self.busy.get(partition, 0) + 1

    def _leave(self, partition: int) -> bool:
        """Mark one message of ``partition`` finished; True if `write_state` awaits it."""
        left = self.busy.get(partition, 0) - 1
        if left > 0:
            self.busy[partition] = left
            return False
        self.busy.pop(partition, None)
        return partition in self.waiting

    def _release(self, partition: int, exc: BaseException | None = None) -> None:
        """Let the `write_state` waiting for ``partition`` go on (or fail with ``exc``)."""
        fut = self.waiting.pop(partition, None)
        if fut is None or fut.done():
            return
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    def owned(self) -> list[int]:
        """Events partitions assigned to this worker, if the tables are ready."""
        app = self.app
        if not app.tables.actives_ready:
            return []
        try:
            assignment = app.consumer.assignment()
        except Exception:
            return []
        return sorted({tp.partition for tp in assignment if tp.topic == self.topic_events})

    # -- the detect agent's hooks ------------------------------------------------------------

    def bind(self, engine: Any, message: Any, evaluator: Any = None) -> BoundEngine:
        """The engine for one events message (reloaded rules are picked up here).

        ``evaluator``: what gives the stateless matches, when not ``engine`` itself
        (`pipeline.handoff.Evaluated`: the normalise agent already evaluated the events)."""
        if engine is not self.engine:
            self.engine = engine
            self.processor.set_rules(engine.ruleset)
        self.ensure_loaded(message.partition)
        self._enter(message.partition)
        return BoundEngine(self, engine if evaluator is None else evaluator, message)

    def abandon(self, message: Any) -> None:
        """Forget what a message whose processing raised left behind (its alerts included:
        the message became a dead letter)."""
        partition = message.partition
        self.pending.pop(partition, None)
        if self._leave(partition):  # `write_state` looks at the partition again
            self._release(partition)

    async def finish(self, message: Any) -> None:
        """Emit the message's stateful alerts and by-group messages (its state is written
        by the next `write_state`)."""
        partition = message.partition
        try:
            await self.emit(partition, self.pending.pop(partition, []))
        finally:
            await self._settle(partition)

    async def _settle(self, partition: int) -> None:
        """One message of ``partition`` is finished: if `write_state` waits for it, write
        the partition's state now, before another message can make it busy again."""
        if not self._leave(partition):
            return
        try:
            written = await self._write(partition)
        except BaseException as exc:
            self._release(partition, exc)
            raise
        if written:  # else busy again meanwhile: that message's `finish` writes it
            self._release(partition)

    async def on_rekeyed(self, event: Any) -> None:
        """One by-group message."""
        msg = event.message
        self.ensure_loaded(msg.partition)
        self._enter(msg.partition)
        try:
            alerts = self.processor.process_rekeyed(
                event.value, msg.partition, topic=msg.topic, offset=msg.offset, now=self.clock()
            )
            await self.emit(msg.partition, alerts)
        finally:
            await self._settle(msg.partition)
        self.rt.progress.mark(msg.topic, msg.partition, msg.offset)

    async def tick(self) -> None:
        """The watermark timer: judge what the watermarks passed, on idle partitions too,
        and write the state of every partition that changed (so at most once a second)."""
        for partition in self.owned():
            if partition in self.busy:
                continue
            self.ensure_loaded(partition)
            self._enter(partition)  # a commit's `write_state` waits for the alerts' delivery
            try:
                await self.emit(partition, self.processor.tick(partition, self.clock()))
            finally:
                await self._settle(partition)
            if partition in self.dirty and partition not in self.busy:
                await self._write(partition)  # an idle partition's state is written too

    # -- output ------------------------------------------------------------------------------

    async def emit(self, partition: int, alerts: Sequence[dict[str, Any]]) -> None:
        """Queue alerts (through every sink) and by-group messages; the partition's state
        changes are left for `_write`, which first waits for their delivery (the state never
        gets ahead of what was delivered), so no message waits for a broker round trip."""
        app = self.app
        guard = app.delivery
        refused = 0
        clock = self.times.clock
        started = clock()
        grouper = getattr(self.rt, "grouper", None)
        if alerts and grouper is not None:  # incidents (stateful alerts are not grouped)
            try:
                alerts = grouper.add(list(alerts))
            except Exception as exc:  # a bug: the alerts go out without incidents
                log.error("alert grouping failed on %d stateful alerts: %r", len(alerts), exc)
        try:
            if alerts:
                if not self.rt.sinks:  # install_agents sets them first: never drop alerts
                    raise WorkerError("stateful alerts but no alert sink is configured")
                source = Source(self.changelog, partition, None)
                labels = self.rt.settings.label_map
                out = [
                    Outgoing(str(a["id"]).encode(), orjson.dumps(add_labels(a, labels)), doc=a)
                    for a in alerts
                ]
                for sink in self.rt.sinks:
                    refused += await sink.send(out, source)
                self.unflushed.add(partition)
            send = aiokafka_producer(app).send
            for rec in self.processor.take_rekeyed(partition):
                fut = await send(self.topic_rekey, rec.value, key=rec.key, partition=rec.partition)
                guard.track(fut)
                self.unacked.setdefault(partition, []).append(fut)
            self.dirty.add(partition)
            self.times.add("stateful_out", clock() - started)
        except Exception as exc:  # the state must not get ahead of what was delivered
            await self._failed(exc)
            raise
        if alerts:
            self.alerts += len(alerts) - refused
            self.rt.counters.alerts += len(alerts) - refused
            self.rt.counters.detect_dead_lettered += refused

    async def write_state(self, timeout: float | None = None) -> None:
        """Send the state changes of every partition changed since its last write (then
        the meta key), each key once. A partition with a message between `bind` and
        `finish` is written by `finish`, which this awaits (``timeout``: at most that many
        seconds, then `TimeoutError`). Raises, after poisoning the delivery guard, if a
        record cannot be queued."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for partition in sorted(self.dirty):
            if partition in self.busy or not await self._write(partition):
                fut = self.waiting.get(partition)
                if fut is None:
                    fut = self.waiting[partition] = loop.create_future()
                waits.append(fut)
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
            if any(p not in self.busy for p in self.dirty):  # an abandoned message
                await self.write_state(timeout)

    async def _write(self, partition: int) -> bool:
        """Wait for the partition's by-group messages and alerts to be delivered, then send
        its state changes; False (still dirty) if a message made it busy meanwhile."""
        try:
            while True:
                waits = self.unacked.pop(partition, [])
                flush = partition in self.unflushed
                self.unflushed.discard(partition)
                if not waits and not flush:
                    break
                if waits:
                    await asyncio.gather(*waits)
                if flush:
                    for sink in self.rt.sinks:
                        await sink.flush()
            if partition in self.busy:
                return False
            self.dirty.discard(partition)
            if partition not in self.processor.parts:
                return True
            clock = self.times.clock
            started = clock()
            send = aiokafka_producer(self.app).send
            track = self.app.delivery.track
            for key, value in self.processor.changes(partition, self.clock()):
                track(await send(self.changelog, value, key=key, partition=partition))
                self.state_writes += 1
        except Exception as exc:  # its input must not be committed
            await self._failed(exc)
            raise
        self.times.add("stateful_out", clock() - started)
        return True

    async def _failed(self, exc: Exception) -> None:
        self.rt.counters.send_errors += 1
        self.app.delivery.poison(exc)
        log.critical("cannot produce stateful output, stopping the worker: %r", exc)
        await self.app.crash(exc)


class RecoveryNudge:
    """Seeks Faust's table recovery back to where it stopped reading when it has made no
    progress for ``after`` seconds.

    Around a rebalance Faust's fetch loop can lose records it fetched and never read them
    again (`pipeline.offsets`). For a stream partition the ledger and the watchdog read them
    again; for a changelog partition under recovery it is a recovery that waits forever,
    with every stream paused (seen in ``tests/pipeline/test_worker_faults.py``, one run in
    about thirty under load: "Resuming flow..." and nothing after it for the rest of the
    test). Reading a changelog record twice is harmless: the recovery skips offsets it has
    seen.

    >>> import asyncio
    >>> class Recovery:
    ...     in_recovery = True
    ...     active_offsets = {"changelog:0": 4, "changelog:1": -1}
    ...     def active_remaining(self):
    ...         return {"changelog:0": 3, "changelog:1": 0}
    >>> sought, now = [], [0.0]
    >>> async def seek(offsets): sought.append(offsets)
    >>> nudge = RecoveryNudge(Recovery(), seek, after=10.0, clock=lambda: now[0])
    >>> asyncio.run(nudge.check()), now.__setitem__(0, 10.0), asyncio.run(nudge.check())
    ({}, None, {'changelog:0': 5})
    """

    def __init__(
        self,
        recovery: Any,
        seek: Callable[[dict[Any, int]], Awaitable[object]],
        *,
        after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recovery = recovery
        self.seek = seek
        self.after = after
        self.clock = clock
        self._seen: dict[Any, int | None] | None = None
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None
        self.nudges = 0
        #: When the recovery under way last read something (None: none under way): the
        #: watchdog counts a stall from then (`pipeline.watchdog.Watchdog.hold`).
        self.progressed_at: float | None = None

    def start(self, stopping: Callable[[], bool]) -> None:
        """Check every `TICK_INTERVAL` in a task of its own until ``stopping()`` (a second
        call does nothing): Faust starts its timers only after the first recovery."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run(stopping))

    async def _run(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            try:
                await self.check()
            except Exception as exc:  # a bug: the recovery is only not nudged
                log.error("stateful: the recovery nudge failed: %r", exc)
            await asyncio.sleep(TICK_INTERVAL)

    def under_way(self) -> bool:
        """Whether Faust is reading the table's state back (every stream waits for it)."""
        return bool(getattr(self.recovery, "in_recovery", False))

    def remaining(self) -> int:
        """Changelog records the recovery under way has still to read (0: none under way)."""
        if not self.under_way():
            return 0
        return sum(max(0, left) for left in self.recovery.active_remaining().values())

    async def check(self) -> dict[Any, int]:
        """Seek the partitions still to read to their next offset if the recovery's read
        offsets have not moved for ``after`` seconds; returns what was sought."""
        recovery, now = self.recovery, self.clock()
        if not self.under_way():
            self._seen = self.progressed_at = None
            return {}
        waiting = [tp for tp, left in recovery.active_remaining().items() if left > 0]
        seen = {tp: recovery.active_offsets.get(tp) for tp in waiting}
        if seen != self._seen:
            self._seen, self._since, self.progressed_at = seen, now, now
            return {}
        if not seen or now - self._since < self.after:
            return {}
        self._since = now
        targets = {tp: 0 if n is None or n < 0 else n + 1 for tp, n in seen.items()}
        log.warning(
            "stateful: the state recovery read nothing for %.0fs; reading %s again",
            self.after,
            ", ".join(f"{tp[0]}:{tp[1]} from {n}" for tp, n in sorted(targets.items())),
        )
        self.nudges += 1
        try:
            await self.seek(targets)
        except Exception as exc:  # reassigned meanwhile: the next recovery seeks itself
            log.warning("stateful: cannot seek the state recovery: %r", exc)
        return targets


def faust_recovery(app: Any) -> Any:
    """Faust's recovery of the app's tables (None for apps without one: test doubles)."""
    return getattr(getattr(app, "tables", None), "recovery", None)


def install_stateful(
    app: Any, rt: Any, options: StatefulOptions | None = None
) -> StatefulShell | None:
    """Add the state table, the by-group agent, the timer and rebalance hooks to ``app``.

    ``options`` default to `options_from_settings` of ``rt.settings``. Returns None (nothing
    installed) when the engine carries no rule set (test doubles).
    """
    ruleset = getattr(rt.holder.engine, "ruleset", None)
    if ruleset is None:
        return None
    if options is None:
        options = options_from_settings(rt.settings)
    model = options.offline_model
    if model is not None:
        log.info(
            "stateful: offline anomaly model %s (%d trees, alert threshold %.3f)",
            rt.settings.anomaly_model,
            len(model.trees),
            model.cut,
        )
    processor = StatefulProcessor(ruleset, partitions=rt.events_partitions, options=options)
    shell = StatefulShell(app, rt, processor)

    ledger = rt.ledger  # commits the by-group topic like the other inputs (pipeline.offsets)
    rekey = app.topic(shell.topic_rekey, acks=ledger is None)
    if ledger is not None:
        app.ledger_topics.add(shell.topic_rekey)

    @app.agent(rekey, concurrency=1, name="klaxon.stateful-by-group")  # type: ignore[untyped-decorator,unused-ignore]
    async def by_group(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            if ledger is not None and not await ledger.admit(msg.topic, msg.partition, msg.offset):
                continue
            await shell.on_rekeyed(event)
            if ledger is not None:
                ledger.done(msg.topic, msg.partition, msg.offset)

    nudge = RecoveryNudge(
        faust_recovery(app),
        lambda offsets: app.consumer.seek_wait(offsets),  # as the recovery seeks, in its thread
        after=getattr(getattr(rt, "options", None), "rewind_after", 10.0),
    )
    shell.nudge = nudge

    @app.timer(TICK_INTERVAL, name="klaxon.stateful")  # type: ignore[untyped-decorator,unused-ignore]
    async def watermarks() -> None:
        await shell.tick()

    async def on_rebalance(sender: Any, *args: Any, **kwargs: Any) -> None:
        nudge.start(lambda: bool(getattr(app, "should_stop", False)))
        try:  # the partitions' last changes, before they are forgotten
            await shell.write_state(timeout=10.0)
        except Exception as exc:  # the next owner re-reads from the last commit
            log.warning("state write before a rebalance failed: %r", exc)
        shell.reset()

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)
    return shell
