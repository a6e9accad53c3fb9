"""Fixtures for tests that drive a real Kubernetes API server (`tests.kubeapi`).

- ``k8s_ca``: a throw-away CA (session); the API server's certificate is issued by it, and a
  test's audit webhook receiver can use it too so the API server trusts the receiver.
- ``kube_apiserver_factory``: ``start(webhook=AuditWebhook(...), **options)`` starts
  kube-apiserver + etcd and returns the running `KubeAPIServer`; whatever is still running at
  the end of the session is stopped.

The binaries come from ``./dev test`` (built from ``brokers/k8s/go.mod``). Without them the
tests fail with a message saying so; locally ``KLAXON_SKIP_K8S=1`` turns that into a skip
(never under ``CI=true``). Tests using the factory get the ``k8s`` marker (deselect with
``-m "not k8s"``), and a failing one gets both servers' log tails in its report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BrokerNotInstalled
from tests.kubeapi import AuditWebhook, KubeAPIServer, TestCA

K8S_FIXTURES = frozenset({"kube_apiserver_factory"})

_RUNNING: list[KubeAPIServer] = []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that (indirectly) uses the API server factory with ``k8s``."""
    for item in items:
        if K8S_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.k8s)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log tails of running API servers to a failed k8s test's report."""
    report = yield
    if report.failed and item.get_closest_marker("k8s") is not None:
        for api in _RUNNING:
            report.sections.append((f"kube-apiserver {api.work_dir}", api.logs(60)))
    return report


def _k8s_unavailable(exc: BrokerNotInstalled) -> None:
    """Fail (CI, or by default) or skip (KLAXON_SKIP_K8S=1 locally) a test needing the server."""
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if os.environ.get("KLAXON_SKIP_K8S") == "1" and not ci:
        pytest.skip(f"KLAXON_SKIP_K8S=1: {exc}")
    pytest.fail(f"kube-apiserver is needed by this test and unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def k8s_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throw-away CA shared by the session's API servers and webhook receivers."""
    return TestCA(tmp_path_factory.mktemp("k8s-ca"))


@pytest.fixture(scope="session")
def kube_apiserver_factory(
    k8s_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., KubeAPIServer]]:
    """``start(webhook=None, **options)``: a running `KubeAPIServer` (stop it when done)."""

    def start(webhook: AuditWebhook | None = None, **options: Any) -> KubeAPIServer:
        work_dir: Path = tmp_path_factory.mktemp("kube-apiserver")
        api = KubeAPIServer(work_dir, k8s_ca, webhook=webhook, **options)
        try:
            api.start()
        except BrokerNotInstalled as exc:
            _k8s_unavailable(exc)
        _RUNNING.append(api)
        return api

    try:
        yield start
    finally:
        while _RUNNING:
            _RUNNING.pop().stop()
