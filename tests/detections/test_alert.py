"""Alerts: schema shape, deterministic ids, summaries and ATT&CK names."""

from __future__ import annotations

import uuid

import pytest

from detections import Engine, load_rules
from detections.alert import KLAXON_NS, alert_id, render_summary, to_alert
from detections.fixtures import fixture_event

RULE = """
title: Privileged container created
id: 7d2b6f0a-2c55-4c0e-9d0c-3a6f8a1f1e11
status: stable
description: A pod with a privileged container was created.
author: Klaxon
tags: [attack.privilege-escalation, attack.t1611]
level: high
detection:
  selection:
    verb: create
    podSpec.containers.securityContext.privileged: true
  condition: selection
falsepositives: [CNI daemonsets]
klaxon:
  summary: '{user.username} created privileged pod {objectRef.namespace}/{objectRef.name}'
  mtmk: [MS-TA9018]
"""

EVENT = fixture_event(
    {
        "verb": "create",
        "objectRef": {"name": "evil"},
        "requestObject": {
            "kind": "Pod",
            "spec": {
                "containers": [
                    {"name": "a"},
                    {"name": "b", "securityContext": {"privileged": True}},
                ]
            },
        },
        "responseStatus": {"code": 201},
    }
)


@pytest.fixture(scope="module")
def alert() -> dict[str, object]:
    """The alert our example rule raises on the example event."""
    (match,) = Engine(load_rules([], texts={"p.yml": RULE})).evaluate(EVENT)
    return to_alert(match)


def test_alert_validates_against_the_schema(alert: dict[str, object]) -> None:
    """The dict is exactly what schemas.Alert accepts (extra keys are an error there)."""
    from schemas.alert import Alert

    Alert.model_validate(alert)


def test_alert_id_is_uuid5_of_rule_audit_id_and_stage(alert: dict[str, object]) -> None:
    """Replaying the same event gives the same id; the formula is the documented one."""
    expected = uuid.uuid5(
        KLAXON_NS, f"7d2b6f0a-2c55-4c0e-9d0c-3a6f8a1f1e11|{EVENT['auditID']}|ResponseComplete"
    )
    assert alert["id"] == str(expected)
    assert alert_id("r", "a", "ResponseStarted") != alert_id("r", "a", "ResponseComplete")


def test_alert_fields(alert: dict[str, object]) -> None:
    """Summary, ATT&CK names, evidence and event fields are filled in from rule and event."""
    assert alert["summary"] == "alice created privileged pod shop/evil"
    assert alert["attack"] == {
        "tactics": ["TA0004"],
        "techniques": [{"id": "T1611", "name": "Escape to Host"}],
    }
    assert alert["evidence"] == {
        "verb": "create",
        "podSpec.containers.securityContext.privileged": True,
    }
    assert alert["rule"]["license"] is None  # type: ignore[index]
    assert (alert["severity"], alert["mtmk"], alert["response_code"], alert["decision"]) == (
        "high",
        ["MS-TA9018"],
        201,
        "allow",
    )
    assert alert["event_time"] == EVENT["stageTimestamp"]


def test_summary_placeholders_are_plain_paths_only() -> None:
    """Missing fields render as '?', and format-spec tricks are left as text."""
    ev = {"user": {"username": "bob", "groups": ["a", "b"]}}
    assert render_summary("{user.username} in {user.groups} {x.y}", ev) == "bob in a,b ?"
    assert render_summary("{user.username!r} {user.__class__}", ev) == "{user.username!r} ?"


def test_alert_carries_the_rule_tags(alert: dict[str, object]) -> None:
    """The rule's tags travel on the alert, in the rule's order (SIEMs filter on them)."""
    assert alert["tags"] == ["attack.privilege-escalation", "attack.t1611"]


def test_labels_are_added_by_the_builder_and_validate() -> None:
    """`alert_builder(labels)` is `to_alert` plus the deployment's static labels."""
    from detections.alert import alert_builder
    from schemas.alert import Alert

    (match,) = Engine(load_rules([], texts={"p.yml": RULE})).evaluate(EVENT)
    labelled = alert_builder({"env": "prod", "region": "eu-west-1"})(match)
    assert labelled["labels"] == {"env": "prod", "region": "eu-west-1"}
    assert {k: v for k, v in labelled.items() if k != "labels"} == to_alert(match)
    Alert.model_validate(labelled)
