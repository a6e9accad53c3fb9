"""`pipeline.sources`: the source interface and the raw topic as the worker's source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace as NS
from typing import Any, ClassVar

from pipeline.processing import Source
from pipeline.sources import SOURCES, PayloadSource, RawPayload, RawTopicSource
from schemas.keys import CLUSTER_HEADER


class FakeStream:
    def __init__(self, events: list[Any]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[Any]:
        for event in self._events:
            yield event


def event(offset: int, value: bytes, headers: Any = None) -> Any:
    return NS(message=NS(topic="raw", partition=2, offset=offset, headers=headers), value=value)


def test_raw_topic_messages_become_payloads_with_their_cluster_and_position() -> None:
    stream = FakeStream([event(5, b"a", [(CLUSTER_HEADER, b"prod")]), event(6, b"b")])

    async def collect() -> list[RawPayload]:
        return [p async for p in RawTopicSource(stream, "fallback").payloads()]

    assert asyncio.run(collect()) == [
        RawPayload(b"a", "prod", Source("raw", 2, 5)),
        RawPayload(b"b", "fallback", Source("raw", 2, 6)),
    ]


def test_a_source_is_one_class_acknowledged_after_its_output_is_durable() -> None:
    class Lines(PayloadSource):
        name: ClassVar[str] = "lines"

        def __init__(self, lines: list[bytes]) -> None:
            self.lines = lines
            self.acked: list[int] = []

        async def payloads(self) -> AsyncIterator[RawPayload]:
            for i, line in enumerate(self.lines):
                yield RawPayload(line, None, Source("lines", None, i))

        async def acknowledge(self, payload: RawPayload) -> None:
            self.acked.append(payload.origin.offset or 0)

    async def run(source: Lines) -> None:
        async for p in source.payloads():
            await source.acknowledge(p)

    src = Lines([b"x", b"y"])
    asyncio.run(run(src))
    assert src.acked == [0, 1]
    assert SOURCES["raw-topic"] is RawTopicSource and "lines" not in SOURCES
