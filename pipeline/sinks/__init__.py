"""Where alerts go: one module per kind of sink, one interface; formats beside them.

A sink (`base.AlertSink`) takes the alerts of one events message, queues them, and on
`flush` returns only when every alert it accepted is delivered: the worker commits its input
after flushing every sink (`pipeline.offsets`). The alert topic is the sink every worker has
(`kafka.KafkaTopicSink`); other outputs (a SIEM's HTTP endpoint, a chat webhook) are new
modules here, registered in `SINKS`. How an alert is written is a format
(`formats.AlertFormat`, registered in `FORMATS`), chosen per sink.
"""

from __future__ import annotations

from pipeline.sinks.base import AlertSink
from pipeline.sinks.formats import FORMATS, AlertFormat, NativeFormat
from pipeline.sinks.kafka import KafkaTopicSink

__all__ = ["FORMATS", "SINKS", "AlertFormat", "AlertSink", "KafkaTopicSink", "NativeFormat"]

#: Sink kinds by name.
SINKS: dict[str, type[AlertSink]] = {KafkaTopicSink.name: KafkaTopicSink}
