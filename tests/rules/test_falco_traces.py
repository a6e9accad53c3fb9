"""Acceptance: the built-in workload and execution rules against Falco's k8s_audit trace files.

The traces (`../shared/corpus/falco-k8s-audit-traces/`, recorded on minikube by the Falco
project) are read in place through the `corpus` fixture, decoded with
`schemas.normalize.decode_payload` exactly as the pipeline does, then evaluated by the engine
with the packaged rules and lists. Rules are identified by their ids, which alerts carry.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
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


# --- Falco parity: credentials in ConfigMaps, NodePort services, the opt-in policy rules -------

CONFIGMAP_CREDENTIALS = "5d7c5794-8776-4db0-9a4f-8d7e4787cf92"
NODEPORT = "ebfc08c6-dcae-400b-b4cc-0f2bd519ec79"
POLICY_IMAGE = "9f715876-0af7-4193-ab55-23d8c1262c25"
POLICY_USER = "122f4307-c632-4147-b570-e8d15664ac99"
POLICY_NAMESPACE = "15e94c39-1e37-4f6b-8b1e-a2d2ba3acbdc"

#: The policy lists as a minikube user would fill them (Falco's own test settings, in spirit).
POLICY_LISTS = {
    "allowed_image_registries": ("registry.k8s.io/*", "k8s.gcr.io/*"),
    "allowed_k8s_users": ("minikube", "minikube-user", "system:*"),
    "allowed_namespaces": ("default", "kube-*"),
}


@pytest.mark.parametrize(
    ("trace", "rule_id", "fires"),
    [
        ("create_configmap_sensitive_values.json", CONFIGMAP_CREDENTIALS, True),
        ("create_configmap_no_sensitive_values.json", CONFIGMAP_CREDENTIALS, False),
        ("create_configmap.json", CONFIGMAP_CREDENTIALS, False),
        ("create_nginx_service_nodeport.json", NODEPORT, True),
        ("create_nginx_service_nonodeport.json", NODEPORT, False),
    ],
)
def test_falco_parity_rules(
    engine: Engine, traces: Path, trace: str, rule_id: str, fires: bool
) -> None:
    """Credentials in ConfigMap values fire after the normaliser redacted them (the rule reads
    the redaction marker); NodePort services fire; their harmless twins do not."""
    assert (rule_id in fired(engine, traces / trace)) is fires


@pytest.mark.parametrize(
    ("trace", "rule_id", "fires_when_set"),
    [
        ("create_nginx_pod_unprivileged.json", POLICY_IMAGE, True),
        ("create_deployment.json", POLICY_IMAGE, True),
        ("some-user_creates_namespace_foo.json", POLICY_USER, True),
        ("anonymous_creates_namespace_foo.json", POLICY_USER, False),  # system:* allowed
        ("minikube_creates_namespace_foo.json", POLICY_USER, False),
        ("some-user_creates_namespace_foo.json", POLICY_NAMESPACE, True),
        ("minikube_creates_namespace_foo.json", POLICY_NAMESPACE, True),
        ("create_nginx_pod_unprivileged.json", POLICY_NAMESPACE, False),
    ],
)
def test_policy_rules_fire_only_once_their_lists_are_set(
    engine: Engine, traces: Path, trace: str, rule_id: str, fires_when_set: bool
) -> None:
    """Falco's disallowed-pod / allowed-user / allowed-namespace cases: silent as shipped
    (lists empty), and with the lists filled in they fire exactly where Falco's would."""
    assert rule_id not in fired(engine, traces / trace)
    ruleset = engine.ruleset
    filled = Engine(replace(ruleset, lists={**ruleset.lists, **POLICY_LISTS}))
    assert (rule_id in fired(filled, traces / trace)) is fires_when_set


def test_policy_rules_are_silent_on_every_trace_as_shipped(engine: Engine, traces: Path) -> None:
    """With the policy lists empty no trace fires a policy rule."""
    for trace in sorted(traces.glob("*.json")):
        assert not fired_any(engine, trace) & {POLICY_IMAGE, POLICY_USER, POLICY_NAMESPACE}


def fired_any(engine: Engine, trace: Path) -> set[str]:
    """Like :func:`fired`, for traces the normaliser may reject (the malformed one)."""
    events = decode_payload(trace.read_bytes()).events
    return {m.rule.id for event in events for m in engine.evaluate(event)}


def test_configmap_rule_reads_the_normalisers_redaction_marker(engine: Engine) -> None:
    """The ConfigMap rule looks for exactly the placeholder prefix schemas.redact writes, so
    whatever the normaliser learns to redact keeps firing it."""
    from schemas.redact import PLACEHOLDER_PREFIX

    rule = engine.compiled_rule(CONFIGMAP_CREDENTIALS).rule
    values = [
        v
        for alt in rule.detection["redacted_value"].alternatives
        for fm in alt
        if fm.path == "dataValues"
        for v in fm.values
    ]
    assert values == [PLACEHOLDER_PREFIX]
    secret = "AKIA" + "ABCDEFGHIJKLMNOP"
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": "c0ffee00-0000-4000-8000-000000000001",
        "stage": "ResponseComplete",
        "verb": "create",
        "user": {"username": "dev@example.com"},
        "objectRef": {"resource": "configmaps", "namespace": "web", "name": "settings"},
        "responseStatus": {"code": 201},
        "requestObject": {"kind": "ConfigMap", "data": {"app.ini": f"key_id = {secret}\n"}},
    }
    (decoded,) = decode_payload(orjson.dumps(event)).events
    assert secret not in orjson.dumps(decoded).decode()
    assert CONFIGMAP_CREDENTIALS in {m.rule.id for m in engine.evaluate(decoded)}
