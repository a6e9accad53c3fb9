"""Redaction of credentials in canonical audit events, before anything leaves the normaliser.

What is redacted (see docs/architecture.md):

- Secret ``data``/``stringData`` values wherever a Secret appears in a request or response
  body (single objects, ``items`` of lists, ``rows[].object`` of tables, JSON-Patch ops), and
  the ``kubectl.kubernetes.io/last-applied-configuration`` annotation of Secrets;
- ConfigMap ``data``/``binaryData`` values whose key looks like a credential (``password``,
  ``token``, ``tls.key``, ``aws_secret_access_key`` ...), and credential-looking *parts* of other
  values: PEM private-key bodies, AWS access key ids, JWTs, ``password = ...`` style
  assignments, ``scheme://user:password@`` URLs, bearer tokens;
- tokens of ``TokenReview`` requests and ``TokenRequest`` (``serviceaccounts/token``) responses;
- credential query parameters (``access_token=``, ``token=`` ...) and bearer tokens in
  ``requestURI`` and bearer tokens in audit ``annotations``.

A value becomes ``[REDACTED sha256:<first 12 hex of sha256(value)>]``: keys stay, and equal
secrets get equal placeholders, so rules can still see *that* (and which same) credential was
there. Nothing is copied when an event needs no redaction (`needs_redaction` is a few dict
lookups). Regexes run on attacker-controlled text, so they are RE2 (linear time).

>>> ev = {"verb": "create", "objectRef": {"resource": "secrets"},
...       "requestObject": {"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}}
>>> redact_event(ev)["requestObject"]["data"]
{'password': '[REDACTED sha256:b073aefd7c92]'}
>>> ev["requestObject"]["data"]["password"]  # redact_event does not touch its input
'aHVudGVyMg=='
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import orjson
import re2

PLACEHOLDER_PREFIX = "[REDACTED sha256:"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_SECRET_RESOURCES = frozenset({"secrets"})
_CONFIGMAP_RESOURCES = frozenset({"configmaps"})
_TOKEN_RESOURCES = frozenset({"tokenreviews"})
_SENSITIVE_RESOURCES = _SECRET_RESOURCES | _CONFIGMAP_RESOURCES | _TOKEN_RESOURCES
#: Object kinds whose presence in a body triggers redaction whatever `objectRef` says.
SENSITIVE_KINDS = frozenset(
    {"Secret", "SecretList", "ConfigMap", "ConfigMapList", "TokenReview", "TokenRequest", "List"}
)
# Literal alternation only (linear in stdlib `re`, and ~10x cheaper to call than RE2 here).
_URI_HINT = re.compile(r"token|bearer|auth|passw|secret|key|credential|signature", re.IGNORECASE)

# Words that make a key (or a query parameter name) a credential name.
_CRED_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token",
        "tokens", "credential", "credentials", "creds", "apikey", "privatekey", "accesskey",
        "secretkey", "key", "pem", "p12", "pfx", "jks", "keystore", "dsn", "authorization",
        "bearer", "auth", "htpasswd", "kubeconfig", "signature", "sig", "cookie", "session",
        "rsa", "ed25519", "ecdsa",
    }
)  # fmt: skip
_CAMEL = re2.compile(r"([a-z0-9])([A-Z])")
_NONALNUM = re2.compile(r"[^a-z0-9]+")

_PEM = re2.compile(
    r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----)([\s\S]*?)"
    r"(-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\z)"
)
_AWS_KEY_ID = re2.compile(r"\b((?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[A-Z0-9]{16})\b")
_JWT = re2.compile(r"\b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)")
_BEARER = re2.compile(r"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]{6,})")
_URL_CREDS = re2.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:/@]{0,256}:)([^\s@/]+)(@)")
_ASSIGNMENT = re2.compile(
    r"(?i)([A-Za-z0-9_.-]{0,64}(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"(?:[_-]?id)?|private[_-]?key|credential)[A-Za-z0-9_.-]{0,64}[\"']?\s{0,8}[:=]\s{0,8}[\"']?)"
    r"([^\s\"',;&}]+)"
)


def placeholder(value: Any) -> str:
    """The deterministic placeholder for `value` (strings hashed as UTF-8, others as JSON).

    >>> placeholder("hunter2")
    '[REDACTED sha256:f52fbd32b2b3]'
    >>> placeholder("hunter2") == placeholder("hunter2") != placeholder("hunter3")
    True
    """
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes):
        raw = value
    else:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return f"{PLACEHOLDER_PREFIX}{hashlib.sha256(raw).hexdigest()[:12]}]"


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX) and value.endswith("]")


def _redact_value(value: Any) -> Any:
    """Placeholder for a whole value; `None` and existing placeholders stay as they are."""
    if value is None or _is_placeholder(value):
        return value
    return placeholder(value)


def is_credential_name(name: str) -> bool:
    """Whether a key or parameter name looks like it names a credential.

    >>> [is_credential_name(k) for k in ("DB_PASSWORD", "tls.key", "awsSecretAccessKey",
    ...                                   "ui.properties", "keyspace", "Corefile")]
    [True, True, True, False, False, False]
    """
    words = _NONALNUM.split(_CAMEL.sub(r"\1_\2", name).lower())
    if any(w in _CRED_WORDS for w in words):
        return True
    joined = "".join(words)
    return any(
        s in joined for s in ("password", "passwd", "secret", "privatekey", "apikey", "accesskey")
    )


def _is_plain_word(text: str) -> bool:
    """`authentication` in "Basic authentication" is prose, not a credential."""
    return text.isalpha() and text.islower()


def _sub_group(pattern: Any, text: str, group: int) -> str:
    """Replace capture `group` of every match of `pattern` with its placeholder."""
    prose_ok = pattern is _BEARER

    def repl(m: Any) -> str:
        out = []
        for i in range(1, (m.re.groups or 0) + 1):
            part = m.group(i) or ""
            secret = i == group and not _is_placeholder(part)
            if secret and prose_ok and _is_plain_word(part):
                secret = False
            out.append(placeholder(part) if secret else part)
        return "".join(out)

    result: str = pattern.sub(repl, text)
    return result


def redact_text(text: str) -> str:
    """Redact credential-looking parts of free text, leaving the rest readable.

    >>> redact_text("aws_access_key_id = AKIAABCDEFGHIJKLMNOP\\ncolor=purple")
    'aws_access_key_id = [REDACTED sha256:457643f44d19]\\ncolor=purple'
    >>> redact_text("db: postgres://app:s3cret@db:5432/x")
    'db: postgres://app:[REDACTED sha256:1ec1c26b50d5]@db:5432/x'
    >>> redact_text("nothing to see; Basic authentication is on")
    'nothing to see; Basic authentication is on'
    """
    out = text
    if "PRIVATE KEY" in out:
        out = _sub_group(_PEM, out, 2)
    if "eyJ" in out:
        out = _sub_group(_JWT, out, 1)
    if "://" in out:
        out = _sub_group(_URL_CREDS, out, 2)
    out = _sub_group(_BEARER, out, 2)
    out = _sub_group(_ASSIGNMENT, out, 2)
    out = _sub_group(_AWS_KEY_ID, out, 1)
    return out


# --- object walkers ---------------------------------------------------------------------


def _redact_map_all(mapping: Any) -> Any:
    """Every value of a Secret `data`/`stringData` map replaced (non-maps replaced whole)."""
    if isinstance(mapping, dict):
        return {k: _redact_value(v) for k, v in mapping.items()}
    return _redact_value(mapping)


def _redact_configmap_map(mapping: Any, *, binary: bool = False) -> Any:
    """ConfigMap `data`/`binaryData`: credential-named keys whole, other values by content."""
    if not isinstance(mapping, dict):
        return redact_text(mapping) if isinstance(mapping, str) and not binary else mapping
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(k, str) and is_credential_name(k):
            out[k] = _redact_value(v)
        elif isinstance(v, str) and not binary:
            out[k] = redact_text(v)
        else:
            out[k] = v
    return out


def _redact_last_applied(value: Any, kind: str) -> Any:
    """The last-applied annotation: whole for Secrets; parsed and redacted for ConfigMaps."""
    if kind == "secret" or not isinstance(value, str):
        return _redact_value(value)
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return redact_text(value)
    if isinstance(parsed, dict):
        _walk(parsed, kind)
        return orjson.dumps(parsed).decode("utf-8")
    return redact_text(value)


def _redact_patch_ops(ops: list[Any], kind: str) -> None:
    """JSON-Patch operations (`[{"op", "path", "value"}]`) against a Secret or ConfigMap."""
    for op in ops:
        if not isinstance(op, dict) or "value" not in op:
            continue
        path = op.get("path")
        path = path if isinstance(path, str) else ""
        value = op["value"]
        segs = path.split("/")
        if LAST_APPLIED.replace("/", "~1") in path:
            op["value"] = _redact_last_applied(value, kind)
        elif path in ("", "/"):
            if isinstance(value, dict):
                _walk(value, kind)
            else:
                op["value"] = _redact_value(value)
        elif len(segs) >= 2 and segs[1] in ("data", "stringData", "binaryData"):
            binary = segs[1] == "binaryData"
            if len(segs) == 2:
                op["value"] = (
                    _redact_map_all(value)
                    if kind == "secret"
                    else _redact_configmap_map(value, binary=binary)
                )
            elif kind == "secret":
                op["value"] = _redact_value(value)
            else:
                key = segs[2].replace("~1", "/").replace("~0", "~")
                single = _redact_configmap_map({key: value}, binary=binary)
                op["value"] = single[key]
        elif isinstance(value, dict | list):
            _walk(value, kind)


def _walk(root: Any, kind: str) -> None:
    """Redact, in place, every Secret/ConfigMap/token shape anywhere below `root`.

    `kind` is what the request is about ("secret", "configmap", "token"); embedded objects
    carrying their own `kind` are treated by that kind. Iterative: bodies may nest deeply.
    """
    stack: list[tuple[Any, str]] = [(root, kind)]
    while stack:
        node, ctx = stack.pop()
        if isinstance(node, list):
            if node and all(isinstance(o, dict) and "op" in o and "path" in o for o in node):
                _redact_patch_ops(node, ctx)
            else:
                stack.extend((item, ctx) for item in node if isinstance(item, dict | list))
            continue
        if not isinstance(node, dict):
            continue
        own = node.get("kind")
        if own in ("Secret", "SecretList"):
            ctx = "secret"
        elif own in ("ConfigMap", "ConfigMapList"):
            ctx = "configmap"
        elif own in ("TokenReview", "TokenRequest"):
            ctx = "token"
        for key, value in node.items():
            if key in ("data", "stringData", "binaryData"):
                if ctx == "secret":
                    node[key] = _redact_map_all(value)
                    continue
                if ctx == "configmap":
                    node[key] = _redact_configmap_map(value, binary=key == "binaryData")
                    continue
            if ctx == "token" and key == "token":
                node[key] = _redact_value(value)
                continue
            if (
                key == "annotations"
                and ctx in ("secret", "configmap")
                and isinstance(value, dict)
                and LAST_APPLIED in value
            ):
                value[LAST_APPLIED] = _redact_last_applied(value[LAST_APPLIED], ctx)
            if isinstance(value, dict | list):
                stack.append((value, ctx))


def _body_context(body: Any) -> str | None:
    """The redaction context a body's own `kind` asks for, if any."""
    if not isinstance(body, dict):
        return None
    kind = body.get("kind")
    if kind in ("Secret", "SecretList"):
        return "secret"
    if kind in ("ConfigMap", "ConfigMapList"):
        return "configmap"
    if kind in ("TokenReview", "TokenRequest"):
        return "token"
    if kind == "List":
        return "list"
    return None


def _redact_uri(uri: str) -> str:
    """Credential query parameters and bearer tokens in a request URI."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if eq and value and is_credential_name(name) and not _is_placeholder(value):
            parts[i] = f"{name}={placeholder(value)}"
    out = f"{path}?{'&'.join(parts)}"
    if "earer" in out or "EARER" in out:
        out = _sub_group(_BEARER, out, 2)
    return out


def _annotation_hint(annotations: Any) -> bool:
    """Could an audit annotation value hold a bearer token? (a plain loop is fastest here)"""
    if annotations.__class__ is not dict:
        return False
    for v in annotations.values():  # noqa: SIM110 - a plain loop beats any() on the hot path
        if v.__class__ is str and ("earer" in v or "EARER" in v):
            return True
    return False


def needs_redaction(event: dict[str, Any]) -> bool:
    """Cheap test: could this event hold anything `redact_in_place` would change?

    >>> needs_redaction({"verb": "get", "objectRef": {"resource": "pods"}})
    False
    >>> needs_redaction({"verb": "get", "objectRef": {"resource": "secrets"}})
    True
    """
    ref = event.get("objectRef")
    if ref.__class__ is dict:
        res = ref.get("resource")
        if res.__class__ is str and res in _SENSITIVE_RESOURCES:
            return True
        if ref.get("subresource") == "token":
            return True
    for name in ("requestObject", "responseObject"):
        body = event.get(name)
        if body.__class__ is dict:
            kind = body.get("kind")
            if kind.__class__ is str and kind in SENSITIVE_KINDS:
                return True
    uri = event.get("requestURI")
    if uri.__class__ is str and "?" in uri and _URI_HINT.search(uri.partition("?")[2]):
        return True
    return _annotation_hint(event.get("annotations"))


def redact_in_place(event: dict[str, Any]) -> None:
    """Redact `event` in place (the normaliser owns freshly parsed dicts; no copy needed)."""
    ref = event.get("objectRef")
    ctx: str | None = None
    if isinstance(ref, dict):
        res = ref.get("resource")
        res = res if isinstance(res, str) else None
        if res in _SECRET_RESOURCES:
            ctx = "secret"
        elif res in _CONFIGMAP_RESOURCES:
            ctx = "configmap"
        elif res in _TOKEN_RESOURCES or ref.get("subresource") == "token":
            ctx = "token"
    for name in ("requestObject", "responseObject"):
        body = event.get(name)
        if not isinstance(body, dict | list):
            continue
        body_ctx = ctx or _body_context(body)
        if body_ctx is not None:
            _walk(body, body_ctx)
    uri = event.get("requestURI")
    if isinstance(uri, str) and "?" in uri:
        event["requestURI"] = _redact_uri(uri)
    ann = event.get("annotations")
    if _annotation_hint(ann):
        assert isinstance(ann, dict)
        for k, v in ann.items():
            if isinstance(v, str):
                ann[k] = _sub_group(_BEARER, v, 2)


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """A redacted deep copy of `event`, or `event` itself if nothing needs redacting."""
    if not needs_redaction(event):
        return event
    out = copy.deepcopy(event)
    redact_in_place(out)
    return out
