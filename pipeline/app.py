"""The Faust application: settings chosen for a fast, safe single worker (read from the source).

Choices, each checked against faust-streaming 0.15.3's code:

- Values are raw bytes (``value_serializer='raw'``); agents parse with orjson themselves.
- No web server (``web_enabled=False``): its ``/table`` endpoint serves table data.
- Topics are never declared by Faust (``topic_allow_declare=False``) and there is no leader
  topic (``topic_disable_leader=True``); `pipeline.topics.ensure_topics` creates ours up
  front, including the state table's changelog with the events topic's partition count
  (`pipeline.topics.stateful_topic_specs`).
- Fast start: the ~30 s from start to first event is the group join, which the broker holds
  for a time tied to the session timeout (Tansu answers JoinGroup after session_timeout/2;
  Kafka's ``group.initial.rebalance.delay.ms`` is 0 on ours). We use a 6 s session (Kafka's
  minimum allowed by default), 1 s heartbeats and a 20 s rebalance timeout: a single worker
  starts in ~4 s on Tansu, ~1-2 s on Kafka. ``TableManager.on_start`` sleeps a fixed 1 s.
- Batches: messages carry up to hundreds of events, so the stream buffer (256) and poll size
  (200) count messages, not events: 64/64 starved the agents (measured ~6-8k events/s against
  ~10-11k with 200/256, 30k events, 80 rules); the worst case is 256 x 0.9 MB per topic of
  buffered input, typically ~50 MB. Commits happen every second.
- At-least-once: Faust does not commit the input topics (declared with ``acks=False``); the
  worker's `pipeline.offsets.OffsetLedger` admits each message in offset order and commits
  processed offsets after ``producer.flush()``, so a commit never covers output still in
  memory. aiokafka's ``flush`` does not report failed deliveries, though; `DeliveryGuard`
  makes the flush raise if any send failed, which crashes the worker before it commits (the
  input is processed again).
- Fetches wait at most 100 ms for data (Faust fixes 1.5 s, which Tansu always waits out):
  see `KlaxonApp._new_consumer`.
- Keys are placed with `pipeline.routing.partitioner` (Kafka's murmur2, 2x faster than
  aiokafka's pure-Python one; every alert key is hashed).
- TLS and SASL come from `pipeline.security.KafkaSecurity` as ``broker_credentials``
  (``SASLCredentials``/``SSLCredentials``), which Faust's aiokafka driver turns into the
  same ``security_protocol``/``ssl_context``/``sasl_*`` arguments for every client it makes
  (worker consumer, producer, client consumer); ``ssl_context`` is left unset (Faust would
  otherwise force ``security_protocol=SSL`` into the producer's defaults).
- No idempotent or transactional producer (Tansu rejects both; exactly-once is unreliable
  in Faust): duplicates after a crash carry the same deterministic alert id.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.tables import TableManager

from pipeline.config import Settings, WorkerOptions
from pipeline.errors import DeliveryError
from pipeline.routing import partitioner

__all__ = ["DeliveryGuard", "KlaxonApp", "WorkerOptions", "create_app", "faust_broker_urls"]


def faust_broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs for a Kafka bootstrap list.

    >>> faust_broker_urls("k1:9092,k2:9092")
    ['kafka://k1:9092', 'kafka://k2:9092']
    """
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


@dataclass
class DeliveryGuard:
    """Tracks produced messages; `check` raises `DeliveryError` if any failed to be delivered.

    Installed in the producer's ``flush``, which Faust awaits right before every offset
    commit, so a failed send stops all further commits (and the worker) instead of being
    logged and committed past.
    """

    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    failures: list[BaseException] = field(default_factory=list)

    def track(self, fut: Awaitable[Any]) -> None:
        """Watch the future returned by a send."""
        if not isinstance(fut, asyncio.Future):
            fut = asyncio.ensure_future(fut)
        self.pending.add(fut)
        fut.add_done_callback(self._done)

    def poison(self, exc: BaseException) -> None:
        """Record a send that failed before it was queued."""
        self.failures.append(exc)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self.pending.discard(fut)
        if fut.cancelled():
            self.failures.append(asyncio.CancelledError("send cancelled"))
        elif fut.exception() is not None:
            self.failures.append(fut.exception())  # type: ignore[arg-type]

    async def check(self) -> None:
        """Wait for tracked sends; raise `DeliveryError` if any send ever failed."""
        if self.pending:
            await asyncio.wait(list(self.pending))
        if self.failures:
            raise DeliveryError(
                f"{len(self.failures)} message(s) were not delivered; not committing offsets"
                f" (first: {self.failures[0]!r})"
            )


class ReadOffsets(defaultdict[Any, "int | None"]):
    """Faust's per-partition *read offsets*, reported as unknown for ``topics``.

    Faust's fetch loop drops every fetched message whose offset is below the partition's read
    offset, and it sets the read offset even for a message whose hand-off to the stream it
    abandoned for a rebalance, so messages read again after a seek back (ours, or its own
    seek to the committed offset) can be dropped until a newer offset comes, and a partition
    whose newest messages were dropped this way is stranded. For the worker's input topics
    the `pipeline.offsets.OffsetLedger` does this job exactly, so Faust passes every message.

    >>> from faust.types import TP
    >>> r = ReadOffsets({"raw"}); r[TP("raw", 0)] = 9; r[TP("other", 0)] = 9
    >>> r[TP("raw", 0)], r[TP("other", 0)], r[TP("other", 1)]
    (None, 9, None)
    """

    def __init__(self, topics: set[str]) -> None:
        super().__init__(lambda: None)
        self.topics = topics

    def __getitem__(self, tp: Any) -> int | None:
        if tp.topic in self.topics:
            return None
        return super().__getitem__(tp)


class PromptTableManager(TableManager):  # type: ignore[misc,unused-ignore]  # faust is untyped
    """Faust's table manager without the one-second sleep it starts with (to let tables be
    declared late: ours are all declared by `pipeline.agents.install_agents` before the app
    starts, and Faust refuses any declared later). A second of every start-up."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class KlaxonApp(faust.App):  # type: ignore[misc,unused-ignore]  # faust is untyped
    """`faust.App` whose producer's ``flush`` also checks the `DeliveryGuard`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivery = DeliveryGuard()
        self.ledger_topics = set()

    #: Longest a fetch may wait for data (seconds); set by `create_app`.
    fetch_max_wait: float = 0.05
    #: Topics whose offsets the worker tracks and commits itself (`pipeline.offsets`); Faust
    #: neither commits them nor filters their messages by its read offsets. Filled in by
    #: `pipeline.agents.install_agents` before the consumer starts.
    ledger_topics: set[str]

    def _new_consumer(self) -> Any:
        """Faust's consumer, with ``fetch_max_wait_ms`` lowered from Faust's fixed 1500.

        Tansu answers a fetch only when its max wait expires (measured: 40-750 ms of latency
        per message at 1500; produce -> consume median 115 ms at 500, 17 ms at 100, 6 ms at
        50 and at 20), and the detect agent reads what the normalise agent just wrote, so
        every hop would cost up to the wait. Kafka answers as soon as data arrives either way
        (3-5 ms at any of these); the lower wait only adds idle fetches (20/s) when there is
        none.
        """
        consumer: Any = super()._new_consumer()
        thread = consumer._thread
        create = thread._create_worker_consumer
        wait_ms = int(self.fetch_max_wait * 1000)

        def create_worker_consumer(transport: Any) -> Any:
            aio = create(transport)
            aio._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start() for its Fetcher
            return aio

        setattr(thread, "_create_worker_consumer", create_worker_consumer)  # noqa: B010
        consumer._read_offset = ReadOffsets(self.ledger_topics)
        return consumer

    #: Whether the producer is idempotent (`WorkerOptions.idempotent`); set by `create_app`.
    idempotent: bool = False

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        if self.idempotent:  # Faust only asks for it inside transactions, which we do not use
            setattr(producer, "_settings_extra", lambda: {"enable_idempotence": True})  # noqa: B010
        original_flush = producer.flush
        guard = self.delivery

        async def flush() -> None:
            await original_flush()
            await guard.check()

        setattr(producer, "flush", flush)  # noqa: B010 - instance override, not a typo
        return producer


def create_app(
    settings: Settings, options: WorkerOptions | None = None, *, bootstrap: str | None = None
) -> KlaxonApp:
    """A configured, agent-less Faust app for ``settings`` (add agents with `install_agents`).

    >>> app = create_app(Settings(bootstrap_servers="127.0.0.1:9092"))
    >>> app.conf.web_enabled, app.conf.topic_allow_declare, app.conf.processing_guarantee.value
    (False, False, 'at_least_once')
    """
    opts = options or WorkerOptions()
    servers = bootstrap or settings.bootstrap_servers
    if not servers:
        raise ValueError("create_app needs bootstrap servers (settings or bootstrap=)")
    app = KlaxonApp(
        settings.app_id,
        broker=faust_broker_urls(servers),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        table_standby_replicas=0,
        store="memory://",
        TableManager=PromptTableManager,
        datadir=str(settings.data_dir / "faust"),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=opts.session_timeout,
        broker_heartbeat_interval=opts.heartbeat_interval,
        broker_rebalance_timeout=opts.rebalance_timeout,
        broker_commit_interval=opts.commit_interval,
        broker_max_poll_records=opts.max_poll_records,
        stream_buffer_maxsize=opts.stream_buffer_maxsize,
        producer_linger=opts.producer_linger,
        producer_acks=-1,
        producer_max_batch_size=1024 * 1024,
        producer_max_request_size=1024 * 1024,
        producer_partitioner=partitioner,
        worker_redirect_stdouts=False,
        # TLS/SASL: Faust hands these to aiokafka for its consumer, producer and client
        # consumer alike (`credentials_to_aiokafka_auth`); None is PLAINTEXT.
        broker_credentials=settings.kafka_security.faust_credentials(),
    )
    app.fetch_max_wait = opts.fetch_max_wait
    app.idempotent = opts.idempotent
    return app
