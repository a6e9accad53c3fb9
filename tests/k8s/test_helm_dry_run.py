"""Every object ``helm template`` renders from deploy/helm/klaxon is accepted by a real
kube-apiserver: a server-side dry run (``kubectl apply --dry-run=server`` without kubectl),
with strict field validation, after the CRDs of the optional objects are installed.

The CRDs (ServiceMonitor, PrometheusRule, cert-manager Certificate) come from their projects'
Go modules, fetched by ``./dev test`` next to helm (``brokers/helm/crds.txt``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import CHART, Helm, need_helm
from tests.kubeapi import KubeAPIServer

NAMESPACE = "klaxon"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return need_helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def api(
    kube_apiserver_factory: Callable[..., KubeAPIServer], helm: Helm
) -> Iterator[KubeAPIServer]:
    """An API server with the chart's namespace and the CRDs of its optional objects."""
    server = kube_apiserver_factory()
    try:
        assert helm.crds, f"no CRDs in {helm.bin_dir / 'crds'}: run ./dev test once"
        for path in helm.crds:
            server.create(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                yaml.safe_load(path.read_text()),
            )
        for path in helm.crds:
            wait_established(server, yaml.safe_load(path.read_text())["metadata"]["name"])
        server.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        yield server
    finally:
        server.stop()


def wait_established(api: KubeAPIServer, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        if conditions.get("Established") == "True":
            return
        assert time.monotonic() < deadline, f"CRD {name} not established: {conditions}"
        time.sleep(0.2)


def collection(api: KubeAPIServer, obj: dict[str, Any], namespace: str) -> str:
    """The collection path of ``obj``'s kind, from the server's discovery (plural, scope)."""
    group_version = obj["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    deadline = time.monotonic() + 30.0
    while True:  # a fresh CRD's resources appear in discovery shortly after Established
        resources = api.get(base)["resources"]
        found = [r for r in resources if r["kind"] == obj["kind"] and "/" not in r["name"]]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found, f"{group_version} {obj['kind']}: not served by the API server"
    resource = found[0]
    if resource["namespaced"]:
        return f"{base}/namespaces/{namespace}/{resource['name']}"
    return f"{base}/{resource['name']}"


def dry_run(api: KubeAPIServer, obj: dict[str, Any]) -> tuple[int, Any]:
    path = collection(api, obj, NAMESPACE) + "?dryRun=All&fieldValidation=Strict"
    return api.request("POST", path, obj)


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_every_rendered_object_passes_a_server_side_dry_run(
    api: KubeAPIServer, helm: Helm, values: Path
) -> None:
    objects = helm.template(values, namespace=NAMESPACE)
    kinds = set()
    for obj in objects:
        status, body = dry_run(api, obj)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert status in (200, 201), f"{where}: HTTP {status}: {body}"
        assert (body["kind"], body["metadata"]["name"]) == (obj["kind"], obj["metadata"]["name"])
        kinds.add(obj["kind"])
    assert {"Deployment", "Service", "ConfigMap", "Job", "PodDisruptionBudget"} <= kinds
    assert "NetworkPolicy" in kinds
    # a dry run stores nothing
    status, _ = api.request(
        "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/k-klaxon-worker"
    )
    assert status == 404


def test_the_dry_run_refuses_what_a_cluster_would(api: KubeAPIServer, helm: Helm) -> None:
    """The check can fail: an unknown field and an invalid value are refused."""
    objects = helm.template(CHART / "ci" / "full-values.yaml", namespace=NAMESPACE)
    (worker,) = [
        o
        for o in objects
        if o["metadata"]["name"] == "k-klaxon-worker" and o["kind"] == "Deployment"
    ]
    typo = {**worker, "spec": {**worker["spec"], "replica": 3}}
    status, body = dry_run(api, typo)
    assert status >= 400 and "replica" in str(body)
    negative = {**worker, "spec": {**worker["spec"], "replicas": -1}}
    status, body = dry_run(api, negative)
    assert status == 422, body
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    bad_rule = {**rule, "spec": {"groups": [{"name": "x", "rules": [{"alert": "A"}]}]}}
    status, body = dry_run(api, bad_rule)
    assert status == 422, body  # the CRD's schema: a rule needs an expr
