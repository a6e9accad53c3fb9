"""The alert topic as a sink: every worker's, written with the producer its commits flush.

Alerts are keyed by their id (duplicates after a crash repeat the key, so consumers and
compaction deduplicate) and carry headers naming the format, its schema, the rule and the
severity, so a consumer can route without parsing. Native alerts are sent as encoded by the
detect step; another format encodes the alert document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.processing import Outgoing, Source, dead_letter_bytes
from pipeline.producer import Sender
from pipeline.sinks.base import AlertSink
from pipeline.sinks.formats import AlertFormat, NativeFormat

__all__ = ["KafkaTopicSink", "alert_headers"]


def alert_headers(fmt: AlertFormat, alert: dict[str, Any] | None) -> list[tuple[str, bytes]]:
    """Kafka headers of one alert: format, schema, rule id and severity.

    >>> alert_headers(NativeFormat(), {"rule": {"id": "r1"}, "severity": "high"})[2:]
    [('klaxon-rule', b'r1'), ('klaxon-severity', b'high')]
    """
    headers = [("klaxon-format", fmt.name.encode()), ("klaxon-schema", fmt.schema.encode())]
    if alert is not None:
        rule = alert.get("rule")
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if rule_id:
            headers.append(("klaxon-rule", str(rule_id).encode()))
        if alert.get("severity"):
            headers.append(("klaxon-severity", str(alert["severity"]).encode()))
    return headers


class KafkaTopicSink(AlertSink):
    """Alerts to one Kafka topic through the worker's `Sender` (flushed before commits)."""

    name: ClassVar[str] = "kafka"

    def __init__(self, sender: Sender, topic: str, format: AlertFormat | None = None) -> None:
        super().__init__(format or NativeFormat())
        self.sender = sender
        self.topic = topic

    def encoded(
        self, alerts: Sequence[Outgoing], source: Source
    ) -> tuple[list[Outgoing], list[bytes]]:
        """The alerts in this sink's format with headers, and dead letters for those that
        cannot be encoded in it."""
        fmt = self.format
        native = isinstance(fmt, NativeFormat)
        out: list[Outgoing] = []
        letters: list[bytes] = []
        for alert in alerts:
            try:
                value = alert.value if native or alert.doc is None else fmt.encode(alert.doc)
            except (TypeError, ValueError) as exc:
                reason = f"alert cannot be written as {fmt.name}: {exc!r}"[:300]
                letters.append(dead_letter_bytes(reason, alert.value, source))
                continue
            out.append(
                Outgoing(alert.key, value, alert.partition, headers=alert_headers(fmt, alert.doc))
            )
        return out, letters

    async def send(self, alerts: Sequence[Outgoing], source: Source) -> int:
        out, letters = self.encoded(alerts, source)
        refused = await self.sender.send(self.topic, out, letters, source)
        return refused + len(letters)

    async def flush(self) -> None:
        """Every alert queued so far acknowledged (the worker's producer, with its guard)."""
        await self.sender.flush()
