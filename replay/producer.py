"""Write audit events to the raw topic in batches: the same path live shippers use.

Replay only produces to the raw topic; the worker does everything else, so a replayed file
and a live cluster go through one code path. The producer is plain aiokafka with batching
(``linger_ms``), ``acks=all`` and no idempotence (the embedded Tansu broker rejects
idempotent producers). Reading and batching run in a thread, so the event loop only sends.
TLS and SASL arrive as ready aiokafka keyword arguments (``client_options``): `replay` does
not read settings itself (``klaxon replay`` passes `pipeline.security.KafkaSecurity`'s).

>>> s = EventTimeSchedule(speed=2.0)
>>> [s(i, e) for i, e in enumerate([b'{"stageTimestamp":"2024-01-01T00:00:00Z"}', b'{}',
...                                  b'{"stageTimestamp":"2024-01-01T00:00:10Z"}'])]
[0.0, 0.0, 5.0]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay.errors import ReplayConnectError, ReplayDeliveryError
from replay.reader import MAX_PAYLOAD_BYTES, Batch, event_time, iter_batches, iter_events
from schemas.keys import CLUSTER_HEADER

__all__ = [
    "CLUSTER_HEADER",
    "EventTimeSchedule",
    "ReplayStats",
    "rate_schedule",
    "replay_events",
    "replay_files",
]

#: Header telling the worker which cluster the events come from (see `pipeline.agents`).
_MAX_IN_FLIGHT = 256


@dataclass(frozen=True)
class ReplayStats:
    """What one replay wrote."""

    events: int
    messages: int
    bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else float(self.events)


def rate_schedule(rate: float) -> Callable[[int, bytes], float]:
    """Event ``i`` is due at ``i / rate`` seconds.

    >>> rate_schedule(100)(50, b"")
    0.5
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    return lambda index, _event: index / rate


class EventTimeSchedule:
    """Events are due as far apart as their timestamps, divided by ``speed``; events without
    a timestamp are due with the previous one, and time never goes backwards."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start: float | None = None
        self._last = 0.0

    def __call__(self, _index: int, event: bytes) -> float:
        t = event_time(event)
        if t is not None:
            if self._start is None:
                self._start = t
            self._last = max(self._last, (t - self._start) / self.speed)
        return self._last


def _chain_files(paths: Sequence[Path]) -> Iterator[bytes]:
    for path in paths:
        yield from iter_events(path)


async def replay_events(
    events: Iterable[bytes],
    *,
    bootstrap: str,
    topic: str,
    max_events: int = 200,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    schedule: Callable[[int, bytes], float] | None = None,
    cluster: str | None = None,
    linger_ms: int = 10,
    client_options: Mapping[str, Any] | None = None,
) -> ReplayStats:
    """Produce ``events`` to ``topic`` as JSON-lines batches; waits until all are acknowledged.

    ``client_options`` are more ``AIOKafkaProducer`` arguments: the connection's security
    (``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
    ``sasl_plain_password``). Raises `ReplayConnectError` if the broker cannot be reached
    (or refuses the TLS handshake or the credentials), `ReplayDeliveryError` if it refuses a
    message; errors of the input (`ReplayInputError`) surface while reading.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    headers = [(CLUSTER_HEADER, cluster.encode())] if cluster else None
    # One key per replayed source: its batches stay in one raw partition, in file order, as a
    # cluster's own audit sink would write them. Stateful detections then see each principal's
    # events in time order however fast the replay runs; normalising is cheap, and detection is
    # spread over the events partitions by principal anyway.
    key = (cluster or "replay").encode()
    batches = iter_batches(events, max_events=max_events, max_bytes=max_bytes, schedule=schedule)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        max_batch_size=1024 * 1024,
        max_request_size=1024 * 1024,
        request_timeout_ms=30_000,
        **(client_options or {}),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ReplayConnectError(f"cannot connect to Kafka at {bootstrap}: {exc!r}") from exc
    sent_events = sent_messages = sent_bytes = 0
    pending: list[asyncio.Future[Any]] = []
    started = time.monotonic()
    try:
        while True:
            batch: Batch | None = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            if batch.due is not None:
                wait = batch.due - (time.monotonic() - started)
                if wait > 0:
                    await producer.flush()
                    await asyncio.sleep(wait)
            try:
                pending.append(await producer.send(topic, batch.payload, key=key, headers=headers))
            except KafkaError as exc:
                raise ReplayDeliveryError(
                    f"cannot send a {len(batch.payload)}-byte batch of {batch.events} events"
                    f" (after {sent_events} events) to {topic}: {exc!r}"
                ) from exc
            sent_events += batch.events
            sent_messages += 1
            sent_bytes += len(batch.payload)
            if len(pending) >= _MAX_IN_FLIGHT:
                await _settle(pending, topic)
        await _settle(pending, topic)
    finally:
        await producer.stop()
    return ReplayStats(sent_events, sent_messages, sent_bytes, time.monotonic() - started)


async def _settle(pending: list[asyncio.Future[Any]], topic: str) -> None:
    """Wait for in-flight sends; raise `ReplayDeliveryError` if any was refused."""
    results = await asyncio.gather(*pending, return_exceptions=True)
    pending.clear()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise ReplayDeliveryError(
            f"{len(failed)} batch(es) were not accepted by {topic}: {failed[0]!r}"
        )


async def replay_files(
    paths: Sequence[str | Path], *, bootstrap: str, topic: str, **kwargs: Any
) -> ReplayStats:
    """`replay_events` over the events of several files, in order."""
    return await replay_events(
        _chain_files([Path(p) for p in paths]), bootstrap=bootstrap, topic=topic, **kwargs
    )
