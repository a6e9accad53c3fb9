"""The raw topic as the worker's source: Faust stream events become `RawPayload`s.

The cluster comes from the ``klaxon-cluster`` header (`schemas.keys.CLUSTER_HEADER`) when a
shipper or replay set it, else from the worker's ``KLAXON_CLUSTER``. Offsets are committed by
`pipeline.offsets.OffsetLedger`, not acknowledged here.

>>> from types import SimpleNamespace as NS
>>> msg = NS(topic="raw", partition=0, offset=7, headers=[(CLUSTER_HEADER, b"prod")])
>>> RawTopicSource.payload_of(NS(message=msg, value=b"{}"), default_cluster="dev")
RawPayload(payload=b'{}', cluster='prod', origin=Source(topic='raw', partition=0, offset=7))
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pipeline.processing import Source
from pipeline.sources.base import PayloadSource, RawPayload
from schemas.keys import CLUSTER_HEADER

__all__ = ["RawTopicSource", "header_value"]


def header_value(headers: Any, name: str) -> str | None:
    """A header's value as text from Faust's header list or mapping (None if absent).

    >>> header_value([(CLUSTER_HEADER, b"prod")], CLUSTER_HEADER)
    'prod'
    >>> header_value(None, CLUSTER_HEADER) is None
    True
    """
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name and value:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


class RawTopicSource(PayloadSource):
    """Raw-topic messages of one Faust stream (the normalise agent's input)."""

    name: ClassVar[str] = "raw-topic"

    def __init__(self, stream: Any, default_cluster: str) -> None:
        self.stream = stream
        self.default_cluster = default_cluster

    @staticmethod
    def payload_of(event: Any, *, default_cluster: str) -> RawPayload:
        """The `RawPayload` of one Faust stream event."""
        msg = event.message
        cluster = header_value(msg.headers, CLUSTER_HEADER) or default_cluster
        return RawPayload(event.value, cluster, Source(msg.topic, msg.partition, msg.offset))

    async def payloads(self) -> AsyncIterator[RawPayload]:
        async for event in self.stream.events():
            yield self.payload_of(event, default_cluster=self.default_cluster)
