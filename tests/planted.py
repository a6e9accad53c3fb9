"""Audit events carrying realistic credentials, and a search for them in anything downstream.

Used by the redaction tests of the normaliser (`tests/schemas/test_redact.py`), the pipeline
(`tests/pipeline/test_redaction_downstream.py`: events topic, alerts, worker log) and the
command line (`klaxon demo --json`). Every value in `SECRETS` must be absent from every product
of the normaliser and of everything after it; the events are built so that pack rules fire on
them (a privileged pod in kube-system, execs reading credentials), so alerts are produced too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

# Realistic shapes (AWS's documented example keys, a real-looking JWT, a PEM block ...).
DB_PASSWORD = "Pg-9xK2mQ7vL4tR8wZ"
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ123456"
STRIPE_API_KEY = "sk_live_51HxQ2eKp0aR7sT9uV1wX3yZ"
CLI_PASSWORD = "cli-P4ssw0rd-7781"
CLI_TOKEN = "s.Vt7q1Z9mK3xP0aB2cD4eF6gH"
SHELL_PASSWORD = "shellPw-4417-zz"
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRqbU1rZ3k5In0"
    ".eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50In0"
    ".Zm9yZ2VkLXNpZ25hdHVyZS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5"
)
BASIC_PASSWORD = "Adm1n-S3cret-0042"
PEM_BODY = "MIIEowIBAAKCAQEAplantedPrivateKeyBodyLine1xyz"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    f"{PEM_BODY}\nQmFzZTY0UGxhbnRlZEtleUxpbmUy\n"
    "-----END RSA PRIVATE KEY-----\n"
)
GCP_API_KEY = "AIzaSyD-planted0123456789abcdefghijklmn"
AZURE_ACCOUNT_KEY = "p1Ant3dAzur3K3y0fEightyEightChars+AbCdEfGhIjKlMnOpQrStUvWxYz0123=="
OPERATOR_SECRET = "ACME-7f3a9c0d1e2b4a68"

#: Every planted value; none may survive normalisation anywhere.
SECRETS = (
    DB_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, STRIPE_API_KEY,
    CLI_PASSWORD, CLI_TOKEN, SHELL_PASSWORD, JWT, BASIC_PASSWORD, PEM_BODY, GCP_API_KEY,
    AZURE_ACCOUNT_KEY, OPERATOR_SECRET,
)  # fmt: skip
#: The operator pattern that catches `OPERATOR_SECRET` (``KLAXON_REDACT_PATTERNS``).
OPERATOR_PATTERN = r"\bACME-[0-9a-f]{16}\b"


def _base(audit_id: str, when: str, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "user": {"username": "mallory@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.31.0",
        "responseStatus": {"metadata": {}, "code": 201},
        "requestReceivedTimestamp": when,
        "stageTimestamp": when,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }
    ev.update(fields)
    return ev


def privileged_pod() -> dict[str, Any]:
    """A privileged pod in kube-system with credentials in env, args and a shell script."""
    container = {
        "name": "agent",
        "image": "registry.example.com/ops/agent:1.4",
        "command": ["/bin/sh", "-c"],
        "args": [
            f"export DB_PASSWORD={SHELL_PASSWORD}; exec /agent --password={CLI_PASSWORD}"
            f" --token {CLI_TOKEN}",
        ],
        "env": [
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "DB_PASSWORD", "value": DB_PASSWORD},
            {"name": "AWS_ACCESS_KEY_ID", "value": AWS_ACCESS_KEY_ID},
            {"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET_ACCESS_KEY},
            {"name": "GITHUB_TOKEN", "value": GITHUB_TOKEN},
            {"value": STRIPE_API_KEY, "name": "stripeApiKey"},
            {
                "name": "AZURE_STORAGE_CONNECTION_STRING",
                "value": "DefaultEndpointsProtocol=https;AccountName=acme;"
                f"AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net",
            },
            {"name": "MYSQL_ALLOW_EMPTY_PASSWORD", "value": "yes"},
        ],
        "securityContext": {"privileged": True},
    }
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "node-agent", "namespace": "kube-system"},
        "spec": {"containers": [container]},
    }
    return _base(
        "planted-pod-0001",
        "2026-12-05T10:00:00.000000Z",
        verb="create",
        requestURI="/api/v1/namespaces/kube-system/pods",
        objectRef={"resource": "pods", "namespace": "kube-system", "name": "node-agent",
                   "apiVersion": "v1"},
        requestObject=pod,
        responseObject=pod,
    )  # fmt: skip


def exec_event(audit_id: str, argv: list[str]) -> dict[str, Any]:
    """An exec into a pod with ``argv`` as its command line (URL-encoded as kubectl does)."""
    query = "&".join(f"command={quote(a, safe='')}" for a in argv)
    return _base(
        audit_id,
        "2026-12-05T10:01:00.000000Z",
        verb="create",
        stage="ResponseStarted",
        requestURI=f"/api/v1/namespaces/shop/pods/web-0/exec?{query}&container=web&stdout=true",
        objectRef={"resource": "pods", "subresource": "exec", "namespace": "shop",
                   "name": "web-0", "apiVersion": "v1"},
        responseStatus={"metadata": {}, "code": 101},
    )  # fmt: skip


def custom_resource() -> dict[str, Any]:
    """A custom resource whose strings carry a private key, a GCP key and an operator secret."""
    obj = {
        "kind": "BackupTarget",
        "apiVersion": "backup.example.com/v1",
        "metadata": {"name": "offsite", "namespace": "ops",
                     "annotations": {"note": f"license {OPERATOR_SECRET}"}},
        "spec": {"sshKey": PEM, "endpoint": f"https://storage.example.com/?key={GCP_API_KEY}"},
    }  # fmt: skip
    return _base(
        "planted-cr-0001",
        "2026-12-05T10:02:00.000000Z",
        verb="create",
        requestURI="/apis/backup.example.com/v1/namespaces/ops/backuptargets",
        objectRef={"resource": "backuptargets", "namespace": "ops", "name": "offsite",
                   "apiGroup": "backup.example.com", "apiVersion": "v1"},
        requestObject=obj,
    )  # fmt: skip


def planted_events() -> list[dict[str, Any]]:
    """Every planted event: the pod, three execs (bearer JWT, basic auth, flag) and the CR."""
    return [
        privileged_pod(),
        exec_event(
            "planted-exec-0001",
            ["sh", "-c", f"curl -sH 'Authorization: Bearer {JWT}' https://kubernetes.default/api"],
        ),
        exec_event(
            "planted-exec-0002",
            ["curl", "-u", f"admin:{BASIC_PASSWORD}", "http://169.254.169.254/latest/meta-data/"],
        ),
        exec_event("planted-exec-0003", ["mysql", "-uroot", f"--password={CLI_PASSWORD}"]),
        custom_resource(),
    ]


def leaks(blob: bytes | str) -> list[str]:
    """The planted secrets found in ``blob`` (raw, or as a JSON or URL encoding would write
    them): the empty list is the only passing answer."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    found = []
    for value in SECRETS:
        forms = {value, quote(value, safe=""), quote(value, safe="/"), value.replace("/", "\\/")}
        if any(form in text for form in forms):
            found.append(value)
    return found
