"""Klaxon's own alert JSON, unchanged."""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.sinks.formats.base import JsonFormat

__all__ = ["NativeFormat"]


class NativeFormat(JsonFormat):
    """Klaxon's own alert JSON (`schemas/json/alert.schema.json`), as the alert topic holds."""

    name: ClassVar[str] = "native"
    schema: ClassVar[str] = "klaxon.alert/v1"

    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        return alert
