"""Write an intake's payloads to the raw topic, returning only once the broker acknowledged.

`RawTopicWriter` owns one aiokafka producer (``acks=all``; idempotence off by default because
Tansu refuses it). A payload is produced with the cluster name as its key (one cluster's
batches stay in one raw partition, in order, as `replay.producer` writes them) and the
``klaxon-cluster`` header (`schemas.keys.CLUSTER_HEADER`). `write` raises `IntakeUnavailable`
when the broker is not connected, refuses the message or does not answer in ``timeout``; the
producer's own ``request_timeout_ms`` is that timeout too, so a message whose send failed is
expired by aiokafka rather than delivered after the caller was told it failed.

The writer connects in the background and keeps trying (an intake must come up, and say it is
not ready, while the broker is down), and probes the broker's metadata every
``probe_interval`` seconds: `ready` is true only while the producer is started, the last probe
or send succeeded and both topics exist. Construction of the producer is in one function,
`make_producer`, so connection options (SASL/SSL) can be added in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.errors import IntakeUnavailable
from pipeline.sources.base import RawPayload
from schemas.keys import CLUSTER_HEADER, DEFAULT_CLUSTER

__all__ = ["RawTopicWriter", "make_producer"]

log = logging.getLogger("klaxon.intake")

#: Largest message the producer accepts (the broker's default ``max.message.bytes`` is 1 MiB).
MAX_REQUEST_BYTES = 1024 * 1024


def make_producer(
    bootstrap: str,
    *,
    timeout: float,
    idempotent: bool = False,
    linger_ms: int = 0,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    client_options: Mapping[str, Any] | None = None,
) -> Any:
    """The intake's ``AIOKafkaProducer`` (not started): ``acks=all``, no retries beyond
    ``timeout`` seconds. The one place that builds it; ``client_options`` are the connection's
    TLS/SASL arguments (`pipeline.security.KafkaSecurity.client_kwargs`)."""
    from aiokafka import AIOKafkaProducer

    ms = max(1, int(timeout * 1000))
    return AIOKafkaProducer(
        **dict(client_options or {}),
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=linger_ms,
        max_batch_size=max_request_bytes,
        max_request_size=max_request_bytes,
        request_timeout_ms=ms,
        retry_backoff_ms=100,
        metadata_max_age_ms=max(ms, 5000),
    )


class RawTopicWriter:
    """Produces payloads to ``topic`` and dead letters to ``deadletter``, acknowledged by all
    in-sync replicas. Start with `start` (returns at once; connects in the background)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        deadletter: str,
        *,
        timeout: float = 10.0,
        idempotent: bool = False,
        probe_interval: float = 2.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_options = dict(client_options or {})
        self.topic = topic
        self.deadletter = deadletter
        self.timeout = timeout
        self.idempotent = idempotent
        self.probe_interval = probe_interval
        self.max_request_bytes = max_request_bytes
        self._producer: Any = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.written = 0

    @property
    def ready(self) -> bool:
        """Connected: the producer is started, the last probe or send succeeded, topics exist."""
        return self._producer is not None and self._ready

    async def start(self) -> None:
        """Start connecting (in the background) and probing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="klaxon-intake-writer")

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for `ready` (tests, start-up logs)."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready

    async def stop(self) -> None:
        """Stop probing and close the producer (waits for messages in flight)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        producer, self._producer, self._ready = self._producer, None, False
        if producer is not None:
            await producer.stop()

    async def _run(self) -> None:
        while True:
            if self._producer is None:
                await self._connect()
            else:
                await self._probe()
            await asyncio.sleep(self.probe_interval)

    async def _connect(self) -> None:
        from aiokafka.errors import KafkaError

        producer = make_producer(
            self.bootstrap,
            timeout=self.timeout,
            idempotent=self.idempotent,
            max_request_bytes=self.max_request_bytes,
            client_options=self.client_options,
        )
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._failed(f"cannot connect to Kafka at {self.bootstrap}: {exc!r}")
            with contextlib.suppress(Exception):
                await producer.stop()
            return
        self._producer = producer
        log.info("intake producer connected to %s", self.bootstrap)
        await self._probe()

    async def _probe(self) -> None:
        from aiokafka.errors import KafkaError

        try:
            metadata = await asyncio.wait_for(
                self._producer.client.fetch_all_metadata(), self.timeout
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            self._failed(f"Kafka at {self.bootstrap} does not answer: {exc!r}")
            return
        missing = [t for t in (self.topic, self.deadletter) if t not in metadata.topics()]
        if missing:
            self._failed(f"topic(s) {', '.join(missing)} do not exist (klaxon topics create)")
            return
        if not self._ready:
            log.info("intake ready: %s and %s on %s", self.topic, self.deadletter, self.bootstrap)
        self._ready, self.last_error = True, None

    def _failed(self, why: str) -> None:
        if self._ready or why != self.last_error:
            log.warning("intake not ready: %s", why)
        self._ready, self.last_error = False, why

    async def write(
        self, payloads: Sequence[RawPayload], dead_letters: Sequence[bytes] = ()
    ) -> None:
        """Produce ``payloads`` (key and header: their cluster) and ``dead_letters``; return
        when the broker acknowledged every one, else raise `IntakeUnavailable`.

        All are sent before any is awaited, so one request's messages go out together.
        """
        from aiokafka.errors import KafkaError

        producer = self._producer
        if producer is None:
            raise IntakeUnavailable(self.last_error or "not connected to Kafka yet")
        try:
            futures = [await self._send(producer, self.topic, p) for p in payloads]
            futures += [await producer.send(self.deadletter, d) for d in dead_letters]
            # aiokafka expires a batch it could not deliver after request_timeout_ms; the
            # margin only guards against a future that never resolves.
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout * 2 + 1)
        except (KafkaError, TimeoutError) as exc:
            self._failed(f"Kafka did not acknowledge: {exc!r}")
            raise IntakeUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc
        self._ready = True
        self.written += len(payloads)

    @staticmethod
    async def _send(producer: Any, topic: str, payload: RawPayload) -> Any:
        cluster = (payload.cluster or DEFAULT_CLUSTER).encode()
        return await producer.send(
            topic, payload.payload, key=cluster, headers=[(CLUSTER_HEADER, cluster)]
        )
