"""The source interface: what a source yields and what it is told back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

from pipeline.processing import Source

__all__ = ["PayloadSource", "RawPayload"]


@dataclass(frozen=True, slots=True)
class RawPayload:
    """One raw message's worth of audit data, as received.

    ``payload`` is any accepted shape (`schemas.normalize.decode_payload`); ``cluster`` is the
    cluster the transport names (a message header, a webhook's configured cluster), used for
    events whose envelope names none; ``origin`` says where it came from, for dead letters
    and for committing (topic, partition, offset for a Kafka source).
    """

    payload: bytes | None
    cluster: str | None
    origin: Source


class PayloadSource(ABC):
    """Where raw payloads come from.

    `payloads` yields them in the order the source must keep (per origin partition);
    `acknowledge` is called once a payload's outcome is durable (its events, alerts or dead
    letters acknowledged by the broker), so a source that keeps a position (a file offset,
    an HTTP request waiting for its answer) may move it. Nothing is acknowledged twice; a
    payload never acknowledged is offered again after a restart (at-least-once).
    """

    #: The kind's name in `pipeline.sources.SOURCES` and in configuration.
    name: ClassVar[str]

    @abstractmethod
    def payloads(self) -> AsyncIterator[RawPayload]:
        """The payloads, as they arrive."""

    async def acknowledge(self, payload: RawPayload) -> None:  # noqa: B027 - optional hook
        """``payload`` is fully processed and its output delivered (default: nothing to do)."""
