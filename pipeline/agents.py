"""The worker's agents and timers, wired onto a `KlaxonApp` (thin shell over `processing`).

- ``klaxon.normalise``: raw topic -> `processing.normalise_message` -> one events message
  per partition of the ``cluster|user`` key, and dead letters.
- ``klaxon.detect``: events topic -> `processing.detect_message` with the current engine ->
  alerts (key = alert id) and dead letters.
- timers: rule hot reload (`reload.RuleWatcher`) and the health line / status file.

Both agents run with ``concurrency=1`` (Faust may commit past in-flight messages otherwise,
faust-streaming #606), queue their output straight into the aiokafka producer that Faust
flushes before every commit (never ``send_and_wait``; the producer batches) and never raise
on input: bad input becomes a dead letter. A send that fails poisons the `DeliveryGuard` and
crashes the worker, so no offset is committed past it. Events batches the normalise agent
encodes for partitions this worker consumes are also kept parsed in `pipeline.handoff`, so
the detect agent usually skips parsing them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.app import KlaxonApp, WorkerOptions
from pipeline.config import Settings
from pipeline.handoff import Handoff
from pipeline.metrics import Counters, Progress, health_snapshot, lag_by_partition
from pipeline.processing import Outgoing, Source, detect_message, normalise_message
from pipeline.reload import EngineHolder, RuleWatcher

__all__ = ["CLUSTER_HEADER", "Runtime", "install_agents", "write_status"]

#: Raw-message header naming the cluster of events whose envelope names none.
CLUSTER_HEADER = "klaxon-cluster"

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


def header_value(headers: Any, name: str) -> str | None:
    """A header's value as text from Faust's header list or mapping (None if absent).

    >>> header_value([("klaxon-cluster", b"prod")], "klaxon-cluster")
    'prod'
    >>> header_value(None, "klaxon-cluster") is None
    True
    """
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name and value:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


def write_status(path: str, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` as JSON to ``path`` atomically (temp file + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=target.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(snapshot, fh, indent=1, sort_keys=True)
    os.replace(tmp, target)


def aiokafka_producer(app: KlaxonApp) -> Any:
    """The started ``AIOKafkaProducer`` inside Faust's producer (raises if not started)."""
    producer: Any = app.producer
    return producer._ensure_producer()


def install_agents(app: KlaxonApp, rt: Runtime) -> None:
    """Add the normalise and detect agents and the reload and health timers to ``app``."""
    s = rt.settings
    raw_topic = app.topic(s.topic_raw)
    events_topic = app.topic(s.topic_events)
    guard = app.delivery
    counters = rt.counters
    handoff = rt.handoff
    from pipeline.tables import install_stateful

    rt.stateful = install_stateful(app, rt)  # state table, by-group agent, timer

    async def send_all(topic: str, outgoing: list[Outgoing], dead: list[bytes]) -> None:
        """Queue ``outgoing`` to ``topic`` and ``dead`` to the dead-letter topic.

        Straight into the aiokafka producer that Faust started and flushes before each
        commit: Faust's own ``Topic.send`` adds ~40 µs of bookkeeping per message (we use
        none of its callbacks), which at one message per alert was a fifth of the worker.
        """
        try:
            send = aiokafka_producer(app).send
            track = guard.track
            for out in outgoing:
                track(await send(topic, out.value, key=out.key, partition=out.partition))
            for letter in dead:
                track(await send(s.topic_deadletter, letter))
        except Exception as exc:  # not queued: stop before any commit covers this message
            counters.send_errors += 1
            guard.poison(exc)
            log.critical("cannot produce to Kafka, stopping the worker: %r", exc)
            await app.crash(exc)
            raise

    def consumed_events_partitions() -> set[int]:
        """Events partitions this worker's detect agent reads (handoff is pointless for others)."""
        try:
            return {tp.partition for tp in app.consumer.assignment() if tp.topic == s.topic_events}
        except Exception:  # consumer not started or being rebalanced: just skip the handoff
            return set()

    @app.agent(raw_topic, concurrency=1, name="klaxon.normalise")
    async def normalise(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            cluster = header_value(msg.headers, CLUSTER_HEADER) or s.cluster
            result = normalise_message(
                event.value,
                Source(msg.topic, msg.partition, msg.offset),
                partitions=rt.events_partitions,
                cluster=cluster,
            )
            counters.add_normalise(
                events_in=result.events_in,
                normalised=result.normalised,
                dead=len(result.dead_letters),
                filtered=result.filtered,
                messages_out=len(result.messages),
            )
            await send_all(s.topic_events, result.messages, result.dead_letters)
            if handoff.max_events and result.messages:
                ours = consumed_events_partitions()
                for out in result.messages:
                    if out.events is not None and out.partition in ours:
                        handoff.put(out.value, out.events)
            rt.progress.mark(msg.topic, msg.partition, msg.offset)

    @app.agent(events_topic, concurrency=1, name="klaxon.detect")
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            engine = rt.holder.engine  # the next line wraps it (feeds, filters)
            engine = rt.stateful.bind(engine, msg) if rt.stateful else engine
            result = detect_message(
                event.value,
                Source(msg.topic, msg.partition, msg.offset),
                engine,
                rt.to_alert,
                decoded=handoff.take(event.value) if handoff.max_events else None,
            )
            counters.add_detect(
                events=result.events, alerts=len(result.alerts), dead=len(result.dead_letters)
            )
            await send_all(s.topic_alerts, result.alerts, result.dead_letters)
            if rt.stateful is not None:  # its alerts, then its state
                await rt.stateful.finish(msg)
            rt.progress.mark(msg.topic, msg.partition, msg.offset)

    if rt.watcher is not None:
        watcher = rt.watcher

        @app.timer(rt.options.reload_interval, name="klaxon.reload")  # type: ignore[untyped-decorator,unused-ignore]
        async def reload_rules() -> None:
            await watcher.check()

    @app.timer(rt.options.health_interval, name="klaxon.health")  # type: ignore[untyped-decorator,unused-ignore]
    async def health() -> None:
        snapshot = await health_now(app, rt)
        health_log.info(json.dumps(snapshot, sort_keys=True, separators=(",", ":")))
        if rt.options.status_file:
            await asyncio.to_thread(write_status, rt.options.status_file, snapshot)


async def health_now(app: KlaxonApp, rt: Runtime) -> dict[str, Any]:
    """The current health snapshot: counters, per-partition lag, seconds since last message."""
    lag: dict[str, int] = {}
    try:
        consumer = app.consumer
        tps = sorted(consumer.assignment())
        if rt.stateful is not None:  # the state changelog is read only at recovery
            tps = [tp for tp in tps if tp.topic != rt.stateful.changelog]
        if tps:
            highs = await consumer.highwaters(*tps)
            positions: dict[tuple[str, int], int | None] = {}
            for tp in tps:
                if (tp.topic, tp.partition) not in rt.progress.offsets:
                    positions[(tp.topic, tp.partition)] = await consumer.position(tp)
            lag = lag_by_partition(
                {(tp.topic, tp.partition): int(h) for tp, h in highs.items()},
                rt.progress.offsets,
                positions,
            )
    except Exception as exc:  # health must not take the worker down; say why lag is missing
        log.warning("cannot read consumer lag: %r", exc)
    rt.counters.handoff_hits = rt.handoff.hits
    rt.counters.handoff_misses = rt.handoff.misses
    return health_snapshot(
        rt.counters,
        lag=lag,
        since_last=rt.progress.since_last(),
        now=time.monotonic(),
        started=rt.started,
        rules=rt.holder.rules,
        interval=rt.options.health_interval,
        progress=rt.progress,
        sends_in_flight=len(app.delivery.pending),
    )
