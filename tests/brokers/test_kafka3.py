"""A 3-node Apache Kafka cluster loses no acknowledged write when a broker crashes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import Settings
from pipeline.topics import ensure_topics
from tests.faults import FaultyKafka

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def _partitions(bootstrap: str, topic: str) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions: list[dict[str, object]] = described["partitions"]
        return partitions
    finally:
        await admin.close()


async def _produce(producer: AIOKafkaProducer, topic: str, values: range) -> None:
    futures = [await producer.send(topic, str(v).encode(), key=str(v).encode()) for v in values]
    await asyncio.wait_for(asyncio.gather(*futures), 60)  # every write acknowledged by acks=all


async def test_crash_of_one_broker_loses_no_acknowledged_write(
    kafka3: FaultyKafka, unique_name: Callable[..., str]
) -> None:
    """Kill a partition leader mid-stream: producing and group consuming go on; nothing is lost;
    the restarted broker rejoins every ISR."""
    tag = unique_name("ha")
    settings = Settings.from_env({}).replace(
        partitions=3,
        replication_factor=3,
        topic_raw=f"{tag}.raw",
        topic_events=f"{tag}.events",
        topic_alerts=f"{tag}.alerts",
        topic_deadletter=f"{tag}.dl",
    )
    bootstrap = kafka3.bootstrap_servers
    await ensure_topics(bootstrap, settings)
    topic = settings.topic_raw
    partitions = await _partitions(bootstrap, topic)
    assert {len(p["replicas"]) for p in partitions} == {3}  # type: ignore[arg-type]
    victim = int(partitions[0]["leader"])  # type: ignore[call-overload]

    received: list[int] = []
    stop = asyncio.Event()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{tag}.group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                received.extend(int(r.value) for r in records if r.value is not None)
            if batches:
                await consumer.commit()

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=15000
    )
    await producer.start()
    reader = asyncio.create_task(consume())
    try:
        await _produce(producer, topic, range(0, 300))
        await asyncio.to_thread(kafka3.kill_node, victim)
        assert not kafka3.alive(victim)
        await _produce(producer, topic, range(300, 600))  # one broker down, 2 of 3 in sync
        await _wait_for(lambda: len(set(received)) >= 600, 60, "consuming with a broker down")
        moved = await _partitions(bootstrap, topic)
        assert moved[0]["leader"] != victim  # a surviving replica took over partition 0

        await kafka3.astart_node(victim)
        await _produce(producer, topic, range(600, 700))
        await _wait_for(lambda: len(set(received)) >= 700, 60, "consuming after restart")
        await _wait_until_isr_full(bootstrap, topic, 60)
    finally:
        stop.set()
        await reader
        await producer.stop()
        await consumer.stop()
    assert set(received) == set(range(700))


async def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out {what}")
        await asyncio.sleep(0.2)


async def _wait_until_isr_full(bootstrap: str, topic: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        parts = await _partitions(bootstrap, topic)
        if all(len(p["isr"]) == 3 for p in parts):  # type: ignore[arg-type]
            return
        if time.monotonic() > deadline:
            pytest.fail(f"restarted broker did not rejoin the ISR: {parts}")
        await asyncio.sleep(0.5)
