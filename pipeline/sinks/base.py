"""The sink interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from pipeline.processing import Outgoing, Source
from pipeline.sinks.formats import AlertFormat

__all__ = ["AlertSink"]


class AlertSink(ABC):
    """Somewhere alerts go.

    Each alert arrives as an `Outgoing` with its id as key, its native encoding as value and
    the alert document as ``doc`` (for other formats). ``send`` is awaited once per events
    message, in order; ``flush`` before the worker commits the input those alerts came from.
    """

    #: The kind's name in `pipeline.sinks.SINKS` and in configuration.
    name: ClassVar[str]

    def __init__(self, format: AlertFormat) -> None:
        self.format = format

    @abstractmethod
    async def send(self, alerts: Sequence[Outgoing], source: Source) -> int:
        """Queue ``alerts``; returns how many were refused (too large for the destination,
        not encodable in the format). A refused alert becomes a dead letter with its reason,
        written by the sink. Raises only for a failure that must stop the worker."""

    async def flush(self) -> None:  # noqa: B027 - a sink that delivers synchronously has none
        """Return when every accepted alert is delivered; raise if one was lost."""
