"""Workers dying at the worst moments, and a replicated cluster losing a broker: every alert
arrives, every input offset ends committed, no partition is stranded."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import DETECTOR_FAMILIES
from pipeline.routing import partition_for
from pipeline.topics import ensure_topics, stateful_topic_specs
from replay.producer import rate_schedule, replay_events
from tests.faults import FaultyKafka
from tests.pipeline.conftest import (
    CLUSTER,
    Expected,
    WorkerProcess,
    read_topic,
    stranded,
    unique_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(300)]


def replay(settings: Any, lines: list[bytes], seconds: float | None = None) -> int:
    """Replay ``lines`` to the raw topic (paced over ``seconds``); returns messages sent."""
    schedule = rate_schedule(len(lines) / seconds) if seconds else None
    stats = asyncio.run(
        replay_events(
            lines,
            bootstrap=settings.bootstrap_servers,
            topic=settings.topic_raw,
            cluster=CLUSTER,
            schedule=schedule,
        )
    )
    return stats.messages


def finished(worker: WorkerProcess) -> bool:
    """Everything this worker owns is committed to the end, the broker answers."""
    snap = worker.snapshot() or {}
    return snap.get("status") == "ok" and snap.get("lag_total") == 0 and bool(snap.get("lag"))


def inputs(settings: Any) -> list[str]:
    return [settings.topic_raw, settings.topic_events]


def test_of_two_workers_the_one_reading_the_raw_partition_is_killed(
    kafka: FaultyKafka, tmp_path: Path, replay_input: list[bytes], expected: Expected
) -> None:
    """The survivor takes the raw partition over from the last commit: every alert, every
    offset committed (duplicates repeat ids)."""
    settings = unique_settings(kafka.bootstrap_servers, tmp_path)
    asyncio.run(ensure_topics(settings.bootstrap_servers, settings))
    a, b = WorkerProcess(settings, tmp_path, "a"), WorkerProcess(settings, tmp_path, "b")
    raw = f"{settings.topic_raw}:{partition_for(CLUSTER.encode(), settings.partitions)}"
    try:

        def owned(w: WorkerProcess) -> dict[str, int]:
            lag: dict[str, int] = (w.snapshot() or {}).get("lag", {})
            return lag

        def shared_out() -> bool:
            """Both workers' last status is of one generation: the raw partitions are split
            between them. (A status written before the other worker joined still lists every
            partition: choosing the holder from it killed the wrong worker.)"""
            mine = {tp for tp in owned(a) if tp.startswith(f"{settings.topic_raw}:")}
            theirs = {tp for tp in owned(b) if tp.startswith(f"{settings.topic_raw}:")}
            return bool(mine and theirs and not mine & theirs) and (
                len(mine | theirs) == settings.partitions
            )

        a.wait_for("the raw partitions split between the workers", shared_out, 90)
        holder, survivor = (a, b) if raw in owned(a) else (b, a)
        assert raw in owned(holder)
        producer = threading.Thread(target=replay, args=(settings, replay_input, 6.0))
        producer.start()
        holder.wait_for("progress", lambda: holder.counters().get("raw_messages", 0) >= 3, 60)
        holder.kill()
        producer.join()
        survivor.wait_for(
            "the survivor to own the raw partition and finish",
            lambda: finished(survivor) and raw in owned(survivor),
            120,
        )
        assert not stranded(settings.bootstrap_servers, settings.app_id, inputs(settings))
    finally:
        code = survivor.stop()
    assert code == 0
    alerts = {r.key.decode() for r in read_topic(settings.bootstrap_servers, settings.topic_alerts)}
    assert alerts == expected.alert_ids


def test_a_worker_killed_while_it_recovers_the_state_loses_nothing(
    kafka: FaultyKafka, tmp_path: Path, replay_input: list[bytes], expected: Expected
) -> None:
    """Stateful detectors on: the first worker processes half the input and is killed; the
    second is killed while it rebuilds the state from the changelog; the third finishes."""
    settings = unique_settings(kafka.bootstrap_servers, tmp_path).replace(
        stateful_detectors=DETECTOR_FAMILIES
    )
    bootstrap = settings.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, settings, extra=stateful_topic_specs(settings)))
    half = len(replay_input) // 2
    first = WorkerProcess(settings, tmp_path, "first")
    sent = replay(settings, replay_input[:half])
    first.wait_for("the first half", lambda: first.counters().get("raw_messages", 0) >= sent, 90)
    time.sleep(1.5)  # a commit and some state
    first.kill()
    replay(settings, replay_input[half:])
    second = WorkerProcess(settings, tmp_path, "second")
    second.wait_for("the recovery to start", lambda: "worker starting" in second.log(), 60)
    time.sleep(1.0)  # tables recover right after the group join: kill inside it
    second.kill()
    third = WorkerProcess(settings, tmp_path, "third")
    try:
        third.wait_for("the rest", lambda: finished(third), 150)
        assert not stranded(bootstrap, settings.app_id, inputs(settings))
    finally:
        code = third.stop()
    assert code == 0, third.log()[-3000:]
    alerts = {r.key.decode() for r in read_topic(bootstrap, settings.topic_alerts)}
    assert expected.alert_ids <= alerts


def test_three_brokers_rf3_idempotent_producer_one_broker_killed_and_back(
    kafka3: FaultyKafka, tmp_path: Path, replay_input: list[bytes], expected: Expected
) -> None:
    """Replication factor 3, ``min.insync.replicas=2``, acks=all and an idempotent producer:
    the leader of the raw partition is killed during the backlog and restarted; every alert,
    every offset committed."""
    bootstrap = kafka3.bootstrap_servers
    settings = unique_settings(bootstrap, tmp_path).replace(replication_factor=3)
    asyncio.run(ensure_topics(bootstrap, settings))
    sent = replay(settings, replay_input)
    worker = WorkerProcess(settings, tmp_path, "w", args=("--idempotent",))
    try:
        worker.wait_for("progress", lambda: worker.counters().get("raw_messages", 0) >= sent // 3,
                        90)  # fmt: skip
        victim = _leader(bootstrap, settings.topic_raw,
                         partition_for(CLUSTER.encode(), settings.partitions))  # fmt: skip
        kafka3.kill_node(victim)
        time.sleep(5)
        kafka3.start_node(victim)
        worker.wait_for("the rest", lambda: finished(worker), 150)
        assert not stranded(bootstrap, settings.app_id, inputs(settings))
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    alerts = {r.key.decode() for r in read_topic(bootstrap, settings.topic_alerts)}
    assert alerts == expected.alert_ids


def _leader(bootstrap: str, topic: str, partition: int) -> int:
    """Index of the node leading ``topic``/``partition`` (node ids are 0-based indices)."""

    async def find() -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
            for p in described["partitions"]:
                if p["partition"] == partition:
                    return int(p["leader"])
            raise AssertionError(f"no partition {partition} in {topic}")
        finally:
            await admin.close()

    return asyncio.run(find())
