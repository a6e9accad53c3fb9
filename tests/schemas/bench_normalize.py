"""Micro-benchmark of `decode_payload`: µs per event for an EventList of typical events.

Run: ``.venv/bin/python tests/schemas/bench_normalize.py [--events 200] [--repeat 300]``.
The event is a ~1.5 KB `ResponseComplete` pod `get` at Request level (typical webhook
traffic); one in 50 events is a Secret create, so the redaction path is exercised too.

``--workloads N``: instead, Deployment creates at RequestResponse level (~3.3 KB, request and
response bodies with env, args and a projected token volume), one in N of them with a
plaintext ``DB_PASSWORD`` env value (0: none), the cost of scanning bodies for credentials.
Timings are CPU time (`time.process_time`), so a busy machine inflates them less.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import orjson

from schemas.normalize import decode_payload


def typical_event(i: int) -> dict[str, Any]:
    """A realistic ~1.5 KB audit event (our own fixture, not corpus data)."""
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": f"4c3a1d7e-9b1f-4f3e-8d1c-{i:012d}",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/payments/pods/checkout-7d9f8b6c5-x2x9k",
        "verb": "get",
        "user": {
            "username": "system:serviceaccount:payments:checkout",
            "uid": "0f5b3c1e-2a44-4c1b-9a77-6f0a1b2c3d4e",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:payments",
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/pod-name": ["checkout-7d9f8b6c5-x2x9k"],
                "authentication.kubernetes.io/pod-uid": ["8a1c2b3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"],
            },
        },
        "sourceIPs": ["10.244.1.17"],
        "userAgent": "checkout/v2.14.3 (linux/amd64) kubernetes/$Format",
        "objectRef": {
            "resource": "pods",
            "namespace": "payments",
            "name": "checkout-7d9f8b6c5-x2x9k",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-27T10:32:01.123456Z",
        "stageTimestamp": "2026-11-27T10:32:01.127891Z",
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": (
                'RBAC: allowed by RoleBinding "checkout-reader/payments" of Role '
                '"pod-reader" to ServiceAccount "checkout/payments"'
            ),
            "apiserver.latency.k8s.io/etcd": "2.012ms",
            "apiserver.latency.k8s.io/serialize-response-object": "154.3µs",
            "apiserver.latency.k8s.io/total": "4.435ms",
            "apiserver.latency.k8s.io/transform-response-object": "11.2µs",
            "apiserver.latency.k8s.io/response-write": "23.1µs",
            "apiserver.latency.k8s.io/apf-queue-wait": "0s",
            "pod-security.kubernetes.io/enforce-policy": "restricted:latest",
        },
    }


def secret_event(i: int) -> dict[str, Any]:
    """A Secret create at RequestResponse level (forces the redaction path)."""
    ev = typical_event(i)
    ev.update(
        verb="create",
        level="RequestResponse",
        requestURI="/api/v1/namespaces/payments/secrets",
        objectRef={
            "resource": "secrets",
            "namespace": "payments",
            "name": "db",
            "apiVersion": "v1",
        },
        requestObject={"kind": "Secret", "apiVersion": "v1", "data": {"password": "aHVudGVyMg=="}},
        responseObject={"kind": "Secret", "apiVersion": "v1", "data": {"password": "aHVudGVyMg=="}},
    )
    return ev


def deployment_event(i: int, plaintext: bool) -> dict[str, Any]:
    """A Deployment create with both bodies; ``plaintext``: one env value is a password."""
    env: list[dict[str, Any]] = [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "DB_HOST", "value": "pg.payments"},
        {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
    ]
    if plaintext:
        env.append({"name": "DB_PASSWORD", "value": "s3cr3t-hunter2"})
    container = {
        "name": "api",
        "image": "registry.example.com/payments/api@sha256:" + "ab" * 32,
        "args": ["--port=8080", "--metrics-addr=:9090", "--config=/etc/api/config.yaml"],
        "env": env,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/api"},
            {
                "name": "kube-api-access",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            },
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
    }
    volumes = [
        {"name": "config", "configMap": {"name": "api-config"}},
        {"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt"}}]}},
    ]  # fmt: skip
    body = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": f"api-{i}", "namespace": "payments", "labels": {"app": "api"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {
                    "serviceAccountName": "api",
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    ev = typical_event(i)
    ev.update(
        verb="create",
        level="RequestResponse",
        requestURI="/apis/apps/v1/namespaces/payments/deployments?fieldManager=kubectl-client-side-apply",
        objectRef={"resource": "deployments", "namespace": "payments", "name": f"api-{i}",
                   "apiGroup": "apps", "apiVersion": "v1"},
        requestObject=body,
        responseObject={**body, "status": {}},
    )  # fmt: skip
    return ev


def payload(n: int, workloads: int | None = None) -> bytes:
    """An EventList of `n` events: one in 50 a Secret create, or with ``workloads`` only
    Deployment creates (one in ``workloads`` with a plaintext credential; 0: none)."""
    if workloads is None:
        items = [secret_event(i) if i % 50 == 49 else typical_event(i) for i in range(n)]
    else:
        items = [deployment_event(i, workloads > 0 and i % workloads == 0) for i in range(n)]
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--workloads", type=int, default=None, metavar="N")
    args = parser.parse_args()
    data = payload(args.events, args.workloads)
    per_event_bytes = len(data) / args.events
    parse_only, full = [], []
    for _ in range(args.repeat):
        t0 = time.process_time()
        orjson.loads(data)
        t1 = time.process_time()
        result = decode_payload(data, cluster="bench")
        t2 = time.process_time()
        parse_only.append((t1 - t0) / args.events * 1e6)
        full.append((t2 - t1) / args.events * 1e6)
    assert len(result.events) == args.events
    print(
        f"{args.events} events x {per_event_bytes:.0f} B: orjson.loads alone "
        f"{statistics.median(parse_only):.2f} µs/event; decode_payload (parse+normalise+redact) "
        f"median {statistics.median(full):.2f} µs/event, min {min(full):.2f}"
    )


if __name__ == "__main__":
    main()
