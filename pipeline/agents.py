"""The worker's agents and timers, wired onto a `KlaxonApp` (thin shell over `processing`).

- ``klaxon.normalise``: raw topic -> `processing.normalise_message` -> one events message
  per partition of the ``cluster|user`` key, and dead letters. Consecutive raw messages'
  events messages are joined per partition (`pipeline.coalesce`: up to ``events_batch``
  events, or ``events_linger`` seconds, then sent; the commit's flush sends what waits
  before any raw offset is committed).
- ``klaxon.detect``: events topic -> `processing.detect_message` with the current engine ->
  alerts (key = alert id) and dead letters.
- timers: offset commits (`offsets.OffsetLedger`), rule hot reload (`reload.RuleWatcher`),
  the health line / status file with the watchdog's actions (`watchdog.Watchdog`), and the
  closing of alert groups while the input is idle (``klaxon.groups``).

Every alert, stateless or stateful, goes through the worker's one
`detections.grouping.Grouper` (``Runtime.grouper``) before the sinks: matches of one rule on
one key within a window become one alert and its updates (docs/operations.md, "Alert
grouping"). What it returns is sent, and flushed before the input offsets are committed.

Both agents run with ``concurrency=1``, process a message only when the ledger admits it
(exactly the next offset of its partition), queue their output straight into the aiokafka
producer (never ``send_and_wait``; the producer batches), then mark the offset done; the
commit timer commits done offsets after the producer's flush. They never raise on input:
bad input, an output too large to send, or an exception while processing becomes a dead
letter. A send that fails for any other reason poisons the `DeliveryGuard` and crashes the
worker, so no offset is committed past it. Events batches the normalise agent
encodes for partitions this worker consumes are also kept parsed in `pipeline.handoff`, so
the detect agent usually skips parsing them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from detections.grouping import Grouper
from pipeline import logs
from pipeline.app import KlaxonApp, WorkerOptions
from pipeline.coalesce import EventsBuffer
from pipeline.config import Settings
from pipeline.errors import DeliveryError, WorkerStalled
from pipeline.handoff import Evaluated, Handoff
from pipeline.metrics import Counters, Progress, health_snapshot
from pipeline.offsets import FaustPort, OffsetLedger
from pipeline.processing import (
    MAX_MESSAGE_BYTES,
    DetectResult,
    NormaliseResult,
    Outgoing,
    Source,
    dead_letter_bytes,
    describe_error,
    detect_message,
    normalise_message,
)
from pipeline.producer import Sender
from pipeline.reload import EngineHolder, RuleWatcher
from pipeline.sinks import AlertSink, KafkaTopicSink
from pipeline.sources import RawPayload, RawTopicSource
from pipeline.stages import StageTimes
from pipeline.watchdog import Watchdog

__all__ = ["Handlers", "Runtime", "install_agents", "unready_reasons", "write_status"]


health_log = logging.getLogger("klaxon.health")
log = logging.getLogger("klaxon.worker")


@dataclass
class Runtime:
    """Everything the agents share in one worker process."""

    settings: Settings
    options: WorkerOptions
    holder: EngineHolder
    events_partitions: int
    to_alert: Callable[[Any], dict[str, Any]]
    watcher: RuleWatcher | None = None
    counters: Counters = field(default_factory=Counters)
    progress: Progress = field(default_factory=Progress)
    started: float = field(default_factory=time.monotonic)
    handoff: Handoff = field(default_factory=Handoff)
    stateful: Any = None  # pipeline.tables.StatefulShell, set by install_agents
    ledger: OffsetLedger | None = None  # set by install_agents
    watchdog: Watchdog | None = None
    port: FaustPort | None = None
    #: Where alerts go (the alert topic unless set before `install_agents`).
    sinks: list[AlertSink] = field(default_factory=list)
    #: `pipeline.telemetry.WorkerMetrics` when /metrics is served (set before install_agents).
    metrics: Any = None
    #: Base URL of /metrics, /healthz, /readyz (in the status snapshot; tests find it there).
    metrics_url: str | None = None
    #: Groups alerts before the sinks (set by `install_agents` from the settings).
    grouper: Grouper | None = None
    grouped_rules: Any = None  # the rule set the grouper's windows were taken from
    #: CPU time per stage (`pipeline.stages`; ``stages`` in the status snapshot).
    stages: StageTimes = field(default_factory=StageTimes)
    #: Sends the normalise agent's buffered events messages (set by `install_agents`).
    flush_events: Callable[[], Awaitable[None]] | None = None


def group_alerts(
    rt: Runtime, alerts: list[Outgoing], latest: str | None = None, partition: int | None = None
) -> list[Outgoing]:
    """The alerts of one message as the grouper lets them out (the rules' windows follow
    hot reloads); ``latest``, the newest event time of events ``partition``, moves its
    watermark. A grouper that raises (a bug) lets the alerts through ungrouped: never lose
    one."""
    grouper = rt.grouper
    if grouper is None or (not alerts and latest is None):
        return alerts
    try:
        ruleset = getattr(rt.holder.engine, "ruleset", None)
        if ruleset is not None and ruleset is not rt.grouped_rules:
            grouper.set_rules(ruleset.rules)
            rt.grouped_rules = ruleset
        docs = grouper.add(
            [a.doc for a in alerts if a.doc is not None],
            latest,
            source=partition,
            now=time.monotonic(),
        )
    except Exception as exc:
        log.error("alert grouping failed, sending %d alerts ungrouped: %r", len(alerts), exc)
        return alerts
    return [Outgoing(str(d["id"]).encode(), orjson.dumps(d), doc=d) for d in docs]


def write_status(path: str, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` as JSON to ``path`` atomically (temp file + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=target.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(snapshot, fh, indent=1, sort_keys=True)
    os.replace(tmp, target)


class Handlers:
    """What the agents do with one message each: admit it, process it, send its output, mark
    it done (`pipeline.offsets`). Never raises on input."""

    def __init__(self, app: KlaxonApp, rt: Runtime, ledger: OffsetLedger) -> None:
        self.app = app
        self.rt = rt
        self.ledger = ledger
        self.settings = s = rt.settings
        self.redaction = s.redaction()
        self.sender = Sender(app, rt.counters, s.topic_deadletter, rt.options.max_message_bytes)
        #: Events messages waiting to be joined (`pipeline.coalesce`), and the lock that
        #: keeps their sends in order.
        limit = min(MAX_MESSAGE_BYTES, rt.options.max_message_bytes)
        self.buffer = EventsBuffer(
            max_events=rt.options.events_batch, max_bytes=limit, clock=time.monotonic
        )
        self.sending = asyncio.Lock()
        self._linger: asyncio.TimerHandle | None = None
        self._lingering: asyncio.Future[None] | None = None
        if not rt.sinks:
            rt.sinks = [KafkaTopicSink(self.sender, s.topic_alerts)]

    def consumed_events_partitions(self) -> set[int]:
        """Events partitions this worker's detect agent reads (handoff is pointless for others)."""
        topic = self.settings.topic_events
        try:
            return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        except Exception:  # consumer not started or being rebalanced: just skip the handoff
            return set()

    async def normalise(self, raw: RawPayload) -> None:
        """One raw payload: events messages per partition of the routing key, dead letters."""
        rt, source = self.rt, raw.origin
        topic, partition, offset = source.topic, source.partition or 0, source.offset or 0
        if not await self.ledger.admit(topic, partition, offset):
            return
        try:
            result = normalise_message(
                raw.payload,
                source,
                partitions=rt.events_partitions,
                cluster=raw.cluster or self.settings.cluster,
                redaction=self.redaction,
                times=rt.stages,
            )
        except Exception as exc:  # a bug, not bad input: the message still is not lost
            result = NormaliseResult(events_in=1)
            result.dead_letters.append(worker_error("normalise", exc, raw.payload, source))
        times = rt.stages
        times.events += result.normalised
        if rt.handoff.max_events and result.messages:
            result.messages = self.evaluate_ours(result.messages)
        sending = times.clock()
        await self.sender.send(self.settings.topic_events, [], result.dead_letters, source)
        times.add("kafka_out_events", times.clock() - sending)
        await self.send_events(result.messages, source)
        rt.counters.add_normalise(
            events_in=result.events_in,
            normalised=result.normalised,
            dead=len(result.dead_letters),
            filtered=result.filtered,
            messages_out=0,  # counted when sent (`send_events`)
        )
        if rt.metrics is not None:
            rt.metrics.normalised(result)
        self.ledger.done(topic, partition, offset)  # its events may wait in the buffer:
        rt.progress.mark(topic, partition, offset)  # the commit's flush sends them first

    def evaluate_ours(self, messages: list[Outgoing]) -> list[Outgoing]:
        """The events messages with the engine's matches of their events, for the partitions
        this worker's detect agent reads: evaluated now, while the events just decoded are
        in the CPU's caches, and handed over with them (`pipeline.handoff`). A failing
        evaluation leaves the message to the detect agent, which dead-letters what fails."""
        ours = self.consumed_events_partitions()
        if not ours:
            return messages
        engine, times = self.rt.holder.engine, self.rt.stages
        started = times.clock()
        out = []
        for message in messages:
            if message.events is not None and message.partition in ours:
                # A failing batch is left without matches: the detect agent evaluates it.
                with contextlib.suppress(Exception):
                    message = replace(message, matches=list(engine.evaluate_batch(message.events)))
            out.append(message)
        times.add("engine", times.clock() - started)
        return out

    async def send_events(self, messages: list[Outgoing], source: Source) -> None:
        """Events messages into the buffer (`pipeline.coalesce`); what it lets out, and
        everything once ``events_linger`` seconds passed since the oldest, to the events
        topic. One at a time: a partition's messages leave in the order they came."""
        linger = self.rt.options.events_linger
        async with self.sending:
            buffer = self.buffer
            if linger <= 0:
                ready = messages
            else:
                ready = buffer.add_all(messages)
                if buffer.waited(linger):
                    ready += buffer.drain()
            if ready:
                await self._send_events(ready, source)
        self._arm()

    def _arm(self) -> None:
        """Have `flush_events_due` run when the oldest buffered message's linger is over
        (a loop callback, not a timer: nothing runs while the buffer is empty)."""
        since = self.buffer.since
        if since is None or self._linger is not None:
            return
        delay = max(0.0, since + self.rt.options.events_linger - time.monotonic())
        self._linger = asyncio.get_running_loop().call_later(delay, self._linger_over)

    def _linger_over(self) -> None:
        self._linger = None
        self._lingering = asyncio.ensure_future(self._flush_lingering())

    async def _flush_lingering(self) -> None:
        try:
            await self.flush_events_due()
        except Exception:  # the sender logged it and is stopping the worker
            return
        self._arm()  # what came meanwhile

    async def flush_events(self) -> None:
        """Send every buffered events message (linger over, and the commit's flush)."""
        async with self.sending:
            ready = self.buffer.drain()
            if ready:
                await self._send_events(ready, Source(self.settings.topic_raw, None, None))

    async def flush_events_due(self) -> None:
        """`flush_events` if the oldest buffered message waited ``events_linger`` seconds."""
        if self.buffer.waited(self.rt.options.events_linger):
            await self.flush_events()

    async def _send_events(self, ready: list[Outgoing], source: Source) -> None:
        rt, times = self.rt, self.rt.stages
        sending = times.clock()
        refused = await self.sender.send(self.settings.topic_events, ready, [], source)
        times.add("kafka_out_events", times.clock() - sending)
        rt.counters.events_messages_out += len(ready) - refused
        handoff = rt.handoff
        if handoff.max_events:
            ours = self.consumed_events_partitions()
            for out in ready:
                if out.events is not None and out.partition in ours:
                    handoff.put(out.value, out.events, out.matches)

    async def detect(self, event: Any) -> None:
        """One events message: alerts (stateless, then stateful with its state), dead letters."""
        msg, rt = event.message, self.rt
        if not await self.ledger.admit(msg.topic, msg.partition, msg.offset):
            return
        source = Source(msg.topic, msg.partition, msg.offset)
        handoff = rt.handoff
        started = time.perf_counter()
        try:
            batch = handoff.take_batch(event.value) if handoff.max_events else None
            engine: Any = rt.holder.engine
            known = None  # the matches the normalise agent found (`pipeline.handoff`)
            if batch is not None and batch.matches is not None:
                known = Evaluated(engine, batch.events, batch.matches)
            if rt.stateful is not None:  # stateful detectors read the matches as they pass
                engine = rt.stateful.bind(engine, msg, known)
            elif known is not None:
                engine = known
            result = detect_message(
                event.value,
                source,
                engine,
                rt.to_alert,
                decoded=None if batch is None else batch.events,
                times=rt.stages,
            )
        except Exception as exc:  # a bug, not bad input: the message still is not lost
            result = DetectResult(errors=1)
            result.dead_letters.append(worker_error("detect", exc, event.value, source))
            if rt.stateful is not None:
                rt.stateful.abandon(msg)
        if rt.metrics is not None:
            rt.metrics.detected(result, time.perf_counter() - started)
        times = rt.stages
        grouping = times.clock()
        result.alerts = group_alerts(rt, result.alerts, result.latest, msg.partition)
        sending = times.clock()
        times.add("grouping", sending - grouping)
        refused = 0
        for sink in rt.sinks:
            refused += await sink.send(result.alerts, source)
        await self.sender.send(self.settings.topic_deadletter, [], result.dead_letters, source)
        finishing = times.clock()
        times.add("kafka_out_alerts", finishing - sending)
        rt.counters.add_detect(
            events=result.events,
            alerts=len(result.alerts) - refused,
            dead=len(result.dead_letters) + refused,
        )
        if rt.stateful is not None:  # its alerts, then its state
            await rt.stateful.finish(msg)  # times its own output (it may await delivery)
        self.ledger.done(msg.topic, msg.partition, msg.offset)
        rt.progress.mark(msg.topic, msg.partition, msg.offset)


def install_agents(app: KlaxonApp, rt: Runtime) -> None:
    """Add the normalise and detect agents, the commit, reload and health timers to ``app``.

    The input topics are declared with ``acks=False``: Faust never commits them; the
    `OffsetLedger` admits each message, and the commit timer commits processed offsets after
    the producer acknowledged their output (`pipeline.offsets` says why).
    """
    s = rt.settings
    if rt.grouper is None:
        rt.grouper = Grouper(s.group_options())
    app.ledger_topics.update((s.topic_raw, s.topic_events))
    rt.port = FaustPort(app, flush=lambda: flush_sinks(app, rt))
    rt.ledger = ledger = OffsetLedger(rt.port)
    rt.watchdog = Watchdog(
        ledger,
        stall_after=rt.options.stall_after,
        rewind_after=rt.options.rewind_after,
        exit_after=rt.options.stall_exit,
        highwater=rt.port.highwater,
        fresh_probe=lambda: broker_answers(app, rt.settings),
    )
    handlers = Handlers(app, rt, ledger)
    rt.flush_events = handlers.flush_events
    if rt.metrics is not None:
        rt.metrics.wrap_sinks()  # the alert topic sink exists now
    from pipeline.tables import install_stateful

    rt.stateful = install_stateful(app, rt)  # state table, by-group agent, timer

    @app.agent(app.topic(s.topic_raw, acks=False), concurrency=1, name="klaxon.normalise")
    async def normalise(stream: Any) -> None:
        async for raw in RawTopicSource(stream, s.cluster).payloads():
            await handlers.normalise(raw)

    @app.agent(app.topic(s.topic_events, acks=False), concurrency=1, name="klaxon.detect")
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            await handlers.detect(event)

    install_timers(app, rt, ledger)


def install_timers(app: KlaxonApp, rt: Runtime, ledger: OffsetLedger) -> None:
    """The commit, reload and health timers, and the revocation hook."""

    @app.timer(rt.options.commit_interval, name="klaxon.commit")  # type: ignore[untyped-decorator,unused-ignore]
    async def commit() -> None:
        try:
            await ledger.commit()
        except DeliveryError as exc:  # an output was lost: process its input again
            log.critical("%s; stopping the worker", exc)
            await app.crash(exc)

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        await ledger.revoke((tp.topic, tp.partition) for tp in revoked)

    revoked_signal: Any = app.on_partitions_revoked  # typed by mode for sync receivers only
    revoked_signal.connect(on_revoked)

    if rt.watcher is not None:
        watcher = rt.watcher

        @app.timer(rt.options.reload_interval, name="klaxon.reload")  # type: ignore[untyped-decorator,unused-ignore]
        async def reload_rules() -> None:
            await watcher.check()

    idle = GroupIdle(rt)

    @app.timer(GROUP_TICK, name="klaxon.groups")  # type: ignore[untyped-decorator,unused-ignore]
    async def close_groups() -> None:
        await idle.tick()

    @app.timer(rt.options.health_interval, name="klaxon.health")  # type: ignore[untyped-decorator,unused-ignore]
    async def health() -> None:
        logs.install()
        snapshot = health_now(app, rt)
        health_log.info(json.dumps(snapshot, sort_keys=True, separators=(",", ":")))
        if rt.options.status_file:
            await asyncio.to_thread(write_status, rt.options.status_file, snapshot)
        await watchdog_actions(app, rt)


#: Wall seconds between two checks of idle alert groups.
GROUP_TICK = 5.0


class GroupIdle:
    """Closes alert groups while no alert comes in: after ``idle_grace`` wall seconds without
    one, the grouper's event-time watermark follows the wall clock (as the stateful
    partitions' do), so a group's last update goes out even on a quiet cluster. Those
    updates are flushed by the commit timer like any alert; one lost in a crash costs an
    understated count, never a group's first alert."""

    def __init__(self, rt: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.clock = clock
        self.last = clock()
        self.seen = -1

    async def tick(self) -> None:
        rt, now = self.rt, self.clock()
        grouper = rt.grouper
        if grouper is None:
            return
        if grouper.stats["matches"] != self.seen:  # input came: the event time leads
            self.seen = grouper.stats["matches"]
            self.last = now
            return
        idle_for = now - self.last
        if idle_for < rt.settings.idle_grace:
            return
        alerts = grouper.advance(idle_for)
        self.last = now
        if not alerts:
            return
        out = [Outgoing(str(d["id"]).encode(), orjson.dumps(d), doc=d) for d in alerts]
        refused = 0
        for sink in rt.sinks:
            refused += await sink.send(out, Source(rt.settings.topic_alerts, None, None))
        rt.counters.alerts += len(out) - refused
        rt.counters.detect_dead_lettered += refused


async def flush_sinks(app: KlaxonApp, rt: Runtime) -> None:
    """The buffered events messages and the stateful detectors' pending state changes,
    the producer (events, dead letters, the alert topic, the state), then every other sink."""
    if rt.flush_events is not None:
        await rt.flush_events()
    if rt.stateful is not None:
        await rt.stateful.write_state()
    await app.producer.flush()
    for sink in rt.sinks:
        await sink.flush()


def worker_error(stage: str, exc: BaseException, value: bytes | None, source: Source) -> bytes:
    """The dead letter of a message whose processing raised (logged: it is a bug)."""
    log.error(
        "%s failed on %s:%s@%s: %r",
        stage,
        source.topic,
        source.partition,
        source.offset,
        exc,
        exc_info=exc,
    )
    return dead_letter_bytes(f"{stage} error: {describe_error(exc)}", value or b"", source)


def input_partitions(app: KlaxonApp, rt: Runtime) -> set[tuple[str, int]]:
    """The worker's assigned input partitions (not the state changelog, read at recovery)."""
    skip = rt.stateful.changelog if rt.stateful is not None else None
    try:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic != skip}
    except Exception:  # consumer not started or being rebalanced
        return set()


async def broker_answers(app: KlaxonApp, settings: Settings, timeout: float = 10.0) -> None:
    """Ask the worker's brokers for metadata with a new client (raises if none answers)."""
    from aiokafka import AIOKafkaClient

    bootstrap = ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        **settings.kafka_security.client_kwargs(),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    finally:
        await client.close()


async def watchdog_actions(app: KlaxonApp, rt: Runtime) -> None:
    """Start the next broker probe; seek stalled partitions back; exit if stalled, or with a
    wedged Kafka client, for too long."""
    dog, port = rt.watchdog, rt.port
    if dog is None or port is None:
        return
    # A probe that takes longer than two health intervals (2-5 s) counts as a broker outage.
    probe_timeout = min(5.0, max(2.0, 2 * rt.options.health_interval))
    dog.kick(input_partitions(app, rt), lambda tps: port.end_offsets(tps, probe_timeout))
    tables = getattr(app, "tables", None)
    paused = not getattr(tables, "actives_ready", True)  # streams paused on purpose
    if paused:  # a recovery that reads is no stall: count from when it last read
        nudge = rt.stateful.nudge if rt.stateful is not None else None
        since = nudge.progressed_at if nudge is not None else None
        dog.hold(dog.clock() if since is None else since)
    for (topic, partition), offset in ({} if paused else dog.to_rewind()).items():
        log.warning(
            "%s:%d: no commit for %.0fs with messages waiting: reading again from offset %d",
            topic,
            partition,
            dog.rewind_after,
            offset,
        )
        rt.counters.rewinds += 1
        try:
            await port.seek((topic, partition), offset)
        except Exception as exc:
            log.warning("cannot seek %s:%d: %r", topic, partition, exc)
    dog.check_client()
    reason = dog.exit_reason(dog.assess())
    if reason is not None:
        stalled = WorkerStalled(f"{reason}; exiting to be restarted")
        log.critical("%s", stalled)
        await app.crash(stalled)


def unready_reasons(app: KlaxonApp, rt: Runtime) -> list[str]:
    """Why the worker is not ready (empty: ready), from the watchdog's cached judgement:
    the broker answers its probe, input partitions are assigned, none is stalled, no send
    failed. As fresh as the last health tick (``--health-interval``)."""
    reasons: list[str] = []
    seen = rt.watchdog.assess() if rt.watchdog is not None else None
    if seen is None or seen.broker != "ok":
        reasons.append(f"broker {seen.broker if seen else 'unknown'}")
    elif seen.stalled:
        reasons.append(f"stalled for {seen.stalled_for:.0f}s: {', '.join(seen.stalled)}")
    if not input_partitions(app, rt):
        reasons.append("no input partitions assigned")
    if recovering(rt):
        left = recovery_remaining(rt)
        reasons.append(f"reading the detectors' state back ({left} changelog records left)")
    if rt.counters.send_errors:
        reasons.append("a send failed")
    return reasons


def recovering(rt: Runtime) -> bool:
    """Whether Faust is reading the detectors' state back from its changelog."""
    shell = rt.stateful
    return shell is not None and shell.nudge is not None and shell.nudge.under_way()


def recovery_remaining(rt: Runtime) -> int:
    """Changelog records the state recovery under way has still to read (0: none)."""
    shell = rt.stateful
    return shell.nudge.remaining() if shell is not None and shell.nudge is not None else 0


def health_now(app: KlaxonApp, rt: Runtime) -> dict[str, Any]:
    """The current health snapshot, from cached state only (never waits for the broker)."""
    rt.counters.handoff_hits = rt.handoff.hits
    rt.counters.handoff_misses = rt.handoff.misses
    shell = rt.stateful
    if shell is not None:
        rt.counters.stateful_errors = shell.processor.errors
        if shell.nudge is not None:
            rt.counters.recovery_nudges = shell.nudge.nudges
    if rt.ledger is not None:
        stats = rt.ledger.stats
        rt.counters.redelivered = stats.redelivered
        rt.counters.gaps = stats.gaps
        rt.counters.lost_to_retention = stats.lost_to_retention
        rt.counters.commit_failures = stats.commit_failures
    seen = rt.watchdog.assess() if rt.watchdog is not None else None
    snapshot = health_snapshot(
        rt.counters,
        lag=seen.lag if seen else {},
        since_last=rt.progress.since_last(),
        now=time.monotonic(),
        started=rt.started,
        rules=rt.holder.rules,
        interval=rt.options.health_interval,
        progress=rt.progress,
        sends_in_flight=len(app.delivery.pending),
        broker=seen.broker if seen else "unknown",
        broker_error=seen.broker_error if seen else None,
        stalled=seen.stalled if seen else [],
        stalled_for=seen.stalled_for if seen else 0.0,
        recovering=recovering(rt),
    )
    snapshot["recovery_remaining"] = recovery_remaining(rt)
    snapshot["metrics_url"] = rt.metrics_url
    if rt.grouper is not None:  # matches, sent, updates, folded, overflow (rate limit)
        snapshot["grouping"] = dict(rt.grouper.stats)
    snapshot["stages"] = rt.stages.per_event()  # CPU µs per normalised event, by stage
    return snapshot
