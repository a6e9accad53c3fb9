"""Where alerts go: one module per kind of sink, one interface; formats beside them.

A sink (`base.AlertSink`) takes the alerts of one events message, queues them, and on
`flush` returns only when every alert it accepted is delivered: the worker commits its input
after flushing every sink (`pipeline.offsets`). The alert topic is the sink every worker has
(`kafka.KafkaTopicSink`). How an alert is written is a format (`formats.AlertFormat`,
registered in `formats.FORMATS`), chosen per sink. Outputs that read the alert topic on
their own (SIEM endpoints, chat webhooks) are `pipeline.outputs`.

The Kafka sink is imported on first use, so the formats (pure) can be imported by commands
that must not load Faust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.sinks.base import AlertSink
from pipeline.sinks.formats import FORMATS, AlertFormat, NativeFormat

if TYPE_CHECKING:
    from pipeline.sinks.kafka import KafkaTopicSink

__all__ = ["FORMATS", "SINKS", "AlertFormat", "AlertSink", "KafkaTopicSink", "NativeFormat"]

#: Sink kinds by name (`SINKS`, built on first use).
SINKS: dict[str, type[AlertSink]]


def __getattr__(name: str) -> Any:
    if name == "KafkaTopicSink":
        from pipeline.sinks.kafka import KafkaTopicSink

        return KafkaTopicSink
    if name == "SINKS":
        from pipeline.sinks.kafka import KafkaTopicSink

        sinks: dict[str, type[AlertSink]] = {KafkaTopicSink.name: KafkaTopicSink}
        globals()["SINKS"] = sinks  # later lookups (and registrations) find this one dict
        return sinks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
