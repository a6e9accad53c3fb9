"""Klaxon's rule fields as raw audit-log paths: what a SIEM holds, and where lists are.

Rules read derived fields (``podSpec``, ``decision``, ``response.success``…, see
:data:`detections.fields.DERIVED`) that the engine computes from each event. A SIEM holds the
raw audit event instead, so a converted rule must name raw paths. This module says, without
any conversion library, which raw paths a Klaxon field stands for, which fields have no raw
equivalent (and why), and which raw paths cross a list (a multi-valued field in a SIEM).

>>> raw_paths("podSpec.hostPID")
('requestObject.spec.hostPID', 'requestObject.spec.template.spec.hostPID', \
'requestObject.spec.jobTemplate.spec.template.spec.hostPID', 'requestObject.template.spec.hostPID')
>>> raw_paths("decision")
('annotations.authorization.k8s.io/decision',)
>>> list_prefixes("requestObject.spec.containers.securityContext.capabilities.add")
('requestObject.spec.containers', 'requestObject.spec.containers.securityContext.capabilities.add')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from detections.fields import derived_root

#: Where the engine finds the pod spec inside ``requestObject`` (``detections.fields.pod_spec``):
#: Pod (and kind-less patches), workloads, CronJobs, PodTemplates. On a Kubernetes object only
#: one of them exists, so "any of them" is what ``podSpec`` means.
POD_SPEC_PATHS = (
    "requestObject.spec",
    "requestObject.spec.template.spec",
    "requestObject.spec.jobTemplate.spec.template.spec",
    "requestObject.template.spec",
)

#: The container lists ``podSpec.allContainers`` joins.
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

#: Derived fields that are one raw path under another name.
RENAMED = {
    "decision": "annotations.authorization.k8s.io/decision",
    "authzReason": "annotations.authorization.k8s.io/reason",
}

#: Derived fields no raw-path query can express, and why (``response.success`` is rewritten
#: as a condition on ``responseStatus.code`` by the processing pipeline instead).
NO_RAW_EQUIVALENT = {
    "command": (
        "'command' is the URL-decoded command=… values of an exec requestURI; a raw audit "
        "log holds them URL-encoded inside the URI, which a query cannot decode"
    ),
    "commandLine": (
        "'commandLine' is the exec command URL-decoded and joined with spaces; a raw audit "
        "log holds it URL-encoded as command=… parameters of requestURI"
    ),
    "sourceIP": (
        "'sourceIP' is the first of sourceIPs; this target matches any element of a list, "
        "so 'sourceIPs' would also test proxies and forwarders"
    ),
    "cluster": (
        "'cluster' is set by Klaxon's normaliser; a raw audit log carries no cluster name "
        "(select the cluster with the SIEM's index or source instead)"
    ),
    "sourceNetwork": (
        "'sourceNetwork' is the request peer's address (the last of sourceIPs) masked to a "
        "network; a query cannot compute it from the raw address"
    ),
    "csrSubject": (
        "'csrSubject' is read from the certificate signing request inside the base64 PEM of "
        "requestObject.spec.request; a query cannot decode it"
    ),
    "dataValues": (
        "'dataValues' gathers the values of every key of a ConfigMap's or Secret's data "
        "(and of JSON patches to it); a raw-path query names each key, so it cannot"
    ),
}

#: Derived fields the pipeline rewrites itself (``response.success``) or maps to raw paths.
MAPPED = frozenset({"response.success", "podSpec", "podSpec.allContainers", *RENAMED})

#: Appended to a field tested with ``|outside`` over a list ("some element matches none of
#: the values"): only a target that tests elements one by one (SQLite's ``json_each``) can
#: write it; the pipeline refuses it for the others.
OUTSIDE_MARK = "#outside"


def split_mark(field: str) -> tuple[str, str]:
    """``(field without the mark, the mark or "")``.

    >>> split_mark("sourceIPs#outside"), split_mark("verb")
    (('sourceIPs', '#outside'), ('verb', ''))
    """
    if field.endswith(OUTSIDE_MARK):
        return field[: -len(OUTSIDE_MARK)], OUTSIDE_MARK
    return field, ""


#: Field names that hold lists wherever they occur in Kubernetes objects and audit events.
LIST_FIELDS = frozenset(
    {
        "sourceIPs",
        "groups",
        *CONTAINER_LISTS,
        "volumes",
        "volumeMounts",
        "env",
        "envFrom",
        "args",
        "command",
        "add",
        "drop",
        "tolerations",
        "nodeSelectorTerms",
        "matchExpressions",
        "values",
        "imagePullSecrets",
        "rules",
        "subjects",
        "webhooks",
        "verbs",
        "resources",
        "apiGroups",
        "resourceNames",
        "nonResourceURLs",
        "ports",
        "tls",
        "hosts",
        "paths",
        "conditions",
        "loadBalancerSourceRanges",
        "externalIPs",
        "usages",
        "items",
        "finalizers",
        "ownerReferences",
        "clusterRoleSelectors",
    }
)

#: Object keys below which the rest of a dotted path is one key: annotation and label names,
#: ConfigMap and Secret keys contain dots (``tls.key``), and none of it is a list.
MAP_PARENTS = frozenset({"annotations", "labels", "data", "stringData", "nodeSelector", "selector"})

#: A ``requestObject`` that is a JSON patch is a list of operations with these keys.
JSON_PATCH_KEYS = frozenset({"op", "path", "value", "from"})


def raw_paths(field: str) -> tuple[str, ...]:
    """The raw audit paths a canonical rule field stands for (any of them may match).

    Fields with no raw equivalent (:data:`NO_RAW_EQUIVALENT`) and ``response.success`` are
    not paths: callers check :func:`no_raw_equivalent` first.

    >>> raw_paths("podSpec.allContainers.image")[:3]
    ('requestObject.spec.containers.image', 'requestObject.spec.initContainers.image', \
'requestObject.spec.ephemeralContainers.image')
    >>> raw_paths("user.username")
    ('user.username',)
    """
    derived = derived_root(field)
    if derived is None:
        return (field,)
    name, rest = derived
    tail = "".join("." + part for part in rest)
    if name in RENAMED:
        return (RENAMED[name] + tail,)
    if name == "podSpec":
        return tuple(spec + tail for spec in POD_SPEC_PATHS)
    if name == "podSpec.allContainers":
        return tuple(f"{spec}.{lst}{tail}" for spec in POD_SPEC_PATHS for lst in CONTAINER_LISTS)
    return (field,)


def no_raw_equivalent(field: str) -> str | None:
    """Why ``field`` cannot be written as raw paths, or None.

    >>> no_raw_equivalent("commandLine") is not None, no_raw_equivalent("podSpec.hostPID")
    (True, None)
    """
    if field == "cluster":  # set by the normaliser, not derived by the engine
        return NO_RAW_EQUIVALENT[field]
    derived = derived_root(field)
    if derived is None or derived[0] in MAPPED:
        return None
    return NO_RAW_EQUIVALENT.get(
        derived[0], f"'{derived[0]}' is derived by the engine and has no raw mapping yet"
    )


def list_prefixes(path: str) -> tuple[str, ...]:
    """The prefixes of a raw path whose value is a list (where a SIEM sees many values).

    >>> list_prefixes("user.username"), list_prefixes("requestObject.op")
    ((), ('requestObject',))
    >>> list_prefixes("requestObject.data.tls.key")
    ()
    """
    parts = path.split(".")
    out = []
    if parts[0] == "requestObject" and len(parts) == 2 and parts[1] in JSON_PATCH_KEYS:
        out.append("requestObject")
    for i, part in enumerate(parts):
        if part in LIST_FIELDS:
            out.append(".".join(parts[: i + 1]))
        if part in MAP_PARENTS:
            break
    return tuple(out)


def is_multivalued(path: str) -> bool:
    """Whether a raw path crosses a list."""
    return bool(list_prefixes(path))


# --- the leaves of an event, by raw path ------------------------------------------------------


def leaves(event: dict[str, Any]) -> dict[str, list[Any]]:
    """Every dotted path of an event with the values found there, lists crossed (any element).

    What the engine's field walker returns for a plain path, for every path at once: the
    value of an object key is listed under its path too (``|exists`` tests objects).

    >>> sorted(leaves({"user": {"groups": ["a", "b"]}, "objectRef": {"name": "x"}}).items())
    [('objectRef', [{'name': 'x'}]), ('objectRef.name', ['x']), ('user', [{'groups': ['a', \
'b']}]), ('user.groups', ['a', 'b'])]
    """
    out: dict[str, list[Any]] = {}
    for path, value in _walk(event, ""):
        out.setdefault(path, []).append(value)
    return out


def _walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, prefix)
        return
    if prefix:
        yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))


def crossed_lists(event: dict[str, Any], path: str) -> set[str]:
    """The prefixes of ``path`` that are lists on the way to a value of ``path`` in ``event``
    (to check :func:`list_prefixes` against real events).

    >>> sorted(crossed_lists({"requestObject": [{"op": "add"}]}, "requestObject.op"))
    ['requestObject']
    >>> crossed_lists({"requestObject": [{"op": "add"}]}, "requestObject.metadata.name")
    set()
    """
    parts = path.split(".")
    routes: list[tuple[Any, frozenset[str]]] = [(event, frozenset())]
    for i, part in enumerate(parts):
        nxt: list[tuple[Any, frozenset[str]]] = []
        for node, crossed in routes:
            if isinstance(node, dict) and part in node:
                value = node[part]
                if isinstance(value, list):
                    here = crossed | {".".join(parts[: i + 1])}
                    nxt.extend((item, here) for item in value)
                else:
                    nxt.append((value, crossed))
        routes = nxt
    return set().union(*(crossed for _, crossed in routes))
