"""A generic HTTPS webhook: each alert POSTed as one JSON object, in a format or Falco's shape.

``shape: falco`` writes what Falco posts to falcosidekick (``output``, ``priority``, ``rule``,
``time``, ``output_fields``, ``source``, ``tags``, ``hostname``), so falcosidekick's outputs
(its ``/`` endpoint) take Klaxon's alerts as they take Falco's k8saudit alerts: the output
fields use the k8saudit plugin's ``ka.*`` names.

>>> from schemas.alert import example_alert
>>> f = falco_event(example_alert())
>>> f["priority"], f["rule"], f["source"], f["hostname"]
('Error', 'Privileged container created', 'k8s_audit', 'default')
>>> f["output_fields"]["ka.user.name"]
'minikube-user'
>>> f["tags"]
['T1611', 'TA0004', 'attack.privilege-escalation', 'attack.t1611', 'k8s', 'klaxon']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pipeline.errors import OutputUnavailable
from pipeline.outputs.base import Delivery, Output, classify

if TYPE_CHECKING:
    import aiohttp

__all__ = ["WebhookOutput", "falco_event"]

#: Klaxon severities as Falco priorities (Falco: Emergency … Debug).
FALCO_PRIORITY = {
    "critical": "Critical",
    "high": "Error",
    "medium": "Warning",
    "low": "Notice",
    "informational": "Informational",
}


def falco_event(alert: dict[str, Any]) -> dict[str, Any]:
    """The alert in the JSON shape Falco sends to falcosidekick."""
    user = alert.get("user") or {}
    obj = alert.get("object") or {}
    fields: dict[str, Any] = {
        "ka.auditid": alert.get("audit_id"),
        "ka.verb": alert.get("verb"),
        "ka.uri": alert.get("request_uri"),
        "ka.user.name": user.get("username"),
        "ka.user.groups": user.get("groups") or None,
        "ka.impuser.name": alert.get("impersonated_user"),
        "ka.target.resource": obj.get("resource"),
        "ka.target.subresource": obj.get("subresource"),
        "ka.target.namespace": obj.get("namespace"),
        "ka.target.name": obj.get("name"),
        "ka.sourceips": alert.get("source_ips") or None,
        "ka.useragent": alert.get("user_agent"),
        "ka.response.code": alert.get("response_code"),
        "klaxon.alert.id": alert.get("id"),
        "klaxon.rule.id": (alert.get("rule") or {}).get("id"),
        "klaxon.cluster": alert.get("cluster"),
        "klaxon.incident": alert.get("incident"),
    }
    for key, value in (alert.get("labels") or {}).items():
        fields[f"klaxon.label.{key}"] = value
    attack = alert.get("attack") or {}
    tags = [t.get("id") for t in attack.get("techniques", [])] + list(attack.get("tactics", []))
    severity = str(alert.get("severity") or "")
    priority = FALCO_PRIORITY.get(severity, "Warning")
    when = alert.get("event_time") or ""
    return {
        "output": f"{when[11:23]}: {priority} {alert.get('summary', '')}",
        "priority": priority,
        "rule": (alert.get("rule") or {}).get("title", ""),
        "time": when,
        "output_fields": {k: v for k, v in fields.items() if v is not None},
        "source": "k8s_audit",
        "tags": sorted(
            {str(t) for t in [*tags, *(alert.get("tags") or [])] if t} | {"k8s", "klaxon"}
        ),
        "hostname": str(alert.get("cluster") or ""),
    }


class WebhookOutput(Output):
    """One POST per alert (what most webhook receivers expect), or with ``body: ndjson`` one
    POST per batch, alerts as newline-separated JSON (Google SecOps' webhook feeds)."""

    type: ClassVar[str] = "webhook"
    options: ClassVar[frozenset[str]] = frozenset({"shape", "body"})

    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        """The alert as this webhook sends it."""
        return falco_event(alert) if self.config.shape == "falco" else self.documents([alert])[0]

    async def deliver(
        self, http: aiohttp.ClientSession, alerts: Sequence[dict[str, Any]]
    ) -> Delivery:
        if self.config.body == "ndjson":
            body = b"\n".join(orjson.dumps(self.document(a)) for a in alerts)
            return classify(await self.post(http, body, "application/json"), len(alerts))
        delivery = Delivery()
        for i, alert in enumerate(alerts):
            try:
                doc = self.document(alert)
            except (ValueError, TypeError) as exc:
                delivery.refused[i] = f"cannot be written: {exc}"[:300]
                continue
            try:
                reply = await self.post(http, orjson.dumps(doc), "application/json")
            except OutputUnavailable:
                if i == 0:
                    raise  # nothing taken yet: the runner retries the batch
                delivery.retry.extend(range(i, len(alerts)))
                return delivery
            for reason in classify(reply, 1).refused.values():
                delivery.refused[i] = reason
        return delivery
