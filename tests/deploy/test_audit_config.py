"""deploy/audit: the shipped audit policy logs what the packaged rules read, and no secrets.

The policy is checked the way kube-apiserver applies it (`level_of`: first matching rule,
the matching of ``k8s.io/apiserver/pkg/audit/policy/checker.go``), against requests derived
from the rule files themselves: every ``objectRef.resource`` x ``verb`` a body-reading rule
selects (one whose detection names ``requestObject``, ``responseObject`` or ``podSpec``), and
every event of its ``expect: hit`` fixtures. tests/k8s/test_audit_policy.py loads the same
file into a real API server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from detections.fixtures import fixture_event
from klaxon.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
AUDIT = REPO / "deploy" / "audit"
POLICY = AUDIT / "policy.yaml"
KUBECONFIGS = sorted(AUDIT.glob("webhook-kubeconfig-*.yaml"))
RULES = sorted((REPO / "detections" / "rules").glob("*.yml"))

LEVELS = ("None", "Metadata", "Request", "RequestResponse")

#: Body-reading rules the policy cannot serve, by choice: their bodies are configmap data and
#: secrets, which the policy never logs beyond Metadata (docs/clusters.md says so).
CANNOT_FIRE = frozenset({"configmap-with-credentials", "serviceaccount-token-secret-created"})

#: API group of each resource the rules name (fixtures often leave objectRef.apiGroup out).
GROUP = {
    **dict.fromkeys(
        [
            "pods",
            "replicationcontrollers",
            "podtemplates",
            "services",
            "namespaces",
            "persistentvolumes",
            "secrets",
            "configmaps",
            "events",
            "endpoints",
            "serviceaccounts",
            "nodes",
        ],
        "",
    ),
    **dict.fromkeys(["deployments", "daemonsets", "statefulsets", "replicasets"], "apps"),
    **dict.fromkeys(["jobs", "cronjobs"], "batch"),
    "ingresses": "networking.k8s.io",
    "endpointslices": "discovery.k8s.io",
    "leases": "coordination.k8s.io",
    "certificatesigningrequests": "certificates.k8s.io",
    "tokenreviews": "authentication.k8s.io",
    **dict.fromkeys(
        ["selfsubjectaccessreviews", "selfsubjectrulesreviews", "subjectaccessreviews"],
        "authorization.k8s.io",
    ),
    **dict.fromkeys(
        ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
        "rbac.authorization.k8s.io",
    ),
    **dict.fromkeys(
        ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        "admissionregistration.k8s.io",
    ),
}


@dataclass(frozen=True)
class Request:
    """The attributes an audit policy matches on."""

    verb: str
    resource: str | None = None  # None: a non-resource request (path)
    subresource: str | None = None
    group: str | None = None  # None: from GROUP
    namespace: str = ""
    name: str = ""
    user: str = "alice"
    groups: tuple[str, ...] = ("system:authenticated",)
    path: str = ""

    @property
    def api_group(self) -> str:
        if self.group is not None:
            return self.group
        assert self.resource in GROUP, f"add {self.resource!r} to GROUP"
        return GROUP[self.resource]


def _rule_matches(rule: dict[str, Any], req: Request) -> bool:
    if rule.get("verbs") and req.verb not in rule["verbs"]:
        return False
    if rule.get("users") and req.user not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(req.groups) & set(rule["userGroups"]):
        return False
    if req.resource is None:
        if rule.get("resources") or rule.get("namespaces"):
            return False
        urls = rule.get("nonResourceURLs") or []
        return not urls or any(
            req.path == u or (u.endswith("*") and req.path.startswith(u[:-1])) for u in urls
        )
    if rule.get("nonResourceURLs"):
        return False
    if rule.get("namespaces") and req.namespace not in rule["namespaces"]:
        return False
    groups = rule.get("resources") or []
    return not groups or any(_group_resources_match(gr, req) for gr in groups)


def _group_resources_match(gr: dict[str, Any], req: Request) -> bool:
    """One ``{group, resources, resourceNames}`` entry against a resource request."""
    if gr.get("group", "") != req.api_group:
        return False
    names = gr.get("resourceNames") or []
    if names and req.name not in names:
        return False
    wanted = gr.get("resources") or []
    combined = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    return not wanted or any(
        res in ("*", combined)
        or (res.startswith("*/") and req.subresource == res[2:])
        or (res.endswith("/*") and bool(req.subresource) and req.resource == res[:-2])
        for res in wanted
    )


def level_of(policy: dict[str, Any], req: Request) -> str:
    """The level kube-apiserver logs ``req`` at: the first matching rule's (else None)."""
    for rule in policy["rules"]:
        if _rule_matches(rule, req):
            return str(rule["level"])
    return "None"


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    loaded = yaml.safe_load(POLICY.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _rules() -> list[tuple[str, dict[str, Any]]]:
    return [(path.stem, yaml.safe_load(path.read_text())) for path in RULES]


def _selections(detection: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The positive selections of a detection (filters say what not to match)."""
    for key, value in detection.items():
        if key == "condition" or key.startswith("filter"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                yield item


def _values(selection: dict[str, Any], field: str) -> list[str]:
    for key, value in selection.items():
        if key.split("|")[0] == field:
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []


def reads_bodies(detection: dict[str, Any]) -> bool:
    text = yaml.safe_dump(detection)
    return (
        re.search(r"\b(requestObject|responseObject|podSpec|hostPath|capabilities)\b", text)
        is not None
    )


def selected_requests(detection: dict[str, Any]) -> set[Request]:
    """resource x subresource x verb of each selection that names a resource."""
    out: set[Request] = set()
    for sel in _selections(detection):
        resources = _values(sel, "objectRef.resource")
        if not resources:
            continue
        subs: list[str | None] = [
            s for s in _values(sel, "objectRef.subresource") if s != "None"
        ] or [None]
        verbs = _values(sel, "verb") or ["create", "update", "patch"]
        groups: list[str | None] = [*_values(sel, "objectRef.apiGroup")] or [None]
        for resource in resources:
            for sub in subs:
                for verb in verbs:
                    for group in groups:
                        out.add(Request(verb, resource, sub, group or None))
    return out


def fixture_requests(rule: dict[str, Any]) -> list[tuple[str, Request]]:
    """(fixture name, request) of each ``expect: hit`` fixture."""
    out = []
    for case in rule.get("klaxon", {}).get("tests", []):
        if case.get("expect") != "hit":
            continue
        ev = fixture_event(case.get("event", {}))
        ref = ev.get("objectRef") or {}
        user = ev.get("user") or {}
        req = Request(
            verb=ev["verb"],
            resource=ref.get("resource"),
            subresource=ref.get("subresource"),
            group=ref.get("apiGroup"),
            namespace=ref.get("namespace") or "",
            name=ref.get("name") or "",
            user=user.get("username", ""),
            groups=tuple(user.get("groups") or ()),
            path=(ev.get("requestURI") or "").split("?")[0],
        )
        out.append((case.get("name", "?"), req))
    return out


BODY_RULES = [(name, rule) for name, rule in _rules() if reads_bodies(rule["detection"])]


def test_policy_structure(policy: dict[str, Any]) -> None:
    assert policy["apiVersion"] == "audit.k8s.io/v1"
    assert policy["kind"] == "Policy"
    assert policy["omitStages"] == ["RequestReceived"]
    assert policy["omitManagedFields"] is True
    known = {"level", "users", "userGroups", "verbs", "resources", "namespaces"}
    known |= {"nonResourceURLs", "omitStages", "omitManagedFields"}
    for rule in policy["rules"]:
        assert rule["level"] in LEVELS, rule
        assert set(rule) <= known, rule
        for gr in rule.get("resources", []):
            assert "group" in gr, f'name the API group ("" = core): {gr}'
            assert set(gr) <= {"group", "resources", "resourceNames"}, gr
        if rule["level"] in ("Request", "RequestResponse"):
            assert "nonResourceURLs" not in rule, "bodies are for resource requests only"
    assert policy["rules"][-1] == {"level": "Metadata"}, "everything else at Metadata"


def test_derivation_finds_the_body_rules() -> None:
    """The scan sees the rules it must (guards against a silently empty parametrisation)."""
    names = {name for name, _ in BODY_RULES}
    assert len(names) >= 40
    assert {"privileged-container", "rbac-cluster-admin-binding", "hostpath-volume"} <= names
    assert {"admission-webhook-external-url", "ingress-without-tls"} <= names
    assert names >= CANNOT_FIRE


@pytest.mark.parametrize(("name", "rule"), BODY_RULES, ids=[n for n, _ in BODY_RULES])
def test_body_rules_get_request_response(
    policy: dict[str, Any], name: str, rule: dict[str, Any]
) -> None:
    """Every resource x verb a body-reading rule selects, and each of its hit fixtures, is
    logged with bodies; the exceptions are secrets and configmaps, kept at Metadata."""
    requests = selected_requests(rule["detection"])
    assert requests, f"{name} reads bodies but selects no objectRef.resource"
    fixtures = fixture_requests(rule)
    if name in CANNOT_FIRE:
        for req in requests | {r for _, r in fixtures}:
            assert req.resource in ("secrets", "configmaps")
            assert level_of(policy, req) == "Metadata", req
        return
    wrong = {req: level_of(policy, req) for req in requests}
    wrong |= {req: level_of(policy, req) for _, req in fixtures}
    wrong = {req: level for req, level in wrong.items() if level != "RequestResponse"}
    assert not wrong, f"{name}: not at RequestResponse: {wrong}"


@pytest.mark.parametrize(("name", "rule"), _rules(), ids=[n for n, _ in _rules()])
def test_every_rule_sees_its_events(
    policy: dict[str, Any], name: str, rule: dict[str, Any]
) -> None:
    """No rule's hit fixture falls under a None rule (noise reduction must not blind a rule)."""
    dropped = [case for case, req in fixture_requests(rule) if level_of(policy, req) == "None"]
    assert not dropped, f"{name}: fixtures not logged by the policy: {dropped}"


@pytest.mark.parametrize("resource", ["secrets", "configmaps"])
@pytest.mark.parametrize("verb", ["create", "update", "patch", "get", "list", "watch", "delete"])
def test_secrets_and_configmaps_never_above_metadata(
    policy: dict[str, Any], resource: str, verb: str
) -> None:
    for user in ("alice", "system:kube-controller-manager", "system:apiserver"):
        for ns in ("", "kube-system", "default"):
            req = Request(verb, resource, namespace=ns, user=user)
            assert level_of(policy, req) == "Metadata"
    for rule in policy["rules"]:  # no rule names them (or their group) above Metadata
        if rule["level"] in ("Request", "RequestResponse"):
            for gr in rule.get("resources", []):
                if gr["group"] == "":
                    assert gr.get("resources"), "the whole core group would include secrets"
                    assert not {"secrets", "configmaps", "*"} & set(gr["resources"])


@pytest.mark.parametrize(
    ("req", "level"),
    [
        (Request("create", "tokenreviews"), "Metadata"),
        (Request("create", "serviceaccounts", "token", namespace="ci"), "Request"),
        (Request("update", "leases", namespace="kube-node-lease", user="system:node:n1"), "None"),
        (
            Request("update", "leases", namespace="kube-system", user="system:kube-scheduler"),
            "None",
        ),
        (Request("update", "leases", namespace="kube-system", user="mallory"), "Metadata"),
        (Request("create", "events", namespace="shop", user="system:node:n1"), "None"),
        (Request("patch", "events", group="events.k8s.io", namespace="shop"), "None"),
        (Request("delete", "events", namespace="shop"), "Metadata"),
        (Request("list", "events", namespace="shop"), "Metadata"),
        (
            Request(
                "update",
                "endpointslices",
                namespace="shop",
                user="system:serviceaccount:kube-system:endpointslice-controller",
            ),
            "None",
        ),
        (Request("update", "endpoints", namespace="shop", user="mallory"), "Metadata"),
        (Request("get", path="/healthz"), "None"),
        (Request("get", path="/readyz/etcd"), "None"),
        (Request("get", path="/livez"), "None"),
        (Request("get", path="/metrics"), "None"),
        (Request("get", path="/version"), "Metadata"),
        (Request("get", path="/api"), "Metadata"),
        (Request("get", "pods", namespace="shop"), "Metadata"),
        (Request("list", "pods"), "Metadata"),
        (Request("update", "pods", "status", namespace="shop", user="system:node:n1"), "Metadata"),
        (Request("create", "pods", namespace="shop"), "RequestResponse"),
        (Request("patch", "pods", "ephemeralcontainers", namespace="shop"), "RequestResponse"),
        (Request("create", "pods", "exec", namespace="shop"), "RequestResponse"),
        (Request("get", "pods", "portforward", namespace="shop"), "RequestResponse"),
        (Request("create", "pods", "attach", namespace="shop"), "RequestResponse"),
        (Request("delete", "deployments", namespace="shop"), "Metadata"),
        (Request("create", "serviceaccounts", namespace="shop"), "Metadata"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{v.verb}-{v.resource or v.path}-{v.subresource}",
)
def test_levels(policy: dict[str, Any], req: Request, level: str) -> None:
    assert level_of(policy, req) == level


def test_comments_name_real_rules() -> None:
    """The policy's comments cite packaged rules by file name; each must exist."""
    text = POLICY.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    rule_names = {path.stem for path in RULES}
    cited = set(
        re.findall(r"(?<![\w-])((?:rbac|exec|host|csr|admission|exposed)-[a-z-]+)\b", comments)
    )
    assert cited, "the policy's comments cite no rules"
    assert cited <= rule_names, cited - rule_names
    for name in CANNOT_FIRE:
        assert name in comments, f"say in the policy that {name} cannot fire"


# --- the webhook kubeconfigs -------------------------------------------------------------


def _webhook_defaults() -> dict[str, Any]:
    args = build_parser().parse_args(["ingest", "webhook"])
    return {"port": args.port, "path": args.path}


@pytest.mark.parametrize("path", KUBECONFIGS, ids=[p.name for p in KUBECONFIGS])
def test_kubeconfig(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert config["apiVersion"] == "v1"
    assert config["kind"] == "Config"
    (cluster,) = config["clusters"]
    (user,) = config["users"]
    (context,) = config["contexts"]
    assert config["current-context"] == context["name"]
    assert context["context"] == {"cluster": cluster["name"], "user": user["name"]}
    server = urlsplit(cluster["cluster"]["server"])
    defaults = _webhook_defaults()
    assert server.scheme == "https"
    assert server.port == defaults["port"] == 9443
    assert server.path == defaults["path"] == "/audit"
    assert "REPLACE-" in str(server.hostname).upper()
    assert "REPLACE-" in cluster["cluster"]["certificate-authority"]
    assert "insecure-skip-tls-verify" not in cluster["cluster"]
    credentials = user["user"]
    if path.name.endswith("-token.yaml"):
        assert set(credentials) == {"token"}
        assert credentials["token"].startswith("REPLACE-")
    else:
        assert set(credentials) == {"client-certificate", "client-key"}
        assert all("REPLACE-" in value for value in credentials.values())


def test_both_kubeconfigs_ship() -> None:
    assert [p.name for p in KUBECONFIGS] == [
        "webhook-kubeconfig-mtls.yaml",
        "webhook-kubeconfig-token.yaml",
    ]


@pytest.mark.parametrize("doc", ["README.md", "docs/clusters.md"])
def test_docs_name_real_files_and_rules(doc: str) -> None:
    """The connection guides cite files under deploy/audit and tests, and rules, that exist."""
    text = (REPO / doc).read_text()
    paths = set(re.findall(r"\b((?:deploy/audit|tests/[a-z0-9_/]+)/[\w.-]+\.(?:yaml|py))", text))
    assert any(p.startswith("deploy/audit/") for p in paths), doc
    missing = sorted(p for p in paths if not (REPO / p).is_file())
    assert not missing, missing
    if doc == "docs/clusters.md":  # the rules it names: the two that cannot fire, read rules
        rule_names = {path.stem for path in RULES}
        for name in [
            *CANNOT_FIRE,
            "secrets-listed-cluster-wide",
            "secrets-read-in-system-namespace",
        ]:
            assert f"`{name}`" in text
            assert name in rule_names
