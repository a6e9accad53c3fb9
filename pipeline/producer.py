"""Producing from the worker: straight into the aiokafka producer Faust flushes before commits.

`Sender` queues a message's outputs (events messages, alerts, dead letters) and turns an
output too large to produce into a dead letter; `aiokafka_producer` is the one place that
reaches into Faust's producer.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.app import KlaxonApp
from pipeline.metrics import Counters
from pipeline.processing import Outgoing, Source, dead_letter_bytes

__all__ = ["Sender", "aiokafka_producer", "too_large"]

log = logging.getLogger("klaxon.worker")


def aiokafka_producer(app: KlaxonApp) -> Any:
    """The started ``AIOKafkaProducer`` inside Faust's producer (raises if not started)."""
    producer: Any = app.producer
    return producer._ensure_producer()


class Sender:
    """Queues a message's outputs into the producer Faust flushes before every commit.

    Straight into aiokafka's producer: Faust's own ``Topic.send`` adds ~40 µs of bookkeeping
    per message (we use none of its callbacks), which at one message per alert was a fifth of
    the worker. An output the broker would refuse for its size (over ``max_bytes``, or refused
    by the producer as too large) becomes a dead letter instead: one oversized message must
    not block its partition. Any other failure to queue poisons the `DeliveryGuard` and stops
    the worker before a commit covers the input.
    """

    def __init__(self, app: KlaxonApp, counters: Counters, deadletter: str, max_bytes: int) -> None:
        self.app = app
        self.counters = counters
        self.deadletter = deadletter
        self.max_bytes = max_bytes

    async def send(
        self, topic: str, outgoing: list[Outgoing], dead: list[bytes], source: Source
    ) -> int:
        """Queue ``outgoing`` to ``topic`` and ``dead`` to the dead-letter topic; returns how
        many outputs were turned into dead letters for their size."""
        from aiokafka.errors import MessageSizeTooLargeError

        refused = 0
        letters = list(dead)
        try:
            send = aiokafka_producer(self.app).send
            track = self.app.delivery.track
            for out in outgoing:
                if len(out.value) > self.max_bytes:
                    refused += 1
                    letters.append(too_large(out.value, topic, self.max_bytes, source))
                    continue
                try:
                    fut = await send(
                        topic, out.value, key=out.key, partition=out.partition, headers=out.headers
                    )
                    track(fut)
                except MessageSizeTooLargeError as exc:
                    refused += 1
                    letters.append(too_large(out.value, topic, self.max_bytes, source, exc))
            for letter in letters:
                track(await send(self.deadletter, letter))
        except Exception as exc:  # not queued: stop before any commit covers this message
            self.counters.send_errors += 1
            self.app.delivery.poison(exc)
            log.critical("cannot produce to Kafka, stopping the worker: %r", exc)
            await self.app.crash(exc)
            raise
        return refused

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged; raises `DeliveryError` if a send
        failed (the app's producer checks its `DeliveryGuard`)."""
        await self.app.producer.flush()


def too_large(
    value: bytes, topic: str, limit: int, source: Source, exc: BaseException | None = None
) -> bytes:
    """The dead letter of an output too large to produce (original truncated)."""
    why = f" ({type(exc).__name__})" if exc is not None else ""
    reason = f"output for {topic} of {len(value)} bytes exceeds the {limit}-byte limit{why}"
    return dead_letter_bytes(reason, value, source)
