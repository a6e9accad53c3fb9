"""The running pipeline, end to end, on Tansu and on Apache Kafka.

One worker subprocess per broker processes a replay of the bundled sample plus filtered and
unusable items (the ``run`` fixture, shared by the tests of this module); the expected
alerts come from the same rules run offline on the same bytes (`decode_payload` + `Engine`).
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.routing import partition_for
from pipeline.topics import ensure_topics
from replay.producer import replay_events
from tests.pipeline.conftest import (
    CLUSTER,
    GARBAGE,
    Expected,
    WorkerProcess,
    read_topic,
    unique_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Run:
    """Everything observed after one worker processed the replay."""

    settings: Settings
    sent_messages: int
    counters: dict[str, Any]
    alerts: list[Any]
    events: list[Any]
    dead: list[Any]


def replay(settings: Settings, lines: list[bytes]) -> int:
    """Replay ``lines`` plus one garbage message; returns the raw messages sent."""
    assert settings.bootstrap_servers
    bootstrap, topic = settings.bootstrap_servers, settings.topic_raw

    async def go() -> int:
        stats = await replay_events(lines, bootstrap=bootstrap, topic=topic, cluster=CLUSTER)
        junk = await replay_events([GARBAGE], bootstrap=bootstrap, topic=topic, cluster=CLUSTER)
        return stats.messages + junk.messages

    return asyncio.run(go())


def caught_up(worker: WorkerProcess, sent: int) -> bool:
    snap = worker.snapshot() or {}
    c = snap.get("counters", {})
    return (
        c.get("raw_messages", 0) >= sent
        and c.get("events_messages_in", 0) >= c.get("events_messages_out", 1)
        and snap.get("lag_total") == 0
    )


@pytest.fixture(scope="module", params=["tansu", "kafka"])
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    replay_input: list[bytes],
) -> Run:
    """One worker on one broker kind processes the replay; outputs are read back."""
    bootstrap = request.getfixturevalue(request.param).bootstrap_servers
    tmp = tmp_path_factory.mktemp(f"run-{request.param}")
    settings = unique_settings(bootstrap, tmp)
    asyncio.run(ensure_topics(bootstrap, settings))
    worker = WorkerProcess(settings, tmp, "solo")
    try:
        sent = replay(settings, replay_input)
        worker.wait_for("the replay to be processed", lambda: caught_up(worker, sent), 120)
        counters = worker.counters()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    return Run(
        settings,
        sent,
        counters,
        read_topic(bootstrap, settings.topic_alerts),
        read_topic(bootstrap, settings.topic_events),
        read_topic(bootstrap, settings.topic_deadletter),
    )


def test_alerts_topic_holds_exactly_the_offline_alert_ids(run: Run, expected: Expected) -> None:
    """The alert ids on the alerts topic are those of the same rules run offline."""
    assert expected.alert_ids, "the test rules must fire on the sample"
    ids = {r.key.decode() for r in run.alerts}
    assert ids == expected.alert_ids
    for record in run.alerts:
        alert = orjson.loads(record.value)
        assert alert["id"] == record.key.decode()
        assert alert["cluster"] == CLUSTER  # from the replay's cluster header


def test_unusable_items_are_dead_lettered_with_their_reason(run: Run, expected: Expected) -> None:
    """Every rejected item and the garbage message reach the dead-letter topic, with reasons,
    their raw-topic source and their original bytes."""
    letters = [orjson.loads(r.value) for r in run.dead]
    assert Counter(d["reason"] for d in letters) == expected.rejected_reasons
    assert {d["source"]["topic"] for d in letters} == {run.settings.topic_raw}
    originals = {base64.b64decode(d["original_b64"]) for d in letters}
    assert GARBAGE in originals and b"this is not json" in originals


def test_every_event_in_is_normalised_dead_lettered_or_filtered(
    run: Run, expected: Expected
) -> None:
    """events in = normalised + dead-lettered + filtered, by the counters and by the topics."""
    c = run.counters
    assert c["events_in"] == expected.items
    assert c["events_in"] == c["normalised"] + c["dead_lettered"] + sum(c["filtered"].values())
    assert c["filtered"] == expected.filtered == {"stage:RequestReceived": 10}
    on_topic = sum(len(orjson.loads(r.value)["events"]) for r in run.events)
    assert on_topic == c["normalised"] == expected.normalised
    assert len(run.dead) == c["dead_lettered"] + c["detect_dead_lettered"]
    assert c["detect_dead_lettered"] == 0 and c["send_errors"] == 0


def test_events_travel_in_few_messages_grouped_by_principal_partition(run: Run) -> None:
    """N events become at most one events message per raw message and partition, and each
    event sits on the partition of its ``cluster|user`` key."""
    partitions = run.settings.partitions
    events = 0
    for record in run.events:
        batch = orjson.loads(record.value)["events"]
        events += len(batch)
        for event in batch:
            key = f"{event['cluster']}|{event.get('user', {}).get('username', '')}".encode()
            assert partition_for(key, partitions) == record.partition
    assert len(run.events) <= run.sent_messages * partitions
    assert len(run.events) * 20 < events


def test_two_workers_share_partitions_and_find_the_same_alerts(
    broker: str,
    tmp_path: Path,
    replay_input: list[bytes],
    expected: Expected,
    start_worker: Any,
) -> None:
    """Two workers in one group split the partitions; together they produce the same alert
    ids as one worker (a duplicate may only repeat an id). A replay keeps one raw partition
    (one key per source), so the sharing shows in detection: both evaluate events messages."""
    settings = unique_settings(broker, tmp_path)
    asyncio.run(ensure_topics(broker, settings))
    a, b = start_worker(settings, "a"), start_worker(settings, "b")

    def raw_parts(w: WorkerProcess) -> set[str]:
        lag = (w.snapshot() or {}).get("lag", {})
        return {k for k in lag if k.startswith(settings.topic_raw + ":")}

    def split() -> bool:
        pa, pb = raw_parts(a), raw_parts(b)
        return bool(pa) and bool(pb) and not pa & pb and len(pa | pb) == settings.partitions

    a.wait_for("both workers to be assigned partitions", split, 90)
    sent = replay(settings, replay_input)

    def done() -> bool:
        ca, cb = a.counters(), b.counters()
        raw = ca.get("raw_messages", 0) + cb.get("raw_messages", 0)
        ev_in = ca.get("events_messages_in", 0) + cb.get("events_messages_in", 0)
        ev_out = ca.get("events_messages_out", 0) + cb.get("events_messages_out", 0)
        return raw >= sent and ev_in >= ev_out > 0

    a.wait_for("the replay to be processed by the pair", done, 120)
    assert a.counters()["raw_messages"] + b.counters()["raw_messages"] >= sent
    assert a.counters()["events_messages_in"] > 0 and b.counters()["events_messages_in"] > 0
    alerts = read_topic(broker, settings.topic_alerts)
    assert {r.key.decode() for r in alerts} == expected.alert_ids
