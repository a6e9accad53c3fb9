"""The alert Klaxon writes to the alerts topic (`klaxon.alert/v1`), as a strict pydantic model.

The engine builds plain dicts of exactly this shape (`detections.alert.to_alert`); the model
documents it, validates it in tests and generates `schemas/json/alert.schema.json`. Unknown
keys are an error: we write alerts, so any drift is our bug.

>>> a = Alert.model_validate(example_alert())
>>> a.severity, a.rule.level, a.object.resource
('high', 'high', 'pods')
>>> Alert.model_validate({**example_alert(), "colour": "red"})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for KlaxonAlert
colour
  Extra inputs are not permitted...
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas.audit import Stage

Severity = Literal["informational", "low", "medium", "high", "critical"]
#: Severities from least to most severe (Sigma `level` values).
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
#: The value of every alert's `schema` field.
ALERT_SCHEMA: Literal["klaxon.alert/v1"] = "klaxon.alert/v1"

_STRICT = ConfigDict(extra="forbid")
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class AlertRule(BaseModel):
    """The rule that fired, with the provenance Sigma's licence asks us to show."""

    model_config = _STRICT

    id: str
    title: str
    level: Severity
    status: str | None = None
    author: str | None = None
    source: str | None = Field(default=None, description="Rule file or pack it came from.")
    license: str | None = None
    references: list[str] = Field(default_factory=list)


class Technique(BaseModel):
    """One MITRE ATT&CK technique (`T1611`, `T1098.006`)."""

    model_config = _STRICT

    id: str
    name: str


class Attack(BaseModel):
    """MITRE ATT&CK mapping of the rule."""

    model_config = _STRICT

    tactics: list[str] = Field(default_factory=list, description="Tactic ids, e.g. TA0004.")
    techniques: list[Technique] = Field(default_factory=list)


class AlertUser(BaseModel):
    """The principal that made the request."""

    model_config = _STRICT

    username: str | None = None
    groups: list[str] = Field(default_factory=list)
    uid: str | None = None


class AlertObject(BaseModel):
    """The object the request was about (from `objectRef`); every field optional."""

    model_config = _STRICT

    api_group: str | None = None
    api_version: str | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


class RelatedGroup(BaseModel):
    """A group folded into this one: a less severe rule that fired on the same event."""

    model_config = _STRICT

    group: str = Field(description="The folded group's id.")
    rule: str = Field(description="Its rule id.")
    title: str
    count: int = Field(ge=1)


class AlertGroup(BaseModel):
    """The matches of one rule on one key within one window, reported as one alert."""

    model_config = _STRICT

    id: str = Field(pattern=_UUID, description="uuid5 of rule id, key and window index.")
    key: str = Field(description="<cluster>|<JSON list of the group-by values>.")
    count: int = Field(ge=1, description="Matches so far.")
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_ids: list[str] = Field(default_factory=list, description="auditIDs (capped).")
    update: int = Field(default=0, ge=0, description="0 for the first alert, then 1, 2, ...")
    related: list[RelatedGroup] = Field(default_factory=list)


class Alert(BaseModel):
    """One alert: a rule matched one canonical audit event."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        title="KlaxonAlert",
        json_schema_extra={"$id": "https://klaxon.dev/schemas/alert.schema.json"},
    )

    schema_: Literal["klaxon.alert/v1"] = Field(alias="schema", default=ALERT_SCHEMA)
    id: str = Field(pattern=_UUID, description="uuid5 of rule id, auditID and stage.")
    rule: AlertRule
    summary: str
    description: str = ""
    severity: Severity
    attack: Attack = Field(default_factory=Attack)
    mtmk: list[str] = Field(
        default_factory=list, description="Microsoft Threat Matrix for Kubernetes ids."
    )
    event_time: datetime | None = None
    cluster: str
    audit_id: str
    stage: Stage
    verb: str
    request_uri: str | None = None
    user: AlertUser = Field(default_factory=AlertUser)
    impersonated_user: str | None = None
    source_ips: list[str] = Field(default_factory=list)
    user_agent: str | None = None
    object: AlertObject = Field(default_factory=AlertObject)
    response_code: int | None = None
    decision: str | None = Field(default=None, description="authorization.k8s.io/decision.")
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="Matched field paths and the values they had."
    )
    falsepositives: list[str] = Field(default_factory=list)
    tags: list[str] = Field(
        default_factory=list, description="The rule's tags (attack.*, cve.*, team-defined)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Static labels of the deployment (KLAXON_LABELS: env, team, region ...).",
    )
    group: AlertGroup | None = None
    incident: str | None = Field(
        default=None, description="Shared by the alerts of one principal's attack chain."
    )


def example_alert() -> dict[str, Any]:
    """A complete, valid alert dict (for docs and tests)."""
    return {
        "schema": ALERT_SCHEMA,
        "id": "0b0f6a3e-4a4c-5d6e-8f90-1a2b3c4d5e6f",
        "rule": {
            "id": "7d2b6f0a-2c55-4c0e-9d0c-3a6f8a1f1e11",
            "title": "Privileged container created",
            "level": "high",
            "status": "stable",
            "author": "Klaxon",
            "source": "detections/rules/privileged_container.yml",
            "license": "Apache-2.0",
            "references": ["https://attack.mitre.org/techniques/T1611/"],
        },
        "summary": "minikube-user created privileged pod default/nginx",
        "description": "A pod with a privileged container was created.",
        "severity": "high",
        "attack": {
            "tactics": ["TA0004"],
            "techniques": [{"id": "T1611", "name": "Escape to Host"}],
        },
        "mtmk": ["MS-TA9018"],
        "event_time": "2018-10-25T13:58:49.730588Z",
        "cluster": "default",
        "audit_id": "6a2ad4a9-0d6b-4b6e-9a0b-2f7c1c9f9d11",
        "stage": "ResponseComplete",
        "verb": "create",
        "request_uri": "/api/v1/namespaces/default/pods",
        "user": {"username": "minikube-user", "groups": ["system:masters"], "uid": None},
        "impersonated_user": None,
        "source_ips": ["192.168.99.1"],
        "user_agent": "kubectl/v1.12.1",
        "object": {
            "api_group": "",
            "api_version": "v1",
            "resource": "pods",
            "subresource": None,
            "namespace": "default",
            "name": "nginx",
        },
        "response_code": 201,
        "decision": "allow",
        "evidence": {"podSpec.containers.securityContext.privileged": [True]},
        "falsepositives": ["CNI and storage daemonsets"],
        "tags": ["attack.privilege-escalation", "attack.t1611"],
        "labels": {"env": "prod", "team": "platform-security"},
        "group": {
            "id": "5b0c3f56-3c1e-5b8e-9d41-6f0a2e7c9b12",
            "key": 'default|["default/Pod/nginx"]',
            "count": 1,
            "first_seen": "2018-10-25T13:58:49.730588Z",
            "last_seen": "2018-10-25T13:58:49.730588Z",
            "event_ids": ["6a2ad4a9-0d6b-4b6e-9a0b-2f7c1c9f9d11"],
            "update": 0,
            "related": [],
        },
        "incident": "2f9c7d7e-8d0b-5b3f-a1c4-3e5d7f9b1a20",
    }
