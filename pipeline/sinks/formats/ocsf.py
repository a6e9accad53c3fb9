"""OCSF Detection Finding (class_uid 2004), the schema version `py-ocsf-models` implements.

One alert is one finding. A grouped alert (`group`, see `schemas.alert`) keeps the group id as
``finding_info.uid`` so every update of a group is the same finding: activity Create for the
first alert of a group (``group.update`` 0, or no group), Update afterwards. The request that
triggered the rule is the evidence (``evidences[0]``: ``actor`` with the principal and the
authorizer's decision, ``src_endpoint``, ``api`` with the verb and audit id, the matched field
values as ``data``); the Kubernetes object and the cluster are the ``resources``. What OCSF has
no attribute for (stage, request URI, Microsoft Threat Matrix ids, rule tags, labels, incident)
goes under ``unmapped.klaxon``.

>>> from schemas.alert import example_alert
>>> f = OcsfFormat().document(example_alert())
>>> f["class_uid"], f["type_uid"], f["severity_id"], f["finding_info"]["analytic"]["type"]
(2004, 200401, 4, 'Rule')
>>> f["finding_info"]["attacks"][0]["technique"]["uid"], f["finding_info"]["attacks"][0]["version"]
('T1611', '18.1')
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.sinks.formats.attack import ATTACK_VERSION, Mapping, mappings
from pipeline.sinks.formats.base import PRODUCT_VERSION, JsonFormat, epoch_ms, event_ms

__all__ = ["OCSF_VERSION", "OcsfFormat"]

#: The OCSF schema version written in ``metadata.version`` (the one `py-ocsf-models` models).
OCSF_VERSION = "1.5.0"
CLASS_UID = 2004
CATEGORY_UID = 2
SEVERITY_IDS = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
ACTIVITIES = {1: "Create", 2: "Update"}


def _ref(ref: Any) -> dict[str, Any]:
    out = {"uid": ref.id, "name": ref.name}
    if ref.url:
        out["src_url"] = ref.url
    return out


def _attack(m: Mapping) -> dict[str, Any]:
    out: dict[str, Any] = {"version": ATTACK_VERSION}
    if m.technique is not None:
        out["technique"] = _ref(m.technique)
    if m.sub_technique is not None:
        out["sub_technique"] = _ref(m.sub_technique)
    if m.tactics:
        out["tactic"] = _ref(m.tactics[0])
        out["tactics"] = [_ref(t) for t in m.tactics]
    return out


def _resources(alert: dict[str, Any]) -> list[dict[str, Any]]:
    obj = alert.get("object") or {}
    cluster = {
        "type": "kubernetes/cluster",
        "name": alert.get("cluster"),
        "uid": alert.get("cluster"),
    }
    if not obj.get("resource"):
        return [cluster]
    kind = obj["resource"] + (f"/{obj['subresource']}" if obj.get("subresource") else "")
    resource: dict[str, Any] = {"type": f"kubernetes/{kind}"}
    for key in ("name", "namespace"):
        if obj.get(key):
            resource[key] = obj[key]
    if obj.get("api_version"):
        resource["version"] = obj["api_version"]
    resource["data"] = {k: v for k, v in obj.items() if v is not None} | {
        "cluster": alert.get("cluster")
    }
    return [resource, cluster]


def _actor(alert: dict[str, Any]) -> dict[str, Any]:
    user = alert.get("user") or {}
    name = user.get("username") or ""
    ocsf_user: dict[str, Any] = {
        "name": name,
        # OCSF user type_id: 1 User, 3 System (a service account or a node acting for a system).
        "type_id": 3 if name.startswith(("system:serviceaccount:", "system:node:")) else 1,
    }
    if user.get("uid"):
        ocsf_user["uid"] = user["uid"]
    if user.get("groups"):
        ocsf_user["groups"] = [{"name": g} for g in user["groups"]]
    actor: dict[str, Any] = {"user": ocsf_user}
    if alert.get("user_agent"):
        actor["app_name"] = alert["user_agent"]
    if alert.get("decision"):
        actor["authorizations"] = [{"decision": alert["decision"]}]
    return actor


def _evidence(alert: dict[str, Any]) -> dict[str, Any]:
    api: dict[str, Any] = {
        "operation": alert.get("verb") or "",
        "request": {"uid": alert.get("audit_id") or ""},
    }
    if alert.get("response_code") is not None:
        api["response"] = {"code": alert["response_code"]}
    evidence: dict[str, Any] = {
        "name": "kubernetes audit event",
        "actor": _actor(alert),
        "api": api,
    }
    ips = alert.get("source_ips") or []
    if ips:
        evidence["src_endpoint"] = {"ip": ips[0]}
    if alert.get("evidence"):
        evidence["data"] = alert["evidence"]
    return evidence


def _observables(alert: dict[str, Any]) -> list[dict[str, Any]]:
    # OCSF observable type_id: 2 IP Address, 4 User Name.
    out = [
        {"name": "actor.user.name", "type_id": 4, "type": "User Name", "value": n}
        for n in [(alert.get("user") or {}).get("username")]
        if n
    ]
    out += [
        {"name": "src_endpoint.ip", "type_id": 2, "type": "IP Address", "value": ip}
        for ip in alert.get("source_ips") or []
    ]
    return out


def _unmapped(alert: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "cluster",
        "stage",
        "request_uri",
        "impersonated_user",
        "mtmk",
        "tags",
        "labels",
        "incident",
        "group",
        "falsepositives",
    )
    extra = {k: alert[k] for k in keys if alert.get(k) not in (None, [], {}, "")}
    rule = alert.get("rule") or {}
    extra["rule"] = {k: v for k, v in rule.items() if v not in (None, [])}
    return {"klaxon": extra}


class OcsfFormat(JsonFormat):
    """OCSF Detection Finding JSON (class 2004)."""

    name: ClassVar[str] = "ocsf"
    schema: ClassVar[str] = f"ocsf.detection_finding/{OCSF_VERSION}"

    def document(self, alert: dict[str, Any]) -> dict[str, Any]:
        rule = alert.get("rule") or {}
        group = alert.get("group") if isinstance(alert.get("group"), dict) else None
        activity = 2 if group and group.get("update") else 1
        severity = str(alert.get("severity") or rule.get("level") or "")
        attacks = [_attack(m) for m in mappings(alert)]
        when = event_ms(alert)
        info: dict[str, Any] = {
            "uid": (group or {}).get("id") or alert["id"],
            "title": rule.get("title") or alert.get("summary") or "",
            "analytic": {
                "uid": rule.get("id"),
                "name": rule.get("title"),
                "type_id": 1,
                "type": "Rule",
            },
            "created_time": when,
            "data_sources": ["kubernetes audit log"],
        }
        if alert.get("description"):
            info["desc"] = alert["description"]
        if attacks:
            info["attacks"] = attacks
        if group:
            for ocsf_key, key in (
                ("first_seen_time", "first_seen"),
                ("last_seen_time", "last_seen"),
            ):
                if (ms := epoch_ms(group.get(key))) is not None:
                    info[ocsf_key] = ms
            if group.get("event_ids"):
                info["related_events"] = [{"uid": str(e)} for e in group["event_ids"]]
        metadata: dict[str, Any] = {
            "version": OCSF_VERSION,
            "uid": alert["id"],
            "product": {"name": "Klaxon", "vendor_name": "Klaxon", "version": PRODUCT_VERSION},
            "log_name": "klaxon.alerts",
        }
        if alert.get("event_time"):
            metadata["original_time"] = alert["event_time"]
        if alert.get("incident"):
            metadata["correlation_uid"] = alert["incident"]
        if alert.get("labels"):
            metadata["labels"] = [f"{k}:{v}" for k, v in sorted(alert["labels"].items())]
        doc: dict[str, Any] = {
            "activity_id": activity,
            "activity_name": ACTIVITIES[activity],
            "category_uid": CATEGORY_UID,
            "category_name": "Findings",
            "class_uid": CLASS_UID,
            "class_name": "Detection Finding",
            "type_uid": CLASS_UID * 100 + activity,
            "type_name": f"Detection Finding: {ACTIVITIES[activity]}",
            "time": when,
            "severity_id": SEVERITY_IDS.get(severity, 0),
            "severity": severity.capitalize() if severity in SEVERITY_IDS else "Unknown",
            "status_id": 1,
            "status": "New",
            "is_alert": True,
            "message": alert.get("summary") or "",
            "metadata": metadata,
            "finding_info": info,
            "resources": _resources(alert),
            "evidences": [_evidence(alert)],
            "observables": _observables(alert),
            "unmapped": _unmapped(alert),
        }
        if group and isinstance(group.get("count"), int):
            doc["count"] = group["count"]
            for ocsf_key, key in (("start_time", "first_seen"), ("end_time", "last_seen")):
                if (ms := epoch_ms(group.get(key))) is not None:
                    doc[ocsf_key] = ms
        if not doc["observables"]:
            del doc["observables"]
        return doc
