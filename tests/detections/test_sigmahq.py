"""SigmaHQ's 16 Kubernetes audit rules load unchanged and fire as their authors intend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detections import Engine, load_rules
from detections.alert import to_alert
from detections.fixtures import fixture_event
from detections.rule import RuleSet


@pytest.fixture(scope="module")
def sigma(corpus: Path) -> RuleSet:
    """The SigmaHQ rules, read in place from the shared corpus."""
    return load_rules([corpus / "sigmahq-kubernetes-audit-rules"])


@pytest.fixture(scope="module")
def engine(sigma: RuleSet) -> Engine:
    """An engine over the SigmaHQ rules only."""
    return Engine(sigma)


def pod(spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    """A pod-create request with ``spec``."""
    return {
        "verb": "create",
        "level": "RequestResponse",
        "requestURI": f"/api/v1/namespaces/{namespace}/pods",
        "objectRef": {"resource": "pods", "namespace": namespace, "name": "x", "apiGroup": ""},
        "requestObject": {"kind": "Pod", "apiVersion": "v1", "spec": spec},
        "responseStatus": {"code": 201},
    }


def write(resource: str, verb: str, group: str) -> dict[str, Any]:
    """A write of ``resource`` in API group ``group``."""
    return {"verb": verb, "objectRef": {"resource": resource, "apiGroup": group, "name": "x"}}


NGINX = {"containers": [{"name": "web", "image": "nginx"}]}

# title -> (events that must fire it, events that must not)
CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "Kubernetes Admission Controller Modification": (
        [write("mutatingwebhookconfigurations", "create", "admissionregistration.k8s.io")],
        [write("mutatingwebhookconfigurations", "get", "admissionregistration.k8s.io")],
    ),
    "Kubernetes CronJob/Job Modification": (
        [write("cronjobs", "patch", "batch"), write("jobs", "create", "batch")],
        [write("cronjobs", "list", "batch")],
    ),
    "Deployment Deleted From Kubernetes Cluster": (
        [write("deployments", "delete", "apps")],
        [write("deployments", "update", "apps")],
    ),
    "Kubernetes Events Deleted": ([write("events", "delete", "")], [write("events", "create", "")]),
    "Potential Remote Command Execution In Pod Container": (
        [{"verb": "create", "objectRef": {"resource": "pods", "subresource": "exec"}}],
        [{"verb": "create", "objectRef": {"resource": "pods", "subresource": "log"}}],
    ),
    "Container With A hostPath Mount Created": (
        [pod({**NGINX, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]})],
        [pod({**NGINX, "volumes": [{"name": "tmp", "emptyDir": {}}]})],
    ),
    "Creation Of Pod In System Namespace": ([pod(NGINX, "kube-system")], [pod(NGINX)]),
    "Privileged Container Deployed": (
        [
            pod(
                {
                    "containers": [{"name": "a"}],
                    "initContainers": [
                        {"name": "b", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
                    ],
                }
            )
        ],
        [
            pod(
                {
                    "containers": [
                        {"name": "a", "securityContext": {"capabilities": {"drop": ["ALL"]}}}
                    ]
                }
            )
        ],
    ),
    "RBAC Permission Enumeration Attempt": (
        [write("selfsubjectrulesreviews", "create", "authorization.k8s.io")],
        [write("selfsubjectrulesreviews", "create", "authentication.k8s.io")],
    ),
    "Kubernetes Rolebinding Modification": (
        [write("clusterrolebindings", "create", "rbac.authorization.k8s.io")],
        [write("clusterrolebindings", "get", "rbac.authorization.k8s.io")],
    ),
    "Kubernetes Secrets Enumeration": (
        [write("secrets", "list", "")],
        [write("secrets", "get", "")],
    ),
    "Kubernetes Secrets Modified or Deleted": (
        [write("secrets", "delete", "")],
        [write("secrets", "watch", "")],
    ),
    "New Kubernetes Service Account Created": (
        [write("serviceaccounts", "create", "")],
        [write("serviceaccounts", "delete", "")],
    ),
    "Potential Sidecar Injection Into Running Deployment": (
        [write("deployments", "patch", "apps")],
        [write("statefulsets", "patch", "apps")],
    ),
    "Kubernetes Unauthorized or Unauthenticated Access": (
        [{"responseStatus": {"code": 403}}, {"responseStatus": {"code": 401}}],
        [{"responseStatus": {"code": 404}}],
    ),
}


def test_all_sixteen_load_unchanged(sigma: RuleSet) -> None:
    """Every SigmaHQ rule loads as-is, under the Detection Rule License."""
    assert len(sigma.rules) == 16
    assert {r.license for r in sigma.rules} == {"DRL-1.1"}


@pytest.mark.parametrize("title", sorted(CASES))
def test_rule_fires_as_its_author_intends(engine: Engine, title: str) -> None:
    """Each rule fires on the attack its description names and stays quiet otherwise."""
    hits, misses = CASES[title]
    for partial in hits:
        assert title in [m.rule.title for m in engine.evaluate(fixture_event(partial))], partial
    for partial in misses:
        assert title not in [m.rule.title for m in engine.evaluate(fixture_event(partial))], partial


def test_aliases_are_resolved_and_linted(sigma: RuleSet) -> None:
    """hostPath, capabilities and bare apiGroup are read via their canonical paths and linted."""
    aliases = sorted(
        (Path(lint.file).name, lint.suggestion) for lint in sigma.lints if lint.code == "alias"
    )
    assert aliases == [
        ("kubernetes_audit_hostpath_mount.yml", "podSpec.volumes.hostPath.path"),
        (
            "kubernetes_audit_privileged_pod_creation.yml",
            "podSpec.allContainers.securityContext.capabilities.add",
        ),
        ("kubernetes_audit_rbac_permisions_listing.yml", "objectRef.apiGroup"),
        ("kubernetes_audit_sidecar_injection.yml", "objectRef.apiGroup"),
    ]


def test_string_compared_with_response_code_is_linted_and_never_matches(
    sigma: RuleSet, engine: Engine
) -> None:
    """`responseStatus.code: 'ALLOW'` is reported (suggesting `decision`) and cannot fire."""
    (lint,) = [lint for lint in sigma.lints if lint.code == "never-matches"]
    assert Path(lint.file).name == "kubernetes_audit_potential_enumeration_activity.yml"
    assert (lint.line, lint.key_path, lint.suggestion) == (
        24,
        "detection.selection_status.responseStatus.code",
        "decision: allow",
    )
    shell = fixture_event(
        {
            "verb": "create",
            "requestURI": "/api/v1/namespaces/shop/pods/web-0/exec?command=%2Fbin%2Fsh",
            "objectRef": {"subresource": "exec"},
            "userAgent": "trufflehog",
        }
    )
    assert "Kubernetes Potential Enumeration Activity" not in [
        m.rule.title for m in engine.evaluate(shell)
    ]


def test_alert_for_a_sigmahq_rule_names_author_and_licence(engine: Engine) -> None:
    """DRL 1.1 requires the rule's author in every alert it produces."""
    (match,) = [
        m
        for m in engine.evaluate(fixture_event(write("events", "delete", "")))
        if m.rule.title == "Kubernetes Events Deleted"
    ]
    alert = to_alert(match)
    assert alert["rule"]["author"] == "Leo Tsaousis (@laripping)"
    assert alert["rule"]["license"] == "DRL-1.1"
    assert alert["rule"]["source"] == "kubernetes_audit_events_deleted.yml"
