"""Helm for the tests: lint and render ``deploy/helm/klaxon`` with a real ``helm`` binary.

``./dev test`` builds ``helm`` (``helm.sh/helm/v4``, pinned in ``brokers/helm/go.mod``) into
``.cache/helm/bin`` and puts there, under ``crds/``, the CustomResourceDefinitions of the
chart's optional objects (ServiceMonitor, PrometheusRule, cert-manager Certificate; listed in
``brokers/helm/crds.txt``, taken from their Go modules). ``KLAXON_HELM_BIN`` points elsewhere.
Without the binary, `helm` raises `HelmNotInstalled`; the tests turn that into a failure, or
into a skip locally with ``KLAXON_SKIP_K8S=1`` (never under ``CI=true``), as for kube-apiserver.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = ["CHART", "DEFAULT_HELM_BIN", "Helm", "HelmNotInstalled", "helm_bin_dir", "need_helm"]

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "klaxon"
#: Where ``./dev test`` puts ``helm`` and ``crds/`` (``KLAXON_HELM_BIN`` overrides).
DEFAULT_HELM_BIN = REPO / ".cache" / "helm" / "bin"


class HelmNotInstalled(RuntimeError):
    """No ``helm`` binary where the tests look for it."""


def helm_bin_dir(env: dict[str, str] | None = None) -> Path:
    """``$KLAXON_HELM_BIN`` or the default.

    >>> helm_bin_dir({"KLAXON_HELM_BIN": "/opt/helm"})
    PosixPath('/opt/helm')
    """
    override = (os.environ if env is None else env).get("KLAXON_HELM_BIN", "").strip()
    return Path(override) if override else DEFAULT_HELM_BIN


@dataclass(frozen=True)
class Helm:
    """The ``helm`` of `helm_bin_dir`, run with a throw-away home (no repositories, no
    cluster: ``lint`` and ``template`` are offline)."""

    bin_dir: Path
    home: Path

    @property
    def crds(self) -> list[Path]:
        return sorted((self.bin_dir / "crds").glob("*.yaml"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.home / "no-kubeconfig"),
        }
        return subprocess.run(
            [str(self.bin_dir / "helm"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def template(
        self, *values: Path, namespace: str = "klaxon", sets: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """The objects ``helm template`` renders (hooks included); `AssertionError` on failure."""
        args = ["template", "k", str(CHART), "--namespace", namespace]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d]


def need_helm(home: Path) -> Helm:
    """The `Helm` to use, or fail (skip locally with ``KLAXON_SKIP_K8S=1``) when it is missing."""
    bin_dir = helm_bin_dir()
    if not os.access(bin_dir / "helm", os.X_OK):
        exc = HelmNotInstalled(
            f"{bin_dir / 'helm'} not found: run `./dev test` once (it builds helm from"
            " brokers/helm/go.mod with Go) or set KLAXON_HELM_BIN"
        )
        ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        if os.environ.get("KLAXON_SKIP_K8S") == "1" and not ci:
            pytest.skip(f"KLAXON_SKIP_K8S=1: {exc}")
        pytest.fail(f"helm is needed by this test and unavailable: {exc}", pytrace=False)
    return Helm(bin_dir, home)
