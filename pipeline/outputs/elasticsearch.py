"""Elasticsearch (or OpenSearch) ``_bulk``: ECS documents by default, one ``create`` each.

The URL is the cluster's base URL; documents go to ``index`` (an index or a data stream:
``create`` works for both) with the alert id as ``_id``, so a re-delivered alert is a 409
conflict, counted as delivered: at-least-once reading becomes exactly-once storage. Per item,
429 and 5xx are retried, other errors refuse that alert (a dead letter with ES's reason).
The token is an API key (``Authorization: ApiKey …``) or a bearer token (``auth_scheme``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pipeline.errors import ConfigError
from pipeline.outputs.base import Delivery, Output, classify
from pipeline.outputs.config import OutputConfig

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ElasticsearchOutput", "bulk_delivery"]


def bulk_delivery(response: dict[str, Any], size: int) -> Delivery:
    """Read a ``_bulk`` response item by item.

    >>> bulk_delivery({"errors": True, "items": [{"create": {"status": 201}},
    ...     {"create": {"status": 409}}, {"create": {"status": 429}},
    ...     {"create": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}]}, 4)
    Delivery(refused={3: 'HTTP 400: mapper_parsing_exception'}, retry=[2], whole_batch=False)
    """
    delivery = Delivery()
    items = response.get("items")
    if not isinstance(items, list) or len(items) != size:
        delivery.retry = list(range(size))  # an answer we cannot read: nothing is known taken
        return delivery
    for i, item in enumerate(items):
        result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
        status = int(result.get("status", 500))
        if status < 300 or status == 409:
            continue
        if status == 429 or status >= 500:
            delivery.retry.append(i)
            continue
        error = result.get("error") or {}
        kind = error.get("type", "") if isinstance(error, dict) else str(error)
        delivery.refused[i] = f"HTTP {status}: {kind}"[:300]
    return delivery


class ElasticsearchOutput(Output):
    """The ``_bulk`` API."""

    type: ClassVar[str] = "elasticsearch"
    default_format: ClassVar[str | None] = "ecs"
    options: ClassVar[frozenset[str]] = frozenset({"index", "auth_scheme"})

    def __init__(self, config: OutputConfig) -> None:
        super().__init__(config)
        if not config.index:
            raise ConfigError(f"output {config.name}: elasticsearch needs an index")

    def auth_headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        return {"Authorization": f"{self.config.auth_scheme} {self.token.get_secret_value()}"}

    async def deliver(
        self, http: aiohttp.ClientSession, alerts: Sequence[dict[str, Any]]
    ) -> Delivery:
        lines: list[bytes] = []
        for alert, doc in zip(alerts, self.documents(alerts), strict=True):
            action = {"create": {"_index": self.config.index, "_id": alert.get("id")}}
            lines += [orjson.dumps(action), orjson.dumps(doc)]
        reply = await self.post(http, b"\n".join(lines) + b"\n", "application/x-ndjson", "/_bulk")
        whole = classify(reply, len(alerts))
        if whole.refused:
            return whole
        try:
            response = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return Delivery(retry=list(range(len(alerts))))
        return bulk_delivery(response, len(alerts))
