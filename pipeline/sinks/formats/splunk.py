"""Splunk HTTP Event Collector envelopes, with CIM-friendly field names.

One envelope per alert for the HEC ``/services/collector/event`` endpoint: ``time`` (epoch
seconds), ``host`` (the cluster), ``source``, ``sourcetype`` (``klaxon:alert``) and ``event``.
The event carries the fields Splunk's Common Information Model *Alerts* and *Intrusion
Detection* data models look for (``app``, ``vendor_product``, ``type``, ``id``, ``signature``,
``signature_id``, ``severity``, ``severity_id``, ``description``, ``subject``, ``user``,
``src``, ``dest``, ``action``, ``category``, ``mitre_technique_id``), then the whole native
alert under ``klaxon`` so nothing is lost. ``fields`` holds the few indexed fields worth
searching with ``tstats`` (flat strings only, as HEC requires). The index is the output's
setting, not the format's.

>>> from schemas.alert import example_alert
>>> e = SplunkHecFormat().document(example_alert())
>>> e["sourcetype"], e["time"], e["event"]["signature"], e["event"]["mitre_technique_id"]
('klaxon:alert', 1540475929.73, 'Privileged container created', ['T1611'])
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.sinks.formats.attack import mappings
from pipeline.sinks.formats.base import JsonFormat, event_ms

__all__ = ["SplunkHecFormat"]

SOURCETYPE = "klaxon:alert"
SEVERITY_IDS = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


class SplunkHecFormat(JsonFormat):
    """A Splunk HEC event envelope per alert."""

    name: ClassVar[str] = "splunk_hec"
    schema: ClassVar[str] = "splunk.hec.event/klaxon:alert"

    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        rule = alert.get("rule") or {}
        obj = alert.get("object") or {}
        severity = str(alert.get("severity") or rule.get("level") or "")
        maps = mappings(alert)
        techniques = [
            m.sub_technique.id if m.sub_technique else m.technique.id
            for m in maps
            if m.technique is not None
        ]
        tactics = list(dict.fromkeys(t.name for m in maps for t in m.tactics))
        ips = alert.get("source_ips") or []
        target = "/".join(p for p in (obj.get("namespace"), obj.get("name")) if p)
        event: dict[str, Any] = {
            "app": "kubernetes",
            "vendor_product": "Klaxon",
            "type": "alert",
            "id": alert["id"],
            "signature": rule.get("title"),
            "signature_id": rule.get("id"),
            "severity": severity,
            "severity_id": SEVERITY_IDS.get(severity, 0),
            "description": alert.get("description") or rule.get("title"),
            "subject": alert.get("summary"),
            "user": (alert.get("user") or {}).get("username"),
            "src": ips[0] if ips else None,
            "dest": alert.get("cluster"),
            "action": alert.get("verb"),
            "object": target or None,
            "object_category": obj.get("resource"),
            "category": tactics or None,
            "mitre_technique_id": techniques or None,
            "incident": alert.get("incident"),
            "klaxon": alert,
        }
        fields: dict[str, Any] = {
            "rule_id": str(rule.get("id") or ""),
            "severity": severity,
            "cluster": str(alert.get("cluster") or ""),
        }
        if alert.get("incident"):
            fields["incident"] = str(alert["incident"])
        group = alert.get("group")
        if isinstance(group, dict) and group.get("id"):
            fields["group_id"] = str(group["id"])
        for key, value in sorted((alert.get("labels") or {}).items()):
            fields[f"label_{key}"] = str(value)
        return {
            "time": round(event_ms(alert) / 1000, 3),
            "host": str(alert.get("cluster") or "unknown"),
            "source": "klaxon",
            "sourcetype": SOURCETYPE,
            "event": {k: v for k, v in event.items() if v is not None},
            "fields": fields,
        }
