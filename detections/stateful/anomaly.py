"""Online behaviour anomalies per identity: security features, own and peer baselines.

Every event updates a small accumulator of its principal (``cluster|user.username``, the same
key as the events topic, so the state is co-partitioned). Windows are tumbling, aligned to
the epoch, ``window`` seconds of event time. When a window closes (the principal's next event
falls in a later window, or :meth:`AnomalyModel.advance` passes its end plus ``lateness``),
its feature vector is judged **once**:

* **Features that matter for security carry the alert.** Secret reads and lists, exec/attach/
  port-forward, RBAC and admission writes, token and CSR requests, refused requests,
  cluster-wide lists and deletions are *security* features; request and write volume,
  breadth, novelty (new namespaces, resource types, user agents, networks) and the hour are
  *context*: they add to the score but alone never make more than a ``low`` alert. Security
  counts are judged against the baseline scaled by the volume ratio of the identity's other
  requests (a kubelet with three times its pods reads three times the secrets: that is
  volume, not a new behaviour).
* **Baselines that fit the identity.** Per feature an exponentially weighted mean and mean
  absolute deviation, winsorised updates (x clipped to mean + 3 scales), for the principal
  *and* for its peer group (:func:`peer_group`: kubelets, control-plane components, the
  service accounts of one namespace, unauthenticated callers, humans). A system identity
  (kubelet, control plane, ``kube-system`` service account) must depart from its own history
  *and* from its peers'; an identity still in warm-up (fewer than ``warmup`` learnt windows)
  is judged against its peers and can raise ``low`` at most.
* **Service accounts are machines.** A workload service account (one outside ``kube-system``)
  remembers which sensitive actions it ever made (:data:`ACTS`: secret get/list/write,
  exec, RBAC/admission writes, token requests, refused requests, cluster-wide lists, workload
  writes, deletes, proxying); once warm, the first time it makes one is a ``medium`` alert,
  ``high`` with a new network or user agent or several firsts at once. Humans get more room:
  their firsts only count through the security features' deviations.

A shared river ``HalfSpaceTrees`` gives a population score as evidence. Alerts say which
features deviated, by how much and against which baseline (``own``, ``peers`` or
``own+peers``). State is pickle-free JSON (versioned; a v1 principal is migrated, a v1 HST is
refused with :class:`StateFormatError`). Memory is bounded by ``max_principals`` (LRU).

>>> m = AnomalyModel(AnomalySettings(window=60, warmup=3, lateness=0))
>>> def ev(t, n_secret=0):
...     base = {"user": {"username": "sa"}, "verb": "get", "objectRef": {"resource": "pods"},
...             "requestReceivedTimestamp": iso(t)}
...     return base if not n_secret else {**base, "objectRef": {"resource": "secrets"}}
>>> for w in range(6):                       # six quiet windows: 5 pod reads each
...     for i in range(5):
...         _ = m.observe(ev(w * 60 + i))
>>> for i in range(40):                      # then 40 secret reads in one window
...     _ = m.observe(ev(6 * 60 + i, n_secret=1))
>>> alerts = m.observe(ev(7 * 60))           # the next window closes the burst window
>>> alerts[0]["severity"], alerts[0]["evidence"]["basis"]
('high', 'own')
>>> for part in alerts[0]["summary"].split("; "):
...     print(part)
sa: unusual activity against its own history (score 40.2): reads of secrets 40 in 1m, usually none
requests 8x its usual rate
1 resource types new to it
"""

from __future__ import annotations

import functools
import math
import sys
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mypy_extensions import mypyc_attr

from detections.stateful.alerts import Detector, make_alert, stable_id
from detections.stateful.errors import StateFormatError
from detections.stateful.new_terms import ua_product
from detections.stateful.river_hst import hst_class, padded_nodes
from detections.stateful.timeutil import event_time, hour_of_day, iso
from schemas.keys import principal_key

if TYPE_CHECKING:  # river (with scipy) takes about a second to import: only when a model is made
    from river.anomaly import HalfSpaceTrees

STATE_VERSION = 2

#: (name, plain words, kind) - kind: volume | security | breadth | novelty | time
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", "volume"),
    ("writes", "writes (create/update/patch/delete)", "volume"),
    ("secret_reads", "reads of secrets", "security"),  # get, list and watch
    ("secret_lists", "lists/watches of secrets", "security"),  # the sweeps among them
    ("sessions", "exec/attach/port-forward sessions", "security"),
    ("rbac_writes", "RBAC or admission changes", "security"),
    ("token_requests", "token or certificate requests", "security"),
    ("denied", "refused (401/403) requests", "security"),
    ("cluster_lists", "cluster-wide lists of namespaced kinds", "security"),
    ("deletes", "deletions", "security"),
    ("namespaces", "distinct namespaces", "breadth"),
    ("resources", "distinct resource types", "breadth"),
    ("new_namespaces", "namespaces new to it", "novelty"),
    ("new_resources", "resource types new to it", "novelty"),
    ("new_agents", "new user agents", "novelty"),
    ("new_networks", "new source networks", "novelty"),
    ("odd_hour", "activity at an unusual hour", "time"),
)
N_FEATURES = len(FEATURES)
N_COUNTS = 10  # the count features, first in FEATURES
SECURITY = tuple(i for i, f in enumerate(FEATURES) if f[2] == "security")
_CONTEXT_CAP = 3.0  # a context feature (not security) contributes at most this z
_FLOOR = {"volume": 1.0, "security": 1.0, "breadth": 0.5, "novelty": 0.25, "time": 0.25}
_FLOORS = tuple(_FLOOR[f[2]] for f in FEATURES)
_KINDS = tuple(f[2] for f in FEATURES)
#: Sensitive actions a workload service account is remembered to have made (bit i = ACTS[i]).
ACTS: tuple[str, ...] = (
    "secret read",
    "secret list/watch",
    "secret write",
    "exec/attach/port-forward",
    "RBAC change",
    "admission configuration change",
    "token or certificate request",
    "refused request",
    "cluster-wide list",
    "workload write",
    "delete",
    "proxy to a node, pod or service",
    "write to a resource type it never wrote",
)
(
    A_SECRET_READ,
    A_SECRET_LIST,
    A_SECRET_WRITE,
    A_SESSION,
    A_RBAC,
    A_ADMISSION,
    A_TOKEN,
    A_DENIED,
    A_CLUSTER_LIST,
    A_WORKLOAD,
    A_DELETE,
    A_PROXY,
    A_NEW_WRITE,
) = (1 << i for i in range(len(ACTS)))
_ALARMING_FIRSTS = A_DENIED | A_SECRET_LIST | A_SESSION | A_RBAC | A_ADMISSION | A_TOKEN
_WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_LISTS = frozenset({"list", "watch"})
_RBAC = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
_ADMISSION = frozenset(
    {
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    }
)
_WORKLOADS = frozenset(
    {"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs", "cronjobs"}
)
#: Namespaced kinds whose list without a namespace is a cluster-wide read.
_NAMESPACED = frozenset(
    {
        "pods",
        "secrets",
        "configmaps",
        "services",
        "serviceaccounts",
        "deployments",
        "daemonsets",
        "statefulsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "roles",
        "rolebindings",
        "ingresses",
        "networkpolicies",
        "persistentvolumeclaims",
        "events",
        "endpoints",
    }
)
_SESSIONS = frozenset({"exec", "attach", "portforward"})
_MAX_DISTINCT = 64  # per window
#: An open window's distinct names and hashes are a tuple up to this many (a set costs at
#: least 216 bytes, a tuple of one 48, and a window has one or two), a set beyond.
_SMALL = 8
_EMPTY: tuple[Any, ...] = ()
#: Separates the fields of `PrincipalState.last` (stage, source IP, auditID): an ASCII
#: character keeps the string at one byte a character; the stage and IP never hold it.
_SEP = "\x00"
_NO_LAST = _SEP * 2
_MAX_AGENTS = 8  # remembered per principal
_MAX_NETWORKS = 16
_MAX_KNOWN = 64  # namespaces / resource types remembered per principal
_SETTLED = 4  # learnt windows before a namespace or resource type new to it counts
#: Peer-group roles held to their peers as well as to their own history.
SYSTEM_ROLES = frozenset({"node", "control-plane", "system-sa"})
_LEVELS = ("low", "medium", "high")
ANOMALY_DETECTOR = Detector(
    id="0f6b7c1e-2d3a-5b4c-9e8f-a1b2c3d4e5f6",
    title="Unusual behaviour for this identity",
    kind="anomaly",
    level="medium",
    tags=("attack.discovery", "attack.credential-access", "attack.t1078", "attack.t1613"),
    description=(
        "The identity's security-relevant activity in one window departs from its own history "
        "and its peers', or a workload service account made a sensitive action for the first "
        "time (volume and hour alone stay low)."
    ),
    source="detections/stateful/anomaly.py",
)


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Model parameters (times in event-time seconds)."""

    window: float = 300.0
    lateness: float = 30.0
    warmup: int = 12  # learnt windows before an identity may alert above low
    alpha: float = 0.05  # EW weight of a new window
    peer_alpha: float = 0.02  # EW weight of a member's window in its peer baseline
    threshold: float = 4.0  # a security feature's z that makes a medium alert...
    min_excess: float = 3.0  # ...when its count exceeds the (volume-scaled) usual by this much
    high_threshold: float = 15.0  # window score of a high alert
    low_threshold: float = 10.0  # window score of a low alert (context or warm-up only)
    population_threshold: float | None = None  # HST score alerting warm-up principals (low)
    max_principals: int = 100_000
    hst_trees: int = 10
    hst_height: int = 8
    hst_window: int = 250
    seed: int = 42


@functools.lru_cache(maxsize=8192)  # names recur: resource types, namespaces
def _h(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _network(ip: str) -> str:
    if ":" in ip:
        return ":".join(ip.split(":")[:4])
    return ip.rsplit(".", 1)[0]


@functools.lru_cache(maxsize=8192)  # every event has one; a cluster has few distinct ones
def _agent_hash(agent: str) -> int:
    """The remembered form of a user agent: its product's hash."""
    return _h(ua_product(agent))


@functools.lru_cache(maxsize=8192)
def _network_hash(ip: str) -> int:
    """The remembered form of a source IP: its network's hash."""
    return _h(_network(ip))


def peer_group(username: str) -> tuple[str, str]:
    """``(group, role)`` of an identity: who its peers are, and what kind of caller it is.

    >>> peer_group("system:node:worker-3")
    ('kubelets', 'node')
    >>> peer_group("system:serviceaccount:kube-system:replicaset-controller")
    ('serviceaccounts:kube-system', 'system-sa')
    >>> peer_group("system:serviceaccount:shop:web")
    ('serviceaccounts:shop', 'workload-sa')
    >>> peer_group("system:kube-scheduler"), peer_group("alice@example.com")
    (('control-plane', 'control-plane'), ('humans', 'human'))
    """
    if username.startswith("system:"):
        if username.startswith("system:node:"):
            return "kubelets", "node"
        if username.startswith("system:serviceaccount:"):
            ns = username.split(":", 3)[2] if username.count(":") >= 3 else ""
            role = "system-sa" if ns in ("kube-system", "kube-node-lease") else "workload-sa"
            return f"serviceaccounts:{ns}", role
        if username in ("system:anonymous", "system:unauthenticated") or username.startswith(
            "system:bootstrap:"
        ):
            return "unauthenticated", "unauthenticated"
        return "control-plane", "control-plane"
    return "humans", "human"


class Baseline:
    """Exponentially weighted mean and mean absolute deviation per feature, kept in one
    array (`stats`: the means, then the deviations; one array object costs 64 bytes)."""

    __slots__ = ("n", "stats")
    #: Where the means start in `stats` (a principal keeps its open window's counts first).
    AT: ClassVar[int] = 0
    _ZEROS: ClassVar[array[float]] = array("d", [0.0]) * (2 * N_FEATURES)

    def __init__(self) -> None:
        self.n = 0  # windows learnt
        self.stats = array("d", self._ZEROS)  # copied: exactly sized

    @property
    def mean(self) -> memoryview[float]:
        """The means (a view: writable, not resizable)."""
        return cast("memoryview[float]", memoryview(self.stats)[self.AT : self.AT + N_FEATURES])

    @mean.setter
    def mean(self, values: Iterable[float]) -> None:
        self._put(self.AT, values)

    @property
    def dev(self) -> memoryview[float]:
        """The mean absolute deviations (a view)."""
        at = self.AT + N_FEATURES
        return cast("memoryview[float]", memoryview(self.stats)[at : at + N_FEATURES])

    @dev.setter
    def dev(self, values: Iterable[float]) -> None:
        self._put(self.AT + N_FEATURES, values)

    def _put(self, at: int, values: Iterable[float]) -> None:
        new = array("d", values)
        if len(new) != N_FEATURES:
            raise StateFormatError(f"{len(new)} values for {N_FEATURES} features")
        self.stats[at : at + N_FEATURES] = new

    def fold(self, x: list[float], alpha: float) -> None:
        """Learn one window (plain average while young, winsorised at mean + 3 scales)."""
        st, m0 = self.stats, self.AT
        d0 = m0 + N_FEATURES
        if self.n == 0:
            for i, v in enumerate(x):
                st[m0 + i] = v
        else:
            a = max(alpha, 1.0 / (self.n + 1))
            for i, v in enumerate(x):
                m, s = st[m0 + i], st[d0 + i]
                if v == m and s == 0.0:
                    continue  # the common case (a feature that is always 0): nothing to learn
                cap = m + 3 * (s + _FLOORS[i])
                d = (cap if v > cap else v) - m
                st[m0 + i] = m + a * d
                st[d0 + i] = s + a * ((d if d >= 0 else -d) - s)
        self.n += 1

    def to_json(self) -> dict[str, Any]:
        """A JSON value of the baseline."""
        return {"v": STATE_VERSION, "n": self.n, "mean": list(self.mean), "dev": list(self.dev)}

    @classmethod
    def from_json(cls, value: Any) -> Baseline:
        """Rebuild from :meth:`to_json`; raises :class:`StateFormatError`."""
        if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
            raise StateFormatError(f"not a v{STATE_VERSION} peer baseline: {value!r:.80}")
        try:
            b = cls()
            b.n = int(value["n"])
            b.mean = value["mean"]
            b.dev = value["dev"]
        except StateFormatError as exc:
            raise StateFormatError(f"peer baseline: wrong number of features: {exc}") from exc
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise StateFormatError(f"bad peer baseline: {exc}") from exc
        return b


#: v1 feature names in v1 order, for migrating v1 principal states.
_V1_FEATURES = (
    "requests",
    "secret_reads",
    "sessions",
    "writes",
    "rbac_writes",
    "denied",
    "namespaces",
    "resources",
    "new_agents",
    "new_networks",
    "odd_hour",
)
_INDEX = {f[0]: i for i, f in enumerate(FEATURES)}
#: An open window's distinct names / hashes (see `_with`).
Names = tuple[str, ...] | set[str]
Hashes = tuple[int, ...] | set[int]


#: One object for equal ints that many principals hold (window indexes, hour masks): an int
#: past 256 is a 28-byte object of its own. Emptied when it holds `_MAX_SHARED`.
_SHARED: dict[int, int] = {}
_MAX_SHARED = 4096


def shared(value: int) -> int:
    """``value``, as the object already held for an equal int if there is one.

    >>> a, b = shared(int("6000000")), shared(int("6000000")); a is b
    True
    """
    if len(_SHARED) >= _MAX_SHARED:
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


#: `PrincipalState.known` holds five lists of hashes in one array (one array object instead
#: of five: 256 bytes less a principal): their lengths first, then their items in this order.
AGENTS, NETWORKS, ZONES, KINDS, WKINDS = range(5)
_HEAD = 5
_NO_KNOWN = array("I", [0]) * _HEAD
_KNOWN_FIELDS = ("agents", "networks", "zones", "kinds", "wkinds")  # their JSON names


class PrincipalState(Baseline):
    """One principal: its open window's accumulator, its baseline and what it ever did.

    `stats` holds the open window's counts, then the baseline's means and deviations."""

    __slots__ = (
        "acts",
        "agent",
        "done",
        "done_n",
        "hours",
        "known",
        "last",
        "late",
        "new_agents",
        "new_networks",
        "res",
        "spaces",
        "window",
    )
    AT: ClassVar[int] = N_COUNTS
    _ZEROS: ClassVar[array[float]] = array("d", [0.0]) * (N_COUNTS + 2 * N_FEATURES)

    def __init__(self) -> None:
        super().__init__()
        self.window: int = -1  # index of the open window (time // window)
        self.acts = 0  # ACTS bits of the open window
        # the open window's distinct namespaces, resource types (interned names), new agents
        # and networks (hashes): a tuple up to _SMALL, then a set
        self.spaces: Names = _EMPTY
        self.res: Names = _EMPTY
        self.new_agents: Hashes = _EMPTY
        self.new_networks: Hashes = _EMPTY
        # the last event's auditID, stage and source IP in one string (one object instead of
        # four) and its user agent (interned: shared by the principals that use it)
        self.last = _NO_LAST
        self.agent = ""
        self.hours = 0  # bit h set: active in hour h (UTC) in some learnt window
        # hashes of the user agents and networks it used (the last _MAX_AGENTS and
        # _MAX_NETWORKS), of the namespaces and resource types it used and of the resource
        # types it wrote (the first _MAX_KNOWN each): segments AGENTS .. WKINDS
        self.known = array("I", _NO_KNOWN)
        self.done = 0  # ACTS bits it ever made
        self.done_n = 0  # windows learnt since `done` is kept (0 after a v1 migration)
        self.late = 0

    @property
    def counts(self) -> memoryview[float]:
        """The open window's count features (a view; they are ``stats[:N_COUNTS]``)."""
        return cast("memoryview[float]", memoryview(self.stats)[:N_COUNTS])

    def hashes(self, segment: int) -> list[int]:
        """One of the `known` lists (`AGENTS` ... `WKINDS`), oldest first."""
        lo, hi = _bounds(self.known, segment)
        return self.known[lo:hi].tolist()

    def to_json(self) -> dict[str, Any]:
        """A JSON value holding everything (the open window included)."""
        out = {
            "v": STATE_VERSION,
            "window": self.window,
            "counts": list(self.counts),
            "acts": self.acts,
            "spaces": sorted(self.spaces),
            "res": sorted(self.res),
            "new_agents": sorted(self.new_agents),
            "new_networks": sorted(self.new_networks),
            "last": list(self.last_event()),
            "n": self.n,
            "mean": list(self.mean),
            "dev": list(self.dev),
            "hours": self.hours,
        }
        for segment, name in enumerate(_KNOWN_FIELDS):
            out[name] = self.hashes(segment)
        out.update(done=self.done, done_n=self.done_n, late=self.late)
        return out

    @classmethod
    def from_json(cls, value: Any) -> PrincipalState:
        """Rebuild from :meth:`to_json` (a v1 state is migrated: its baseline kept for the
        features both versions have, its sensitive-action memory started afresh); raises
        :class:`StateFormatError`."""
        version = value.get("v") if isinstance(value, dict) else None
        if version not in (1, STATE_VERSION):
            raise StateFormatError(f"not a v1 or v{STATE_VERSION} principal state: {value!r:.80}")
        assert isinstance(value, dict)
        try:
            s = cls._common(value)
            if version == 1:
                s.known = _known(value["agents"], value["networks"], (), (), ())
                s._migrate_v1(value)
            else:
                s.known = _known(*(value[name] for name in _KNOWN_FIELDS))
                counts = array("d", value["counts"])
                if len(counts) != N_COUNTS:
                    raise StateFormatError(f"{len(counts)} counts for {N_COUNTS}")
                s.stats[:N_COUNTS] = counts
                s.acts = int(value["acts"])
                s.mean = value["mean"]
                s.dev = value["dev"]
                s.done = int(value["done"])
                s.done_n = int(value["done_n"])
        except StateFormatError as exc:
            raise StateFormatError(
                f"principal state has the wrong number of features: {exc}"
            ) from exc
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise StateFormatError(f"bad principal state: {exc}") from exc
        return s

    @classmethod
    def _common(cls, value: dict[str, Any]) -> PrincipalState:
        s = cls()
        s.window = shared(int(value["window"]))
        s.spaces = _small({sys.intern(str(v)) for v in value["spaces"]})
        s.res = _small({sys.intern(str(v)) for v in value["res"]})
        s.new_agents = _small({int(v) for v in value["new_agents"]})
        s.new_networks = _small({int(v) for v in value["new_networks"]})
        a, b, c, d = (str(v) for v in value["last"])
        s.last = f"{b.replace(_SEP, '')}{_SEP}{c.replace(_SEP, '')}{_SEP}{a}"
        s.agent = sys.intern(d)
        s.n = int(value["n"])
        s.hours = shared(int(value["hours"]))
        s.late = int(value["late"])
        return s

    def _migrate_v1(self, value: dict[str, Any]) -> None:
        """Map a v1 state's features onto this version's (the open window's counts too)."""
        old_mean, old_dev = list(value["mean"]), list(value["dev"])
        old_counts = list(value["counts"])
        if len(old_mean) != len(_V1_FEATURES) or len(old_counts) != 6:
            raise StateFormatError("v1 principal state has the wrong number of features")
        st, dev = self.stats, self.AT + N_FEATURES
        for j, name in enumerate(_V1_FEATURES):
            i = _INDEX[name]
            st[self.AT + i], st[dev + i] = float(old_mean[j]), float(old_dev[j])
            if j < 6:
                st[i] = float(old_counts[j])

    def add(self, event: dict[str, Any]) -> None:
        """Account one event to the open window."""
        c = self.stats  # the counts come first
        c[0] += 1
        verb = event.get("verb")
        ref = event.get("objectRef")
        resource = sub = ns = None
        if ref.__class__ is dict:
            resource = ref.get("resource")
            sub = ref.get("subresource")
            ns = ref.get("namespace")
        acts = 0
        if verb in _WRITES:
            c[1] += 1
            acts = self._write_acts(verb, resource, sub)
        if resource == "secrets":
            if verb == "get":
                c[2] += 1
                acts |= A_SECRET_READ
            elif verb in _LISTS:
                c[2] += 1
                c[3] += 1
                acts |= A_SECRET_LIST
        elif sub is not None:
            if sub in _SESSIONS and resource == "pods":
                c[4] += 1
                acts |= A_SESSION
            elif sub == "proxy":
                acts |= A_PROXY
        if verb in _LISTS and not ns and resource in _NAMESPACED:
            c[8] += 1
            acts |= A_CLUSTER_LIST
        status = event.get("responseStatus")
        if status.__class__ is dict and status.get("code") in (401, 403):
            c[7] += 1
            acts |= A_DENIED
        self.acts |= acts
        if ns.__class__ is str and ns and ns not in self.spaces:
            self.spaces = _with(self.spaces, sys.intern(ns))
        if resource.__class__ is str and resource not in self.res:
            self.res = _with(self.res, sys.intern(resource))
        self._note_origin(event)

    def _write_acts(self, verb: Any, resource: Any, sub: Any) -> int:
        """Count a write's security features; its ACTS bits."""
        c = self.stats
        acts = 0
        if verb == "delete" or verb == "deletecollection":
            c[9] += 1
            acts = A_DELETE
        known = self.known
        if resource.__class__ is str and known[WKINDS] < _MAX_KNOWN:
            h = _h(resource)
            if not _has(known, WKINDS, h):
                acts |= A_NEW_WRITE  # never in `done`: each new type is a first
                _add(known, WKINDS, h)
        if resource in _RBAC:
            c[5] += 1
            return acts | A_RBAC
        if resource in _ADMISSION:
            c[5] += 1
            return acts | A_ADMISSION
        if (resource == "serviceaccounts" and sub == "token") or (
            resource == "certificatesigningrequests" and verb == "create"
        ):
            c[6] += 1
            return acts | A_TOKEN
        if resource == "secrets":
            return acts | A_SECRET_WRITE
        if resource in _WORKLOADS and sub is None:
            return acts | A_WORKLOAD
        return acts

    def _note_origin(self, event: dict[str, Any]) -> None:
        """Account the event's user agent and source network; remember it as the last one."""
        agent = event.get("userAgent")
        agent_s = ""
        if agent.__class__ is str:
            agent_s = agent
            ah = _agent_hash(agent)
            if ah not in self.new_agents and not _has(self.known, AGENTS, ah):
                self.new_agents = _with(self.new_agents, ah)
        ips = event.get("sourceIPs")
        ip = ""
        if ips.__class__ is list and ips and ips[0].__class__ is str:
            ip = ips[0]
            nh = _network_hash(ip)
            if nh not in self.new_networks and not _has(self.known, NETWORKS, nh):
                self.new_networks = _with(self.new_networks, nh)
        audit_id, stage = event.get("auditID") or "", event.get("stage") or ""
        last = f"{stage}{_SEP}{ip}{_SEP}{audit_id}"
        if last.count(_SEP) != 2:  # a NUL in a field (none from the API server): not in these
            last = f"{str(stage).replace(_SEP, '')}{_SEP}{ip.replace(_SEP, '')}{_SEP}{audit_id}"
        self.last = last
        if agent_s != self.agent:
            self.agent = sys.intern(agent_s)

    def last_event(self) -> tuple[str, str, str, str]:
        """(auditID, stage, source IP, user agent) of the last event accounted."""
        stage, ip, audit_id = self.last.split(_SEP, 2)
        return audit_id, stage, ip, self.agent

    def features(self, hour: int) -> list[float]:
        """The open window's feature vector (order of :data:`FEATURES`)."""
        known = self.n > 0
        odd = 1.0 if known and not (self.hours >> hour) & 1 else 0.0
        settled = self.n >= _SETTLED  # a young identity's every namespace and kind is new
        return [
            *self.stats[:N_COUNTS],
            float(len(self.spaces)),
            float(len(self.res)),
            _novel(self.spaces, self.known, ZONES) if settled else 0.0,
            _novel(self.res, self.known, KINDS) if settled else 0.0,
            float(len(self.new_agents)) if known else 0.0,
            float(len(self.new_networks)) if known else 0.0,
            odd,
        ]

    def learn(self, x: list[float], hour: int, alpha: float) -> None:
        """Fold a closed window into the baseline and reset the accumulator."""
        self.fold(x, alpha)
        self.hours = shared(self.hours | 1 << hour)
        self.done |= self.acts & ~A_NEW_WRITE
        self.done_n += 1
        # in a set's order, as when they were kept in sets (which ones a full memory keeps);
        # hashes are ints, whose set order is fixed; names in sorted order, since a set of
        # strings is ordered by the process's hash seed (a restarted worker or an offline
        # replay would remember other names)
        known = self.known
        for ah in set(self.new_agents):
            _remember(known, AGENTS, ah, _MAX_AGENTS)
        for nh in set(self.new_networks):
            _remember(known, NETWORKS, nh, _MAX_NETWORKS)
        _learn_names(known, ZONES, sorted(set(self.spaces)))
        _learn_names(known, KINDS, sorted(set(self.res)))
        st = self.stats
        for i in range(N_COUNTS):
            st[i] = 0.0
        self.acts = 0
        self.spaces = self.res = self.new_agents = self.new_networks = _EMPTY


def _with(items: Names | Hashes, value: Any) -> Any:
    """``items`` (a tuple up to `_SMALL`, then a set) with ``value`` added (not in it), as long
    as it holds fewer than `_MAX_DISTINCT`.

    >>> _with((1, 2), 3), len(_with(tuple(range(_SMALL)), -1)), _with(set(range(64)), -1) is None
    ((1, 2, 3), 9, False)
    """
    n = len(items)
    if n < _SMALL:
        return (*items, value)
    if n >= _MAX_DISTINCT:
        return items
    grown: set[Any] = set(items) if n == _SMALL else items  # type: ignore[assignment]
    grown.add(value)
    return grown


def _small(items: set[Any]) -> Any:
    """A loaded container in the form `_with` keeps: a tuple up to `_SMALL`, else the set."""
    return tuple(sorted(items)) if len(items) <= _SMALL else items


def _known(*lists: Iterable[int]) -> array[int]:
    """A `PrincipalState.known` array of five lists (`AGENTS` ... `WKINDS`).

    >>> k = _known([7, 8], [], [1], (), [9]); list(k), _bounds(k, ZONES), _has(k, WKINDS, 9)
    ([2, 0, 1, 0, 1, 7, 8, 1, 9], (7, 8), True)
    """
    items = [array("I", x) for x in lists]
    out = array("I", [len(x) for x in items])
    for x in items:
        out += x
    return out


def _bounds(known: array[int], segment: int) -> tuple[int, int]:
    lo = _HEAD
    for i in range(segment):
        lo += known[i]
    return lo, lo + known[segment]


def _has(known: array[int], segment: int, value: int) -> bool:
    lo, hi = _bounds(known, segment)
    if lo == hi:
        return False
    try:
        known.index(value, lo, hi)
    except ValueError:
        return False
    return True


def _add(known: array[int], segment: int, value: int) -> None:
    known.insert(_bounds(known, segment)[1], value)
    known[segment] += 1


def _novel(names: Names, known: array[int], segment: int) -> float:
    """How many of ``names`` are not in ``known``'s ``segment`` (0 once it is full: a broad
    identity, for which a new name is no news)."""
    if known[segment] >= _MAX_KNOWN:
        return 0.0
    return float(sum(1 for n in names if not _has(known, segment, _h(n))))


def _learn_names(known: array[int], segment: int, names: Iterable[str]) -> None:
    for n in names:
        if known[segment] >= _MAX_KNOWN:
            return
        h = _h(n)
        if not _has(known, segment, h):
            _add(known, segment, h)


def _remember(known: array[int], segment: int, value: int, cap: int) -> None:
    """Add ``value`` to ``segment`` (last), forgetting its oldest beyond ``cap``."""
    if _has(known, segment, value):
        return
    _add(known, segment, value)
    if known[segment] > cap:
        del known[_bounds(known, segment)[0]]
        known[segment] -= 1


# -- judging a window ------------------------------------------------------------------------------


def deviations(base: Baseline, x: list[float]) -> list[float]:
    """Positive z per feature against ``base``: a security count against its usual scaled
    by the volume ratio r of the identity's other requests (deviation by the root of r),
    context features capped at 3 (pure).

    >>> b = Baseline(); b.n = 20; b.mean[0] = 10.0; b.mean[2] = 2.0; b.dev[2] = 0.5
    >>> x = [0.0] * N_FEATURES; x[0] = 33.0; x[2] = 6.0     # 3x the volume, 3x the secrets
    >>> z = deviations(b, x); round(z[0], 1), round(z[2], 1)
    (3.0, 0.0)
    >>> x[0], x[2] = 38.0, 30.0                  # the same other requests, 28 more secrets
    >>> round(deviations(b, x)[2], 1)
    18.7
    """
    mean, dev = base.mean, base.dev
    out = [0.0] * N_FEATURES
    for i, v in enumerate(x):
        if v <= mean[i]:
            continue  # only increases count (a quiet window is no attack)
        if _KINDS[i] == "security":
            ratio = _ratio(mean, x, i)
            # counts spread like a Poisson's: the deviation grows as the root of the ratio
            z = (v - mean[i] * ratio) / (dev[i] * math.sqrt(ratio) + 1.0)
        else:
            z = min((v - mean[i]) / (dev[i] + _FLOORS[i]), _CONTEXT_CAP)
        if z > 0:
            out[i] = z
    return out


def _ratio(mean: Sequence[float], x: list[float], i: int) -> float:
    """How many times its usual volume the identity's *other* requests are (1 to 100): a
    kubelet with three times the pods makes three times the pod reads, so three times the
    secret reads are expected; a sweep of secrets alone leaves the other requests as usual."""
    return min(max((x[0] - x[i]) / (max(mean[0] - mean[i], 0.0) + 1.0), 1.0), 100.0)


def usual(base: Baseline, x: list[float], i: int) -> float:
    """The usual value of feature ``i`` for a window like ``x`` (security: volume-scaled)."""
    if _KINDS[i] != "security":
        return base.mean[i]
    return base.mean[i] * _ratio(base.mean, x, i)


def score(base: Baseline, x: list[float]) -> tuple[float, list[tuple[int, float]]]:
    """Window score (root of the sum of squared z's) and the positive z's, largest first.

    >>> s = Baseline(); s.n = 20; s.mean[2] = 1.0; s.dev[2] = 0.5
    >>> x = [0.0] * N_FEATURES; x[2] = 31.0
    >>> total, top = score(s, x)
    >>> round(total, 1), [(FEATURES[i][0], round(z, 1)) for i, z in top]
    (20.0, [('secret_reads', 20.0)])
    """
    return _total(deviations(base, x))


def _total(z: list[float]) -> tuple[float, list[tuple[int, float]]]:
    zs = sorted(((i, v) for i, v in enumerate(z) if v > 0), key=lambda p: -p[1])
    return math.sqrt(sum(v * v for _, v in zs)), zs


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one closed window was judged."""

    level: str | None  # low | medium | high, or None (no alert)
    basis: str  # own | peers | own+peers | none
    total: float
    zs: list[tuple[int, float]]  # positive z's, largest first
    firsts: int  # ACTS bits made for the first time (workload service accounts)
    capped: str  # why the level was held at low ("" when it was not)


def judge(
    state: PrincipalState,
    peers: Baseline | None,
    role: str,
    x: list[float],
    cfg: AnomalySettings,
) -> Verdict:
    """Judge a closed window of ``state`` (before it is learnt) against its own baseline
    and its peers'; see the module docstring (pure)."""
    warm = state.n >= cfg.warmup
    peers_warm = peers is not None and peers.n >= cfg.warmup
    ref: Baseline = state
    if warm:
        z, basis = deviations(state, x), "own"
        if role in SYSTEM_ROLES and peers_warm:
            assert peers is not None
            z = [min(a, b) for a, b in zip(z, deviations(peers, x), strict=True)]
            basis = "own+peers"
    elif peers_warm:
        assert peers is not None
        z, basis, ref = deviations(peers, x), "peers", peers
    else:
        return Verdict(None, "none", 0.0, [], 0, "")
    total, zs = _total(z)
    level = _security_level(ref, x, z, total, cfg)
    firsts = 0
    if role == "workload-sa" and warm and state.done_n >= cfg.warmup:
        firsts = state.acts & ~state.done
        if firsts:
            level = _first_level(firsts, x, level)
    capped = ""
    if not warm and level is not None:
        level, capped = "low", f"warm-up: {state.n} of {cfg.warmup} windows learnt"
    elif level is None and total >= cfg.low_threshold:
        level, capped = "low", "only volume, breadth, novelty or hour deviated"
    return Verdict(level, basis, total, zs, firsts, capped)


def _security_level(
    ref: Baseline, x: list[float], z: list[float], total: float, cfg: AnomalySettings
) -> str | None:
    """medium or high when a security feature departs enough, else None."""
    strong = [i for i in SECURITY if z[i] >= cfg.threshold]
    top = max(strong, key=z.__getitem__, default=None)
    if top is None or x[top] - usual(ref, x, top) < cfg.min_excess:
        return None
    new_origin = x[_INDEX["new_networks"]] > 0 or x[_INDEX["new_agents"]] > 0
    if len(strong) >= 2 or new_origin or total >= cfg.high_threshold:
        return "high"
    return "medium"


def _first_level(firsts: int, x: list[float], level: str | None) -> str:
    """A workload service account's first sensitive action: medium, high when it comes
    from a new network or agent, or with another first or a security deviation."""
    new_origin = x[_INDEX["new_networks"]] > 0 or x[_INDEX["new_agents"]] > 0
    several = firsts & (firsts - 1) != 0
    if level is not None or (firsts & _ALARMING_FIRSTS and (new_origin or several)):
        return "high"
    return "medium"


def acts_words(bits: int) -> list[str]:
    """The :data:`ACTS` named by ``bits``.

    >>> acts_words(A_SECRET_LIST | A_DENIED)
    ['secret list/watch', 'refused request']
    """
    return [name for i, name in enumerate(ACTS) if bits >> i & 1]


def principal_context(key: str, last: tuple[str, str, str, str]) -> dict[str, Any]:
    """An anomaly alert's ``context`` from the principal key ``cluster|username`` and the
    (auditID, stage, source IP, user agent) of its last event.

    >>> principal_context("prod|alice", ("a1", "ResponseComplete", "", "kubectl"))["user"]
    {'username': 'alice'}
    """
    cluster, name = key.split("|", 1)
    audit_id, stage, ip, agent = last
    return {
        "cluster": cluster,
        "user": {"username": name},
        "auditID": audit_id,
        "stage": stage,
        "sourceIPs": [ip] if ip else [],
        "userAgent": agent or None,
    }


def describe(base: Baseline, x: list[float], i: int, window: float, *, scaled: bool = True) -> str:
    """Plain words for one feature's departure ("reads of secrets 40x its usual rate"), the
    usual of a security count scaled by the window's volume ratio unless ``scaled`` is false.

    >>> s = Baseline(); s.mean[2] = 1.0
    >>> x = [0.0] * N_FEATURES; x[2] = 40.0
    >>> describe(s, x, 2, 300), describe(s, x, 0, 300)
    ('reads of secrets 40x its usual rate', 'requests 0 in 5m, usually none')
    """
    _, words, kind = FEATURES[i]
    if kind == "time":
        return words
    if kind == "novelty":
        return f"{int(x[i])} {words}"
    typical = usual(base, x, i) if scaled else base.mean[i]
    span = _span(window)
    if typical < 0.05:
        return f"{words} {_num(x[i])} in {span}, usually none"
    ratio = x[i] / typical
    if ratio >= 2:
        return f"{words} {ratio:.0f}x its usual rate"
    return f"{words} {_num(x[i])} in {span}, usually {_num(round(typical, 1))}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# -- population model (river HalfSpaceTrees) -----------------------------------------------------

_MAX_COUNT = 10_000.0
_LIMIT = math.log1p(_MAX_COUNT)
_NAMES = tuple(f[0] for f in FEATURES)


def new_hst(settings: AnomalySettings) -> HalfSpaceTrees:
    """The shared HST with fixed limits on log1p features (no scaler: measured 25 µs/call)."""
    HalfSpaceTrees = hst_class()

    return HalfSpaceTrees(
        n_trees=settings.hst_trees,
        height=settings.hst_height,
        window_size=settings.hst_window,
        limits={f[0]: (0.0, _LIMIT) for f in FEATURES},
        seed=settings.seed,
    )


#: Tree templates by (seed, height, trees, limits): the trees river would grow at a new
#: HST's first `learn_one`, and its random generator's state afterwards.
_PLANTED: dict[tuple[Any, ...], tuple[list[Any], Any]] = {}


def plant_trees(hst: HalfSpaceTrees) -> None:
    """Give a tree-less HST (fresh, not yet learnt from) the trees it would grow itself.

    River grows them from the seed at the first `learn_one` (about 17 ms for the default
    settings, once per partition); the same seed, limits and height always grow the same
    trees, so they are grown once per process and copied (about 4 ms), with zero masses and
    the random generator left where growing them leaves it. Only for an HST whose first
    `learn_one` gets every feature of :func:`hst_input` (the limits are over all of them).
    """
    if hst.trees:
        return
    limits = tuple(sorted(hst.limits.items()))
    key = (hst.seed, hst.height, hst.n_trees, limits)
    template = _PLANTED.get(key)
    if template is None:
        HalfSpaceTrees = hst_class()

        grown = HalfSpaceTrees(
            n_trees=hst.n_trees, height=hst.height, limits=dict(limits), seed=hst.seed
        )
        grown.learn_one({name: 0.0 for name, _ in limits})  # type: ignore[no-untyped-call]
        template = _PLANTED[key] = (grown.trees, grown.rng.getstate())
    trees, rng_state = template
    nodes: list[list[Any]] = [[] for _ in trees]
    hst._tree_nodes = nodes
    hst.trees = [_clone(tree, out) for tree, out in zip(trees, nodes, strict=True)]
    hst.rng.setstate(rng_state)


def _clone(tree: Any, out: list[Any]) -> Any:
    """A copy of a padded tree with zero masses; its nodes appended to ``out`` in the
    depth-first order of river's ``iter_dfs``."""
    PaddedBranch, PaddedLeaf = padded_nodes()

    new = object.__new__

    def copy(node: Any) -> Any:
        if node.__class__ is PaddedBranch:
            branch = new(PaddedBranch)
            out.append(branch)
            left, right = node.children
            branch.children = (copy(left), copy(right))
            branch.feature, branch.threshold = node.feature, node.threshold
            branch.l_mass = branch.r_mass = 0
            return branch
        leaf: Any = new(PaddedLeaf)
        out.append(leaf)
        leaf.r_mass = leaf.l_mass = 0
        return leaf

    return copy(tree)


def hst_input(x: list[float]) -> dict[str, float]:
    """Feature dict for the HST (log1p, clipped to the fixed limits)."""
    return {
        name: (math.log1p(v) if v < _MAX_COUNT else _LIMIT) if v > 0 else 0.0
        for name, v in zip(_NAMES, x, strict=True)
    }


def hst_to_json(hst: HalfSpaceTrees) -> dict[str, Any]:
    """Checkpoint an HST: parameters plus node masses (trees are rebuilt from the seed)."""
    nodes = getattr(hst, "_tree_nodes", [])
    return {
        "v": STATE_VERSION,
        "params": {
            "n_trees": hst.n_trees,
            "height": hst.height,
            "window_size": hst.window_size,
            "seed": hst.seed,
        },
        "counter": hst.counter,
        "first_window": hst._first_window,
        "masses": [[[n.l_mass, n.r_mass] for n in tree] for tree in nodes],
        "shape": [[n.threshold if hasattr(n, "threshold") else None for n in t[:3]] for t in nodes],
    }


def hst_from_json(value: Any, settings: AnomalySettings) -> HalfSpaceTrees:
    """Rebuild an HST saved by :func:`hst_to_json`; raises :class:`StateFormatError`."""
    if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
        raise StateFormatError("not a Klaxon HST checkpoint")
    hst = new_hst(settings)
    params = value.get("params", {})
    if params != {
        "n_trees": hst.n_trees,
        "height": hst.height,
        "window_size": hst.window_size,
        "seed": hst.seed,
    }:
        raise StateFormatError(f"HST checkpoint parameters {params} differ from the settings")
    masses = value.get("masses") or []
    if masses:
        plant_trees(hst)
        hst.learn_one(hst_input([0.0] * N_FEATURES))  # type: ignore[no-untyped-call]
        nodes = hst._tree_nodes
        if [len(t) for t in nodes] != [len(t) for t in masses]:
            raise StateFormatError("HST checkpoint does not fit the rebuilt trees")
        shape = [[n.threshold if hasattr(n, "threshold") else None for n in t[:3]] for t in nodes]
        if shape != value.get("shape"):
            raise StateFormatError("HST checkpoint was made with other trees (seed or limits)")
        for tree, saved in zip(nodes, masses, strict=True):
            for node, (lm, rm) in zip(tree, saved, strict=True):
                node.l_mass, node.r_mass = lm, rm
    hst.counter = int(value.get("counter", 0))
    hst._first_window = bool(value.get("first_window", True))
    return hst


# -- the model -------------------------------------------------------------------------------------

_BASIS_WORDS = {
    "own": "against its own history",
    "peers": "against its peers",
    "own+peers": "against its own history and its peers'",
}


@mypyc_attr(allow_interpreted_subclasses=True)  # `offline.RecordingAnomalyModel`
class AnomalyModel:
    """Per-principal states (LRU-bounded), peer baselines and the shared HST; feed it every
    event."""

    def __init__(self, settings: AnomalySettings = AnomalySettings()) -> None:
        self.settings = settings
        self.principals: OrderedDict[str, PrincipalState] = OrderedDict()
        self.peers: dict[str, Baseline] = {}  # "<cluster>|<group>" -> baseline
        self.peers_dirty: set[str] = set()  # peer keys changed since `take_dirty_peers`
        self.hst = new_hst(settings)
        self.evicted = 0
        self.late = 0
        self.windows_scored = 0

    def observe(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Account one event; returns alerts for windows this event closed."""
        alert, _ = self.observe_at(event, event_time(event), principal_key(event))
        return [] if alert is None else [alert]

    def observe_at(
        self, event: dict[str, Any], t: float | None, key: str
    ) -> tuple[dict[str, Any] | None, bool]:
        """:meth:`observe` with the event's `event_time` and `principal_key` already known
        (the pipeline computes them once per event): the alert of the window it closed, and
        whether the principal's baseline may have changed (a new principal, a closed window,
        or no principal under ``key``) rather than only its open window's counts."""
        principals = self.principals
        user = event.get("user")
        name = user.get("username") if user.__class__ is dict else None
        if t is None or name.__class__ is not str:
            return None, key not in principals
        w = int(t // self.settings.window)
        state = principals.get(key)
        if state is None:
            state = PrincipalState()
            state.window = shared(w)
            principals[key] = state
            if len(principals) > self.settings.max_principals:
                principals.popitem(last=False)
                self.evicted += 1
            state.add(event)
            return None, True
        principals.move_to_end(key)
        if w > state.window:
            alert = self._close(key, state)
            state.window = shared(w)
            state.add(event)
            return alert, True
        if w < state.window:
            state.late += 1
            self.late += 1
        else:
            state.add(event)
        return None, False

    def advance(self, now: float) -> list[dict[str, Any]]:
        """Close every open window that ended before ``now - lateness`` (event time)."""
        limit = now - self.settings.lateness
        alerts = []
        for key, state in self.principals.items():
            if state.stats[0] and (state.window + 1) * self.settings.window <= limit:
                alert = self._close(key, state)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def take_dirty_peers(self) -> set[str]:
        """Peer keys changed since the last call (and forget them)."""
        out, self.peers_dirty = self.peers_dirty, set()
        return out

    def _close(self, key: str, state: PrincipalState) -> dict[str, Any] | None:
        if not state.stats[0]:  # no request in the open window
            return None
        cfg = self.settings
        start = state.window * cfg.window
        hour = hour_of_day(start)
        x = state.features(hour)
        cluster, name = key.split("|", 1)
        group, role = peer_group(name)
        peer_key = f"{cluster}|{group}"
        peers = self.peers.get(peer_key)
        verdict = judge(state, peers, role, x, cfg)
        hx = hst_input(x)
        pop = 0.0
        young = state.n < cfg.warmup and cfg.population_threshold is not None
        if verdict.level is not None or young:  # scored only when it is used (evidence)
            pop = float(self.hst.score_one(hx))  # type: ignore[no-untyped-call]
        if not self.hst.trees:
            plant_trees(self.hst)
        self.hst.learn_one(hx)  # type: ignore[no-untyped-call]
        self.windows_scored += 1
        if (
            verdict.level is None
            and young
            and cfg.population_threshold is not None
            and pop >= cfg.population_threshold
        ):
            verdict = Verdict("low", "population", verdict.total, verdict.zs, 0, "warm-up")
        alert = None
        if verdict.level is not None:
            ref = peers if verdict.basis == "peers" and peers is not None else state
            alert = self._alert(key, state, ref, x, verdict, pop, start, group)
        state.learn(x, hour, cfg.alpha)
        if peers is None:
            peers = self.peers[peer_key] = Baseline()
        peers.fold(x, cfg.peer_alpha)
        self.peers_dirty.add(peer_key)
        return alert

    def _alert(
        self,
        key: str,
        state: PrincipalState,
        ref: Baseline,
        x: list[float],
        verdict: Verdict,
        pop: float,
        start: float,
        group: str,
    ) -> dict[str, Any]:
        context = principal_context(key, state.last_event())
        name = context["user"]["username"]
        window = self.settings.window
        zs = verdict.zs
        firsts = acts_words(verdict.firsts)
        reasons = [f"first {a}" for a in firsts]
        reasons += [describe(ref, x, i, window) for i, z in zs[:3] if z >= 2.0]
        against = _BASIS_WORDS.get(verdict.basis, f"against the {verdict.basis} model")
        if verdict.basis == "peers":
            against += f" ({group})"
        what = "first sensitive action" if firsts else "unusual activity"
        evidence = {
            "score": round(verdict.total, 2),
            "population_score": round(pop, 3),
            "basis": verdict.basis,
            "peer_group": group,
            "first_time": firsts,
            "capped": verdict.capped or None,
            "window": {"start": iso(start), "end": iso(start + window), "seconds": window},
            "features": {f[0]: v for f, v in zip(FEATURES, x, strict=True)},
            "usual": {f[0]: round(usual(ref, x, i), 2) for i, f in enumerate(FEATURES)},
            "top": [
                {
                    "feature": FEATURES[i][0],
                    "kind": FEATURES[i][2],
                    "z": round(z, 1),
                    "why": describe(ref, x, i, window),
                }
                for i, z in zs[:5]
            ],
            "windows_learnt": state.n,
        }
        summary = f"{name}: {what} {against} (score {verdict.total:.1f}): " + "; ".join(reasons)
        alert = make_alert(
            ANOMALY_DETECTOR,
            stable_id(ANOMALY_DETECTOR.id, key, str(state.window)),
            summary,
            context,
            evidence,
            start + window,
        )
        level = verdict.level or "low"
        alert["severity"] = level
        alert["rule"]["level"] = level
        return alert

    # -- checkpoints -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything as one JSON value (principals in LRU order, peers, then the HST)."""
        return {
            "v": STATE_VERSION,
            "principals": [[k, s.to_json()] for k, s in self.principals.items()],
            "peers": [[k, b.to_json()] for k, b in sorted(self.peers.items())],
            "hst": hst_to_json(self.hst),
        }

    @classmethod
    def from_json(cls, value: Any, settings: AnomalySettings = AnomalySettings()) -> AnomalyModel:
        """Restore a model saved by :meth:`to_json` (a v1 model: principals migrated, no
        peers yet, a fresh HST)."""
        version = value.get("v") if isinstance(value, dict) else None
        if version not in (1, STATE_VERSION):
            raise StateFormatError("not a Klaxon anomaly model checkpoint")
        assert isinstance(value, dict)
        model = cls(settings)
        for key, state in value.get("principals", []):
            model.principals[str(key)] = PrincipalState.from_json(state)
        for key, peer in value.get("peers", []):
            model.peers[str(key)] = Baseline.from_json(peer)
        if version == STATE_VERSION:
            model.hst = hst_from_json(value.get("hst"), settings)
        return model

    def observe_all(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Convenience: observe many events, return all alerts."""
        out: list[dict[str, Any]] = []
        for e in events:
            out.extend(self.observe(e))
        return out
