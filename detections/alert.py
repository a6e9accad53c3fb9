"""Turn a :class:`~detections.engine.Match` into a ``klaxon.alert/v1`` dict (``schemas.Alert``).

Alert ids are deterministic, so a replayed or reprocessed event never makes a second alert:
``uuid5(KLAXON_NS, f"{rule.id}|{auditID}|{stage}")``.

>>> alert_id("7d2b6f0a-2c55-4c0e-9d0c-3a6f8a1f1e11", "a-1", "ResponseComplete")
'66b1a29f-dff4-5735-af85-6123bf49fc38'
>>> render_summary("{user.username} exec'd into {objectRef.name} ({nope})",
...                {"user": {"username": "alice"}, "objectRef": {"name": "web-0"}})
"alice exec'd into web-0 (?)"
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from detections.engine import Match
from detections.fields import Cache, Getter, compile_path, resolve_alias
from detections.grouping import KLAXON_NS as KLAXON_NS
from detections.grouping import group_block
from schemas.keys import cluster_of

_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-/]+)\}")
_MAX_SUMMARY_VALUE = 200


def alert_id(rule_id: str, audit_id: str, stage: str) -> str:
    """The deterministic alert id for a rule firing on one stage of one request."""
    return str(uuid.uuid5(KLAXON_NS, f"{rule_id}|{audit_id}|{stage}"))


def render_summary(template: str, event: dict[str, Any]) -> str:
    """Fill ``{field.path}`` placeholders from the event; missing fields render as ``?``.

    Only plain field paths are substituted (no attribute access or format specs), and lists
    render comma-separated.

    >>> render_summary("{user.username} read {objectRef.name}", {"user": {"username": "bob"}})
    'bob read ?'
    """
    texts, getters = _summary_plan(template)
    if not getters:
        return template
    out = [texts[0]]
    cache: Cache = {}
    for getter, text in zip(getters, texts[1:], strict=True):
        leaves = [v for v in getter(event, cache) if v is not None]
        if not leaves:
            out.append("?")
        else:
            value = ",".join(_scalar(v) for v in leaves)
            if len(value) > _MAX_SUMMARY_VALUE:
                value = value[: _MAX_SUMMARY_VALUE - 1] + "…"
            out.append(value)
        out.append(text)
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def _summary_plan(template: str) -> tuple[tuple[str, ...], tuple[Getter, ...]]:
    """A template's literal texts and its placeholders' compiled getters, between them
    (compiled once per template, not per alert: compiling a path was half an alert's cost)."""
    parts = _PLACEHOLDER.split(template)  # text, field, text, field, ..., text
    texts = tuple(parts[0::2])
    getters = tuple(compile_path(resolve_alias(field)) for field in parts[1::2])
    return texts, getters


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mitre() -> Any:
    try:
        from mitre import attack
    except ImportError:  # pragma: no cover - mitre ships with klaxon
        return None
    return attack


def _attack_block(techniques: tuple[str, ...], tactics: tuple[str, ...]) -> dict[str, Any]:
    """Tactic ids (TA0004) and techniques with names from the bundled ATT&CK catalogue."""
    attack = _mitre()
    tactic_ids: list[str] = []
    techs: list[dict[str, str]] = []
    for short in tactics:
        ident = short
        if attack is not None:
            try:
                ident = attack.tactic(short).id
            except LookupError:
                ident = short
        if ident not in tactic_ids:
            tactic_ids.append(ident)
    for tid in techniques:
        name = ""
        if attack is not None:
            try:
                name = attack.technique(tid).name
            except LookupError:
                name = ""
        techs.append({"id": tid, "name": name})
    return {"tactics": tactic_ids, "techniques": techs}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def to_alert(match: Match) -> dict[str, Any]:
    """A ``schemas.Alert``-shaped dict for one match (pure; the same match gives the same dict)."""
    rule, event = match.rule, match.event
    user = _mapping(event.get("user"))
    imp = event.get("impersonatedUser")
    ref = _mapping(event.get("objectRef"))
    status = _mapping(event.get("responseStatus"))
    annotations = _mapping(event.get("annotations"))
    code = status.get("code")
    audit_id = str(event.get("auditID") or "")
    stage = str(event.get("stage") or "")
    groups = user.get("groups")
    ips = event.get("sourceIPs")
    level = rule.level or "medium"
    when = _str_or_none(event.get("stageTimestamp")) or _str_or_none(
        event.get("requestReceivedTimestamp")
    )
    return {
        "schema": "klaxon.alert/v1",
        "id": alert_id(rule.id, audit_id, stage),
        "rule": {
            "id": rule.id,
            "title": rule.title,
            "level": level,
            "status": rule.status,
            "author": rule.author,
            "source": rule.source,
            "license": rule.license,
            "references": list(rule.references),
        },
        "summary": render_summary(rule.klaxon.summary, event)
        if rule.klaxon.summary
        else rule.title,
        "description": (rule.description or "").strip(),
        "severity": level,
        "attack": _attack_block(rule.techniques, rule.tactics),
        "mtmk": list(rule.klaxon.mtmk),
        "event_time": when,
        "cluster": cluster_of(event),
        "audit_id": audit_id,
        "stage": stage,
        "verb": str(event.get("verb") or ""),
        "request_uri": _str_or_none(event.get("requestURI")),
        "user": {
            "username": _str_or_none(user.get("username")),
            "groups": [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else [],
            "uid": _str_or_none(user.get("uid")),
        },
        "impersonated_user": _str_or_none(imp.get("username")) if isinstance(imp, dict) else None,
        "source_ips": [i for i in ips if isinstance(i, str)] if isinstance(ips, list) else [],
        "user_agent": _str_or_none(event.get("userAgent")),
        "object": {
            "api_group": _str_or_none(ref.get("apiGroup")),
            "api_version": _str_or_none(ref.get("apiVersion")),
            "resource": _str_or_none(ref.get("resource")),
            "subresource": _str_or_none(ref.get("subresource")),
            "namespace": _str_or_none(ref.get("namespace")),
            "name": _str_or_none(ref.get("name")),
        },
        "response_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        "decision": _str_or_none(annotations.get("authorization.k8s.io/decision")),
        "evidence": dict(match.matched_fields),
        "falsepositives": list(rule.falsepositives),
        "tags": list(rule.tags),
        "group": group_block(rule, event, when),
    }


def alert_builder(labels: Mapping[str, str]) -> Callable[[Match], dict[str, Any]]:
    """`to_alert` with the deployment's static labels added (`to_alert` itself without any).

    >>> alert_builder({}) is to_alert
    True
    """
    if not labels:
        return to_alert
    fixed = dict(labels)

    def build(match: Match) -> dict[str, Any]:
        return add_labels(to_alert(match), fixed)

    return build


def add_labels(alert: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """Set the deployment's static labels on ``alert`` (in place; returns it). Labels are
    configuration (``KLAXON_LABELS``), not rule content, so the shells add them where alerts
    leave the process; an alert that already has labels keeps its own values.

    >>> add_labels({"id": "a"}, {"env": "prod"})
    {'id': 'a', 'labels': {'env': 'prod'}}
    >>> add_labels({"id": "a", "labels": {"env": "dev"}}, {"env": "prod", "team": "sec"})
    {'id': 'a', 'labels': {'env': 'dev', 'team': 'sec'}}
    >>> add_labels({"id": "a"}, {})
    {'id': 'a'}
    """
    if labels:
        own = alert.get("labels")
        alert["labels"] = {**labels, **own} if isinstance(own, dict) else dict(labels)
    return alert
