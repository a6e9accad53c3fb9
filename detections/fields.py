"""Field access on canonical audit events: compiled walkers, derived fields and aliases.

A rule field such as ``podSpec.containers.securityContext.privileged`` is compiled once into a
function ``(event, cache) -> tuple of leaf values``. Walkers cross lists (any element can
match), and a dotted path also finds keys that themselves contain dots (annotation names such
as ``authorization.k8s.io/decision``). Derived fields are computed at most once per event and
kept in the per-evaluation ``cache`` dict.

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

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

Getter = Callable[[dict[str, Any], dict[str, Any]], tuple[Any, ...]]

#: Aliases for Sigma rules written against other log mappings -> canonical path.
ALIASES: dict[str, str] = {
    "apiGroup": "objectRef.apiGroup",
    "hostPath": "podSpec.volumes.hostPath.path",
    "capabilities": "podSpec.allContainers.securityContext.capabilities.add",
}

#: Paths whose contents are free-form object bodies: any sub-path is accepted by the linter.
FREE_FORM_ROOTS = ("requestObject", "responseObject", "annotations", "podSpec", "user.extra")

#: Derived field names (see docs/architecture.md).
DERIVED = (
    "command",
    "commandLine",
    "decision",
    "authzReason",
    "response.success",
    "sourceIP",
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


def _walker(segments: tuple[str, ...]) -> Getter:
    """A ``(root, cache) -> leaves`` walker: a fast loop over plain dicts, general otherwise."""
    n = len(segments)
    joined = {(i, j): ".".join(segments[i:j]) for i in range(n) for j in range(i + 2, n + 1)}
    # At depth i, a key like "a.b" (joined segments) means the slow path must look.
    steps = tuple(
        (segments[i], tuple(joined[(i, j)] for j in range(n, i + 1, -1))) for i in range(n)
    )

    def slow(root: Any) -> tuple[Any, ...]:
        roots: list[Any] = []
        _flatten_into(root, roots)
        return tuple(_step(roots, segments, 0, joined))

    def across(nodes: list[Any], start: int, root: Any) -> tuple[Any, ...]:
        # Many nodes (a list was crossed): breadth-first over plain dicts.
        for key, alts in steps[start:]:
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
        cur = root
        for depth, (key, alts) in enumerate(steps):
            if cur.__class__ is not dict:
                if cur.__class__ is list:
                    flat: list[Any] = []
                    _flatten_into(cur, flat)
                    return across(flat, depth, root)
                if isinstance(cur, (list, dict)):
                    return slow(root)
                return ()
            nxt = cur.get(key, _MISSING)
            if nxt is _MISSING:
                for alt in alts:
                    if alt in cur:
                        return slow(root)
                return ()
            cur = nxt
        if cur.__class__ is list:
            out: list[Any] = []
            _flatten_into(cur, out)
            return tuple(out)
        return (cur,)

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


def _cached_deriver(name: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    """The deriver of ``name``; all containers reuse the event's cached pod spec."""
    if name == "podSpec.allContainers":

        def all_containers(event: dict[str, Any], cache: dict[str, Any]) -> Any:
            spec = cache.get("\x00podSpec", _UNSET)
            if spec is _UNSET:
                spec = cache["\x00podSpec"] = _or_missing(pod_spec(event))
            return _containers_of(None if spec is _MISSING else spec)

        return all_containers
    derive = _DERIVERS[name]
    return lambda event, cache: derive(event)


def compile_path(field: str) -> Getter:
    """Compile a canonical dotted field into ``(event, cache) -> leaves`` (aliases not applied)."""
    derived = derived_root(field)
    if derived is None:
        return _walker(tuple(field.split(".")))
    name, rest = derived
    derive = _cached_deriver(name)
    slot = "\x00" + name
    tail = _walker(rest) if rest else None

    def get_derived(event: dict[str, Any], cache: dict[str, Any]) -> tuple[Any, ...]:
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

# Used until `schemas.audit.field_paths()` exists; mirrors audit.k8s.io/v1 Event (see
# docs/architecture.md) plus our `cluster` field.
_FALLBACK_FIELD_PATHS = frozenset(
    {
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "user.username",
        "user.uid",
        "user.groups",
        "user.extra",
        "impersonatedUser",
        "impersonatedUser.username",
        "impersonatedUser.uid",
        "impersonatedUser.groups",
        "impersonatedUser.extra",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "objectRef.resource",
        "objectRef.namespace",
        "objectRef.name",
        "objectRef.uid",
        "objectRef.apiGroup",
        "objectRef.apiVersion",
        "objectRef.resourceVersion",
        "objectRef.subresource",
        "responseStatus",
        "responseStatus.metadata",
        "responseStatus.status",
        "responseStatus.message",
        "responseStatus.reason",
        "responseStatus.details",
        "responseStatus.code",
        "requestObject",
        "responseObject",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
        "cluster",
    }
)


def known_field_paths() -> frozenset[str]:
    """Dotted paths the canonical AuditEvent schema knows, plus derived fields.

    Uses ``schemas.audit.field_paths()`` when the schemas package provides it.
    """
    paths: set[str] = set(_FALLBACK_FIELD_PATHS)
    try:
        from schemas import audit  # type: ignore[attr-defined,unused-ignore]

        provided = audit.field_paths()
        paths = {str(p) for p in provided}
    except (ImportError, AttributeError):
        pass
    paths.update(DERIVED)
    return frozenset(paths)


def is_known_field(field: str, known: frozenset[str]) -> bool:
    """True when ``field`` is a schema path, a derived field or lies under a free-form root.

    >>> known = known_field_paths()
    >>> is_known_field("requestObject.spec.anything", known), is_known_field("verbb", known)
    (True, False)
    """
    if field in known:
        return True
    return any(field.startswith(root + ".") for root in FREE_FORM_ROOTS)
