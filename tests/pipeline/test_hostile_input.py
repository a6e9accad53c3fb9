"""No poison message: hostile raw messages, then a normal replay. The worker stays up, every
hostile input is accounted for (a dead letter with its reason, an event with its bodies cut,
or a counted filter), and the replay still raises every alert."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.topics import ensure_topics
from replay.producer import replay_events
from tests.pipeline.conftest import CLUSTER, Expected, WorkerProcess, read_topic, unique_settings

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(300)]


def audit(audit_id: str, **fields: Any) -> dict[str, Any]:
    """A valid audit event (a configmap update by alice)."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Event",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "update",
        "requestURI": "/api/v1/namespaces/shop/configmaps/app",
        "user": {"username": "alice"},
        "sourceIPs": ["10.0.0.7"],
        "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "app"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-27T09:00:00.000000Z",
        **fields,
    }


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE: dict[str, bytes] = {
    # 5 MB in a request body: cut, the event's metadata still goes to the rules
    "huge-body": orjson.dumps(audit("huge-body", requestObject={"data": {"k": "x" * 5_000_000}})),
    # 5 MB in a field that is not a body: cannot be cut, a dead letter
    "huge-field": orjson.dumps(audit("huge-field", userAgent="y" * 5_000_000)),
    # 300 levels of nesting (orjson encodes 255 at most): bodies cut
    "deep": json.dumps(audit("deep", requestObject=nested(300))).encode(),  # orjson refuses
    "empty": b"",
    "blank": b" \n\t \n",
}


async def produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce ``values`` gzip-compressed, as a shipper would (5 MB of one letter is small)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type="gzip", max_request_size=8_000_000
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=CLUSTER.encode())
    finally:
        await producer.stop()


def test_hostile_messages_become_dead_letters_or_cut_events_and_the_stream_goes_on(
    kafka: Any, tmp_path: Path, replay_input: list[bytes], expected: Expected
) -> None:
    bootstrap = kafka.bootstrap_servers
    settings = unique_settings(bootstrap, tmp_path)
    asyncio.run(ensure_topics(bootstrap, settings))
    asyncio.run(produce_raw(bootstrap, settings.topic_raw, list(HOSTILE.values())))
    asyncio.run(replay_events(replay_input, bootstrap=bootstrap, topic=settings.topic_raw,
                              cluster=CLUSTER))  # fmt: skip
    worker = WorkerProcess(settings, tmp_path, "w")
    try:

        def done() -> bool:
            snap = worker.snapshot() or {}
            c = snap.get("counters", {})
            return (
                snap.get("status") == "ok"
                and snap.get("lag_total") == 0
                and bool(snap.get("lag"))
                and c.get("events_messages_in", 0) >= c.get("events_messages_out", 1)
            )

        worker.wait_for("the hostile messages and the replay", done, 180)
        time.sleep(1)
        counters = worker.counters()
        assert worker.proc.poll() is None, "the worker must stay up"
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]

    alerts = {r.key.decode() for r in read_topic(bootstrap, settings.topic_alerts)}
    assert expected.alert_ids <= alerts
    letters = [orjson.loads(r.value) for r in read_topic(bootstrap, settings.topic_deadletter)]
    huge = [d for d in letters if "exceeds the" in d["reason"]]
    assert len(huge) == 1 and "without its request and response bodies" in huge[0]["reason"]
    assert huge[0]["source"]["topic"] == settings.topic_raw
    assert "truncated" in huge[0]["reason"]  # the original is cut to stay sendable
    events = [
        e
        for r in read_topic(bootstrap, settings.topic_events)
        for e in orjson.loads(r.value)["events"]
    ]
    cut = {e["auditID"]: e["requestObject"] for e in events if e["auditID"] in HOSTILE}
    assert set(cut) == {"huge-body", "deep"}
    assert all("klaxon.cut" in body for body in cut.values())
    assert counters["filtered"].get("empty-message") == 2
    assert counters["events_in"] == (
        counters["normalised"] + counters["dead_lettered"] + sum(counters["filtered"].values())
    )
