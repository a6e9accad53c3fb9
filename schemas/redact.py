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
  ``requestURI`` and bearer tokens in audit ``annotations``;
- in every request and response body (pods, workloads, custom resources, exec options):
  values of ``{"name", "value"}`` entries (container ``env``) whose name looks like a credential
  setting (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*_KEY`` ...), values of credential flags
  in ``args``/``command`` lists (``--password=x``, ``--token x``), and in any string value JWTs,
  private-key blocks, cloud keys (AWS ``AKIA``/``ASIA`` ids, GCP ``AIza`` API keys, Azure
  ``AccountKey=``/``SharedAccessKey=``/SAS ``sig=``), bearer/basic credentials and
  ``scheme://user:password@`` URLs; ``last-applied-configuration`` annotations are parsed and
  redacted the same way;
- the same inside exec/attach command lines (``command=`` query parameters of
  ``requestURI``, URL-decoded, redacted, encoded again) and other query values;
- operator patterns (`Redaction.compile`, ``KLAXON_REDACT_PATTERNS``): every match in a body
  string, query value or annotation.

Values that cannot be credentials stay, so rules keep working on them: empty values, booleans
(``MYSQL_ALLOW_EMPTY_PASSWORD=yes``), file paths (``--token-file=/var/run/...``) and
``$(VAR)`` references.

A value becomes ``[REDACTED sha256:<first 12 hex of sha256(value)>]``: keys stay, and equal
secrets get equal placeholders, so rules can still see *that* (and which same) credential was
there. Nothing is copied when an event needs no redaction: without bodies `needs_redaction`
is a few dict lookups; a body is serialised once (orjson, C) and searched for a few literal
hints before any Python walks it. Regexes run on attacker-controlled text, so they are RE2
(linear time).

>>> ev = {"verb": "create", "objectRef": {"resource": "secrets"},
...       "requestObject": {"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}}
>>> redact_event(ev)["requestObject"]["data"]
{'password': '[REDACTED sha256:b073aefd7c92]'}
>>> ev["requestObject"]["data"]["password"]  # redact_event does not touch its input
'aHVudGVyMg=='
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

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
# Lower-case literals that may announce a credential in a query string (a few `in` tests on
# a short string are cheaper than any regex call).
_URI_HINTS = (
    "token", "bearer", "basic", "auth", "pass", "pwd", "secret", "key", "credential", "sig",
    "eyj", "akia", "asia", "aiza", "private", "@", "%40",
)  # fmt: skip

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
# Names are short, and these patterns linear in any engine: stdlib `re` is cheaper to call.
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NONALNUM = re.compile(r"[^a-z0-9]+")

_PEM = re2.compile(
    r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----)([\s\S]*?)"
    r"(-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\z)"
)
_AWS_KEY_ID = re2.compile(r"\b((?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[A-Z0-9]{16})\b")
_JWT = re2.compile(r"\b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)")
_BEARER = re2.compile(r"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]{6,})")
_URL_CREDS = re2.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,20}://[^\s:/@]{0,256}:)([^\s@/]+)(@)")
_GCP_API_KEY = re2.compile(r"\b(AIza[0-9A-Za-z_-]{35})")
_AZURE_KEY = re2.compile(
    r"(?i)(\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|sig)=)([^;&\s\"',]+)"
)
# `--token abc` inside a shell string (the `=` form is an assignment, below).
_FLAG_SPACE = re2.compile(
    r"(?i)((?:^|\s)--?[A-Za-z0-9-]{0,40}(?:passw(?:or)?d|passphrase|secret|token|api-?key"
    r"|access-?key|private-?key|credential)\s+)([^\s\"'/$-][^\s\"';&|]*)"
)
# `curl -u user:password` (basic-auth credentials given as a flag)
_USER_FLAG = re2.compile(r"((?:^|\s)(?:-u|--user)(?:\s+|=)[^\s:\"']{1,256}:)([^\s\"']+)")
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


@functools.lru_cache(maxsize=4096)  # names recur; they are attacker-controlled: bounded
def is_credential_name(name: str) -> bool:
    """Whether a key or parameter name looks like it names a credential (remembered).

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

    Each pattern runs only when a literal it needs is there (ConfigMap values are mostly
    plain configuration, and each RE2 call costs microseconds).

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
    if out.isascii():
        lower = out.lower()  # placeholders add none of these words: one lower() will do
        bearer = "bearer" in lower or "basic" in lower
        assignment = any(word in lower for word in _ASSIGNMENT_WORDS)
    else:  # RE2 folds `ſ` with s and `K` (Kelvin sign) with k: search non-ASCII text
        bearer = assignment = True
    if bearer:
        out = _sub_group(_BEARER, out, 2)
    if assignment:
        out = _sub_group(_ASSIGNMENT, out, 2)
    if any(prefix in out for prefix in _AWS_PREFIXES):
        out = _sub_group(_AWS_KEY_ID, out, 1)
    return out


#: The prefixes `_AWS_KEY_ID` matches start with.
_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA")
#: Literals one of which every `_ASSIGNMENT` match contains (in any case).
_ASSIGNMENT_WORDS = ("pass", "pwd", "secret", "token", "key", "credential")


def redact_tokens(text: str) -> str:
    """Redact self-evident credentials in any string: those recognisable by their shape alone
    (private-key blocks, JWTs, AWS/GCP/Azure keys, bearer/basic values, URL passwords).

    Cheap for ordinary text: each pattern runs only if a literal it needs is present.

    >>> redact_tokens("key=AIzaSyA1234567890abcdefghijklmnopqrstuv, sig=mark%2Fsig")
    'key=[REDACTED sha256:5e8a6a8b9d10], sig=[REDACTED sha256:449158e9472a]'
    >>> redact_tokens("image: nginx@sha256:abc, see https://example.com/x")
    'image: nginx@sha256:abc, see https://example.com/x'
    """
    out = text
    if "PRIVATE KEY" in out:
        out = _sub_group(_PEM, out, 2)
    if "eyJ" in out:
        out = _sub_group(_JWT, out, 1)
    if "://" in out and "@" in out:
        out = _sub_group(_URL_CREDS, out, 2)
    if "earer" in out or "EARER" in out or "asic " in out or "ASIC " in out:
        out = _sub_group(_BEARER, out, 2)
    if "AKIA" in out or "ASIA" in out or "ABIA" in out or "ACCA" in out:
        out = _sub_group(_AWS_KEY_ID, out, 1)
    if "AIza" in out:
        out = _sub_group(_GCP_API_KEY, out, 1)
    if "AccountKey" in out or "SharedAccess" in out or "sig=" in out:
        out = _sub_group(_AZURE_KEY, out, 2)
    return out


_SETTING_WORDS = (
    "PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "APIKEY", "API_KEY",
    "PRIVATEKEY", "PRIVATE_KEY", "ACCESSKEY", "ACCESS_KEY",
)  # fmt: skip
_SETTING_PREFILTER = ("PASS", "PWD", "SECRET", "TOKEN", "CREDENTIAL", "KEY")
_NOT_UPPER_ALNUM = re.compile(r"[^A-Z0-9]+")
_INERT_VALUES = frozenset(
    {"", "true", "false", "yes", "no", "on", "off", "y", "n", "0", "1", "none", "null"}
)


def is_credential_setting(name: str) -> bool:
    """Whether an environment variable or command-line flag names a credential.

    Narrower than `is_credential_name` (which judges Secret and ConfigMap keys): settings
    such as ``POSTGRES_HOST_AUTH_METHOD`` or ``--kubeconfig`` are not credentials, and rules
    read their values.

    >>> [is_credential_setting(n) for n in ("DB_PASSWORD", "AWS_SECRET_ACCESS_KEY",
    ...     "GITHUB_TOKEN", "STRIPE_API_KEY", "apiKey", "--password", "token",
    ...     "POSTGRES_HOST_AUTH_METHOD", "kubeconfig", "KEYSPACE", "LOG_LEVEL")]
    [True, True, True, True, True, True, True, False, False, False, False]
    """
    upper = name.upper()
    if not any(w in upper for w in _SETTING_PREFILTER):
        return False
    n = _NOT_UPPER_ALNUM.sub("_", _CAMEL.sub(r"\1_\2", name).upper()).strip("_")
    if n in ("KEY", "PASS", "PWD"):
        return True
    return n.endswith("_KEY") or any(w in n for w in _SETTING_WORDS)


def is_inert(value: str) -> bool:
    """Values that cannot be a credential and that rules read: empty, boolean-like, a file
    path, a ``$(VAR)`` reference, an existing placeholder.

    >>> [is_inert(v) for v in ("yes", "/var/run/secrets/token", "$(DB_PASSWORD)", "hunter2")]
    [True, True, True, False]
    """
    return (
        value.lower() in _INERT_VALUES
        or value.startswith(("/", "$(", "${"))
        or _is_placeholder(value)
    )


def _redact_setting_value(value: Any) -> Any:
    """The value of a credential setting: replaced unless it is inert."""
    if isinstance(value, str):
        return value if is_inert(value) else placeholder(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return placeholder(value)
    return value


_ARG_WORDS = ("pass", "pwd", "secret", "token", "key", "credential")


def _redact_arg_text(arg: str) -> str:
    """One command-line argument as text (`sh -c "..."` scripts): every text pattern, each
    only when a literal it needs is there (RE2 calls cost microseconds each)."""
    out = redact_tokens(arg)
    if "-u " in out or "--user" in out:
        out = _sub_group(_USER_FLAG, out, 2)
    lower = out.lower()
    if not any(w in lower for w in _ARG_WORDS):
        return out
    if "=" in out or ":" in out:
        out = _sub_group(_ASSIGNMENT, out, 2)
    if "-" in out and " " in out:
        out = _sub_group(_FLAG_SPACE, out, 2)
    return out


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line (container ``args``/``command``, exec ``command=`` values) redacted:
    values of credential flags (``--password=x``, ``--token x``) and credentials inside
    arguments; flags, paths and everything else stay.

    >>> redact_argv(["app", "--db-password=hunter2", "--token", "abc123", "--verbose",
    ...              "--token-file=/var/run/t"])  # doctest: +NORMALIZE_WHITESPACE
    ['app', '--db-password=[REDACTED sha256:f52fbd32b2b3]', '--token',
     '[REDACTED sha256:6ca13d52ca70]', '--verbose', '--token-file=/var/run/t']
    >>> redact_argv(["curl", "-u", "admin:hunter2", "https://x"])
    ['curl', '-u', 'admin:[REDACTED sha256:f52fbd32b2b3]', 'https://x']
    >>> redact_argv(["sh", "-c", "curl -H 'Authorization: Bearer abcdef123' http://x"])
    ['sh', '-c', "curl -H 'Authorization: Bearer [REDACTED sha256:9f4c121d60cf]' http://x"]
    """
    out: list[str] = []
    value_next = user_next = False
    for arg in argv:
        if value_next and not arg.startswith("-"):
            value_next = False
            out.append(_redact_setting_value(arg))
            continue
        value_next = False
        if user_next:
            user_next = False
            name, colon, password = arg.partition(":")
            if colon and password and not _is_placeholder(password):
                out.append(f"{name}:{placeholder(password)}")
                continue
        if arg in ("-u", "--user"):
            user_next = True
            out.append(arg)
            continue
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.lstrip("-").partition("=")
            if " " not in name and is_credential_setting(name):
                if not eq:
                    value_next = True
                    out.append(arg)
                elif value:
                    out.append(arg[: len(arg) - len(value)] + _redact_setting_value(value))
                else:
                    out.append(arg)
                continue
        out.append(_redact_arg_text(arg))
    return out


#: Limits on operator patterns (each is compiled by RE2 with this much memory at most).
MAX_PATTERNS = 32
MAX_PATTERN_LENGTH = 512
PATTERN_MAX_MEM = 1 << 20


@dataclass(frozen=True)
class Redaction:
    """What to redact beyond the built-in rules: operator patterns (RE2, linear time).

    A pattern without groups replaces its whole match; with groups, only the first group
    (so ``(?i)x-api-key:\\s*(\\S+)`` keeps the header name). Build with `compile`.

    >>> r = Redaction.compile([r"\\bACME-[0-9a-f]{16}\\b", r"(?i)internal-pin:\\s*(\\d+)"])
    >>> r.apply("ACME-0123456789abcdef and Internal-PIN: 4242")
    '[REDACTED sha256:c5b6eb4c939a] and Internal-PIN: [REDACTED sha256:0315b4020af3]'
    """

    patterns: tuple[Any, ...] = ()

    @classmethod
    def compile(cls, sources: Sequence[str]) -> Redaction:
        """Compile operator patterns; `ValueError` naming the pattern if one is unusable."""
        if len(sources) > MAX_PATTERNS:
            raise ValueError(f"{len(sources)} patterns: at most {MAX_PATTERNS}")
        options = re2.Options()
        options.max_mem = PATTERN_MAX_MEM
        options.log_errors = False
        compiled = []
        for source in sources:
            if len(source) > MAX_PATTERN_LENGTH:
                raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
            try:
                pattern = re2.compile(source, options)
            except re2.error as exc:
                raise ValueError(f"pattern {source!r}: {_re2_message(exc)}") from None
            if pattern.search("") is not None:
                raise ValueError(f"pattern {source!r} matches the empty string")
            compiled.append(pattern)
        return cls(tuple(compiled))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def apply(self, text: str) -> str:
        """`text` with every match of every pattern replaced by its placeholder."""
        out = text
        for pattern in self.patterns:
            if pattern.search(out) is not None:
                out = _sub_operator(pattern, out)
        return out

    def hits(self, raw: bytes) -> bool:
        """Whether any pattern matches somewhere in ``raw`` (a serialised body; prefilter)."""
        text = raw.decode("utf-8", "replace")
        return any(p.search(text) is not None for p in self.patterns)


#: No operator patterns (the default).
NO_PATTERNS = Redaction()


def _re2_message(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _sub_operator(pattern: Any, text: str) -> str:
    """Replace the first group of every match (the whole match without groups)."""
    group = 1 if pattern.groups else 0

    def repl(m: Any) -> str:
        whole: str = m.group(0)
        part = m.group(group)
        if not part or _is_placeholder(part):
            return whole
        start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
        return whole[:start] + placeholder(part) + whole[end:]

    result: str = pattern.sub(repl, text)
    return result


# --- bodies of any kind -------------------------------------------------------------------

# Prefilters over a body's JSON (orjson's compact output): one RE2 search each, linear time.
# A credential the walk would redact implies a match here; a match may still be a false alarm.
_TOKEN_HINT = re2.compile(
    rb"PRIVATE KEY|eyJ|AKIA|ASIA|ABIA|ACCA|AIza|[Bb]earer|BEARER|[Bb]asic |BASIC "
    rb"|AccountKey|SharedAccess|sig=|://[^/@\"\s]*@"
)
_WORD = rb"(?i:pass|pwd|secret|token|key|credential)"
_SETTING_HINT = re2.compile(
    # a credential-looking "name" (container env and other name/value settings)
    rb'"name":"(?:[^"\\]|\\.)*'
    + _WORD
    # an argument starting with a dash that names a credential (`--password=x`, `--token`)
    + rb'|[\[,]"-(?:[^"\\]|\\.)*'
    + _WORD
    # `--token x` or `DB_PASSWORD=x` / `password: x` inside a shell string
    + rb"|\s--?[A-Za-z0-9-]*"
    + _WORD
    + rb"[A-Za-z0-9-]*\s"
    + rb"|"
    + _WORD
    + rb"[A-Za-z0-9_.-]*(?:\\?[\"'])?\s*(?:=|:[^\"{\[])"
    # `curl -u user:password`
    + rb'|[\s"]-u[\s"]|--user[=\s"]'
    # a JSON-Patch operation on an env entry or a command line (the name is not in the body)
    + rb'|"path":"[^"]*/(?:env|args|command)(?:/|")'
)
_ANY_HINT = re2.compile(_TOKEN_HINT.pattern + b"|" + _SETTING_HINT.pattern)
_BODY_TOKENS = 1
_BODY_SETTINGS = 2
_BODY_EXTRA = 4


def _body_hints(body: Any, policy: Redaction) -> int:
    """Which walks a body may need (bit flags), from its serialisation: one orjson dump and
    two RE2 searches, instead of a Python walk of every body.

    >>> _body_hints({"env": [{"name": "LOG_LEVEL", "value": "info"}]}, NO_PATTERNS)
    0
    >>> _body_hints({"env": [{"value": "x", "name": "dbPassword"}]}, NO_PATTERNS)
    2
    >>> _body_hints({"args": ["--db-token", "x"], "image": "a@sha256:1"}, NO_PATTERNS)
    2
    >>> _body_hints({"args": ["sh", "-c", "curl -s https://x/healthz"]}, NO_PATTERNS)
    0
    >>> _body_hints({"args": ["sh", "-c", "curl -u admin:pw https://x"]}, NO_PATTERNS)
    2
    >>> _body_hints({"note": "https://u:pw@host/"}, NO_PATTERNS)
    1
    """
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: walk it to be safe
        return _BODY_TOKENS | _BODY_SETTINGS | (_BODY_EXTRA if policy else 0)
    flags = 0
    if b"last-applied-configuration" in raw:
        flags = _BODY_TOKENS | _BODY_SETTINGS
    elif _ANY_HINT.search(raw) is not None:  # one search for the common case: nothing
        if _TOKEN_HINT.search(raw) is not None:
            flags |= _BODY_TOKENS
        if _SETTING_HINT.search(raw) is not None:
            flags |= _BODY_SETTINGS
    if policy and policy.hits(raw):
        flags |= _BODY_EXTRA
    return flags


def _redact_string(value: str, flags: int, policy: Redaction) -> str:
    out = redact_tokens(value) if flags & _BODY_TOKENS else value
    return policy.apply(out) if flags & _BODY_EXTRA else out


def _redact_last_applied_any(value: str, flags: int, policy: Redaction) -> str:
    """A last-applied annotation of any object: parsed, walked, written back if changed."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return _redact_string(value, flags, policy)
    if not isinstance(parsed, dict | list):
        return _redact_string(value, flags, policy)
    before = orjson.dumps(parsed)
    _scan_body(parsed, _BODY_TOKENS | _BODY_SETTINGS | (flags & _BODY_EXTRA), policy)
    after = orjson.dumps(parsed)
    return value if after == before else after.decode("utf-8")


def _scan_setting(node: dict[str, Any]) -> None:
    """A ``{"name": ..., "value": ...}`` entry (container env, parameters of many CRDs)."""
    name = node.get("name")
    if isinstance(name, str) and "value" in node and is_credential_setting(name):
        node["value"] = _redact_setting_value(node["value"])


def _scan_body(root: Any, flags: int, policy: Redaction) -> None:
    """Redact, in place, settings, command lines and self-evident credentials below `root`.

    Iterative (bodies may nest deeply); `flags` says which checks the hints asked for.
    Class identity checks, not `isinstance`: this loop visits every node of a pod spec.
    """
    settings = flags & _BODY_SETTINGS
    strings = flags & (_BODY_TOKENS | _BODY_EXTRA)
    stack: list[Any] = [root]
    push, pop = stack.append, stack.pop
    while stack:
        node = pop()
        if node.__class__ is list:
            for i, item in enumerate(node):
                cls = item.__class__
                if cls is dict or cls is list:
                    push(item)
                elif cls is str and strings:
                    node[i] = _redact_string(item, flags, policy)
            continue
        if settings and "value" in node:
            _scan_value_entry(node)
        for key, value in node.items():
            cls = value.__class__
            if cls is dict:
                push(value)
            elif cls is list:
                if settings and (key == "args" or key == "command"):
                    _scan_argv(node, key, value, flags, policy)
                else:
                    push(value)
            elif cls is str:
                if key == LAST_APPLIED:
                    node[key] = _redact_last_applied_any(value, flags, policy)
                elif strings:
                    node[key] = _redact_string(value, flags, policy)


_PATCH_ENV_VALUE = re.compile(r"/env/(?:\d+|-)/value$")
_PATCH_ENV_ENTRY = re.compile(r"/env/(?:\d+|-)$")
_PATCH_ARGV = re.compile(r"/(?:args|command)(?:/(?:\d+|-))?$")


def _scan_value_entry(node: dict[str, Any]) -> None:
    """A dict with a ``value``: a name/value setting, or a JSON-Patch operation."""
    if "name" in node:
        _scan_setting(node)
    elif "op" in node and node.get("path").__class__ is str:
        _scan_patch_op(node)


def _scan_patch_op(op: dict[str, Any]) -> None:
    """A JSON-Patch operation whose path names what its value is: an env entry's value
    (`/env/3/value`: the name is elsewhere, so any non-inert value goes), a whole env entry,
    or a command line or one of its arguments."""
    path, value = op["path"], op["value"]
    if _PATCH_ENV_VALUE.search(path):
        op["value"] = _redact_setting_value(value)
    elif _PATCH_ENV_ENTRY.search(path) and isinstance(value, dict):
        _scan_setting(value)
    elif _PATCH_ARGV.search(path):
        if isinstance(value, str):
            op["value"] = _redact_arg_text(value)
        elif isinstance(value, list) and all(isinstance(a, str) for a in value):
            op["value"] = redact_argv(value)


def _scan_argv(
    node: dict[str, Any], key: str, argv: list[Any], flags: int, policy: Redaction
) -> None:
    """A container's ``args``/``command`` (or an exec's ``command``) as one command line."""
    if not all(a.__class__ is str for a in argv):
        _scan_body({"": argv}, flags, policy)  # not a command line after all: walk it as data
        return
    new = redact_argv(argv)
    if flags & (_BODY_TOKENS | _BODY_EXTRA):
        new = [_redact_string(a, flags, policy) for a in new]
    node[key] = new


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


#: Queries up to this long are redacted once and remembered when there are no operator
#: patterns (``watch=true``, ``limit=500`` and exec command lines recur).
_REMEMBERED_QUERY_LENGTH = 256


def _redact_uri(uri: str, policy: Redaction = NO_PATTERNS) -> str:
    """Credential query parameters, exec/attach command lines (``command=`` values, decoded,
    redacted as one command line, encoded again) and credentials inside other query values."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    if policy or len(query) > _REMEMBERED_QUERY_LENGTH:
        new_query = _redact_query(query, policy)
    else:
        new_query = _redact_plain_query(query)
    out = f"{path}?{new_query}"
    if "earer" in out or "EARER" in out:
        out = _sub_group(_BEARER, out, 2)
    return out


@functools.lru_cache(maxsize=4096)
def _redact_plain_query(query: str) -> str:
    """`_redact_query` without operator patterns, remembered."""
    return _redact_query(query, NO_PATTERNS)


def _redact_query(query: str, policy: Redaction) -> str:
    """`_redact_uri` of the query string (after ``?``)."""
    parts = query.split("&")
    commands: list[tuple[int, str]] = []
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if not (eq and value) or _is_placeholder(value):
            continue
        if name == "command":
            commands.append((i, unquote(value.replace("+", " "))))
        elif is_credential_name(name):
            parts[i] = f"{name}={placeholder(value)}"
        else:
            text = unquote(value.replace("+", " "))
            new = policy.apply(_redact_arg_text(text)) if policy else _redact_arg_text(text)
            if new != text:
                parts[i] = f"{name}={quote(new, safe='')}"
    if commands:
        argv = redact_argv([text for _, text in commands])
        for (i, text), new in zip(commands, argv, strict=True):
            new = policy.apply(new) if policy else new
            if new != text:
                parts[i] = f"command={quote(new, safe='')}"
    return "&".join(parts)


def _annotation_hint(annotations: Any) -> bool:
    """Could an audit annotation value hold a bearer token? (a plain loop is fastest here)"""
    if annotations.__class__ is not dict:
        return False
    for v in annotations.values():  # noqa: SIM110 - a plain loop beats any() on the hot path
        if v.__class__ is str and ("earer" in v or "EARER" in v):
            return True
    return False


#: Verdicts of `_query_hint` by query string (queries repeat: ``timeout=5s``, ``limit=500``).
_QUERY_HINTS: dict[str, bool] = {}
#: Entries kept before the cache is emptied (watch queries carry ever-new resource versions).
_QUERY_HINTS_MAX = 4096


def _query_hint(query: str) -> bool:
    """Whether a query string contains a `_URI_HINTS` literal (any case), remembered.

    >>> _query_hint("timeout=5s"), _query_hint("access_TOKEN=x"), _query_hint("timeout=5s")
    (False, True, False)
    """
    hit = _QUERY_HINTS.get(query)
    if hit is None:
        lower = query.lower()
        hit = any(h in lower for h in _URI_HINTS)
        if len(_QUERY_HINTS) >= _QUERY_HINTS_MAX:
            _QUERY_HINTS.clear()
        _QUERY_HINTS[query] = hit
    return hit


def _needs_by_metadata(event: dict[str, Any], policy: Redaction) -> bool:
    """The body-free part of `needs_redaction` (a few dict lookups)."""
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
    if uri.__class__ is str and "?" in uri:
        query = uri.partition("?")[2]
        if "command=" in query:  # exec/attach command lines: rare, always looked at
            return True
        if _query_hint(query) or (policy and policy.hits(query.encode())):
            return True
    ann = event.get("annotations")
    if policy and ann.__class__ is dict and policy.hits(orjson.dumps(ann)):
        return True
    return _annotation_hint(ann)


def needs_redaction(event: dict[str, Any], policy: Redaction = NO_PATTERNS) -> bool:
    """Cheap test: could this event hold anything `redact_in_place` would change?

    >>> needs_redaction({"verb": "get", "objectRef": {"resource": "pods"}})
    False
    >>> needs_redaction({"verb": "get", "objectRef": {"resource": "secrets"}})
    True
    >>> needs_redaction({"verb": "create", "requestObject": {"kind": "Pod", "spec": {
    ...     "containers": [{"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}}})
    True
    """
    if _needs_by_metadata(event, policy):
        return True
    for name in ("requestObject", "responseObject"):
        body = event.get(name)
        if (body.__class__ is dict or body.__class__ is list) and _body_hints(body, policy):
            return True
    return False


def redact_in_place(event: dict[str, Any], policy: Redaction = NO_PATTERNS) -> None:
    """Redact `event` in place (the normaliser owns freshly parsed dicts; no copy needed)."""
    _redact_metadata(event, policy)
    for name in ("requestObject", "responseObject"):
        body = event.get(name)
        if body.__class__ is dict or body.__class__ is list:
            flags = _body_hints(body, policy)
            if flags:
                _scan_body(body, flags, policy)


def redact_if_needed(event: dict[str, Any], policy: Redaction = NO_PATTERNS) -> None:
    """`redact_in_place` when `needs_redaction`, with each body serialised once (hot path)."""
    if _needs_by_metadata(event, policy):
        redact_in_place(event, policy)
        return
    for name in ("requestObject", "responseObject"):
        body = event.get(name)
        if body.__class__ is dict or body.__class__ is list:
            flags = _body_hints(body, policy)
            if flags:
                _scan_body(body, flags, policy)


def redact_events(events: list[dict[str, Any]], policy: Redaction = NO_PATTERNS) -> None:
    """`redact_if_needed` on each event of a batch (the normaliser's hot path).

    Most events have no body: for them the test of `_needs_by_metadata` is inlined (a few
    dict lookups, the policy asked once per batch) and nothing else runs.
    """
    extra = bool(policy)
    hints = _QUERY_HINTS
    for ev in events:
        get = ev.get
        if get("requestObject") is not None or get("responseObject") is not None:
            redact_if_needed(ev, policy)
            continue
        ref = get("objectRef")
        if ref.__class__ is dict:
            res = ref.get("resource")
            if (res.__class__ is str and res in _SENSITIVE_RESOURCES) or ref.get(
                "subresource"
            ) == "token":
                _redact_metadata(ev, policy)
                continue
        uri = get("requestURI")
        if uri.__class__ is str and "?" in uri:
            query = uri.partition("?")[2]
            hit = hints.get(query)
            if (
                "command=" in query
                or hit
                or (hit is None and _query_hint(query))
                or (extra and policy.hits(query.encode()))
            ):
                _redact_metadata(ev, policy)
                continue
        ann = get("annotations")
        if ann.__class__ is dict and (
            (extra and policy.hits(orjson.dumps(ann))) or _annotation_hint(ann)
        ):
            _redact_metadata(ev, policy)


def _redact_metadata(event: dict[str, Any], policy: Redaction) -> None:
    """Secret/ConfigMap/token shapes in bodies, the request URI and annotations."""
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
        event["requestURI"] = _redact_uri(uri, policy)
    ann = event.get("annotations")
    if isinstance(ann, dict) and (policy or _annotation_hint(ann)):
        for k, v in ann.items():
            if isinstance(v, str):
                v = _sub_group(_BEARER, v, 2) if "earer" in v or "EARER" in v else v
                ann[k] = policy.apply(v) if policy else v


def redact_event(event: dict[str, Any], policy: Redaction = NO_PATTERNS) -> dict[str, Any]:
    """A redacted deep copy of `event`, or `event` itself if nothing needs redacting."""
    if not needs_redaction(event, policy):
        return event
    out = copy.deepcopy(event)
    redact_in_place(out, policy)
    return out
