"""Online behaviour anomalies per principal: window features, robust baselines, river HST.

Every event updates a small accumulator of its principal (``cluster|user.username``, the same
key as the events topic, so the state is co-partitioned). Windows are tumbling, aligned to
the epoch, ``window`` seconds of event time. When a window closes (the principal's next event
falls in a later window, or :meth:`AnomalyModel.advance` passes its end plus ``lateness``),
its feature vector is scored **once** against

* the principal's own baseline: per feature an exponentially weighted mean and mean absolute
  deviation; ``z = (x - mean) / (deviation + floor)``. Only increases count (a quiet hour is
  not an attack). The window score is the root of the sum of squared positive z's, with
  novelty features (new user agent, new source network, unusual hour) capped so that novelty
  alone cannot alert. Updates are winsorised (x clipped to mean + 3 scales), so one burst does
  not teach the baseline that bursts are normal, while a lasting change is learnt in time;
* a population model: one river ``HalfSpaceTrees`` (10 trees, height 8, fixed limits on
  ``log1p`` features) shared by all principals; its score is reported as evidence and can
  alert for principals still in warm-up (``population_threshold``).

Alerts carry the score and the top features in plain words ("reads of secrets 40x its usual
rate"). State is pickle-free: :meth:`PrincipalState.to_json` and :func:`hst_to_json` give JSON
values (the HST as its seed, parameters and node masses; trees are rebuilt from the seed).
Memory is bounded by ``max_principals`` (least recently active evicted).

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
>>> for part in alerts[0]["summary"].split("; "):
...     print(part)
sa: unusual activity (score 53.2): reads of secrets 40 in 1m, usually none
requests 8x its usual rate
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from detections.stateful.alerts import Detector, make_alert, stable_id
from detections.stateful.errors import StateFormatError
from detections.stateful.new_terms import ua_product
from detections.stateful.timeutil import event_time, hour_of_day, iso
from schemas.keys import principal_key

if TYPE_CHECKING:  # river (with scipy) takes about a second to import: only when a model is made
    from river.anomaly import HalfSpaceTrees

STATE_VERSION = 1

#: (name, plain words, kind) - kind: count | distinct | novelty
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", "count"),
    ("secret_reads", "reads of secrets", "count"),
    ("execs", "exec/attach/port-forward sessions", "count"),
    ("writes", "writes (create/update/patch/delete)", "count"),
    ("rbac_writes", "RBAC changes", "count"),
    ("denied", "refused (401/403) requests", "count"),
    ("namespaces", "distinct namespaces", "distinct"),
    ("resources", "distinct resource types", "distinct"),
    ("new_agents", "new user agents", "novelty"),
    ("new_networks", "new source networks", "novelty"),
    ("odd_hour", "activity at an unusual hour", "novelty"),
)
N_FEATURES = len(FEATURES)
_FLOOR = {"count": 1.0, "distinct": 0.5, "novelty": 0.25}
_NOVELTY_CAP = 3.0  # a novelty feature contributes at most this z: novelty alone never alerts
_WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_READS = frozenset({"get", "list", "watch"})
_RBAC = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
_SESSIONS = frozenset({"exec", "attach", "portforward"})
_MAX_DISTINCT = 64  # per window
_EMPTY: frozenset[Any] = frozenset()  # shared by every empty accumulator set (saves memory)
_MAX_AGENTS = 8  # remembered per principal
_MAX_NETWORKS = 16
ANOMALY_DETECTOR = Detector(
    id="0f6b7c1e-2d3a-5b4c-9e8f-a1b2c3d4e5f6",
    title="Unusual behaviour for this identity",
    kind="anomaly",
    level="medium",
    tags=("attack.discovery", "attack.credential-access", "attack.t1078", "attack.t1613"),
    description=(
        "The identity's activity in one window departs strongly from its own history "
        "(online robust baselines per identity plus a population Half-Space-Trees model)."
    ),
    source="detections/stateful/anomaly.py",
)


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Model parameters (times in event-time seconds)."""

    window: float = 300.0
    lateness: float = 30.0
    warmup: int = 12  # windows a principal needs before its own baseline may alert
    alpha: float = 0.05  # EW weight of a new window
    threshold: float = 6.0  # alert when the window score reaches this
    min_excess: float = 5.0  # ...and the top count feature exceeds its mean by this much
    population_threshold: float | None = None  # HST score alerting warm-up principals
    max_principals: int = 100_000
    hst_trees: int = 10
    hst_height: int = 8
    hst_window: int = 250
    seed: int = 42


def _h(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _network(ip: str) -> str:
    if ":" in ip:
        return ":".join(ip.split(":")[:4])
    return ip.rsplit(".", 1)[0]


class PrincipalState:
    """One principal: its open window's accumulator and its baseline (compact arrays)."""

    __slots__ = (
        "agents",
        "counts",
        "dev",
        "hours",
        "last",
        "late",
        "mean",
        "n",
        "networks",
        "new_agents",
        "new_networks",
        "res",
        "spaces",
        "window",
    )

    def __init__(self) -> None:
        self.window: int = -1  # index of the open window (time // window)
        self.counts = array("d", bytes(8 * 6))  # the six count features
        self.spaces: set[str] = _EMPTY  # type: ignore[assignment]
        self.res: set[str] = _EMPTY  # type: ignore[assignment]
        self.new_agents: set[int] = _EMPTY  # type: ignore[assignment]
        self.new_networks: set[int] = _EMPTY  # type: ignore[assignment]
        self.last: tuple[str, str, str, str] = ("", "", "", "")  # auditID, stage, ip, agent
        self.n = 0  # windows learnt
        self.mean = array("d", bytes(8 * N_FEATURES))
        self.dev = array("d", bytes(8 * N_FEATURES))
        self.hours = 0  # bit h set: active in hour h (UTC) in some learnt window
        self.agents = array("I")
        self.networks = array("I")
        self.late = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON value holding everything (the open window included)."""
        return {
            "v": STATE_VERSION,
            "window": self.window,
            "counts": list(self.counts),
            "spaces": sorted(self.spaces),
            "res": sorted(self.res),
            "new_agents": sorted(self.new_agents),
            "new_networks": sorted(self.new_networks),
            "last": list(self.last),
            "n": self.n,
            "mean": list(self.mean),
            "dev": list(self.dev),
            "hours": self.hours,
            "agents": list(self.agents),
            "networks": list(self.networks),
            "late": self.late,
        }

    @classmethod
    def from_json(cls, value: Any) -> PrincipalState:
        """Rebuild from :meth:`to_json`; raises :class:`StateFormatError`."""
        if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
            raise StateFormatError(f"not a v{STATE_VERSION} principal state: {value!r:.80}")
        try:
            s = cls()
            s.window = int(value["window"])
            s.counts = array("d", value["counts"])
            s.spaces = set(value["spaces"]) or _EMPTY  # type: ignore[assignment]
            s.res = set(value["res"]) or _EMPTY  # type: ignore[assignment]
            s.new_agents = set(value["new_agents"]) or _EMPTY  # type: ignore[assignment]
            s.new_networks = set(value["new_networks"]) or _EMPTY  # type: ignore[assignment]
            a, b, c, d = (str(v) for v in value["last"])
            s.last = (a, b, c, d)
            s.n = int(value["n"])
            s.mean = array("d", value["mean"])
            s.dev = array("d", value["dev"])
            s.hours = int(value["hours"])
            s.agents = array("I", value["agents"])
            s.networks = array("I", value["networks"])
            s.late = int(value["late"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise StateFormatError(f"bad principal state: {exc}") from exc
        if len(s.mean) != N_FEATURES or len(s.dev) != N_FEATURES or len(s.counts) != 6:
            raise StateFormatError("principal state has the wrong number of features")
        return s

    def add(self, event: dict[str, Any]) -> None:
        """Account one event to the open window."""
        c = self.counts
        c[0] += 1
        verb = event.get("verb")
        ref = event.get("objectRef")
        resource = sub = ns = None
        if ref.__class__ is dict:
            resource = ref.get("resource")
            sub = ref.get("subresource")
            ns = ref.get("namespace")
        if resource == "secrets" and verb in _READS:
            c[1] += 1
        elif resource == "pods" and sub in _SESSIONS:
            c[2] += 1
        if verb in _WRITES:
            c[3] += 1
            if resource in _RBAC:
                c[4] += 1
        status = event.get("responseStatus")
        if status.__class__ is dict and status.get("code") in (401, 403):
            c[5] += 1
        if ns.__class__ is str and len(self.spaces) < _MAX_DISTINCT:
            if self.spaces is _EMPTY:
                self.spaces = set()
            self.spaces.add(ns)
        if resource.__class__ is str and len(self.res) < _MAX_DISTINCT:
            if self.res is _EMPTY:
                self.res = set()
            self.res.add(resource)
        self._note_origin(event)

    def _note_origin(self, event: dict[str, Any]) -> None:
        """Account the event's user agent and source network; remember it as the last one."""
        agent = event.get("userAgent")
        agent_s = ""
        if agent.__class__ is str:
            agent_s = agent
            ah = _h(ua_product(agent))
            if ah not in self.agents and len(self.new_agents) < _MAX_DISTINCT:
                if self.new_agents is _EMPTY:
                    self.new_agents = set()
                self.new_agents.add(ah)
        ips = event.get("sourceIPs")
        ip = ""
        if ips.__class__ is list and ips and ips[0].__class__ is str:
            ip = ips[0]
            nh = _h(_network(ip))
            if nh not in self.networks and len(self.new_networks) < _MAX_DISTINCT:
                if self.new_networks is _EMPTY:
                    self.new_networks = set()
                self.new_networks.add(nh)
        self.last = (str(event.get("auditID") or ""), str(event.get("stage") or ""), ip, agent_s)

    def features(self, hour: int) -> list[float]:
        """The open window's feature vector (order of :data:`FEATURES`)."""
        odd = 1.0 if self.n and not (self.hours >> hour) & 1 else 0.0
        known = self.n > 0
        return [
            *self.counts,
            float(len(self.spaces)),
            float(len(self.res)),
            float(len(self.new_agents)) if known else 0.0,
            float(len(self.new_networks)) if known else 0.0,
            odd,
        ]

    def learn(self, x: list[float], hour: int, alpha: float) -> None:
        """Fold a closed window into the baseline and reset the accumulator."""
        if self.n == 0:
            for i, v in enumerate(x):
                self.mean[i] = v
        else:
            a = max(alpha, 1.0 / (self.n + 1))  # plain average while young
            for i, v in enumerate(x):
                kind = FEATURES[i][2]
                scale = self.dev[i] + _FLOOR[kind]
                clipped = min(v, self.mean[i] + 3 * scale)
                d = clipped - self.mean[i]
                self.mean[i] += a * d
                self.dev[i] += a * (abs(d) - self.dev[i])
        self.n += 1
        self.hours |= 1 << hour
        for ah in self.new_agents:
            _remember(self.agents, ah, _MAX_AGENTS)
        for nh in self.new_networks:
            _remember(self.networks, nh, _MAX_NETWORKS)
        for i in range(6):
            self.counts[i] = 0.0
        self.spaces = _EMPTY  # type: ignore[assignment]
        self.res = _EMPTY  # type: ignore[assignment]
        self.new_agents = _EMPTY  # type: ignore[assignment]
        self.new_networks = _EMPTY  # type: ignore[assignment]


def _remember(known: array[int], value: int, cap: int) -> None:
    if value in known:
        return
    known.append(value)
    if len(known) > cap:
        known.pop(0)


def score(state: PrincipalState, x: list[float]) -> tuple[float, list[tuple[int, float]]]:
    """Window score and the positive per-feature z's, largest first (pure).

    >>> s = PrincipalState(); s.n = 20; s.mean[1] = 1.0; s.dev[1] = 0.5
    >>> x = [0.0] * N_FEATURES; x[1] = 31.0
    >>> total, top = score(s, x)
    >>> round(total, 1), [(FEATURES[i][0], round(z, 1)) for i, z in top]
    (20.0, [('secret_reads', 20.0)])
    """
    zs: list[tuple[int, float]] = []
    for i, v in enumerate(x):
        kind = FEATURES[i][2]
        z = (v - state.mean[i]) / (state.dev[i] + _FLOOR[kind])
        if z > 0:
            zs.append((i, min(z, _NOVELTY_CAP) if kind == "novelty" else z))
    zs.sort(key=lambda p: -p[1])
    return math.sqrt(sum(z * z for _, z in zs)), zs


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


def describe(state: PrincipalState, x: list[float], i: int, window: float) -> str:
    """Plain words for one feature's departure ("reads of secrets 40x its usual rate").

    >>> s = PrincipalState(); s.mean[1] = 1.0
    >>> x = [0.0] * N_FEATURES; x[1] = 40.0
    >>> describe(s, x, 1, 300), describe(s, x, 0, 300)
    ('reads of secrets 40x its usual rate', 'requests 0 in 5m, usually none')
    """
    name, words, kind = FEATURES[i]
    if kind == "novelty":
        if name == "odd_hour":
            return words
        return f"{int(x[i])} {words}"
    usual = state.mean[i]
    span = _span(window)
    if usual < 0.05:
        return f"{words} {_num(x[i])} in {span}, usually none"
    ratio = x[i] / usual
    if ratio >= 2:
        return f"{words} {ratio:.0f}x its usual rate"
    return f"{words} {_num(x[i])} in {span}, usually {_num(usual)}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# -- population model (river HalfSpaceTrees) -----------------------------------------------------

_LIMIT = math.log1p(10_000.0)


def new_hst(settings: AnomalySettings) -> HalfSpaceTrees:
    """The shared HST with fixed limits on log1p features (no scaler: measured 25 µs/call)."""
    from river.anomaly import HalfSpaceTrees

    return HalfSpaceTrees(
        n_trees=settings.hst_trees,
        height=settings.hst_height,
        window_size=settings.hst_window,
        limits={f[0]: (0.0, _LIMIT) for f in FEATURES},
        seed=settings.seed,
    )


def hst_input(x: list[float]) -> dict[str, float]:
    """Feature dict for the HST (log1p, clipped to the fixed limits)."""
    return {f[0]: min(math.log1p(max(v, 0.0)), _LIMIT) for f, v in zip(FEATURES, x, strict=True)}


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


class AnomalyModel:
    """Per-principal states (LRU-bounded) plus the shared HST; feed it every event."""

    def __init__(self, settings: AnomalySettings = AnomalySettings()) -> None:
        self.settings = settings
        self.principals: OrderedDict[str, PrincipalState] = OrderedDict()
        self.hst = new_hst(settings)
        self.evicted = 0
        self.late = 0
        self.windows_scored = 0

    def observe(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Account one event; returns alerts for windows this event closed."""
        t = event_time(event)
        user = event.get("user")
        name = user.get("username") if user.__class__ is dict else None
        if t is None or name.__class__ is not str:
            return []
        key = principal_key(event)
        w = int(t // self.settings.window)
        principals = self.principals
        state = principals.get(key)
        alerts: list[dict[str, Any]] = []
        if state is None:
            state = PrincipalState()
            state.window = w
            principals[key] = state
            if len(principals) > self.settings.max_principals:
                principals.popitem(last=False)
                self.evicted += 1
        else:
            principals.move_to_end(key)
            if w > state.window:
                alert = self._close(key, state)
                if alert is not None:
                    alerts.append(alert)
                state.window = w
            elif w < state.window:
                state.late += 1
                self.late += 1
                return alerts
        state.add(event)
        return alerts

    def advance(self, now: float) -> list[dict[str, Any]]:
        """Close every open window that ended before ``now - lateness`` (event time)."""
        limit = now - self.settings.lateness
        alerts = []
        for key, state in self.principals.items():
            if state.counts[0] and (state.window + 1) * self.settings.window <= limit:
                alert = self._close(key, state)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _close(self, key: str, state: PrincipalState) -> dict[str, Any] | None:
        if not state.counts[0]:
            return None
        cfg = self.settings
        start = state.window * cfg.window
        hour = hour_of_day(start)
        x = state.features(hour)
        total, zs = score(state, x)
        hx = hst_input(x)
        pop = float(self.hst.score_one(hx))  # type: ignore[no-untyped-call]
        self.hst.learn_one(hx)  # type: ignore[no-untyped-call]
        self.windows_scored += 1
        alert = None
        top_count = next((i for i, _ in zs if FEATURES[i][2] != "novelty"), None)
        excess = x[top_count] - state.mean[top_count] if top_count is not None else 0.0
        warm = state.n >= cfg.warmup
        if warm and total >= cfg.threshold and excess >= cfg.min_excess:
            alert = self._alert(key, state, x, total, zs, pop, start, "baseline")
        elif not warm and cfg.population_threshold is not None and pop >= cfg.population_threshold:
            alert = self._alert(key, state, x, total, zs, pop, start, "population")
        state.learn(x, hour, cfg.alpha)
        return alert

    def _alert(
        self,
        key: str,
        state: PrincipalState,
        x: list[float],
        total: float,
        zs: list[tuple[int, float]],
        pop: float,
        start: float,
        basis: str,
    ) -> dict[str, Any]:
        context = principal_context(key, state.last)
        name = context["user"]["username"]
        window = self.settings.window
        reasons = [describe(state, x, i, window) for i, z in zs[:3] if z >= 2.0]
        evidence = {
            "score": round(total, 2),
            "population_score": round(pop, 3),
            "basis": basis,
            "window": {"start": iso(start), "end": iso(start + window), "seconds": window},
            "features": {f[0]: v for f, v in zip(FEATURES, x, strict=True)},
            "usual": {f[0]: round(m, 2) for f, m in zip(FEATURES, state.mean, strict=True)},
            "top": [
                {"feature": FEATURES[i][0], "z": round(z, 1), "why": describe(state, x, i, window)}
                for i, z in zs[:5]
            ],
            "windows_learnt": state.n,
        }
        summary = f"{name}: unusual activity (score {total:.1f}): " + "; ".join(reasons)
        return make_alert(
            ANOMALY_DETECTOR,
            stable_id(ANOMALY_DETECTOR.id, key, str(state.window)),
            summary,
            context,
            evidence,
            start + window,
        )

    # -- checkpoints -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything as one JSON value (principals in LRU order, then the HST)."""
        return {
            "v": STATE_VERSION,
            "principals": [[k, s.to_json()] for k, s in self.principals.items()],
            "hst": hst_to_json(self.hst),
        }

    @classmethod
    def from_json(cls, value: Any, settings: AnomalySettings = AnomalySettings()) -> AnomalyModel:
        """Restore a model saved by :meth:`to_json`."""
        if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
            raise StateFormatError("not a Klaxon anomaly model checkpoint")
        model = cls(settings)
        for key, state in value.get("principals", []):
            model.principals[str(key)] = PrincipalState.from_json(state)
        model.hst = hst_from_json(value.get("hst"), settings)
        return model

    def observe_all(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Convenience: observe many events, return all alerts."""
        out: list[dict[str, Any]] = []
        for e in events:
            out.extend(self.observe(e))
        return out
