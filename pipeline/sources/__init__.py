"""Where raw audit payloads come from: one module per kind of source, one interface.

A source yields `RawPayload`s (bytes as a shipper wrote them, the cluster the transport
names, where they came from). The worker's source is the raw topic (`raw_topic.RawTopicSource`,
read by the normalise agent). An intake (the API server's audit webhook, a log-file follower,
a replay) is a source whose payloads are written to the raw topic; it implements
`base.PayloadSource` in a module of this folder and is registered in `SOURCES`.
"""

from __future__ import annotations

from pipeline.sources.base import PayloadSource, RawPayload
from pipeline.sources.file import FileSource
from pipeline.sources.raw_topic import RawTopicSource
from pipeline.sources.webhook import WebhookSource

__all__ = [
    "SOURCES",
    "FileSource",
    "PayloadSource",
    "RawPayload",
    "RawTopicSource",
    "WebhookSource",
]

#: Source kinds by name.
SOURCES: dict[str, type[PayloadSource]] = {
    RawTopicSource.name: RawTopicSource,
    WebhookSource.name: WebhookSource,
    FileSource.name: FileSource,
}
