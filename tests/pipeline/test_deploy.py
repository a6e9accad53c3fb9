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
