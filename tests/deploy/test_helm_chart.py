"""deploy/helm/klaxon: ``helm lint`` and ``helm template`` pass, and what the chart renders is
Klaxon's: every variable is a `pipeline.config.Settings` variable, every command line parses
with the real CLI, the rendered settings load, pods are non-root on a read-only root, probes
are HTTP with the metrics token. tests/k8s/test_helm_dry_run.py sends the same objects to a
real kube-apiserver.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from klaxon.cli import build_parser
from pipeline.config import Settings
from tests.helm import CHART, Helm, need_helm

VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
MINIMAL = CHART / "ci" / "minimal-values.yaml"
FULL = CHART / "ci" / "full-values.yaml"
TOKEN = "ci-metrics-token"  # metrics.token of both values files


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return need_helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module", params=[p.name for p in VALUES])
def rendered(request: pytest.FixtureRequest, helm: Helm) -> list[dict[str, Any]]:
    return helm.template(CHART / "ci" / request.param)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{c['name']}", c


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment would hold: ConfigMaps and Secrets of the release
    resolved; values from Secrets the chart does not make (existingSecret) as ``<secret>``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secrets = [o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == ref["name"]]
        value = base64.b64decode(secrets[0]["data"][ref["key"]]).decode() if secrets else "<secret>"
        env[item["name"]] = value
    return env


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_lint_passes(helm: Helm, values: Path) -> None:
    done = helm.run("lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_names_what_is_missing(helm: Helm) -> None:
    """Without the metrics token, webhook tokens or TLS the chart refuses, saying what to set."""
    done = helm.run("template", "k", str(CHART))
    assert done.returncode != 0
    assert "metrics.token is required" in done.stderr
    no_tls = helm.run("template", "k", str(CHART), "--set", "metrics.token=t")
    assert "intake.tls: set existingSecret" in no_tls.stderr
    no_tokens = helm.run(
        "template", "k", str(CHART), "--set", "metrics.token=t,intake.tls.existingSecret=s"
    )
    assert "intake.tokens.existingSecret is required" in no_tokens.stderr


def test_more_workers_than_partitions_is_refused(helm: Helm) -> None:
    """replicas <= partitions: a partition is processed by one worker at a time."""
    ok = helm.template(MINIMAL, sets=("worker.replicas=12", "settings.partitions=12"))
    assert named(ok, "Deployment", "k-klaxon-worker")["spec"]["replicas"] == 12
    args = ("template", "k", str(CHART), "-f", str(MINIMAL), "--set", "worker.replicas=13")
    done = helm.run(*args)
    assert done.returncode != 0
    assert "worker.replicas=13 exceeds settings.partitions=12" in done.stderr


def test_every_variable_is_a_setting(rendered: list[dict[str, Any]]) -> None:
    """Each variable a container gets (env and envFrom ConfigMaps) is one Settings reads."""
    known = Settings.variables()
    for where, container in containers(rendered):
        unknown = set(container_env(rendered, container)) - known
        assert not unknown, f"{where}: not settings: {sorted(unknown)}"


def test_every_command_parses_with_the_klaxon_cli(rendered: list[dict[str, Any]]) -> None:
    """Each container runs a `klaxon` subcommand whose every flag the real parser accepts."""
    commands = {}
    for where, container in containers(rendered):
        argv = container["command"] + container.get("args", [])
        assert argv[0] == "klaxon", where
        args = build_parser().parse_args(argv[1:])  # an unknown flag exits here
        assert callable(args.func), where
        commands[where.rsplit("/", 1)[1]] = args
    assert set(commands) >= {"worker", "topics"}
    worker = commands["worker"]
    assert worker.reload_interval == 5.0
    assert worker.status_file == "/var/lib/klaxon/status.json"
    if "intake" in commands:
        assert commands["intake"].token_file == Path("/etc/klaxon/tokens/tokens")


def test_rendered_settings_load(helm: Helm) -> None:
    """The environment the minimal install gives its containers is valid for Settings."""
    objects = helm.template(MINIMAL)
    for where, container in containers(objects):
        settings = Settings.from_env(container_env(objects, container))
        assert settings.bootstrap_servers == "kafka-bootstrap.kafka.svc:9092", where
        assert settings.metrics_address == "0.0.0.0:9464"
        assert settings.metrics_token is not None
        assert settings.metrics_token.get_secret_value() == TOKEN
        assert settings.data_dir == Path("/var/lib/klaxon")


def test_pods_are_non_root_on_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(rendered):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        mounts = {v["name"] for v in spec["volumes"]}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert {m["name"] for m in c["volumeMounts"]} <= mounts, name
            # what the process writes lives on volumes: $HOME (/tmp) and the data dir
            paths = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in paths, name


def test_probes_are_http_with_the_metrics_token(rendered: list[dict[str, Any]]) -> None:
    """Liveness on /healthz, readiness on /readyz, at KLAXON_METRICS_ADDRESS's port, with the
    bearer token the container itself is given."""
    probed = []
    for where, c in containers(rendered):
        if "livenessProbe" not in c:
            continue
        env = container_env(rendered, c)
        port = int(env["KLAXON_METRICS_ADDRESS"].rsplit(":", 1)[1])
        (named_port,) = [p for p in c["ports"] if p["name"] == "metrics"]
        assert named_port["containerPort"] == port, where
        probes = (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        )
        for key, path in probes:
            get = c[key]["httpGet"]
            assert (get["path"], get["port"]) == (path, "metrics"), where
            headers = {h["name"]: h["value"] for h in get["httpHeaders"]}
            assert headers["Authorization"] == f"Bearer {env['KLAXON_METRICS_TOKEN']}", where
            assert c[key]["timeoutSeconds"] >= 2, where
        probed.append(where.rsplit("/", 1)[1])
    assert set(probed) == {"worker", "intake"}


def test_full_install_wires_its_parts(helm: Helm) -> None:
    """Rules and lists ConfigMaps are mounted where KLAXON_RULES/LISTS point; cert-manager's
    Certificate fills the intake's TLS Secret; SASL credentials come from existingSecret;
    monitoring scrapes the named metrics port with the metrics Secret."""
    objects = helm.template(FULL)
    worker = named(objects, "Deployment", "k-klaxon-worker")["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    env = container_env(objects, container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["volumes"]}
    assert env["KLAXON_RULES"] == mounts["rules"] == "/etc/klaxon/rules"
    assert env["KLAXON_LISTS"] == f"{mounts['lists']}/exec-tools.yml"  # list files, not folders
    rules_cm = named(objects, "ConfigMap", volumes["rules"]["configMap"]["name"])
    assert "namespace-deleted.yml" in rules_cm["data"]
    assert env["KAFKA_SASL_USERNAME"] == "<secret>"  # from kafka.existingSecret
    assert env["KAFKA_SASL_PASSWORD_FILE"] == f"{mounts['kafka']}/password"
    assert volumes["kafka"]["secret"]["secretName"] == "klaxon-kafka"
    assert env["KAFKA_SSL_CAFILE"] == f"{mounts['kafka']}/ca.crt"

    intake = named(objects, "Deployment", "k-klaxon-intake")["spec"]["template"]["spec"]
    tls = {v["name"]: v for v in intake["volumes"]}["tls"]["secret"]["secretName"]
    cert = named(objects, "Certificate", "k-klaxon-intake")
    assert cert["spec"]["secretName"] == tls
    assert "k-klaxon-intake.klaxon.svc" in cert["spec"]["dnsNames"]

    (monitor,) = by_kind(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"]["name"] == "k-klaxon-metrics"
    ports = {p["name"] for s in by_kind(objects, "Service") for p in s["spec"]["ports"]}
    assert endpoint["port"] in ports
    (rule,) = by_kind(objects, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"KlaxonConsumerLag", "KlaxonWorkerStalled", "KlaxonDeadLetters"} <= alerts
    assert "KlaxonClusterSilent" in alerts


def test_rules_and_lists_from_the_configmaps_load(helm: Helm, tmp_path: Path) -> None:
    """The ConfigMaps' files, where the worker would find them (KLAXON_RULES, KLAXON_LISTS),
    build an engine: the rule and the list file of the full values are valid."""
    from pipeline.reload import build_engine

    objects = helm.template(FULL)
    worker = named(objects, "Deployment", "k-klaxon-worker")["spec"]["template"]["spec"]
    env = container_env(objects, worker["containers"][0])
    volumes = {v["name"]: v for v in worker["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in worker["containers"][0]["volumeMounts"]}
    for mount_path, volume in mounts.items():
        if "configMap" in volumes[volume]:
            local = tmp_path / mount_path.lstrip("/")
            local.mkdir(parents=True)
            data = named(objects, "ConfigMap", volumes[volume]["configMap"]["name"])["data"]
            for name, text in data.items():
                (local / name).write_text(text)
    rules = [tmp_path / p.lstrip("/") for p in env["KLAXON_RULES"].split(":")]
    lists = [tmp_path / p.lstrip("/") for p in env["KLAXON_LISTS"].split(":")]
    assert all(p.exists() for p in rules + lists)
    _, count = build_engine(rules, lists)
    assert count == 1


def test_every_pod_is_covered_by_a_disruption_budget_and_a_network_policy(
    rendered: list[dict[str, Any]],
) -> None:
    budgets = [
        b["spec"]["selector"]["matchLabels"] for b in by_kind(rendered, "PodDisruptionBudget")
    ]
    policies = [p["spec"]["podSelector"]["matchLabels"] for p in by_kind(rendered, "NetworkPolicy")]
    for o in rendered:
        if o["kind"] != "Deployment":
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        assert any(b.items() <= labels.items() for b in budgets), o["metadata"]["name"]
        assert any(p.items() <= labels.items() for p in policies), o["metadata"]["name"]
