"""The shipped configuration on a real kube-apiserver: deploy/audit/policy.yaml as its audit
policy, deploy/audit/webhook-kubeconfig-token.yaml (placeholders filled in) as its
``--audit-webhook-config-file``.

The API server refuses to start with a policy or kubeconfig it cannot load, so starting is
the first check; then the levels it actually logs: bodies for a pod, metadata only for a
secret and a configmap, a token request without its token, nothing for node leases and
readiness probes, and no RequestReceived stage. The webhook flags are those
docs/clusters.md gives for a kubeadm static pod (the batch wait and backoff shortened).
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.test_apiserver import AuditRecorder
from tests.kubeapi import ADMIN_USER, KubeAPIServer, TestCA

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "deploy" / "audit" / "policy.yaml"
KUBECONFIG = REPO / "deploy" / "audit" / "webhook-kubeconfig-token.yaml"
CLUSTERS_DOC = REPO / "docs" / "clusters.md"

Event = dict[str, Any]


@pytest.fixture(scope="module")
def recorder(k8s_ca: TestCA) -> Iterator[AuditRecorder]:
    rec = AuditRecorder(k8s_ca.ssl_server_context("policy-recorder"), secrets.token_hex(16))
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


def render_kubeconfig(recorder: AuditRecorder, ca: Path) -> str:
    """The shipped token kubeconfig with its placeholders replaced, as an operator would."""
    text = KUBECONFIG.read_text()
    text = text.replace("https://REPLACE-WEBHOOK-HOST:9443/audit", recorder.url)
    text = text.replace("/etc/kubernetes/klaxon/REPLACE-CA.crt", str(ca))
    text = text.replace("REPLACE-WITH-ONE-LINE-OF-THE-TOKEN-FILE", recorder.token)
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "REPLACE-" not in body
    return text


def documented_webhook_flags() -> list[str]:
    """The ``--audit-webhook-*`` flags of docs/clusters.md's static pod manifest."""
    text = CLUSTERS_DOC.read_text()
    flags = re.findall(r"^\s*- (--audit-webhook-[a-z-]+=\S+)$", text, re.MULTILINE)
    names = {flag.split("=")[0] for flag in flags}
    assert {
        "--audit-webhook-config-file",
        "--audit-webhook-mode",
        "--audit-webhook-batch-max-size",
        "--audit-webhook-batch-max-wait",
        "--audit-webhook-batch-buffer-size",
        "--audit-webhook-initial-backoff",
    } <= names, names
    return [flag for flag in flags if not flag.startswith("--audit-webhook-config-file=")]


@pytest.fixture(scope="module")
def api(
    kube_apiserver_factory: Callable[..., KubeAPIServer],
    recorder: AuditRecorder,
    k8s_ca: TestCA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KubeAPIServer]:
    kubeconfig = tmp_path_factory.mktemp("shipped-kubeconfig") / "webhook.yaml"
    kubeconfig.write_text(render_kubeconfig(recorder, k8s_ca.cert_path))
    kubeconfig.chmod(0o600)
    server = kube_apiserver_factory(
        audit_policy=POLICY.read_text(),
        extra_args=(
            f"--audit-webhook-config-file={kubeconfig}",
            *documented_webhook_flags(),
            "--audit-webhook-batch-max-wait=200ms",  # the last of a repeated flag wins
            "--audit-webhook-initial-backoff=500ms",
        ),
    )
    try:
        yield server
    finally:
        server.stop()


def _created(resource: str, namespace: str | None, name: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        ref = event.get("objectRef", {})
        return (
            event.get("verb") == "create"
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and ref.get("name") == name
            and event.get("user", {}).get("username") == ADMIN_USER
        )

    return match


@pytest.fixture(scope="module")
def namespace(api: KubeAPIServer) -> str:
    name = f"klaxon-{uuid.uuid4().hex[:8]}"
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    api.create(f"/api/v1/namespaces/{name}/serviceaccounts", sa)
    return name


def test_pod_create_is_logged_with_bodies(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-mount"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "alpine:3.20",
                    "securityContext": {"privileged": True},
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                }
            ],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        },
    }
    api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    event = recorder.wait_for(_created("pods", namespace, "root-mount"))
    assert event["level"] == "RequestResponse"
    assert event["stage"] == "ResponseComplete"
    spec = event["requestObject"]["spec"]
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    assert spec["volumes"][0]["hostPath"]["path"] == "/"
    assert event["responseObject"]["kind"] == "Pod"
    assert "managedFields" not in event["responseObject"]["metadata"]  # omitManagedFields


def test_namespace_create_is_logged_with_bodies(recorder: AuditRecorder, namespace: str) -> None:
    event = recorder.wait_for(_created("namespaces", None, namespace))
    assert event["level"] == "RequestResponse"
    assert event["requestObject"]["metadata"]["name"] == namespace


def test_secret_and_configmap_are_metadata_only(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    value = f"hunter2-{secrets.token_hex(8)}"
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"password": base64.b64encode(value.encode()).decode()},
        },
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app"},
            "data": {"DB_PASSWORD": value},
        },
    )
    for resource, name in (("secrets", "db"), ("configmaps", "app")):
        event = recorder.wait_for(_created(resource, namespace, name))
        assert event["level"] == "Metadata"
        assert "requestObject" not in event
        assert "responseObject" not in event
    encoded = base64.b64encode(value.encode())
    for raw in list(recorder.raw):
        assert value.encode() not in raw
        assert encoded not in raw


def test_token_request_logs_the_request_not_the_token(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    answer = api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/default/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["klaxon-test"], "expirationSeconds": 3600},
        },
    )
    token = answer["status"]["token"]

    def match(event: Event) -> bool:
        ref = event.get("objectRef", {})
        return bool(
            ref.get("resource") == "serviceaccounts"
            and ref.get("subresource") == "token"
            and ref.get("namespace") == namespace
        )

    event = recorder.wait_for(match)
    assert event["level"] == "Request"
    assert event["requestObject"]["spec"]["audiences"] == ["klaxon-test"]
    assert "responseObject" not in event
    for raw in list(recorder.raw):
        assert token.encode() not in raw


def test_node_leases_and_probes_are_not_logged(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    lease = f"node-{uuid.uuid4().hex[:8]}"
    api.create(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease},
            "spec": {"holderIdentity": lease, "leaseDurationSeconds": 40},
        },
    )
    api.request("GET", "/readyz")
    api.request("GET", "/livez")
    # a marker written after both: once it is in, the lease would be too
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": marker}},
    )
    recorder.wait_for(_created("configmaps", namespace, marker))
    events = recorder.events()
    assert not [e for e in events if e.get("objectRef", {}).get("name") == lease]
    probes = [e for e in events if e.get("requestURI", "").startswith(("/readyz", "/livez"))]
    assert not probes
    assert not [e for e in events if e.get("stage") == "RequestReceived"]
