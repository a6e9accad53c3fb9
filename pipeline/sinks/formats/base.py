"""The format interface, and what the JSON formats share.

A format is pure: an alert document (`schemas.alert.Alert` shape, as the alert topic holds it)
in, bytes out; no Kafka, no clock, no configuration. The same alert always gives the same bytes,
so the offline `klaxon demo --format` prints what an output sends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, ClassVar

import orjson

__all__ = ["PRODUCT_VERSION", "AlertFormat", "JsonFormat", "epoch_ms", "event_ms"]


def _version() -> str:
    try:
        return metadata.version("klaxon")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


#: Klaxon's version, which product formats name as the alert's producer.
PRODUCT_VERSION = _version()


class AlertFormat(ABC):
    """Turns an alert document (`schemas.alert.Alert` shape) into the bytes a sink sends."""

    #: The format's name in `FORMATS` and in configuration.
    name: ClassVar[str]
    #: Schema and version it writes (a Kafka header, so consumers can tell formats apart).
    schema: ClassVar[str]

    @abstractmethod
    def encode(self, alert: dict[str, Any]) -> bytes:
        """The alert as this format's bytes (raises ValueError or TypeError if impossible)."""


class JsonFormat(AlertFormat):
    """A format whose output is one JSON object per alert (outputs batch the documents)."""

    @abstractmethod
    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        """The alert as this format's JSON object (ValueError if it cannot be written)."""

    def encode(self, alert: dict[str, Any]) -> bytes:
        return orjson.dumps(self.document(alert))


def epoch_ms(text: Any) -> int | None:
    """An RFC 3339 timestamp as epoch milliseconds (None if absent or unreadable).

    >>> epoch_ms("2018-10-25T13:58:49.730588Z"), epoch_ms(None), epoch_ms("soon")
    (1540475929730, None, None)
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def event_ms(alert: dict[str, Any]) -> int:
    """When the alert's event happened, in epoch ms: ``event_time``, else the group's last
    sighting; ValueError when it has neither (a finding needs a time, and inventing one would
    make the same alert encode differently twice)."""
    group = alert.get("group")
    for text in (
        alert.get("event_time"),
        group.get("last_seen") if isinstance(group, dict) else None,
    ):
        ms = epoch_ms(text)
        if ms is not None:
            return ms
    raise ValueError("alert has no event_time")
