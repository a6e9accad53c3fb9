"""`schemas.keys`: one definition of the cluster name, the principal key and the cluster
header, used by every package (routing, stateful detectors, alerts, replay)."""

from __future__ import annotations

import re
from pathlib import Path

from detections.alert import to_alert
from detections.stateful.anomaly import AnomalyModel, AnomalySettings
from pipeline.routing import event_key, partition_for
from schemas.keys import CLUSTER_HEADER, cluster_of, principal_key, routing_key

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "mitre", "detections", "pipeline", "replay", "klaxon")


def sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_the_cluster_header_and_the_default_cluster_are_spelled_once() -> None:
    for path in sources():
        if path.name == "keys.py" and path.parent.name == "schemas":
            continue
        text = path.read_text()
        assert '"klaxon-cluster"' not in text, f"{path}: use schemas.keys.CLUSTER_HEADER"
        assert not re.search(r"""else ['"]default['"]|or ['"]default['"]""", text), (
            f"{path}: use schemas.keys.cluster_of"
        )


def test_routing_and_the_anomaly_model_key_a_principal_alike() -> None:
    event = {"cluster": "prod", "user": {"username": "alice"},
             "requestReceivedTimestamp": "2026-11-27T09:00:00Z", "verb": "get"}  # fmt: skip
    model = AnomalyModel(AnomalySettings())
    model.observe(event)
    assert list(model.principals) == [principal_key(event)]
    assert event_key(event) == routing_key(event) == b"prod|alice"
    assert partition_for(event_key(event), 4) == partition_for(b"prod|alice", 4)


def test_an_event_without_a_cluster_belongs_to_the_default_one_everywhere() -> None:
    event = {"user": {"username": "bob"}, "verb": "get"}
    assert cluster_of(event) == "default" and principal_key(event) == "default|bob"
    assert CLUSTER_HEADER == "klaxon-cluster"


def test_alerts_name_the_cluster_as_the_key_does() -> None:
    from detections import Engine, load_rules

    engine = Engine(load_rules())
    event = {
        "apiVersion": "audit.k8s.io/v1", "kind": "Event", "auditID": "a", "verb": "create",
        "stage": "ResponseComplete", "user": {"username": "mallory"},
        "objectRef": {"resource": "clusterrolebindings", "name": "x",
                      "apiGroup": "rbac.authorization.k8s.io"},
        "requestObject": {"roleRef": {"name": "cluster-admin", "kind": "ClusterRole"},
                          "subjects": [{"kind": "User", "name": "mallory"}]},
        "responseStatus": {"code": 201}, "requestReceivedTimestamp": "2026-11-27T09:00:00Z",
    }  # fmt: skip
    alerts = [to_alert(m) for m in engine.evaluate_batch([event])]
    assert alerts and {a["cluster"] for a in alerts} == {cluster_of(event)}
