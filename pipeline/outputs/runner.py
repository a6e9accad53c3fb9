"""Run outputs: read the alert topic per output, filter, batch, deliver, retry, commit.

For each output, one aiokafka consumer in its own group (``<app id>-output-<name>``, or the
output's ``group_id``) with auto-commit off. A batch of records is read, decoded and filtered;
the wanted alerts go to the output in chunks (``batch.max_alerts`` / ``max_bytes``). A chunk
the output cannot take now is retried with exponential backoff until it is taken (forever by
default); alerts the output refuses for good, records that are not alerts, and (with
``retry.max_attempts``) alerts it never took become dead letters (`schemas.deadletter`,
reason naming the output, original bytes, topic/partition/offset) on the dead-letter topic,
written with ``acks=all`` and acknowledged. Only then are the batch's offsets committed: a
crash or a stop at any point re-reads from the last commit, so nothing is lost (an alert may
be sent twice; Elasticsearch ignores the second by id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import OutputUnavailable
from pipeline.outputs.base import Delivery, Output
from pipeline.processing import Source, dead_letter_bytes

__all__ = ["OutputRunner", "OutputStats", "Record"]

log = logging.getLogger("klaxon.outputs")


class Stopping(Exception):
    """The runner was asked to stop while waiting to retry: leave without committing."""


@dataclass(frozen=True, slots=True)
class Record:
    """One alert-topic record: where it was and its bytes (all a dead letter needs)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class OutputStats:
    """Counters of one output (logged on stop, read by tests)."""

    read: int = 0
    filtered: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0
    last_error: str = ""
    delays: list[float] = field(default_factory=list)


class OutputRunner:
    """Deliver the records of the alert topic to one output (Kafka-agnostic core).

    ``dead_letter([(record, letter bytes)], output name)`` writes them and returns once they
    are acknowledged; `run_outputs` (below) wires the consumer. `handle` is what tests drive:
    records in, returns when every record is delivered, filtered out or dead-lettered.
    """

    def __init__(
        self,
        output: Output,
        dead_letter: Callable[[list[tuple[Record, bytes]], str], Awaitable[None]],
        stop: asyncio.Event | None = None,
    ) -> None:
        self.output = output
        self.config = output.config
        self.dead_letter = dead_letter
        self.stop = stop or asyncio.Event()
        self.stats = OutputStats()

    async def handle(self, http: Any, records: Sequence[Record]) -> None:
        """Deliver, filter or dead-letter every record (raises Stopping if asked to stop)."""
        letters: list[tuple[Record, str]] = []
        wanted: list[tuple[Record, dict[str, Any]]] = []
        for record in records:
            self.stats.read += 1
            try:
                alert = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                alert = None
            if not isinstance(alert, dict):
                letters.append((record, "not an alert (JSON object expected)"))
            elif self.config.wants(alert):
                wanted.append((record, alert))
            else:
                self.stats.filtered += 1
        await self._dead_letters(letters)
        for chunk in self._chunks(wanted):
            await self._deliver(http, chunk)

    def _chunks(
        self, items: list[tuple[Record, dict[str, Any]]]
    ) -> list[list[tuple[Record, dict[str, Any]]]]:
        """Chunks of at most ``max_alerts`` alerts and (by their native size) ``max_bytes``."""
        batch = self.config.batch
        chunks: list[list[tuple[Record, dict[str, Any]]]] = []
        size = 0
        for item in items:
            if (
                not chunks
                or len(chunks[-1]) >= batch.max_alerts
                or (size + len(item[0].value) > batch.max_bytes and chunks[-1])
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(item[0].value)
        return chunks

    async def _deliver(self, http: Any, chunk: list[tuple[Record, dict[str, Any]]]) -> None:
        pending = chunk
        attempt = 0
        while pending:
            attempt += 1
            hint: float | None = None
            why = "partly taken"
            try:
                delivery = await self.output.deliver(http, [a for _, a in pending])
            except OutputUnavailable as exc:
                self.stats.last_error = why = str(exc)
                hint = exc.retry_after
                delivery = Delivery(retry=list(range(len(pending))))
            except (ValueError, TypeError) as exc:  # a format could not write an alert
                reason = f"cannot be written as {self.config.format or self.output.type}: {exc}"
                delivery = Delivery(refused=dict.fromkeys(range(len(pending)), reason[:300]))
                delivery.whole_batch = True
            if delivery.whole_batch and len(pending) > 1:
                for item in pending:  # find the alerts the output refuses, deliver the rest
                    await self._deliver(http, [item])
                return
            refused = [(pending[i][0], f"refused: {r}") for i, r in delivery.refused.items()]
            retry = [pending[i] for i in delivery.retry]
            self.stats.delivered += len(pending) - len(refused) - len(retry)
            await self._dead_letters(refused)
            pending = retry
            if not pending:
                return
            if self.config.retry.max_attempts and attempt >= self.config.retry.max_attempts:
                reason = f"not taken after {attempt} attempts: {self.stats.last_error}"
                await self._dead_letters([(r, reason) for r, _ in pending])
                return
            await self._backoff(attempt, hint, len(pending), why)

    async def _backoff(self, attempt: int, hint: float | None, pending: int, why: str) -> None:
        delay = self.config.retry.delay(attempt, hint)
        self.stats.retries += 1
        self.stats.delays.append(delay)
        log.warning(
            "output %s: %d alert(s) not taken (%s); retry %d in %.2fs",
            self.config.name,
            pending,
            why,
            attempt,
            delay,
        )
        try:
            await asyncio.wait_for(self.stop.wait(), delay)
        except TimeoutError:
            return
        raise Stopping

    async def _dead_letters(self, letters: list[tuple[Record, str]]) -> None:
        if not letters:
            return
        out = [
            (
                r,
                dead_letter_bytes(
                    f"output {self.config.name}: {reason}",
                    r.value,
                    Source(r.topic, r.partition, r.offset),
                ),
            )
            for r, reason in letters
        ]
        await self.dead_letter(out, self.config.name)
        self.stats.dead_lettered += len(out)
        log.warning(
            "output %s: %d dead letter(s), e.g. %s", self.config.name, len(out), letters[0][1]
        )


async def _read_batch(consumer: Any, runner: OutputRunner) -> list[Record]:
    """Records until ``max_alerts`` or ``max_wait`` after the first one (or a stop)."""
    batch = runner.config.batch
    records: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while len(records) < batch.max_alerts and not runner.stop.is_set():
        wait = 0.5 if deadline is None else max(0.0, deadline - loop.time())
        got = await consumer.getmany(
            timeout_ms=int(wait * 1000), max_records=batch.max_alerts - len(records)
        )
        for tp_records in got.values():
            records += [
                Record(m.topic, m.partition, m.offset, m.key, m.value or b"") for m in tp_records
            ]
        if records and deadline is None:
            deadline = loop.time() + batch.max_wait
        if deadline is not None and loop.time() >= deadline:
            break
    return records


async def _commit(consumer: Any, records: Sequence[Record], runner: OutputRunner) -> None:
    from aiokafka import TopicPartition
    from aiokafka.errors import CommitFailedError

    offsets: dict[Any, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    try:
        await consumer.commit(offsets)
        runner.stats.commits += 1
    except CommitFailedError as exc:  # a rebalance: the new owner re-reads them (at-least-once)
        log.warning(
            "output %s: commit failed (%s); records will be re-read", runner.config.name, exc
        )


async def consume(runner: OutputRunner, consumer: Any, http: Any) -> None:
    """The loop of one output: read, handle, commit, until the stop event is set."""
    while not runner.stop.is_set():
        records = await _read_batch(consumer, runner)
        if not records:
            continue
        try:
            await runner.handle(http, records)
        except Stopping:
            return  # not committed: the next run re-reads this batch
        await _commit(consumer, records, runner)


def group_id(app_id: str, output: Output) -> str:
    """The consumer group of one output.

    >>> from pipeline.outputs.config import OutputConfig
    >>> from pipeline.outputs.webhook import WebhookOutput
    >>> group_id("klaxon", WebhookOutput(OutputConfig(name="siem", type="webhook", url="http://x")))
    'klaxon-output-siem'
    """
    return output.config.group_id or f"{app_id}-output-{output.config.name}"


async def run_outputs(
    outputs: Sequence[Output],
    *,
    bootstrap: str,
    alerts_topic: str,
    deadletter_topic: str,
    app_id: str,
    client_kwargs: dict[str, Any],
    stop: asyncio.Event,
    runners: list[OutputRunner] | None = None,
) -> None:
    """Run every output until ``stop``; one consumer each, one shared dead-letter producer.
    ``runners`` (if given) receives the runners, so a caller can read their stats."""
    import aiohttp
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    # acks=all, not idempotent: Tansu refuses idempotent producers, and a duplicated dead
    # letter (a retry after a lost acknowledgement) is harmless
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_kwargs)
    await producer.start()

    async def dead_letter(letters: list[tuple[Record, bytes]], output: str) -> None:
        headers = [("klaxon-output", output.encode())]
        futures = [
            await producer.send(deadletter_topic, value=v, key=r.key, headers=headers)
            for r, v in letters
        ]
        await asyncio.gather(*futures)  # acknowledged before the alerts' offsets are committed

    consumers: list[Any] = []
    try:
        async with aiohttp.ClientSession() as http:
            tasks = []
            for output in outputs:
                consumer = AIOKafkaConsumer(
                    alerts_topic,
                    bootstrap_servers=bootstrap,
                    group_id=group_id(app_id, output),
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    # retries can outlast Kafka's default 5 minutes between polls; the group
                    # must not evict an output that is waiting for its SIEM
                    max_poll_interval_ms=24 * 3600 * 1000,
                    **client_kwargs,
                )
                await consumer.start()
                consumers.append(consumer)
                runner = OutputRunner(output, dead_letter, stop)
                if runners is not None:
                    runners.append(runner)
                tasks.append(asyncio.create_task(consume(runner, consumer, http)))
            await asyncio.gather(*tasks)
    finally:
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
