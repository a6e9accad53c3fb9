"""Elastic Common Schema documents (``event.kind: alert``), ready for an index or data stream.

ECS fields where ECS has them: ``rule.*``, ``threat.*`` (``threat.framework: MITRE ATT&CK``;
a sub-technique goes to ``threat.technique.subtechnique.*`` beside its parent),
``user.name``/``user.id`` (``user.effective.name`` for an impersonated user; ECS's
``user.group.name`` holds one group, so a user's groups stay in
``kubernetes.audit.user.groups``), ``source.ip``, ``user_agent.original``, ``orchestrator.*``
for the cluster and object, ``labels`` and ``tags``. The request itself goes under
``kubernetes.audit.*`` with the audit log's own names, as Elastic's Kubernetes audit
integration stores it (annotation keys de-dotted). Klaxon-only fields (evidence, group,
incident, Microsoft Threat Matrix ids) are under ``klaxon.*``. ``event.severity`` and
``event.risk_score`` follow Elastic's detection-rule scale (low 21, medium 47, high 73,
critical 99).

>>> from schemas.alert import example_alert
>>> d = EcsFormat().document(example_alert())
>>> d["event"]["kind"], d["threat"]["framework"], d["threat"]["technique"]["id"]
('alert', 'MITRE ATT&CK', ['T1611'])
>>> d["orchestrator"]["resource"], d["event"]["severity"]
({'type': 'pods', 'name': 'nginx'}, 73)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pipeline.sinks.formats.attack import ATTACK_VERSION, mappings
from pipeline.sinks.formats.base import JsonFormat, event_ms

__all__ = ["ECS_VERSION", "EcsFormat"]

#: The ECS version written in ``ecs.version`` (every field used exists since ECS 8.0).
ECS_VERSION = "8.11.0"
RISK = {"informational": 0, "low": 21, "medium": 47, "high": 73, "critical": 99}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _threat(alert: dict[str, Any]) -> dict[str, Any]:
    tactics: dict[str, Any] = {}
    techniques: dict[str, Any] = {}
    subs: dict[str, Any] = {}
    for m in mappings(alert):
        for t in m.tactics:
            tactics.setdefault(t.id, t)
        if m.technique is not None:
            techniques.setdefault(m.technique.id, m.technique)
        if m.sub_technique is not None:
            subs.setdefault(m.sub_technique.id, m.sub_technique)
    if not (tactics or techniques):
        return {}

    def fields(refs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": list(refs), "name": [r.name for r in refs.values()]}
        urls = [r.url for r in refs.values() if r.url]
        if urls:
            out["reference"] = urls
        return out

    threat: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    if tactics:
        threat["tactic"] = fields(tactics)
    if techniques:
        threat["technique"] = fields(techniques)
        if subs:
            threat["technique"]["subtechnique"] = fields(subs)
    return threat


def _audit(alert: dict[str, Any]) -> dict[str, Any]:
    """The request under ``kubernetes.audit``, in the audit event's own field names."""
    user = alert.get("user") or {}
    obj = alert.get("object") or {}
    audit: dict[str, Any] = {
        "auditID": alert.get("audit_id"),
        "stage": alert.get("stage"),
        "verb": alert.get("verb"),
        "requestURI": alert.get("request_uri"),
        "user": {k: v for k, v in user.items() if v not in (None, [])},
        "sourceIPs": alert.get("source_ips") or None,
        "userAgent": alert.get("user_agent"),
        "objectRef": {
            k: obj.get(s)
            for k, s in (
                ("resource", "resource"),
                ("subresource", "subresource"),
                ("namespace", "namespace"),
                ("name", "name"),
                ("apiGroup", "api_group"),
                ("apiVersion", "api_version"),
            )
            if obj.get(s) is not None
        },
    }
    if alert.get("impersonated_user"):
        audit["impersonatedUser"] = {"username": alert["impersonated_user"]}
    if alert.get("response_code") is not None:
        audit["responseStatus"] = {"code": alert["response_code"]}
    if alert.get("decision"):
        audit["annotations"] = {"authorization_k8s_io/decision": alert["decision"]}
    return {k: v for k, v in audit.items() if v not in (None, {})}


def _orchestrator(alert: dict[str, Any]) -> dict[str, Any]:
    obj = alert.get("object") or {}
    out: dict[str, Any] = {"type": "kubernetes", "cluster": {"name": alert.get("cluster")}}
    if obj.get("namespace"):
        out["namespace"] = obj["namespace"]
    resource: dict[str, str] = {}
    if obj.get("resource"):
        sub = f"/{obj['subresource']}" if obj.get("subresource") else ""
        resource["type"] = obj["resource"] + sub
    if obj.get("name"):
        resource["name"] = obj["name"]
    if resource:
        out["resource"] = resource
    if obj.get("api_version"):
        group = obj.get("api_group")
        out["api_version"] = f"{group}/{obj['api_version']}" if group else obj["api_version"]
    return out


def _user(alert: dict[str, Any]) -> dict[str, Any]:
    user = alert.get("user") or {}
    out: dict[str, Any] = {}
    if user.get("username"):
        out["name"] = user["username"]
    if user.get("uid"):
        out["id"] = user["uid"]
    if alert.get("impersonated_user"):
        out["effective"] = {"name": alert["impersonated_user"]}
    return out


def _event(alert: dict[str, Any], severity: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "alert",
        "category": ["intrusion_detection"],
        "type": ["info"],
        "id": alert["id"],
        "action": alert.get("verb"),
        "dataset": "klaxon.alerts",
        "module": "klaxon",
        "provider": "kubernetes",
        "severity": RISK.get(severity, 0),
        "risk_score": float(RISK.get(severity, 0)),
    }
    code = alert.get("response_code")
    if isinstance(code, int):
        event["outcome"] = "success" if code < 400 else "failure"
    group = alert.get("group") if isinstance(alert.get("group"), dict) else None
    if group:
        for ecs_key, key in (("start", "first_seen"), ("end", "last_seen")):
            if group.get(key):
                event[ecs_key] = group[key]
    return {k: v for k, v in event.items() if v is not None}


class EcsFormat(JsonFormat):
    """One ECS document per alert."""

    name: ClassVar[str] = "ecs"
    schema: ClassVar[str] = f"ecs/{ECS_VERSION}"

    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        rule = alert.get("rule") or {}
        severity = str(alert.get("severity") or rule.get("level") or "")
        ecs_rule: dict[str, Any] = {
            "id": rule.get("id"),
            "uuid": rule.get("id"),
            "name": rule.get("title"),
            "description": alert.get("description") or None,
            "author": [rule["author"]] if rule.get("author") else None,
            "license": rule.get("license"),
            "reference": (rule.get("references") or [None])[0],
            "ruleset": rule.get("source"),
            "category": "kubernetes audit",
        }
        doc: dict[str, Any] = {
            "@timestamp": _iso(event_ms(alert)),
            "ecs": {"version": ECS_VERSION},
            "message": alert.get("summary") or "",
            "event": _event(alert, severity),
            "log": {"level": severity},
            "rule": {k: v for k, v in ecs_rule.items() if v is not None},
            "threat": _threat(alert),
            "user": _user(alert),
            "orchestrator": _orchestrator(alert),
            "kubernetes": {"audit": _audit(alert)},
            "observer": {"type": "ids", "vendor": "Klaxon", "product": "Klaxon"},
        }
        ips = alert.get("source_ips") or []
        if ips:
            doc["source"] = {"ip": ips[0]}
        related = {
            "ip": ips,
            "user": [u for u in (doc["user"].get("name"), alert.get("impersonated_user")) if u],
        }
        doc["related"] = {k: v for k, v in related.items() if v}
        if alert.get("user_agent"):
            doc["user_agent"] = {"original": alert["user_agent"]}
        if alert.get("labels"):
            doc["labels"] = dict(alert["labels"])
        if alert.get("tags"):
            doc["tags"] = list(alert["tags"])
        klaxon = {
            k: alert[k]
            for k in ("evidence", "mtmk", "group", "incident", "falsepositives")
            if alert.get(k) not in (None, [], {}, "")
        }
        klaxon["attack_version"] = ATTACK_VERSION
        doc["klaxon"] = klaxon
        return {k: v for k, v in doc.items() if v not in ({}, None)}
