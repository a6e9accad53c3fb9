"""`send_now`: a record the caller waits for is its own closed batch (never lingers)."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.producer import send_now


class Batch:
    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes | None, bytes]] = []
        self.closed = False

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any) -> object | None:
        if len(value) > self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.batches: list[tuple[Batch, str, int]] = []
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> str:
        self.batches.append((batch, topic, partition))
        return "batch-future"

    async def send(self, topic: str, value: bytes, *, key: bytes | None, partition: int) -> str:
        self.sent.append((topic, value, key, partition))
        return "send-future"


def test_a_record_goes_out_as_a_closed_batch_of_its_own() -> None:
    producer = Producer(room=100)
    fut = asyncio.run(send_now(producer, "t.by-group", b"v", key=b"k", partition=3))
    assert fut == "batch-future"
    [(batch, topic, partition)] = producer.batches
    assert (batch.records, batch.closed, topic, partition) == (
        [(b"k", b"v")],
        True,
        "t.by-group",
        3,
    )
    assert producer.sent == []


def test_a_record_no_batch_can_hold_takes_the_ordinary_send() -> None:
    producer = Producer(room=1)
    fut = asyncio.run(send_now(producer, "t", b"too big", key=None, partition=0))
    assert (fut, producer.sent, producer.batches) == (
        "send-future",
        [("t", b"too big", None, 0)],
        [],
    )
