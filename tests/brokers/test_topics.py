"""ensure_topics and a produce/consume round trip behave the same on Tansu and Apache Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.brokers import KafkaCluster
from pipeline.config import Settings
from pipeline.errors import TopicError
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.timeout(60)


async def _describe(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def test_ensure_topics_creates_all_four_with_configured_partitions(
    broker: str, klaxon_settings: Settings
) -> None:
    """On a broker without them, the four topics are created with the configured partitions."""
    outcome = await ensure_topics(broker, klaxon_settings)
    assert outcome == dict.fromkeys(klaxon_settings.topics, "created")
    described = await _describe(broker, list(klaxon_settings.topics))
    assert described == dict.fromkeys(klaxon_settings.topics, klaxon_settings.partitions)


async def test_ensure_topics_is_idempotent(broker: str, klaxon_settings: Settings) -> None:
    """A second call finds the topics in place and changes nothing."""
    await ensure_topics(broker, klaxon_settings)
    assert await ensure_topics(broker, klaxon_settings) == dict.fromkeys(
        klaxon_settings.topics, "exists"
    )


async def test_existing_topic_with_other_partition_count_is_a_clear_error(
    broker: str, klaxon_settings: Settings
) -> None:
    """Topics made with 4 partitions are refused when 8 are configured, naming topic and fix."""
    await ensure_topics(broker, klaxon_settings)
    wider = klaxon_settings.replace(partitions=8)
    with pytest.raises(TopicError, match=rf"{klaxon_settings.topic_raw} exists with 4 partitions"):
        await ensure_topics(broker, wider)


async def test_kafka_refuses_more_replicas_than_brokers(
    kafka: KafkaCluster, unique_name: Callable[..., str]
) -> None:
    """Replication factor 3 on a 1-node Kafka is a TopicError naming the broker's reason."""
    tag = unique_name("rf")
    settings = Settings.from_env({}).replace(
        replication_factor=3,
        topic_raw=f"{tag}.raw",
        topic_events=f"{tag}.events",
        topic_alerts=f"{tag}.alerts",
        topic_deadletter=f"{tag}.dl",
    )
    with pytest.raises(TopicError, match="InvalidReplicationFactor"):
        await ensure_topics(kafka.bootstrap_servers, settings)


async def test_produce_batch_and_consume_it_back(broker: str, klaxon_settings: Settings) -> None:
    """200 keyed messages produced to the raw topic all come back, in order per partition."""
    topic = klaxon_settings.topic_raw
    await ensure_topics(broker, klaxon_settings)
    sent = [(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(200)]
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    await producer.start()
    try:
        batch = [await producer.send(topic, value, key=key) for key, value in sent]
        await producer.flush()
        partitions_used = {(await fut).partition for fut in batch}
    finally:
        await producer.stop()
    assert len(partitions_used) > 1  # keys spread over partitions

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(klaxon_settings.partitions)])
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += [(r.key, r.value) for r in records if r.key and r.value]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(sent)
    per_key: dict[bytes, list[int]] = {}
    for key, value in got:
        per_key.setdefault(key, []).append(int(value[1:]))
    assert all(v == sorted(v) for v in per_key.values())


async def test_unreachable_cluster_is_a_topic_error_naming_it() -> None:
    """Nothing listening at the bootstrap address: a prompt TopicError that names the address."""
    from pipeline.brokers import free_port

    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TopicError, match=address):
        await ensure_topics(address, Settings(), timeout=5)
    assert time.monotonic() - started < 5
