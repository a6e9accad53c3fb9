"""The alert formats: every rule and correlation of the pack converts to a valid document.

Native alerts validate against `schemas.Alert`; OCSF findings against `py-ocsf-models`' Detection
Finding (OCSF 1.5.0) and, attribute by attribute, against OCSF 1.5.0's published definitions
(an excerpt resolved from ocsf/ocsf-schema in `files/`); ECS documents against
ECS's own field definitions (type, array normalization, allowed values; an excerpt of
elastic/ecs's generated files in `files/`, as no Python package ships them); Splunk HEC
envelopes against the HEC event endpoint's rules.
"""

from __future__ import annotations

import csv
import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.objects.api import API
from py_ocsf_models.objects.resource_details import ResourceDetails

from pipeline.sinks.formats import FORMATS
from pipeline.sinks.kafka import alert_headers
from schemas.alert import Alert, example_alert
from tests.pipeline.sinks.pack_alerts import correlation_alerts, rule_alerts, ruleset

RULE_ALERTS = rule_alerts()
CORRELATION_ALERTS = correlation_alerts()
PACK = [pytest.param(a, id=a["rule"]["title"][:60]) for a in RULE_ALERTS.values()] + [
    pytest.param(a, id="correlation: " + a["rule"]["title"][:50])
    for a in CORRELATION_ALERTS.values()
]

#: What the fields other helpers add look like (`group`, `incident`, `labels`, `tags`).
GROUPED = {
    **example_alert(),
    "group": {
        "id": "5b7c1a8e-0c1d-5e2f-8a3b-4c5d6e7f8a9b",
        "key": "default|7d2b6f0a|system:serviceaccount:ci:deployer",
        "count": 20,
        "first_seen": "2018-10-25T13:58:40.000000Z",
        "last_seen": "2018-10-25T13:58:49.730588Z",
        "event_ids": ["e1", "e2"],
        "update": 1,
    },
    "incident": "inc-9f2d",
    "labels": {"env": "prod", "team": "platform"},
    "tags": ["attack.privilege-escalation", "attack.t1611"],
}


def test_the_pack_is_covered() -> None:
    """Every packaged rule and correlation gave an alert to convert (the contract is total)."""
    rs = ruleset()
    assert set(RULE_ALERTS) == {r.id for r in rs.rules}
    assert set(CORRELATION_ALERTS) == {c.id for c in rs.correlations}
    assert len(RULE_ALERTS) >= 80 and len(CORRELATION_ALERTS) >= 6


@pytest.mark.parametrize("alert", PACK)
def test_native_alerts_validate_against_the_alert_schema(alert: dict[str, Any]) -> None:
    """The native format writes the alert unchanged, and it is a valid `klaxon.alert/v1`."""
    assert orjson.loads(FORMATS["native"].encode(alert)) == orjson.loads(orjson.dumps(alert))
    Alert.model_validate(alert)


# --- OCSF ------------------------------------------------------------------------------------

#: OCSF attributes written that `py-ocsf-models` 0.10 does not model (checked by hand below).
OCSF_UNMODELLED = {"is_alert", "observables"}


#: OCSF 1.5.0's Detection Finding and the objects it nests, attribute -> type or object, resolved
#: from ocsf/ocsf-schema at tag 1.5.0 (extends chains and dictionary.json), see files/NOTICE.md.
OCSF_SCHEMA: dict[str, dict[str, dict[str, Any]]] = orjson.loads(
    (Path(__file__).parent / "files" / "ocsf-1.5.0-detection-finding.json").read_bytes()
)
OCSF_SCALARS = {
    "string_t": str,
    "username_t": str,
    "hostname_t": str,
    "url_t": str,
    "email_t": str,
    "resource_uid_t": str,
    "mac_t": str,
    "ip_t": str,
    "integer_t": int,
    "long_t": int,
    "port_t": int,
    "timestamp_t": int,
    "boolean_t": bool,
}


def check_ocsf_attributes(value: Any, obj: str, path: str = "") -> None:
    """Every attribute written is one OCSF 1.5.0 defines on that object, with its type and
    arity (objects OCSF leaves free, ``object`` and ``json_t``, are not walked)."""
    assert isinstance(value, dict), f"{path}: an object expected"
    for key, item in value.items():
        where = f"{path}.{key}".lstrip(".")
        spec = OCSF_SCHEMA[obj].get(key)
        assert spec is not None, f"{where}: not an attribute of OCSF {obj}"
        items = item if spec["array"] else [item]
        assert isinstance(item, list) == spec["array"], f"{where}: array is {spec['array']}"
        for one in items:
            if "object" in spec and spec["object"] in OCSF_SCHEMA:
                check_ocsf_attributes(one, spec["object"], where)
            elif "object" in spec:
                assert isinstance(one, dict), where
            elif spec["type"] in OCSF_SCALARS:
                assert isinstance(one, OCSF_SCALARS[spec["type"]]), f"{where}: {spec['type']}"
                if spec["type"] == "ip_t":
                    ipaddress.ip_address(one)


def check_ocsf(doc: dict[str, Any]) -> DetectionFinding:
    """Validate an OCSF Detection Finding; returns the parsed model."""
    check_ocsf_attributes(doc, "detection_finding")
    finding = DetectionFinding.model_validate(doc)
    assert doc["class_uid"] == 2004 and doc["category_uid"] == 2
    assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
    assert doc["metadata"]["version"] == "1.5.0" and doc["metadata"]["product"]["name"] == "Klaxon"
    modelled = set(DetectionFinding.model_fields)
    assert set(doc) - modelled <= OCSF_UNMODELLED, set(doc) - modelled
    assert isinstance(doc["is_alert"], bool)
    for ob in doc.get("observables", []):
        assert ob["type_id"] in (2, 4) and ob["value"]
    attacks = doc["finding_info"].get("attacks", [])
    for attack in attacks:  # OCSF: at least one of tactic / technique / sub_technique
        assert {"tactic", "technique", "sub_technique"} & set(attack) and attack["version"]
    for res in doc["resources"]:
        ResourceDetails.model_validate(res)
    evidence = doc["evidences"][0]
    API.model_validate(evidence["api"])
    # actor and src_endpoint are OCSF evidence attributes (objects/evidences.json) that
    # py-ocsf-models leaves out: user.name and type_id, endpoint ip.
    user = evidence["actor"]["user"]
    assert isinstance(user["name"], str) and user["type_id"] in (1, 3)
    if "src_endpoint" in evidence:
        ipaddress.ip_address(evidence["src_endpoint"]["ip"])
    return finding


@pytest.mark.parametrize("alert", PACK)
def test_every_pack_alert_converts_to_a_valid_ocsf_detection_finding(
    alert: dict[str, Any],
) -> None:
    """OCSF: a valid Detection Finding with the rule as analytic and its ATT&CK mapping."""
    doc = orjson.loads(FORMATS["ocsf"].encode(alert))
    finding = check_ocsf(doc)
    # One finding per group (its updates are activity Update of it); the alert is metadata.uid.
    assert finding.finding_info.uid == (alert.get("group") or {}).get("id", alert["id"])
    assert doc["metadata"]["uid"] == alert["id"]
    assert finding.finding_info.analytic is not None
    assert finding.finding_info.analytic.uid == alert["rule"]["id"]
    techniques = {t["id"] for t in alert["attack"]["techniques"]}
    written = {
        (a.get("sub_technique") or a.get("technique") or {}).get("uid")
        for a in doc["finding_info"].get("attacks", [])
    }
    assert techniques <= written


def test_the_ocsf_schema_check_refuses_what_ocsf_does_not_define() -> None:
    """The attribute walk is not vacuous: an unknown attribute, a wrong type or a missing
    array are errors."""
    doc = FORMATS["ocsf"].document(example_alert())  # type: ignore[attr-defined]
    for bad, message in (
        ({**doc, "evidences": [{**doc["evidences"][0], "actor_name": "x"}]}, "actor_name"),
        ({**doc, "time": "2018-10-25T13:58:49Z"}, "time: timestamp_t"),
        ({**doc, "resources": doc["resources"][0]}, "resources: array is True"),
    ):
        with pytest.raises(AssertionError, match=message):
            check_ocsf_attributes(bad, "detection_finding")


def test_ocsf_maps_grouping_incident_and_labels() -> None:
    """A group update is an Update of the group's finding, with count and first/last seen."""
    doc = FORMATS["ocsf"].document(GROUPED)  # type: ignore[attr-defined]
    check_ocsf(doc)
    assert (doc["activity_id"], doc["type_uid"], doc["count"]) == (2, 200402, 20)
    assert doc["finding_info"]["uid"] == GROUPED["group"]["id"]
    assert doc["finding_info"]["related_events"] == [{"uid": "e1"}, {"uid": "e2"}]
    assert doc["start_time"] < doc["end_time"] == doc["time"]
    assert doc["metadata"]["correlation_uid"] == "inc-9f2d"
    assert doc["metadata"]["labels"] == ["env:prod", "team:platform"]
    assert doc["unmapped"]["klaxon"]["tags"] == GROUPED["tags"]


def test_ocsf_sub_technique_sits_beside_its_parent() -> None:
    """A sub-technique is written as sub_technique with its parent as technique."""
    alert = {
        **example_alert(),
        "attack": {
            "tactics": ["TA0003"],
            "techniques": [{"id": "T1098.006", "name": "Additional Container Cluster Roles"}],
        },
    }
    (attack,) = FORMATS["ocsf"].document(alert)["finding_info"]["attacks"]  # type: ignore[attr-defined]
    assert (
        attack["technique"]["uid"] == "T1098"
        and attack["technique"]["name"] == "Account Manipulation"
    )
    assert attack["sub_technique"]["uid"] == "T1098.006"
    assert attack["tactic"] == {
        "uid": "TA0003",
        "name": "Persistence",
        "src_url": "https://attack.mitre.org/tactics/TA0003/",
    }


# --- ECS -------------------------------------------------------------------------------------

FILES = Path(__file__).parent / "files"


def _ecs_fields() -> dict[str, dict[str, str]]:
    """ECS's own definitions (type, normalization) of the fields the format writes: rows of
    elastic/ecs `generated/csv/fields.csv`, see files/NOTICE.md."""
    with (FILES / "ecs-fields.csv").open(newline="") as f:
        return {row["Field"]: row for row in csv.DictReader(f)}


ECS_FIELDS = _ecs_fields()
#: Allowed values of the event categorisation fields (elastic/ecs `ecs_flat.yml`).
ECS_ALLOWED = orjson.loads((FILES / "ecs-allowed-values.json").read_bytes())
CUSTOM = ("kubernetes.audit.", "klaxon.", "labels.")


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = prefix + key
        if isinstance(value, dict) and path not in ECS_FIELDS and not path.startswith(CUSTOM):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _type_ok(ecs_type: str, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    checks = {
        "keyword": lambda v: isinstance(v, str),
        "match_only_text": lambda v: isinstance(v, str),
        "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, float),
        "date": lambda v: isinstance(v, str) and datetime.fromisoformat(v.replace("Z", "+00:00")),
        "ip": lambda v: isinstance(v, str) and ipaddress.ip_address(v),
        "object": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    }
    return all(checks[ecs_type](v) for v in values)


def check_ecs(doc: dict[str, Any]) -> None:
    """Every field is an ECS field of the right type (or in a custom namespace)."""
    for path, value in _flatten(doc).items():
        if path.startswith(CUSTOM):
            continue
        assert path in ECS_FIELDS, f"{path} is not an ECS field (or not in files/ecs-fields.csv)"
        field = ECS_FIELDS[path]
        assert _type_ok(field["Type"], value), f"{path}: {value!r} is not {field['Type']}"
        # ECS "array" normalization: always a list; other fields hold one value
        assert isinstance(value, list) == (field["Normalization"] == "array"), path
        allowed = ECS_ALLOWED.get(path)
        if allowed is not None:
            assert set(value if isinstance(value, list) else [value]) <= set(allowed), path
    expected_types = set().union(
        *(ECS_ALLOWED["expected_event_types"][c] for c in doc["event"]["category"])
    )
    assert set(doc["event"]["type"]) <= expected_types  # types the categories allow
    assert doc["event"]["kind"] == "alert" and doc["ecs"]["version"]


@pytest.mark.parametrize("alert", PACK)
def test_every_pack_alert_converts_to_a_valid_ecs_alert(alert: dict[str, Any]) -> None:
    """ECS: event.kind alert, rule.*, threat.* with framework MITRE ATT&CK, orchestrator.*."""
    doc = orjson.loads(FORMATS["ecs"].encode(alert))
    check_ecs(doc)
    assert doc["rule"]["id"] == alert["rule"]["id"] and doc["event"]["id"] == alert["id"]
    if alert["attack"]["techniques"]:
        assert doc["threat"]["framework"] == "MITRE ATT&CK"
    assert doc["orchestrator"]["cluster"]["name"] == alert["cluster"]
    assert doc["kubernetes"]["audit"]["auditID"] == alert["audit_id"]


def test_ecs_maps_grouping_incident_labels_and_tags() -> None:
    """Group window as event.start/end, labels and tags as ECS's own, the rest under klaxon."""
    doc = FORMATS["ecs"].document(GROUPED)  # type: ignore[attr-defined]
    check_ecs(doc)
    assert doc["event"]["start"] == GROUPED["group"]["first_seen"]
    assert doc["labels"] == {"env": "prod", "team": "platform"}
    assert doc["tags"] == GROUPED["tags"]
    assert doc["klaxon"]["incident"] == "inc-9f2d" and doc["klaxon"]["group"]["count"] == 20


# --- Splunk HEC ------------------------------------------------------------------------------

HEC_KEYS = {"time", "host", "source", "sourcetype", "index", "event", "fields"}
#: Field names of Splunk's CIM Alerts and Intrusion Detection data models that the event uses.
CIM = {
    "app",
    "vendor_product",
    "type",
    "id",
    "signature",
    "signature_id",
    "severity",
    "severity_id",
    "description",
    "subject",
    "user",
    "src",
    "dest",
    "action",
    "object",
    "object_category",
    "category",
    "mitre_technique_id",
}


def check_hec(doc: dict[str, Any]) -> None:
    """The HEC event endpoint's envelope: metadata strings, epoch time, flat indexed fields."""
    assert set(doc) <= HEC_KEYS and "event" in doc
    assert isinstance(doc["time"], float | int) and doc["time"] > 0
    for key in ("host", "source", "sourcetype"):
        assert isinstance(doc[key], str) and doc[key]
    for key, value in doc["fields"].items():  # indexed fields: no nested objects
        assert isinstance(value, str | int | float) or (
            isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
        ), key
    assert set(doc["event"]) - {"klaxon", "incident"} <= CIM
    assert doc["event"]["severity"] in {"informational", "low", "medium", "high", "critical"}


@pytest.mark.parametrize("alert", PACK)
def test_every_pack_alert_converts_to_a_hec_envelope(alert: dict[str, Any]) -> None:
    """Splunk HEC: an event envelope with CIM field names and the native alert inside."""
    doc = orjson.loads(FORMATS["splunk_hec"].encode(alert))
    check_hec(doc)
    assert doc["event"]["signature_id"] == alert["rule"]["id"]
    assert doc["event"]["klaxon"] == orjson.loads(orjson.dumps(alert))


def test_hec_indexes_group_incident_and_labels() -> None:
    """Group id, incident and labels become indexed fields (searchable with tstats)."""
    doc = FORMATS["splunk_hec"].document(GROUPED)  # type: ignore[attr-defined]
    check_hec(doc)
    expected = {"incident": "inc-9f2d", "label_env": "prod", "group_id": GROUPED["group"]["id"]}
    assert expected.items() <= doc["fields"].items()


# --- all formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_are_deterministic_and_named_in_kafka_headers(name: str) -> None:
    """Same alert, same bytes; the topic headers name the format and its schema version."""
    fmt = FORMATS[name]
    assert fmt.encode(GROUPED) == fmt.encode(dict(GROUPED))
    headers = dict(alert_headers(fmt, GROUPED))
    assert headers["klaxon-format"] == name.encode()
    assert headers["klaxon-schema"] == fmt.schema.encode()
    assert headers["klaxon-rule"] and headers["klaxon-severity"] == b"high"


def test_an_alert_without_any_time_cannot_be_written_as_a_finding() -> None:
    """No event time and no group: the formats that need a time refuse (a dead letter)."""
    alert = {**example_alert(), "event_time": None, "group": None}
    for name in ("ocsf", "ecs", "splunk_hec"):
        with pytest.raises(ValueError, match="no event_time"):
            FORMATS[name].encode(alert)
