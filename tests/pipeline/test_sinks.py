"""`pipeline.sinks`: the alert sink interface, its formats and the alert topic sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from pipeline.processing import Outgoing, Source
from pipeline.sinks import FORMATS, SINKS, AlertFormat, AlertSink, KafkaTopicSink

SRC = Source("events", 1, 42)


class RecordingSender:
    """The part of `pipeline.producer.Sender` a Kafka sink uses, recording what it queues."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Outgoing], list[bytes]]] = []

    async def send(self, topic: str, out: list[Outgoing], dead: list[bytes], src: Source) -> int:
        self.sent.append((topic, out, dead))
        return 0


def alert(i: int) -> Outgoing:
    doc = {"id": f"a{i}", "rule": {"id": "r1"}, "severity": "high"}
    return Outgoing(doc["id"].encode(), orjson.dumps(doc), doc=doc)  # type: ignore[union-attr]


def test_the_alert_topic_sink_sends_native_alerts_keyed_by_id_with_routing_headers() -> None:
    sender = RecordingSender()
    sink = KafkaTopicSink(sender, "alerts")  # type: ignore[arg-type]
    assert asyncio.run(sink.send([alert(1), alert(2)], SRC)) == 0
    ((topic, out, dead),) = sender.sent
    assert topic == "alerts" and dead == [] and [o.key for o in out] == [b"a1", b"a2"]
    assert dict(out[0].headers or []) == {
        "klaxon-format": b"native",
        "klaxon-schema": b"klaxon.alert/v1",
        "klaxon-rule": b"r1",
        "klaxon-severity": b"high",
    }


def test_an_alert_a_format_cannot_write_is_a_dead_letter_not_an_error() -> None:
    class Picky(AlertFormat):
        name: ClassVar[str] = "picky"
        schema: ClassVar[str] = "picky/v0"

        def encode(self, alert: dict[str, Any]) -> bytes:
            if alert["id"] == "a2":
                raise ValueError("no")
            return b"ok"

    sender = RecordingSender()
    sink = KafkaTopicSink(sender, "alerts", Picky())  # type: ignore[arg-type]
    assert asyncio.run(sink.send([alert(1), alert(2)], SRC)) == 1
    ((_, out, dead),) = sender.sent
    assert [o.value for o in out] == [b"ok"]
    letter = orjson.loads(dead[0])
    assert "cannot be written as picky" in letter["reason"]
    assert letter["source"] == {"topic": "events", "partition": 1, "offset": 42}


def test_a_new_sink_is_one_class_and_one_registration() -> None:
    class Memory(AlertSink):
        name: ClassVar[str] = "memory"

        def __init__(self) -> None:
            super().__init__(FORMATS["native"])
            self.got: list[bytes] = []

        async def send(self, alerts: Sequence[Outgoing], source: Source) -> int:
            self.got += [self.format.encode(a.doc or {}) for a in alerts]
            return 0

    sink = Memory()
    asyncio.run(sink.send([alert(3)], SRC))
    asyncio.run(sink.flush())
    assert orjson.loads(sink.got[0])["id"] == "a3"
    assert set(SINKS) == {"kafka"}
    assert set(FORMATS) == {"native", "ocsf", "ecs", "splunk_hec"}
