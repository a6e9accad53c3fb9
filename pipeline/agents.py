"""The worker's agents and timers, wired onto a `KlaxonApp` (thin shell over `processing`).

- ``klaxon.normalise``: raw topic -> `processing.normalise_message` -> one events message
  per partition of the ``cluster|user`` key, and dead letters.
- ``klaxon.detect``: events topic -> `processing.detect_message` with the current engine ->
  alerts (key = alert id) and dead letters.
- timers: rule hot reload (`reload.RuleWatcher`) and the health line / status file.

Both agents run with ``concurrency=1`` (Faust may commit past in-flight messages otherwise,
faust-streaming #606), queue their output with ``topic.send`` (never ``send_and_wait``; the
producer batches) and never raise on input: bad input becomes a dead letter. A send that
fails poisons the `DeliveryGuard` and crashes the worker, so no offset is committed past it.
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


def install_agents(app: KlaxonApp, rt: Runtime) -> None:
    """Add the normalise and detect agents and the reload and health timers to ``app``."""
    s = rt.settings
    raw_topic = app.topic(s.topic_raw)
    events_topic = app.topic(s.topic_events)
    alerts_topic = app.topic(s.topic_alerts)
    dead_topic = app.topic(s.topic_deadletter)
    guard = app.delivery
    counters = rt.counters

    async def send_all(topic: Any, outgoing: list[Outgoing], dead: list[bytes]) -> None:
        try:
            for out in outgoing:
                guard.track(await topic.send(key=out.key, value=out.value, partition=out.partition))
            for letter in dead:
                guard.track(await dead_topic.send(value=letter))
        except Exception as exc:  # not queued: stop before any commit covers this message
            counters.send_errors += 1
            guard.poison(exc)
            log.critical("cannot produce to Kafka, stopping the worker: %r", exc)
            await app.crash(exc)
            raise

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
            await send_all(events_topic, result.messages, result.dead_letters)
            rt.progress.mark(msg.topic, msg.partition, msg.offset)

    @app.agent(events_topic, concurrency=1, name="klaxon.detect")
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            result = detect_message(
                event.value,
                Source(msg.topic, msg.partition, msg.offset),
                rt.holder.engine,
                rt.to_alert,
            )
            counters.add_detect(
                events=result.events, alerts=len(result.alerts), dead=len(result.dead_letters)
            )
            await send_all(alerts_topic, result.alerts, result.dead_letters)
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
    return health_snapshot(
        rt.counters,
        lag=lag,
        since_last=rt.progress.since_last(),
        now=time.monotonic(),
        started=rt.started,
        rules=rt.holder.rules,
        interval=rt.options.health_interval,
        progress=rt.progress,
    )
