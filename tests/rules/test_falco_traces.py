"""Acceptance: the built-in workload and execution rules against Falco's k8s_audit trace files.

The traces (`../shared/corpus/falco-k8s-audit-traces/`, recorded on minikube by the Falco
project) are read in place through the `corpus` fixture, decoded with
`schemas.normalize.decode_payload` exactly as the pipeline does, then evaluated by the engine
with the packaged rules and lists. Rules are identified by their ids, which alerts carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detections import Engine, load_rules
from schemas.normalize import decode_payload

PRIVILEGED = "93b17069-d7ab-4865-84de-f41755461188"
SENSITIVE_MOUNT = "eaeaa673-9a4f-4d33-b2e6-cc477ac68f21"
HOST_NETWORK = "ebf8b179-6cf4-4273-baf5-26852a7b8e1a"
KUBE_SYSTEM_IMAGE = "e4d272d8-dcfe-4ebf-a8bb-b6b81c39416e"
KUBE_PUBLIC = "a0c1ce12-6b7b-4679-9175-01c8107e38a2"
EXEC = "bc6799df-dbeb-4e00-bd65-138aa1679d00"
ATTACH = "cefe1176-6f7c-4c25-976f-67ec3d8be2c2"

#: The rule file each id must come from (guards against an id being reused or moved).
RULE_FILES = {
    PRIVILEGED: "privileged-container.yml",
    SENSITIVE_MOUNT: "sensitive-hostpath-mount.yml",
    HOST_NETWORK: "host-network-workload.yml",
    KUBE_SYSTEM_IMAGE: "kube-system-unknown-image.yml",
    KUBE_PUBLIC: "kube-public-workload.yml",
    EXEC: "exec-into-container.yml",
    ATTACH: "attach-to-container.yml",
}

#: Trace file -> the rule it must fire.
EXPECTED_HITS = {
    "create_nginx_pod_privileged.json": PRIVILEGED,
    "create_nginx_pod_privileged_2nd_container.json": PRIVILEGED,
    "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json": PRIVILEGED,
    "create_nginx_pod_sensitive_mount.json": SENSITIVE_MOUNT,
    "create_nginx_pod_sensitive_mount_2nd_container.json": SENSITIVE_MOUNT,
    "create_nginx_pod_hostnetwork.json": HOST_NETWORK,
    "create_pod_kube_system_namespace.json": KUBE_SYSTEM_IMAGE,
    "create_pod_kube_public_namespace.json": KUBE_PUBLIC,
    "exec_pod.json": EXEC,
    "attach_pod.json": ATTACH,
}

#: Trace file -> the rule its harmless twin must NOT fire.
EXPECTED_MISSES = {
    "create_nginx_pod_unprivileged.json": PRIVILEGED,
    "create_nginx_pod_unsensitive_mount.json": SENSITIVE_MOUNT,
    "create_nginx_pod_nohostnetwork.json": HOST_NETWORK,
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The engine over the packaged rule pack and lists."""
    return Engine(load_rules())


@pytest.fixture(scope="module")
def traces(corpus: Path) -> Path:
    """The Falco k8s_audit trace folder (skips when the corpus lacks it)."""
    folder = corpus / "falco-k8s-audit-traces"
    if not folder.is_dir():
        pytest.skip("falco-k8s-audit-traces is not in the corpus")
    return folder


def fired(engine: Engine, trace: Path) -> set[str]:
    """Ids of the rules that fire on any event decoded from one trace file."""
    result = decode_payload(trace.read_bytes())
    assert not result.rejected, f"{trace.name}: {result.rejected}"
    assert result.events, f"{trace.name}: no events decoded"
    return {m.rule.id for event in result.events for m in engine.evaluate(event)}


def test_rule_ids_belong_to_their_files(engine: Engine) -> None:
    """Each id the acceptance test relies on is defined once, in the rule file it names."""
    rules: dict[str, Any] = {}
    for rule in load_rules().rules:
        assert rule.id not in rules, f"duplicate rule id {rule.id}"
        rules[rule.id] = rule
    for rule_id, file in RULE_FILES.items():
        assert rule_id in rules, f"{file}: id {rule_id} not loaded"
        assert rules[rule_id].file.endswith(file)


@pytest.mark.parametrize(("trace", "rule_id"), sorted(EXPECTED_HITS.items()))
def test_attack_trace_fires_its_rule(
    engine: Engine, traces: Path, trace: str, rule_id: str
) -> None:
    """Each attack trace (any container slot, exec/attach at ResponseStarted) fires its rule."""
    assert rule_id in fired(engine, traces / trace), f"{trace} did not fire {RULE_FILES[rule_id]}"


@pytest.mark.parametrize(("trace", "rule_id"), sorted(EXPECTED_MISSES.items()))
def test_harmless_twin_does_not_fire(
    engine: Engine, traces: Path, trace: str, rule_id: str
) -> None:
    """The unprivileged, non-sensitive-mount and no-hostNetwork twins stay silent."""
    assert rule_id not in fired(engine, traces / trace), f"{trace} fired {RULE_FILES[rule_id]}"


def test_rules_fire_on_no_other_trace(engine: Engine, traces: Path) -> None:
    """Across the whole trace set these rules fire exactly on their own traces and nowhere else."""
    actual: dict[str, set[str]] = {}
    for trace in sorted(traces.glob("*.json")):
        result = decode_payload(trace.read_bytes())
        ids = {m.rule.id for ev in result.events for m in engine.evaluate(ev)}
        mine = ids & set(RULE_FILES)
        if mine:
            actual[trace.name] = mine
    expected = {trace: {rule_id} for trace, rule_id in EXPECTED_HITS.items()}
    assert actual == expected


def test_exec_trace_is_reported_at_response_started(traces: Path) -> None:
    """The exec and attach traces are stream-start events, the stage the rules must accept."""
    for trace in ("exec_pod.json", "attach_pod.json"):
        (event,) = decode_payload((traces / trace).read_bytes()).events
        assert event["stage"] == "ResponseStarted"
        assert event["responseStatus"]["code"] == 101


def test_malformed_trace_is_rejected_with_a_reason(engine: Engine, traces: Path) -> None:
    """`{"kind": 0}` is rejected by the normaliser, saying what is missing, and never evaluated."""
    payload = (traces / "fal_01_003.json").read_bytes()
    result = decode_payload(payload)
    assert result.events == []
    assert len(result.rejected) == 1
    rejected = result.rejected[0]
    assert rejected.original.strip() == payload.strip()
    assert "verb" in rejected.reason
    assert engine.evaluate_batch(result.events) == []
