"""How an alert is written: one class per format, registered in `FORMATS`.

>>> FORMATS["native"].encode({"id": "a1", "severity": "high"})
b'{"id":"a1","severity":"high"}'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import orjson

__all__ = ["FORMATS", "AlertFormat", "NativeFormat"]


class AlertFormat(ABC):
    """Turns an alert document (`schemas.alert.Alert` shape) into the bytes a sink sends."""

    #: The format's name in `FORMATS` and in configuration.
    name: ClassVar[str]
    #: Schema and version it writes (a Kafka header, so consumers can tell formats apart).
    schema: ClassVar[str]

    @abstractmethod
    def encode(self, alert: dict[str, Any]) -> bytes:
        """The alert as this format's bytes (raises ValueError or TypeError if impossible)."""


class NativeFormat(AlertFormat):
    """Klaxon's own alert JSON (`schemas/json/alert.schema.json`), as the alert topic holds."""

    name: ClassVar[str] = "native"
    schema: ClassVar[str] = "klaxon.alert/v1"

    def encode(self, alert: dict[str, Any]) -> bytes:
        return orjson.dumps(alert)


#: Formats by name.
FORMATS: dict[str, AlertFormat] = {NativeFormat.name: NativeFormat()}
