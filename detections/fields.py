"""Field access on canonical audit events: compiled walkers, derived fields and aliases.

A rule field such as ``podSpec.containers.securityContext.privileged`` is compiled once into a
function ``(event, cache) -> tuple of leaf values``. Walkers cross lists (any element can
match), and a dotted path also finds keys that themselves contain dots (annotation names such
as ``authorization.k8s.io/decision``). Every walk starts with the one fast path
(:func:`fast_path`: plain dicts only) and falls back to the general walker. Derived fields
are computed at most once per event and kept in the per-evaluation cache, a dict keyed by
typed :class:`Slot` s.

>>> get = compile_path("podSpec.allContainers.image")
>>> ev = {"requestObject": {"kind": "Pod", "spec": {"containers": [{"image": "nginx"}],
...       "initContainers": [{"image": "busybox"}]}}}
>>> get(ev, {})
('nginx', 'busybox')
>>> compile_path("annotations.authorization.k8s.io/decision")(
...     {"annotations": {"authorization.k8s.io/decision": "allow"}}, {})
('allow',)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from detections.csr import subject_of
from schemas import audit


class Slot:
    """A typed key of the per-event cache: what is cached (``kind``) for which field.

    Slots are interned (one object per kind and field), so predicates that read the same
    field share one cache entry, and the cache is a plain dict keyed by identity.

    >>> texts_slot("verb", lower=True) is texts_slot("verb", lower=True)
    True
    >>> texts_slot("verb", lower=True), derived_slot("podSpec")
    (Slot('lower', 'verb'), Slot('derived', 'podSpec'))
    """

    __slots__ = ("kind", "path")

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.path = path

    def __repr__(self) -> str:
        return f"Slot({self.kind!r}, {self.path!r})"


#: The per-event cache: derived roots, a field's texts (as is, lower-cased) and leaves.
Cache = dict[Slot, Any]
Getter = Callable[[dict[str, Any], Cache], tuple[Any, ...]]

_SLOTS: dict[tuple[str, str], Slot] = {}


def _slot(kind: str, path: str) -> Slot:
    found = _SLOTS.get((kind, path))
    if found is None:
        found = _SLOTS[(kind, path)] = Slot(kind, path)
    return found


def derived_slot(name: str) -> Slot:
    """Where a derived field's root value is kept for the event."""
    return _slot("derived", name)


def texts_slot(path: str, lower: bool) -> Slot:
    """Where a field's texts (lower-cased when ``lower``) are kept for the event."""
    return _slot("lower" if lower else "texts", path)


def leaves_slot(path: str) -> Slot:
    """Where a field's raw leaves are kept for the event."""
    return _slot("leaves", path)


#: Aliases for Sigma rules written against other log mappings -> canonical path.
ALIASES: dict[str, str] = {
    "apiGroup": "objectRef.apiGroup",
    "hostPath": "podSpec.volumes.hostPath.path",
    "capabilities": "podSpec.allContainers.securityContext.capabilities.add",
}

#: Derived field names (see docs/architecture.md).
DERIVED = (
    "command",
    "commandLine",
    "decision",
    "authzReason",
    "response.success",
    "sourceIP",
    "sourceNetwork",
    "dataValues",
    "csrSubject",
    "podSpec",
    "podSpec.allContainers",
    "cluster",
)

#: Fields whose values are numbers in audit events (a string compared with them never matches).
NUMERIC_FIELDS = frozenset({"responseStatus.code"})

_MISSING = object()


def resolve_alias(field: str) -> str:
    """Canonical path for a rule field (aliases replaced, everything else unchanged).

    >>> resolve_alias("hostPath"), resolve_alias("verb")
    ('podSpec.volumes.hostPath.path', 'verb')
    """
    return ALIASES.get(field, field)


def flatten_into(value: Any, out: list[Any]) -> None:
    """Append ``value`` to ``out``, or its items when it is a (nested) list."""
    _flatten_into(value, out)


def _flatten_into(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _flatten_into(item, out)
    else:
        out.append(value)


def _step(
    current: list[Any], segments: tuple[str, ...], index: int, joined: dict[tuple[int, int], str]
) -> list[Any]:
    """Walk from ``segments[index]`` to the end, crossing lists, trying dotted keys when absent."""
    if index == len(segments):
        return current
    out: list[Any] = []
    for node in current:
        if not isinstance(node, dict):
            continue
        value = node.get(segments[index], _MISSING)
        if value is not _MISSING:
            nxt: list[Any] = []
            _flatten_into(value, nxt)
            out.extend(_step(nxt, segments, index + 1, joined))
            continue
        # A key containing dots (annotation names): try the longest joined key first.
        for end in range(len(segments), index + 1, -1):
            value = node.get(joined[(index, end)], _MISSING)
            if value is not _MISSING:
                nxt = []
                _flatten_into(value, nxt)
                out.extend(_step(nxt, segments, end, joined))
                break
    return out


class _Marker:
    """A named sentinel (shows its name in doctests and debuggers)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: What :func:`fast_path` returns when the path has definitely no value in the event.
ABSENT: Any = _Marker("ABSENT")
#: What :func:`fast_path` returns when only the general walker can tell (lists, dotted keys).
GENERAL: Any = _Marker("GENERAL")

Probe = Callable[[dict[str, Any]], Any]


def fast_path(field: str) -> Probe | None:
    """The one fast path: ``event -> value`` of a plain (non-derived) dotted path.

    The value is reached through plain dicts only. Returns :data:`ABSENT` when a key is
    missing and no dotted key could stand for it, :data:`GENERAL` when anything else is met
    on the way (a list to cross, a dotted key, a dict subclass, a scalar): then the general
    walker of :func:`compile_path` decides. None for derived fields.

    >>> probe = fast_path("user.username")
    >>> probe({"user": {"username": "alice"}}), probe({"verb": "get"}), probe({"user": []})
    ('alice', ABSENT, GENERAL)
    """
    if derived_root(field) is not None:
        return None
    return _probe(tuple(field.split(".")))


def fast_parent(fields: Sequence[str]) -> Probe:
    """The fast path to the dict holding the last key of sibling fields (``user.username``,
    ``user.groups`` -> the ``user`` object), so several fields cost one walk.

    >>> fast_parent(["user.username", "user.groups"])({"user": {"groups": []}})
    {'groups': []}
    >>> fast_parent(["user.username", "user.groups"])({"user.groups": ["x"]})
    GENERAL
    """
    parts = [tuple(f.split(".")) for f in fields]
    parent = parts[0][:-1]
    if not parent or any(p[:-1] != parent for p in parts):
        raise ValueError("fast_parent needs fields with one parent")
    # Dotted keys that could stand for the parent or a child at each depth.
    alts = [
        tuple(dict.fromkeys(".".join(p[i:j]) for p in parts for j in range(len(p), i + 1, -1)))
        for i in range(len(parent))
    ]
    return _probe(parent, alts)


def _probe(segments: tuple[str, ...], alts: Sequence[tuple[str, ...]] | None = None) -> Probe:
    """:func:`fast_path` of ``segments``: unrolled for up to three keys, a loop beyond.

    ``alts[i]`` are the dotted keys that, present at depth ``i`` when the key is not, mean
    only the general walker can tell (by default the joined segments from ``i`` on).
    """
    n = len(segments)
    if alts is None:
        alts = [tuple(".".join(segments[i:j]) for j in range(n, i + 1, -1)) for i in range(n)]
    steps = tuple(zip(segments, alts, strict=True))
    if n == 1:
        ((a, a_alts),) = steps

        if not a_alts:

            def probe0(event: dict[str, Any]) -> Any:
                return event.get(a, ABSENT)

            return probe0

        def probe1(event: dict[str, Any]) -> Any:
            v = event.get(a, ABSENT)
            if v is ABSENT:
                for alt in a_alts:
                    if alt in event:
                        return GENERAL
            return v

        return probe1
    if n == 2 and not alts[1]:  # the unrolled forms skip dotted keys for the last key
        (a, a_alts), (b, _) = steps

        def probe2(event: dict[str, Any]) -> Any:
            v = event.get(a, ABSENT)
            if v.__class__ is not dict:
                if v is ABSENT:
                    for alt in a_alts:
                        if alt in event:
                            return GENERAL
                    return ABSENT
                return GENERAL
            return v.get(b, ABSENT)

        return probe2
    if n == 3 and not alts[2]:
        (a, a_alts), (b, b_alts), (c, _) = steps

        def probe3(event: dict[str, Any]) -> Any:
            v = event.get(a, ABSENT)
            if v.__class__ is not dict:
                if v is ABSENT:
                    for alt in a_alts:
                        if alt in event:
                            return GENERAL
                    return ABSENT
                return GENERAL
            w = v.get(b, ABSENT)
            if w.__class__ is not dict:
                if w is ABSENT:
                    for alt in b_alts:
                        if alt in v:
                            return GENERAL
                    return ABSENT
                return GENERAL
            return w.get(c, ABSENT)

        return probe3

    def probe(event: dict[str, Any]) -> Any:
        cur: Any = event
        for key, alts in steps:
            if cur.__class__ is not dict:
                return GENERAL
            nxt = cur.get(key, ABSENT)
            if nxt is ABSENT:
                for alt in alts:
                    if alt in cur:
                        return GENERAL
                return ABSENT
            cur = nxt
        return cur

    return probe


def _walker(segments: tuple[str, ...]) -> Getter:
    """A ``(root, cache) -> leaves`` walker: the fast path over plain dicts, general otherwise."""
    n = len(segments)
    joined = {(i, j): ".".join(segments[i:j]) for i in range(n) for j in range(i + 2, n + 1)}
    steps = tuple(
        (segments[i], tuple(joined[(i, j)] for j in range(n, i + 1, -1))) for i in range(n)
    )
    probe = _probe(segments)

    def slow(root: Any) -> tuple[Any, ...]:
        roots: list[Any] = []
        _flatten_into(root, roots)
        return tuple(_step(roots, segments, 0, joined))

    def across(root: Any) -> tuple[Any, ...]:
        # Lists to cross: breadth-first over plain dicts.
        nodes: list[Any] = []
        _flatten_into(root, nodes)
        for key, alts in steps:
            nxt: list[Any] = []
            for node in nodes:
                if node.__class__ is not dict:
                    if isinstance(node, dict):
                        return slow(root)
                    continue
                value = node.get(key, _MISSING)
                if value is _MISSING:
                    for alt in alts:
                        if alt in node:
                            return slow(root)
                elif value.__class__ is list:
                    _flatten_into(value, nxt)
                else:
                    nxt.append(value)
            if not nxt:
                return ()
            nodes = nxt
        return tuple(nodes)

    def walk(root: Any, cache: Any = None) -> tuple[Any, ...]:
        v = probe(root) if root.__class__ is dict else GENERAL
        if v is ABSENT:
            return ()
        if v is GENERAL:
            return across(root)
        if v.__class__ is list:
            out: list[Any] = []
            _flatten_into(v, out)
            return tuple(out)
        return (v,)

    return walk


# --- derived fields -------------------------------------------------------------------------


def exec_commands(event: dict[str, Any]) -> list[str] | None:
    """The command of an exec/attach request: URL-decoded ``command=`` values, or None.

    When the request URI carries no ``command=`` values (GKE entries, some AKS/EKS exports),
    the ``command`` list of the request body (``PodExecOptions``) is used instead.

    >>> exec_commands({"requestURI": "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c"
    ...                "&command=id%3Bcat+%2Fetc%2Fshadow&container=c&stdin=true"})
    ['sh', '-c', 'id;cat /etc/shadow']
    >>> exec_commands({"requestURI": "/api/v1/namespaces/d/pods/p/exec",
    ...                "objectRef": {"resource": "pods", "subresource": "exec"},
    ...                "requestObject": {"command": ["cat", "/etc/shadow"]}})
    ['cat', '/etc/shadow']
    """
    uri = event.get("requestURI")
    # `comm%61nd=` is a command to the API server too (query keys are URL-decoded)
    if isinstance(uri, str) and ("command=" in uri or ("%" in uri and "?" in uri)):
        values = _query_commands(uri)
        if values:
            return values
    return _body_command(event)


def _query_commands(uri: str) -> list[str]:
    """``command`` values of a URI's query, as ``parse_qsl(urlsplit(uri).query)`` finds them."""
    if "#" in uri or "\t" in uri or "\r" in uri or "\n" in uri:
        query = urlsplit(uri).query  # fragments and stripped characters: the library's way
        return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "command"]
    values = []
    for part in uri.partition("?")[2].split("&"):
        name, _, value = part.partition("=")
        if name == "command" or (
            ("%" in name or "+" in name) and unquote(name.replace("+", " ")) == "command"
        ):
            values.append(unquote(value.replace("+", " ")))
    return values


_EXEC_SUBRESOURCES = ("exec", "attach")
_EXEC_KINDS = ("PodExecOptions", "PodAttachOptions")


def _body_command(event: dict[str, Any]) -> list[str] | None:
    """``requestObject.command`` of an exec/attach request (strings only), or None."""
    body = event.get("requestObject")
    if not isinstance(body, dict):
        return None
    command = body.get("command")
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list) or not command:
        return None
    ref = event.get("objectRef")
    subresource = ref.get("subresource") if isinstance(ref, dict) else None
    if subresource not in _EXEC_SUBRESOURCES and body.get("kind") not in _EXEC_KINDS:
        return None  # a top-level `command` in some other object is not an exec
    values = [c for c in command if isinstance(c, str)]
    return values or None


def pod_spec(event: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside ``requestObject`` whatever the kind (Pod, workload, CronJob, patch).

    >>> pod_spec({"requestObject": {"kind": "CronJob", "spec": {"jobTemplate": {"spec":
    ...     {"template": {"spec": {"hostPID": True}}}}}}})
    {'hostPID': True}
    """
    obj = event.get("requestObject")
    if not isinstance(obj, dict):
        return None
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        template = obj.get("template")  # PodTemplate objects
        if obj.get("kind") == "PodTemplate" and isinstance(template, dict):
            tspec = template.get("spec")
            return tspec if isinstance(tspec, dict) else None
        return None
    if obj.get("kind") == "Pod":
        return spec
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        inner: dict[str, Any] = template["spec"]
        return inner
    job = spec.get("jobTemplate")
    if isinstance(job, dict):
        job_spec = job.get("spec")
        if isinstance(job_spec, dict):
            tmpl = job_spec.get("template")
            if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
                cron: dict[str, Any] = tmpl["spec"]
                return cron
    if not obj.get("kind") and _POD_SPEC_KEYS.intersection(spec):
        return spec  # a patch body without kind that touches pod-spec fields
    return None


_POD_SPEC_KEYS = frozenset(
    {
        "containers",
        "initContainers",
        "ephemeralContainers",
        "volumes",
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "serviceAccountName",
        "nodeName",
    }
)


def _annotation(event: dict[str, Any], key: str) -> Any:
    annotations = event.get("annotations")
    if isinstance(annotations, dict):
        return annotations.get(key, _MISSING)
    return _MISSING


def _response_success(event: dict[str, Any]) -> Any:
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return _MISSING
    if event.get("stage") == "ResponseStarted" and code == 101:
        return True
    return code < 400


def _source_ip(event: dict[str, Any]) -> Any:
    ips = event.get("sourceIPs")
    if isinstance(ips, list) and ips:
        return ips[0]
    return _MISSING


#: Prefix lengths of a "source network" (IPv4, IPv6): wide enough that the nodes and pods of
#: one cluster or VPC share one, narrow enough that another site or provider does not.
SOURCE_NETWORK_PREFIX = (16, 48)


def _source_network(event: dict[str, Any]) -> Any:
    """The network of the request's peer: the last ``sourceIPs`` entry (the API server
    appends the connection's address after any X-Forwarded-For entries), as a CIDR.

    >>> _source_network({"sourceIPs": ["10.0.0.9", "203.0.113.7"]})
    '203.0.0.0/16'
    >>> _source_network({"sourceIPs": ["2001:db8:1:2::5"]})
    '2001:db8:1::/48'
    >>> _source_network({"sourceIPs": ["x"]}) is _MISSING
    True
    """
    ips = event.get("sourceIPs")
    if not isinstance(ips, list) or not ips:
        return _MISSING
    last = ips[-1]
    if not isinstance(last, str):
        return _MISSING
    network = _NETWORKS.get(last)
    if network is None:
        text = last[:_NETWORK_TEXT]  # all that is parsed (the same object when short)
        network = _NETWORKS.get(text)
        if network is None:
            network = _network_of(text)
            if len(_NETWORKS) >= _NETWORKS_MAX:
                _NETWORKS.clear()
            _NETWORKS[text] = network
    return network


#: Address text -> its source network (or _MISSING): peers repeat endlessly, and every
#: service-account request asks (a dict hit, cheaper than lru_cache's bookkeeping). Bounded:
#: emptied when full; a longer text is kept by the characters parsed.
_NETWORKS: dict[str, Any] = {}
_NETWORKS_MAX = 8192
_NETWORK_TEXT = 64


def _network_of(text: str) -> Any:
    """The source network of one address text, or _MISSING when it is no address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return _MISSING
    prefix = SOURCE_NETWORK_PREFIX[0 if address.version == 4 else 1]
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _csr_subject(event: dict[str, Any]) -> Any:
    """``{"commonName", "organizations"}`` of the CSR in ``requestObject.spec.request``
    (:mod:`detections.csr`): the user and groups the certificate would carry."""
    body = event.get("requestObject")
    spec = body.get("spec") if isinstance(body, dict) else None
    request = spec.get("request") if isinstance(spec, dict) else None
    return _or_missing(subject_of(request)) if request is not None else _MISSING


_DATA_KEYS = ("data", "stringData")


def _data_values(event: dict[str, Any]) -> Any:
    """String values of the request body's ``data``/``stringData`` maps (create, update,
    merge patch) and of JSON-patch operations on them: where a ConfigMap or Secret carries
    its contents, after the normaliser redacted them.

    >>> _data_values({"requestObject": {"data": {"a": "x", "n": 1}, "stringData": {"b": "y"}}})
    ['x', 'y']
    >>> _data_values({"requestObject": [{"op": "add", "path": "/data/k", "value": "v"},
    ...                                 {"op": "add", "path": "/metadata/labels/x", "value": "w"}]})
    ['v']
    """
    body = event.get("requestObject")
    out: list[str] = []
    if isinstance(body, dict):
        for key in _DATA_KEYS:
            _strings_of(body.get(key), out)
    elif isinstance(body, list):
        for op in body:
            if not isinstance(op, dict) or not isinstance(op.get("path"), str):
                continue
            if op["path"].split("/")[1:2] in (["data"], ["stringData"]):
                _strings_of(op.get("value"), out)
    return out or _MISSING


def _strings_of(value: Any, out: list[str]) -> None:
    """A string, or the string values of a map, appended to ``out``."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        out.extend(v for v in value.values() if isinstance(v, str))


def _command_line(event: dict[str, Any]) -> Any:
    cmds = exec_commands(event)
    return " ".join(cmds) if cmds else _MISSING


def _all_containers(event: dict[str, Any]) -> Any:
    return _containers_of(pod_spec(event))


def _containers_of(spec: dict[str, Any] | None) -> Any:
    if spec is None:
        return _MISSING
    out: list[Any] = []
    for key in ("containers", "initContainers", "ephemeralContainers"):
        items = spec.get(key)
        if isinstance(items, list):
            out.extend(items)
    return out


_DERIVERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "command": lambda ev: exec_commands(ev) or _MISSING,
    "commandLine": _command_line,
    "decision": lambda ev: _annotation(ev, "authorization.k8s.io/decision"),
    "authzReason": lambda ev: _annotation(ev, "authorization.k8s.io/reason"),
    "response.success": _response_success,
    "sourceIP": _source_ip,
    "sourceNetwork": _source_network,
    "dataValues": _data_values,
    "csrSubject": _csr_subject,
    "podSpec.allContainers": _all_containers,
    "podSpec": lambda ev: _or_missing(pod_spec(ev)),
}


def _or_missing(value: Any) -> Any:
    return _MISSING if value is None else value


def derived_root(field: str) -> tuple[str, tuple[str, ...]] | None:
    """Split a field into (derived name, rest) when it starts with a derived field.

    >>> derived_root("podSpec.allContainers.image"), derived_root("user.username")
    (('podSpec.allContainers', ('image',)), None)
    """
    for name in ("podSpec.allContainers", "response.success", "podSpec"):
        if field == name or field.startswith(name + "."):
            rest = field[len(name) + 1 :]
            return name, tuple(rest.split(".")) if rest else ()
    head, _, rest = field.partition(".")
    if head in _DERIVERS:
        return head, tuple(rest.split(".")) if rest else ()
    return None


def is_derived(field: str) -> bool:
    """Whether ``field`` starts with a derived field (``podSpec.x``, ``command``, ...).

    >>> is_derived("podSpec.hostPID"), is_derived("user.username")
    (True, False)
    """
    return derived_root(field) is not None


_UNSET = object()  # "not computed yet" in the per-event cache (_MISSING is "absent")


def _cached_deriver(name: str) -> Callable[[dict[str, Any], Cache], Any]:
    """The deriver of ``name``; all containers reuse the event's cached pod spec."""
    if name == "podSpec.allContainers":
        spec_slot = derived_slot("podSpec")

        def all_containers(event: dict[str, Any], cache: Cache) -> Any:
            spec = cache.get(spec_slot, _UNSET)
            if spec is _UNSET:
                spec = cache[spec_slot] = _or_missing(pod_spec(event))
            return _containers_of(None if spec is _MISSING else spec)

        return all_containers
    derive = _DERIVERS[name]
    return lambda event, cache: derive(event)


#: Derived fields whose deriver is a memo hit (no walk): a predicate reading one calls it
#: directly, since keeping its value in the per-event cache costs more than deriving again.
_UNCACHED = frozenset({"sourceNetwork"})


def derived_source(field: str) -> tuple[Slot | None, Callable[[dict[str, Any]], Any]] | None:
    """The cache slot and the deriver of a derived field itself (``dataValues``), for a
    predicate that reads it inline: the value is ``cache[slot]`` once computed, else
    ``derive(event)`` (stored there, so it is computed at most once per event, the slot
    :func:`compile_path` fills too). The slot is None when deriving again is cheaper than
    the cache (``sourceNetwork``). None for any other field.

    >>> slot, derive = derived_source("dataValues")
    >>> slot, derive({"requestObject": {"data": {"a": "x"}}})
    (Slot('derived', 'dataValues'), ['x'])
    >>> slot, derive = derived_source("sourceNetwork")
    >>> slot, derive({"sourceIPs": ["10.1.2.3"]})
    (None, '10.1.0.0/16')
    >>> derived_source("sourceIPs") is None
    True
    """
    derived = derived_root(field)
    if derived is None or derived[1]:
        return None
    if derived[0] == "podSpec.allContainers":
        return None  # built from the cached pod spec (compile_path)
    slot = None if derived[0] in _UNCACHED else derived_slot(derived[0])
    return slot, _DERIVERS[derived[0]]


def compile_path(field: str) -> Getter:
    """Compile a canonical dotted field into ``(event, cache) -> leaves`` (aliases not applied)."""
    derived = derived_root(field)
    if derived is None:
        return _walker(tuple(field.split(".")))
    name, rest = derived
    derive = _cached_deriver(name)
    slot = derived_slot(name)
    tail = _walker(rest) if rest else None

    def get_derived(event: dict[str, Any], cache: Cache) -> tuple[Any, ...]:
        root = cache.get(slot, _UNSET)
        if root is _UNSET:
            root = cache[slot] = derive(event, cache)
        if root is _MISSING:
            return ()
        if tail is not None:
            return tail(root, cache)
        roots: list[Any] = []
        _flatten_into(root, roots)
        return tuple(roots)

    return get_derived


# --- the linter's view of the canonical schema ----------------------------------------------

#: Derived fields whose contents are object bodies: any sub-path is accepted by the linter
#: (the free-form paths of the event itself are ``schemas.audit.FREE_FORM_PREFIXES``).
DERIVED_FREE_FORM = ("podSpec",)


#: The paths below derived fields that hold a small fixed object.
DERIVED_PATHS = ("csrSubject.commonName", "csrSubject.organizations")


def known_field_paths() -> frozenset[str]:
    """Dotted paths the canonical AuditEvent schema knows, plus derived fields."""
    return audit.field_paths() | frozenset(DERIVED) | frozenset(DERIVED_PATHS)


def is_known_field(field: str, known: frozenset[str]) -> bool:
    """True when ``field`` is a schema path, a derived field or lies under a free-form root.

    >>> known = known_field_paths()
    >>> is_known_field("requestObject.spec.anything", known), is_known_field("verbb", known)
    (True, False)
    >>> is_known_field("podSpec.containers.image", known)
    True
    """
    if field in known:
        return True
    return any(
        field.startswith(root + ".") for root in (*audit.FREE_FORM_PREFIXES, *DERIVED_FREE_FORM)
    )


def first_text(getter: Getter, event: dict[str, Any], cache: Cache) -> str | None:
    """The first scalar value ``getter`` finds in ``event``, as text (numbers and booleans
    as JSON), or None: the key part the stateful detectors build from one field.

    >>> first_text(compile_path("responseStatus.code"), {"responseStatus": {"code": 403}}, {})
    '403'
    >>> first_text(compile_path("user.groups"), {"user": {"groups": [None, "dev"]}}, {})
    'dev'
    """
    for v in getter(event, cache):
        if v is not None and not isinstance(v, (dict, list)):
            return v if isinstance(v, str) else orjson.dumps(v).decode()
    return None


def first_texts(getters: Sequence[Getter], event: dict[str, Any], cache: Cache) -> list[str] | None:
    """`first_text` of each getter, or None as soon as one finds nothing (a group-by field
    missing makes the event unusable for the detector).

    >>> first_texts([compile_path("verb"), compile_path("user.username")], {"verb": "get"}, {})
    >>> first_texts([compile_path("verb")], {"verb": "get"}, {})
    ['get']
    """
    values: list[str] = []
    for getter in getters:
        v = first_text(getter, event, cache)
        if v is None:
            return None
        values.append(v)
    return values
