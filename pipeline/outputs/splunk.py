"""Splunk HTTP Event Collector: a batch of event envelopes in one POST.

The URL is the collector's event endpoint (``https://splunk:8088/services/collector/event``);
the token goes in ``Authorization: Splunk <token>``. HEC answers 200 ``{"text":"Success",
"code":0}`` for the whole batch; 400 for a malformed event, naming it as
``invalid-event-number`` (the events before it were indexed, the ones after it were not: they
are retried); 403 for a bad token and 503 when busy (both retried).

>>> hec_delivery(HttpReply(400, b'{"text":"Invalid data format","code":6,'
...                               b'"invalid-event-number":1}'), 3)
Delivery(refused={1: 'HTTP 400: Invalid data format'}, retry=[2], whole_batch=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pipeline.outputs.base import Delivery, HttpReply, Output, classify
from pipeline.sinks.formats.base import event_ms

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SplunkHecOutput", "hec_delivery"]


def hec_delivery(reply: HttpReply, size: int) -> Delivery:
    """A HEC answer as a `Delivery` (see the module docstring)."""
    if reply.status == 400:
        try:
            answer = orjson.loads(reply.body)
            bad = int(answer["invalid-event-number"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return classify(reply, size)
        if 0 <= bad < size:
            reason = f"HTTP 400: {answer.get('text', '')}"[:300]
            return Delivery(refused={bad: reason}, retry=list(range(bad + 1, size)))
    return classify(reply, size)


class SplunkHecOutput(Output):
    """Splunk HEC (event endpoint), ``splunk_hec`` envelopes by default."""

    type: ClassVar[str] = "splunk_hec"
    default_format: ClassVar[str | None] = "splunk_hec"
    options: ClassVar[frozenset[str]] = frozenset({"index"})

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Splunk {self.token.get_secret_value()}"} if self.token else {}

    def envelopes(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """HEC envelopes; any other format is wrapped as the ``event`` of one."""
        docs = self.documents(alerts)
        assert self.format is not None  # HEC always has a format (default splunk_hec)
        if self.format.name != "splunk_hec":
            docs = [
                {
                    "time": event_ms(alert) / 1000,
                    "host": str(alert.get("cluster") or "unknown"),
                    "source": "klaxon",
                    "sourcetype": f"klaxon:{self.format.name}",
                    "event": doc,
                }
                for alert, doc in zip(alerts, docs, strict=True)
            ]
        if self.config.index:
            docs = [{**d, "index": self.config.index} for d in docs]
        return docs

    async def deliver(
        self, http: aiohttp.ClientSession, alerts: Sequence[dict[str, Any]]
    ) -> Delivery:
        body = b"\n".join(orjson.dumps(d) for d in self.envelopes(alerts))
        reply = await self.post(http, body, "application/json")
        return hec_delivery(reply, len(alerts))
