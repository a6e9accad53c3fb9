"""Redaction: no credential value survives normalisation, in any of the shapes it arrives in."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.normalize import decode_payload
from schemas.redact import (
    LAST_APPLIED,
    Redaction,
    is_credential_name,
    is_credential_setting,
    needs_redaction,
    placeholder,
    redact_event,
    redact_events,
    redact_if_needed,
    redact_in_place,
    redact_text,
)
from tests import planted

PLACEHOLDER = re.compile(r"^\[REDACTED sha256:[0-9a-f]{12}\]$")
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAmarkPEMBODY0001\nAbCdEf==\n"
    "-----END RSA PRIVATE KEY-----\n"
)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYXJrSldUMDAwMSJ9.c2lnbmF0dXJlbWFyaw"


def audit(resource: str | None, *, verb: str = "create", **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "auditID": "a-1",
        "stage": "ResponseComplete",
        "verb": verb,
        "requestURI": f"/api/v1/namespaces/default/{resource or 'things'}",
        "user": {"username": "alice"},
    }
    if resource is not None:
        ev["objectRef"] = {"resource": resource, "namespace": "default", "apiVersion": "v1"}
    ev.update(fields)
    return ev


def decoded(ev: dict[str, Any]) -> dict[str, Any]:
    """The single canonical event decode_payload makes of `ev`."""
    (out,) = decode_payload(orjson.dumps(ev)).events
    return out


def assert_gone(ev: dict[str, Any], *markers: str) -> bytes:
    blob = orjson.dumps(ev)
    for marker in markers:
        assert marker.encode() not in blob, marker
    return blob


def secret(data_marker: str, *, kind: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "metadata": {
            "name": "db",
            "annotations": {
                LAST_APPLIED: '{"data":{"password":"' + data_marker + '-la"}}',
                "team": "payments",
            },
        },
        "data": {"password": data_marker + "-d", "user": "YWRtaW4="},
        "stringData": {"token": data_marker + "-sd"},
        "type": "Opaque",
    }
    if kind:
        obj["kind"] = "Secret"
    return obj


# --- Secrets -----------------------------------------------------------------------------


def test_secret_create_values_are_replaced_and_keys_kept() -> None:
    """data, stringData and last-applied of a created Secret are redacted in both bodies."""
    ev = decoded(audit("secrets", requestObject=secret("MARKA"), responseObject=secret("MARKB")))
    assert_gone(ev, "MARKA", "MARKB", "YWRtaW4=")
    body = ev["requestObject"]
    assert set(body["data"]) == {"password", "user"}
    assert all(PLACEHOLDER.match(v) for v in body["data"].values())
    assert PLACEHOLDER.match(body["metadata"]["annotations"][LAST_APPLIED])
    assert body["metadata"]["annotations"]["team"] == "payments"  # other annotations untouched


def test_secret_lists_and_tables_are_redacted_item_by_item() -> None:
    """list responses (items without kind) and Table rows holding full objects are redacted."""
    listing = {"kind": "SecretList", "items": [secret("MARKL1", kind=False), secret("MARKL2")]}
    table = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "rows": [{"cells": ["db"], "object": secret("MARKT1", kind=False)}],
    }
    assert_gone(decoded(audit("secrets", verb="list", responseObject=listing)), "MARKL1", "MARKL2")
    assert_gone(decoded(audit("secrets", verb="list", responseObject=table)), "MARKT1")


def test_secret_patches_are_redacted() -> None:
    """Merge patches and JSON-Patch ops touching data, stringData, root or last-applied."""
    merge = {"data": {"password": "MARKM1"}, "metadata": {"annotations": {LAST_APPLIED: "MARKM2"}}}
    ops = [
        {"op": "replace", "path": "/data/password", "value": "MARKP1"},
        {"op": "add", "path": "/data", "value": {"k": "MARKP2"}},
        {"op": "add", "path": "/stringData/token", "value": "MARKP3"},
        {"op": "replace", "path": "", "value": secret("MARKP4", kind=False)},
        {
            "op": "add",
            "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
            "value": "MARKP5",
        },
        {"op": "add", "path": "/metadata/labels/app", "value": "web"},
    ]
    assert_gone(decoded(audit("secrets", verb="patch", requestObject=merge)), "MARKM1", "MARKM2")
    ev = decoded(audit("secrets", verb="patch", requestObject=ops))
    assert_gone(ev, *(f"MARKP{i}" for i in range(1, 6)))
    assert ev["requestObject"][-1]["value"] == "web"  # labels are not secrets


def test_secrets_are_found_by_kind_whatever_the_object_ref() -> None:
    """A Secret body is redacted even without objectRef, and inside a v1 List of mixed kinds."""
    no_ref = audit(None, requestObject=secret("MARKK1"))
    listing = {"kind": "List", "items": [{"kind": "Pod", "spec": {}}, secret("MARKK2")]}
    assert_gone(decoded(no_ref), "MARKK1")
    assert_gone(decoded(audit("whatever", requestObject=listing)), "MARKK2")


def test_deeply_nested_secret_bodies_do_not_overflow() -> None:
    """Iterative walking: Secrets nested 200 (decoded) and 5000 (direct) levels deep."""
    body: Any = secret("MARKDEEP")
    for _ in range(200):
        body = {"wrap": body}
    assert_gone(decoded(audit("secrets", requestObject=body)), "MARKDEEP")
    deep: Any = secret("MARKDEEPER")
    for _ in range(5000):
        deep = {"wrap": deep}
    ev = audit("secrets", requestObject=deep)
    redact_in_place(ev)
    node = ev["requestObject"]
    while "wrap" in node:
        node = node["wrap"]
    assert PLACEHOLDER.match(node["data"]["password"])


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.text(alphabet="abcdefghij", min_size=6, max_size=12), min_size=1, max_size=5
    ),
    wrap=st.sampled_from(["object", "list", "items", "table"]),
)
def test_no_secret_value_survives_property(values: list[str], wrap: str) -> None:
    """Random data values in any of the Secret body shapes never appear in the output."""
    marked = [f"ZZ{v}ZZ" for v in values]
    obj: dict[str, Any] = {"data": {f"k{i}": v for i, v in enumerate(marked)}}
    body: Any = {
        "object": {"kind": "Secret", **obj},
        "list": [{"op": "add", "path": "/data", "value": obj["data"]}],
        "items": {"kind": "SecretList", "items": [obj, obj]},
        "table": {"kind": "Table", "rows": [{"object": obj}]},
    }[wrap]
    assert_gone(decoded(audit("secrets", requestObject=body, responseObject=body)), *marked)


# --- ConfigMaps ---------------------------------------------------------------------------


def configmap(**data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg"}, "data": data}


def test_configmap_credential_keys_and_values_are_redacted_the_rest_kept() -> None:
    """Credential-named keys lose their value; credential-looking text loses its secret part."""
    cm = configmap(
        DB_PASSWORD="MARKC1",
        **{"tls.key": "MARKC2"},
        bundle=PEM,
        jwt=f"token is {JWT}",
        aws="key_id: AKIAMARKC3ABCDEFGHIJ",
        url="postgres://app:MARKC4@db:5432/app",
        props="aws_secret_access_key = MARKC5\nregion=eu-west-1\n",
        json='{"api_key": "MARKC6", "debug": true}',
        header="Authorization: Bearer MARKC7abcdef",
        Corefile=".:53 {\n    forward . /etc/resolv.conf\n}\n",
    )
    ev = decoded(audit("configmaps", requestObject=cm))
    assert_gone(ev, "MARKC1", "MARKC2", "markPEMBODY", "bWFya0pXVDAwMDEi", "MARKC3", "MARKC4")
    assert_gone(ev, "MARKC5", "MARKC6", "MARKC7")
    data = ev["requestObject"]["data"]
    assert data["Corefile"] == cm["data"]["Corefile"]  # ordinary config is untouched
    assert data["bundle"].startswith("-----BEGIN RSA PRIVATE KEY-----[REDACTED sha256:")
    assert data["bundle"].rstrip().endswith("-----END RSA PRIVATE KEY-----")
    assert (
        "region=eu-west-1" in data["props"] and "aws_secret_access_key = [REDACTED" in data["props"]
    )
    assert data["url"].startswith("postgres://app:[REDACTED sha256:")


def test_configmap_last_applied_is_redacted_inside_the_json() -> None:
    """The last-applied copy of a ConfigMap is parsed, redacted and re-serialised."""
    cm = configmap(color="purple")
    cm["metadata"]["annotations"] = {
        LAST_APPLIED: orjson.dumps(configmap(password="MARKLA1", color="purple")).decode()
    }
    ev = decoded(audit("configmaps", requestObject=cm))
    assert_gone(ev, "MARKLA1")
    inner = orjson.loads(ev["requestObject"]["metadata"]["annotations"][LAST_APPLIED])
    assert inner["data"]["color"] == "purple"


def test_configmap_patch_ops_are_redacted_by_key() -> None:
    """JSON-Patch ops on configmap data keys are judged by the key they touch."""
    ops = [
        {"op": "add", "path": "/data/password", "value": "MARKCP1"},
        {"op": "add", "path": "/data/color", "value": "blue"},
    ]
    ev = decoded(audit("configmaps", verb="patch", requestObject=ops))
    assert_gone(ev, "MARKCP1")
    assert ev["requestObject"][1]["value"] == "blue"


# --- tokens, URIs, annotations -------------------------------------------------------------


def test_token_reviews_and_token_requests_are_redacted() -> None:
    """Bearer tokens sent for review and service-account tokens issued are credentials."""
    review = audit(
        "tokenreviews",
        requestObject={"kind": "TokenReview", "spec": {"token": "MARKTR1"}},
        responseObject={"kind": "TokenReview", "spec": {"token": "MARKTR1"}, "status": {}},
    )
    issued = audit(
        "serviceaccounts",
        objectRef={"resource": "serviceaccounts", "subresource": "token", "name": "default"},
        responseObject={"kind": "TokenRequest", "status": {"token": JWT}},
    )
    assert_gone(decoded(review), "MARKTR1")
    assert_gone(decoded(issued), JWT)


def test_credentials_in_request_uri_and_annotations_are_redacted() -> None:
    """Credential query parameters and bearer tokens go; other parameters stay."""
    ev = decoded(
        audit(
            "pods",
            verb="get",
            requestURI="/api/v1/pods?access_token=MARKU1&watch=true&labelSelector=app%3Dweb",
            annotations={
                "example.com/auth": "Bearer MARKU2xyz",
                "authorization.k8s.io/decision": "allow",
            },
        )
    )
    assert_gone(ev, "MARKU1", "MARKU2")
    assert ev["requestURI"].endswith("&watch=true&labelSelector=app%3Dweb")
    assert ev["annotations"]["authorization.k8s.io/decision"] == "allow"


@pytest.mark.parametrize("name", ["pwd", "pass", "PASS", "passwd", "password", "db_pwd"])
def test_every_password_parameter_name_is_redacted(name: str) -> None:
    """Short password names (`pwd`, `pass`) too, not only the ones spelling `passw`."""
    ev = decoded(audit("pods", verb="get", requestURI=f"/api/v1/pods?{name}=MARKPW1&watch=1"))
    assert_gone(ev, "MARKPW1")
    assert ev["requestURI"].endswith("&watch=1")


def test_exec_command_parameters_are_not_redacted() -> None:
    """Rules need exec commands: `command=` values are left alone."""
    uri = "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=id&stdin=true"
    ev = decoded(
        audit("pods", requestURI=uri, objectRef={"resource": "pods", "subresource": "exec"})
    )
    assert ev["requestURI"] == uri


# --- properties of the mechanism ------------------------------------------------------------


def test_placeholders_are_deterministic_and_short() -> None:
    """Equal values give equal placeholders; the form is fixed."""
    assert placeholder("x") == placeholder("x") != placeholder("y")
    assert PLACEHOLDER.match(placeholder({"a": [1, 2]}))


def test_redaction_is_idempotent() -> None:
    """Redacting twice changes nothing the second time (placeholders are not re-hashed)."""
    once = decoded(audit("secrets", requestObject=secret("MARKI")))
    assert redact_event(copy.deepcopy(once)) == once
    assert redact_text(redact_text(PEM)) == redact_text(PEM)


def test_ordinary_events_are_not_copied() -> None:
    """Events with nothing to redact are returned as the very same object."""
    ev = audit("pods", verb="get", responseObject={"kind": "Pod", "spec": {"containers": []}})
    assert not needs_redaction(ev)
    assert redact_event(ev) is ev


def test_redact_event_does_not_mutate_its_input() -> None:
    """The pure entry point works on a copy."""
    ev = audit("secrets", requestObject=secret("MARKN"))
    before = copy.deepcopy(ev)
    out = redact_event(ev)
    assert ev == before and out is not ev
    assert_gone(out, "MARKN")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("password", True), ("DB_PASS", True), ("clientSecret", True), ("id_rsa", True),
        ("ca.pem", True), ("aws_access_key_id", True), ("kubeconfig", True),
        ("color", False), ("mapRoles", False), ("Corefile", False), ("monkey", False),
        ("passenger_count", False),
    ],
)  # fmt: skip
def test_credential_names(name: str, expected: bool) -> None:
    """Key names are judged by their words (snake, kebab, dotted and camel case)."""
    assert is_credential_name(name) is expected


# --- credentials anywhere in bodies, command lines and URIs ----------------------------------


def test_planted_credentials_do_not_survive_normalisation() -> None:
    """Env values, flags, shell scripts, bearer and basic credentials in exec command lines,
    JWTs, private keys and AWS/GCP/Azure keys: none of the planted values is left, and with
    the operator pattern configured, neither is the operator's own secret."""
    policy = Redaction.compile([planted.OPERATOR_PATTERN])
    payload = b"\n".join(orjson.dumps(e) for e in planted.planted_events())
    result = decode_payload(payload, redaction=policy)
    assert len(result.events) == len(planted.planted_events())
    assert planted.leaks(orjson.dumps(result.events)) == []
    without = decode_payload(payload)  # the operator's secret is only known by its pattern
    assert planted.leaks(orjson.dumps(without.events)) == [planted.OPERATOR_SECRET]


def test_env_names_stay_and_values_that_rules_read_stay() -> None:
    """Keys stay, values become placeholders; booleans, ordinary settings and the image stay."""
    (ev,) = decode_payload(orjson.dumps(planted.privileged_pod())).events
    container = ev["requestObject"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LOG_LEVEL"] == "debug" and env["MYSQL_ALLOW_EMPTY_PASSWORD"] == "yes"
    for name in ("DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "stripeApiKey"):
        assert PLACEHOLDER.match(env[name]), name
    assert env["DB_PASSWORD"] == placeholder(planted.DB_PASSWORD)
    assert "AccountName=acme;AccountKey=[REDACTED sha256:" in env["AZURE_STORAGE_CONNECTION_STRING"]
    assert container["image"] == "registry.example.com/ops/agent:1.4"
    assert container["securityContext"] == {"privileged": True}
    script = container["args"][0]
    assert script.startswith("export DB_PASSWORD=[REDACTED sha256:")
    assert "exec /agent --password=[REDACTED sha256:" in script
    assert "--token [REDACTED sha256:" in script


def test_exec_command_lines_keep_their_shape() -> None:
    """Only the credential inside a `command=` value changes; the command, flags, URL and
    other parameters stay, and the engine's `command` field decodes the new value."""
    from detections.fields import compile_path

    events = planted.planted_events()
    (bearer,) = decode_payload(orjson.dumps(events[1])).events
    uri = bearer["requestURI"]
    assert uri.startswith("/api/v1/namespaces/shop/pods/web-0/exec?command=sh&command=-c&command=")
    assert uri.endswith("&container=web&stdout=true")
    (line,) = compile_path("commandLine")(bearer, {})
    assert line.startswith("sh -c curl -sH 'Authorization: Bearer [REDACTED sha256:")
    assert line.endswith("' https://kubernetes.default/api")
    (basic,) = decode_payload(orjson.dumps(events[2])).events
    (line,) = compile_path("commandLine")(basic, {})
    expected = f"admin:{placeholder(planted.BASIC_PASSWORD)} http://169.254.169.254/latest/"
    assert line == f"curl -u {expected}meta-data/"
    (flag,) = decode_payload(orjson.dumps(events[3])).events
    (line,) = compile_path("commandLine")(flag, {})
    assert line == f"mysql -uroot --password={placeholder(planted.CLI_PASSWORD)}"


def test_last_applied_configuration_of_a_workload_is_redacted_inside() -> None:
    """kubectl apply copies the whole object, env included, into an annotation."""
    pod = planted.privileged_pod()
    body = pod["requestObject"]
    body["metadata"]["annotations"] = {LAST_APPLIED: orjson.dumps(body).decode()}
    (ev,) = decode_payload(orjson.dumps(pod)).events
    inner = orjson.loads(ev["requestObject"]["metadata"]["annotations"][LAST_APPLIED])
    assert inner["spec"]["containers"][0]["env"][0] == {"name": "LOG_LEVEL", "value": "debug"}
    assert planted.leaks(orjson.dumps(ev)) == []


def test_strategic_merge_patches_and_exec_options_are_redacted() -> None:
    """A patch adding an env entry and a PodExecOptions body are bodies like any other."""
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "env": [{"name": "API_TOKEN", "value": "MARKP1"}]}]}}}}  # fmt: skip
    options = {"kind": "PodExecOptions", "command": ["vault", "login", "-token", "MARKP2"]}
    for body in (patch, options):
        ev = decoded(audit("deployments", verb="patch", requestObject=body))
        assert_gone(ev, "MARKP1", "MARKP2")


def test_json_patches_of_env_values_and_command_lines_are_redacted() -> None:
    """`kubectl patch --type=json` names the env entry by position only: its new value is
    redacted unless inert; whole entries and argument lists are judged as usual."""
    ops = [
        {"op": "replace", "path": "/spec/containers/0/env/3/value", "value": "MARKJ1"},
        {"op": "add", "path": "/spec/containers/0/env/-",
         "value": {"name": "API_TOKEN", "value": "MARKJ2"}},
        {"op": "add", "path": "/spec/containers/0/args/-", "value": "--password=MARKJ3"},
        {"op": "replace", "path": "/spec/containers/0/command",
         "value": ["app", "--token", "MARKJ4"]},
        {"op": "replace", "path": "/spec/containers/0/env/0/value", "value": "true"},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
    ]  # fmt: skip
    ev = decoded(audit("deployments", verb="patch", requestObject=ops))
    assert_gone(ev, "MARKJ1", "MARKJ2", "MARKJ3", "MARKJ4")
    body = ev["requestObject"]
    assert body[2]["value"].startswith("--password=[REDACTED sha256:")
    assert body[4]["value"] == "true" and body[5]["value"] == 3


def test_bodies_without_credentials_are_not_copied_or_changed() -> None:
    """A pod spec with ordinary env, args and a service-account token volume needs nothing."""
    pod = {"kind": "Pod", "spec": {
        "containers": [{"name": "web", "args": ["--port=8080", "--config=/etc/web.yaml"],
                        "env": [{"name": "LOG_LEVEL", "value": "info"},
                                {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"key": "u"}}}],
                        "image": "nginx@sha256:0123"}],
        "volumes": [{"name": "kube-api-access", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}}]}}  # fmt: skip
    ev = audit("pods", requestObject=pod)
    assert not needs_redaction(ev)
    assert redact_event(ev) is ev


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DB_PASSWORD", True), ("AWS_SECRET_ACCESS_KEY", True), ("GITHUB_TOKEN", True),
        ("STRIPE_API_KEY", True), ("ssh_key", True), ("db-password", True), ("apiKey", True),
        ("POSTGRES_HOST_AUTH_METHOD", False), ("kubeconfig", False), ("KEYCLOAK_URL", False),
        ("LOG_LEVEL", False), ("monkey", False),
    ],
)  # fmt: skip
def test_credential_settings(name: str, expected: bool) -> None:
    """Env and flag names: `*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*_KEY` and kin, nothing else."""
    assert is_credential_setting(name) is expected


def test_operator_patterns_are_bounded_and_checked() -> None:
    """Operator patterns are RE2 (no backreferences), few, short, and never match nothing."""
    with pytest.raises(ValueError, match=r"pattern '\(a\)\\\\1'"):
        Redaction.compile([r"(a)\1"])
    with pytest.raises(ValueError, match="matches the empty string"):
        Redaction.compile(["x*"])
    with pytest.raises(ValueError, match="at most 32"):
        Redaction.compile(["a"] * 33)
    with pytest.raises(ValueError, match="longer than 512"):
        Redaction.compile(["a" * 513])


def test_operator_patterns_reach_uris_and_annotations() -> None:
    """A configured pattern applies to query values and audit annotations too."""
    policy = Redaction.compile([r"\bACME-[0-9a-f]{16}\b"])
    ev = audit(
        "pods",
        verb="list",
        requestURI=f"/api/v1/pods?labelSelector=license%3D{planted.OPERATOR_SECRET}",
        annotations={"note": f"license {planted.OPERATOR_SECRET}"},
    )
    (out,) = decode_payload(orjson.dumps(ev), redaction=policy).events
    assert planted.leaks(orjson.dumps(out)) == []


def test_pack_fixtures_fire_the_same_after_redaction() -> None:
    """No rule of the pack loses (or gains) a fixture because of redaction."""
    from detections import load_rules
    from detections.fixtures import FixtureEngines, fixture_event
    from detections.loader import PACKAGED_RULES

    ruleset = load_rules([PACKAGED_RULES])
    engines = FixtureEngines(ruleset)  # a test's own `lists:` (a filled-in cluster_networks)
    wrong = []
    for rule in ruleset.rules:
        for case in rule.klaxon.tests:
            event = redact_event(fixture_event(case.event))
            hit = any(m.rule.id == rule.id for m in engines.for_case(case).evaluate(event))
            if hit != (case.expect == "hit"):
                wrong.append(f"{rule.file}: {case.name}")
    assert wrong == []


def test_batch_redaction_is_event_by_event_redaction() -> None:
    """`redact_events` (the normaliser's batch) changes exactly what `redact_if_needed` does,
    with and without operator patterns, on events with and without bodies."""
    from bench.engine import make_events

    events = [*planted.planted_events(), *make_events(400, mix="bodies")]
    for policy in (Redaction(), Redaction.compile([planted.OPERATOR_PATTERN])):
        batch = copy.deepcopy(events)
        one_by_one = copy.deepcopy(events)
        redact_events(batch, policy)
        for ev in one_by_one:
            redact_if_needed(ev, policy)
        assert orjson.dumps(batch) == orjson.dumps(one_by_one)
        assert batch != events  # the batch did redact something


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Authorization: BEARER abcdef123", True),
        ("auth: baſic abcdef123", True),  # RE2 folds the long s: non-ASCII text is searched
        ("user_AIDAABCDEFGHIJKLMNOP", False),  # no word boundary before it
        ("id AIDAABCDEFGHIJKLMNOP", True),
        ("DB_PASSWORD: hunter2", True),
        ("color=purple\nsize: 3", False),
    ],
)
def test_text_patterns_run_whenever_they_could_match(text: str, redacted: bool) -> None:
    """`redact_text` skips a pattern only when a literal it needs is absent."""
    assert (redact_text(text) != text) is redacted


def test_remembered_query_redaction_is_the_computed_one() -> None:
    """Query strings are redacted once and remembered; a second event with the same query
    gets the same result, and operator patterns still apply to queries already seen."""
    uri = (
        "/api/v1/namespaces/a/pods/p/exec"
        "?command=mysql&command=--password%3DHunter22&token=abc&watch=1"
    )
    first = {"verb": "create", "requestURI": uri, "objectRef": {"resource": "pods"}}
    second = copy.deepcopy(first)
    redact_in_place(first)
    redact_in_place(second)
    assert first["requestURI"] == second["requestURI"] != uri
    assert "Hunter22" not in first["requestURI"] and "token=abc" not in first["requestURI"]
    marked = {"verb": "get", "requestURI": "/api/v1/pods?labelSelector=ACME-7f3a9c0d1e2b4a68"}
    redact_in_place(copy.deepcopy(marked))  # remembered without operator patterns
    redact_in_place(marked, Redaction.compile([planted.OPERATOR_PATTERN]))
    assert planted.OPERATOR_SECRET not in marked["requestURI"]
