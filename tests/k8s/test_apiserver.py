"""A real kube-apiserver sends its own audit events to an HTTPS webhook.

The receiver here is a small aiohttp server (TLS from the session's test CA, a bearer token)
that records every POSTed body. The API server's audit webhook backend (batch mode, 200 ms)
points at it; the tests make the requests an attacker would (a privileged pod mounting the
node's ``/`` in ``kube-system``, a binding to ``cluster-admin``, listing every namespace's
secrets) and check the ``audit.k8s.io/v1`` ``EventList`` batches the API server wrote.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.kubeapi import ADMIN_USER, LOW_USER, AuditWebhook, KubeAPIServer, TestCA

Event = dict[str, Any]


class AuditRecorder:
    """An HTTPS server on 127.0.0.1 in a background thread, recording audit POST bodies."""

    def __init__(self, ssl_context: ssl.SSLContext, token: str) -> None:
        self.token = token
        self.ssl_context = ssl_context
        self.raw: list[bytes] = []
        self.batches: list[dict[str, Any]] = []
        self.unauthorized = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/audit"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            with self._lock:
                self.unauthorized += 1
            return web.Response(status=401)
        body = await request.read()
        with self._lock:
            self.raw.append(body)
            self.batches.append(json.loads(body))
        return web.Response(status=200)

    def start(self) -> AuditRecorder:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/audit", self._handle)
            runner = web.AppRunner(app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="audit-recorder", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def events(self) -> list[Event]:
        with self._lock:
            return [item for batch in self.batches for item in batch.get("items", [])]

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        """The first recorded event ``match`` accepts, polling until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if match(event):
                    return event
            if time.monotonic() > deadline:
                seen = [_summary(e) for e in self.events()[-15:]]
                raise AssertionError(f"no matching audit event in {timeout}s; last: {seen}")
            time.sleep(0.05)


def _summary(event: Event) -> str:
    ref = event.get("objectRef", {})
    return (
        f"{event.get('verb')} {ref.get('resource')} {ref.get('namespace', '')}/"
        f"{ref.get('name', '')} by {event.get('user', {}).get('username')}"
        f" -> {event.get('responseStatus', {}).get('code')}"
    )


def _is(
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    user: str = ADMIN_USER,
    code: int | None = None,
) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        ref = event.get("objectRef", {})
        return (
            event.get("verb") == verb
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and (name is None or ref.get("name") == name)
            and event.get("user", {}).get("username") == user
            and (code is None or event.get("responseStatus", {}).get("code") == code)
        )

    return match


@pytest.fixture(scope="module")
def recorder(k8s_ca: TestCA) -> Iterator[AuditRecorder]:
    rec = AuditRecorder(k8s_ca.ssl_server_context("audit-recorder"), secrets.token_hex(16))
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


@pytest.fixture(scope="module")
def api(
    kube_apiserver_factory: Callable[..., KubeAPIServer], recorder: AuditRecorder, k8s_ca: TestCA
) -> Iterator[KubeAPIServer]:
    webhook = AuditWebhook(recorder.url, k8s_ca.cert_path, recorder.token)
    server = kube_apiserver_factory(webhook=webhook)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def namespace(api: KubeAPIServer) -> str:
    """A fresh namespace with a ``default`` ServiceAccount (no controller-manager makes one)."""
    name = f"klaxon-{uuid.uuid4().hex[:8]}"
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    _service_account(api, name, "default")
    return name


def _service_account(api: KubeAPIServer, namespace: str, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    status, decoded = api.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body)
    assert status in (201, 409), decoded  # 409: made by an earlier test


def test_serves_the_built_release(api: KubeAPIServer) -> None:
    """``/version`` reports the release from go.mod (ldflags), not ``v0.0.0-master``."""
    version = api.get("/version")
    assert version["gitVersion"].startswith("v1.")
    assert version["gitVersion"] != "v0.0.0-master"
    assert api.request("GET", "/api/v1/namespaces", token="")[0] == 403  # system:anonymous
    assert api.request("GET", "/api/v1/namespaces", token="wrong")[0] == 401


def test_namespace_and_service_account_are_audited(
    api: KubeAPIServer, recorder: AuditRecorder
) -> None:
    name = f"klaxon-{uuid.uuid4().hex[:8]}"
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    _service_account(api, name, "builder")
    ns_event = recorder.wait_for(_is("create", "namespaces", name=name, code=201))
    assert ns_event["level"] == "RequestResponse"
    assert ns_event["requestObject"]["metadata"]["name"] == name
    sa_event = recorder.wait_for(_is("create", "serviceaccounts", namespace=name, name="builder"))
    assert sa_event["responseObject"]["metadata"]["name"] == "builder"
    assert sa_event["user"]["groups"] == ["system:masters", "system:authenticated"]
    assert sa_event["sourceIPs"] == ["127.0.0.1"]


def test_privileged_pod_mounting_root_in_kube_system(
    api: KubeAPIServer, recorder: AuditRecorder
) -> None:
    _service_account(api, "kube-system", "default")
    pod_name = f"root-{uuid.uuid4().hex[:8]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name},
        "spec": {
            "hostPID": True,
            "containers": [
                {
                    "name": "shell",
                    "image": "busybox:1.36",
                    "command": ["sleep", "infinity"],
                    "securityContext": {"privileged": True},
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                }
            ],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        },
    }
    api.create("/api/v1/namespaces/kube-system/pods", pod)
    event = recorder.wait_for(_is("create", "pods", namespace="kube-system", name=pod_name))
    assert event["responseStatus"]["code"] == 201
    assert event["level"] == "RequestResponse"
    spec = event["requestObject"]["spec"]
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    assert spec["volumes"][0]["hostPath"]["path"] == "/"
    assert event["responseObject"]["status"]["phase"] == "Pending"  # no scheduler, no nodes


def test_binding_to_cluster_admin(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    name = f"klaxon-admin-{uuid.uuid4().hex[:8]}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
    }
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    event = recorder.wait_for(_is("create", "clusterrolebindings", name=name, code=201))
    assert event["objectRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert event["requestObject"]["roleRef"]["name"] == "cluster-admin"
    assert event["requestObject"]["subjects"][0]["namespace"] == namespace


def test_secrets_listed_across_namespaces_metadata_only(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    """Listing every secret is audited (admin: 200, low-privilege user: 403), bodies never."""
    value = f"hunter2-{uuid.uuid4().hex}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"password": value},
    }
    api.create(f"/api/v1/namespaces/{namespace}/secrets", secret)
    listed = api.list("/api/v1/secrets")
    assert namespace in {s["metadata"]["namespace"] for s in listed["items"]}
    status, _ = api.request("GET", "/api/v1/secrets", token=api.user_token)
    assert status == 403

    admin = recorder.wait_for(_is("list", "secrets", code=200))
    assert admin["level"] == "Metadata"
    assert "responseObject" not in admin and "requestObject" not in admin
    denied = recorder.wait_for(_is("list", "secrets", user=LOW_USER, code=403))
    assert "developers" in denied["user"]["groups"]
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    recorder.wait_for(_is("create", "secrets", namespace=namespace, name="db"))
    raw = b"".join(recorder.raw)
    assert value.encode() not in raw
    assert base64.b64encode(value.encode()) not in raw


def test_policy_drops_leases_and_batches_are_event_lists(
    api: KubeAPIServer, recorder: AuditRecorder, namespace: str
) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "noise"},
        "spec": {"holderIdentity": "klaxon"},
    }
    api.create(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", lease)
    marker = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker"}}
    api.create(f"/api/v1/namespaces/{namespace}/configmaps", marker)
    # The lease's event is queued before the marker's: once the marker is here, so is
    # whatever the policy let through of the lease (it should be nothing).
    recorder.wait_for(_is("create", "configmaps", namespace=namespace, name="marker"))

    events = recorder.events()
    assert not [e for e in events if e.get("objectRef", {}).get("resource") == "leases"]
    assert not [e for e in events if e["stage"] == "RequestReceived"]
    assert recorder.unauthorized == 0
    for batch in recorder.batches:
        assert (batch["apiVersion"], batch["kind"]) == ("audit.k8s.io/v1", "EventList")
    for event in events:  # items of an EventList carry no apiVersion/kind of their own
        assert event["auditID"] and event["requestReceivedTimestamp"] and event["stage"]
        assert event["level"] in ("Metadata", "Request", "RequestResponse")


def test_without_webhook_and_stop_leaves_no_process(
    kube_apiserver_factory: Callable[..., KubeAPIServer],
) -> None:
    """A second server (no webhook: audit policy only) runs beside the first; stop ends both
    of its processes."""
    server = kube_apiserver_factory()
    pids = server.pids
    assert len(pids) == 2
    assert server.get("/readyz?verbose")  # a second, independent etcd + API server
    server.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
