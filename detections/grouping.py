"""Alert grouping and suppression: many matches of one rule on one key become one alert.

Pure and synchronous (no Kafka; the wall clock only comes in as an argument, to tell a
silent partition): the worker (`pipeline.agents`, `pipeline.tables`) and the offline replay
(`klaxon.offline`) feed it the same alert dicts in the same order and get the same output.

**Keys.** Every rule match already carries a *group of one* (`group_block`, called by
`detections.alert.to_alert`): ``group.id = uuid5(<rule id>|<key>|<window index>)``, where the
key is ``<cluster>|<JSON list of the group-by values>`` and the window index is
⌊event time / window⌋ (event time, tumbling windows; never the wall clock). What the key is
made of comes from the rule's ``klaxon.group.by`` or, by default, from its kind
(`default_group_by`): rules about pod specs group by **workload** (`workload_owner`: the
Deployment, DaemonSet, StatefulSet, Job or CronJob behind a pod or ReplicaSet, so replicas
and the workload itself fold into one); every other rule by **principal**, namespace and
resource (ten deleted events by one user are one group). ``source_ip`` and ``object`` are
there for overrides.

**Emission** (`Grouper.add`): the first alert of a group goes out at once (``update: 0``);
later matches only count (``count``, ``last_seen``, ``event_ids`` capped at
`MAX_EVENT_IDS`), and an update goes out when the count reaches a threshold (`THRESHOLDS`:
10, 100, 1000, …) and once more when the window closes with a count not yet reported
(``update`` 1, 2, …). A window closes ``lateness`` behind the watermark: the oldest newest
event time among the sources (events partitions) heard from within ``idle_grace`` wall
seconds. Every alert of a group has the id ``uuid5(<group id>|<update>)`` (`update_id`),
whichever match opened the group. A flood of N matches on one key therefore costs
1 + ⌊log10 N⌋ + 1 alerts at most.

**Folding.** Rules that fire together on one event describe one finding: a new group whose
rule is less severe than the event's most severe match is folded into that match's group
and listed in its ``group.related`` (rule, group id, count) instead of being sent; equally
severe matches are all sent. **Rate limit**: at most ``rule_limit`` groups of one rule are
opened per window; beyond it matches are counted in the rule's overflow group (key
``<cluster>|#rate-limit``), which is sent and updated like any group. Nothing is dropped
without being counted in an alert that is sent.

**Incidents.** Every alert with a principal gets ``incident``: one id per principal and
chain of alerts no further apart than ``incident_gap`` seconds (event time), derived from
the chain's first alert, so correlation and rule alerts of one attack chain stack. The
principal is that of the match the alert describes (an update describes the group's newest
match: a DaemonSet's group updated by the user who created it joins that user's incident,
even when the daemon-set controller's pod opened the group).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from detections.rule import GROUP_BY, Rule
from schemas.alert import SEVERITIES
from schemas.keys import DEFAULT_CLUSTER

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_EVENT_IDS",
    "THRESHOLDS",
    "GroupOptions",
    "Grouper",
    "default_group_by",
    "group_block",
    "group_id",
    "group_key",
    "update_id",
    "workload_owner",
]

#: Namespace of Klaxon's deterministic ids: uuid5(NAMESPACE_URL, "https://klaxon.dev/ns").
KLAXON_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://klaxon.dev/ns")
#: Default window of a group, in seconds (event time).
DEFAULT_WINDOW = 600
#: Event ids kept per group (the count goes on).
MAX_EVENT_IDS = 20
#: Counts at which an update is sent: 10, 100, ... (powers of ten up to 10^12).
THRESHOLDS = frozenset(10**k for k in range(1, 13))
#: Key name of a rule's overflow group (rate limit reached).
OVERFLOW = "#rate-limit"
_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
#: A group to send: (group id, whether it is the group's first alert).
_Due = tuple[str, bool]

#: Resources whose objects are (or make) pods: rules about them group by workload.
WORKLOAD_RESOURCES = frozenset(
    {"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs", "cronjobs"}
)
_KINDS = {
    "pods": "Pod",
    "deployments": "Deployment",
    "daemonsets": "DaemonSet",
    "statefulsets": "StatefulSet",
    "replicasets": "ReplicaSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
    "replicationcontrollers": "ReplicationController",
}
# Generated name suffixes (k8s.io/apimachinery rand.String alphabet, no vowels or 0/1/3).
_ALNUM = "[bcdfghjklmnpqrstvwxz2456789]"
_RS_POD = re.compile(rf"^(.+)-{_ALNUM}{{5,10}}-{_ALNUM}{{5}}$")  # <deploy>-<rs hash>-<pod>
_POD = re.compile(rf"^(.+)-{_ALNUM}{{5}}$")  # <ds|job|rs>-<pod>
_RS = re.compile(rf"^(.+)-{_ALNUM}{{5,10}}$")  # <deploy>-<pod-template-hash>
_STS_POD = re.compile(r"^(.+)-\d+$")  # <statefulset>-<ordinal>
_CRON_JOB = re.compile(r"^(.+)-\d{8,10}$")  # <cronjob>-<scheduled minute>


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _owner_of(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The controller ownerReference (kind, name) of an object's metadata, if any."""
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    owners = [r for r in refs if isinstance(r, dict) and r.get("kind") and r.get("name")]
    chosen = next((r for r in owners if r.get("controller") is True), owners[0] if owners else None)
    return (str(chosen["kind"]), str(chosen["name"])) if chosen else None


def _lift(kind: str, name: str) -> tuple[str, str]:
    """ReplicaSet ``<deploy>-<hash>`` -> Deployment, Job ``<cron>-<minute>`` -> CronJob."""
    if kind == "ReplicaSet" and (m := _RS.match(name)):
        return "Deployment", m.group(1)
    if kind == "Job" and (m := _CRON_JOB.match(name)):
        return "CronJob", m.group(1)
    return kind, name


def _pod_owner_by_name(name: str) -> tuple[str, str] | None:
    """A pod's workload from the controllers' naming conventions alone."""
    if m := _RS_POD.match(name):
        return "Deployment", m.group(1)
    if m := _POD.match(name):
        return _lift("Job", m.group(1)) if _CRON_JOB.match(m.group(1)) else ("Workload", m.group(1))
    if m := _STS_POD.match(name):
        return "StatefulSet", m.group(1)
    return None


def workload_owner(event: dict[str, Any]) -> str:
    """``<namespace>/<Kind>/<name>`` of the workload an event's object belongs to.

    Pods and ReplicaSets name their controller in ``ownerReferences`` (request or response
    object); a pod created from ``generateName`` (``node-metrics-agent-``) or named by a
    controller's convention (``web-7d9f8b6c5d-x2x4z``, ``db-0``) is traced by its name; a
    workload is its own owner; anything else is the object itself. DaemonSets, Jobs and
    ReplicaSets without a Deployment are all written ``Workload``: a pod's generated name
    cannot tell them apart, and the owner must be the same whichever way it was found.

    >>> pod = {"objectRef": {"resource": "pods", "namespace": "shop"},
    ...        "requestObject": {"metadata": {"generateName": "web-7d9f8b6c5d-"}}}
    >>> workload_owner(pod)
    'shop/Deployment/web'
    >>> workload_owner({"objectRef": {"resource": "pods", "namespace": "db", "name": "pg-1"}})
    'db/StatefulSet/pg'
    >>> workload_owner({"objectRef": {"resource": "daemonsets", "namespace": "k", "name": "x"}})
    'k/Workload/x'
    """
    ref = _dict(event.get("objectRef"))
    resource = str(ref.get("resource") or "")
    namespace = str(ref.get("namespace") or "")
    name = str(ref.get("name") or "")
    obj = _dict(event.get("requestObject")) or _dict(event.get("responseObject"))
    meta = _dict(obj.get("metadata"))
    name = name or str(meta.get("name") or "")
    namespace = namespace or str(meta.get("namespace") or "")
    found: tuple[str, str] | None = None
    if resource in ("pods", "replicasets", "jobs") and not ref.get("subresource"):
        owner = _owner_of(meta)
        if owner is not None:
            found = _lift(*owner)
    if found is None and resource == "pods":
        generated = meta.get("generateName")
        if isinstance(generated, str) and generated.endswith("-") and not name:
            base = generated[:-1]
            found = ("Deployment", m.group(1)) if (m := _RS.match(base)) else ("Workload", base)
        elif name:
            found = _pod_owner_by_name(name)
    if found is None and resource in _KINDS:
        found = _lift(_KINDS[resource], name)
    if found is None:
        found = (resource or "?", name)
    kind, owner_name = found
    if kind in ("DaemonSet", "Job", "ReplicaSet"):  # generateName and names cannot tell these
        kind = "Workload"
    return f"{namespace}/{kind}/{owner_name}"


def _uses_pod_spec(rule: Rule) -> bool:
    return any(
        fm.path.startswith("podSpec") or fm.path.startswith("requestObject.spec")
        for sel in rule.detection.values()
        for alt in sel.alternatives
        for fm in alt
    )


def default_group_by(rule: Rule) -> tuple[str, ...]:
    """The key of a rule's groups when it names none: workload for rules about pod specs,
    else principal, namespace and resource."""
    if rule.klaxon.group is not None and rule.klaxon.group.by:
        return rule.klaxon.group.by
    if _uses_pod_spec(rule):
        return ("workload",)
    return ("principal", "namespace", "resource")


def window_of(rule: Rule) -> int:
    """The rule's group window in seconds."""
    group = rule.klaxon.group
    return group.window if group is not None and group.window else DEFAULT_WINDOW


def _value(name: str, event: dict[str, Any]) -> str:
    ref = _dict(event.get("objectRef"))
    if name == "principal":
        return str(_dict(event.get("user")).get("username") or "")
    if name == "workload":
        return workload_owner(event)
    if name == "namespace":
        return str(ref.get("namespace") or "")
    if name == "resource":
        sub = ref.get("subresource")
        return f"{ref.get('resource') or ''}/{sub}" if sub else str(ref.get("resource") or "")
    if name == "object":
        return f"{ref.get('namespace') or ''}/{ref.get('resource') or ''}/{ref.get('name') or ''}"
    if name == "source_ip":
        ips = event.get("sourceIPs")
        return str(ips[0]) if isinstance(ips, list) and ips else ""
    raise ValueError(f"cannot group by {name!r}; expected one of {', '.join(GROUP_BY)}")


def group_key(by: Iterable[str], event: dict[str, Any]) -> str:
    """``<cluster>|<JSON list of the values>`` of the group-by names for one event.

    >>> group_key(("principal", "resource"), {"cluster": "c", "user": {"username": "u"},
    ...                                       "objectRef": {"resource": "events"}})
    'c|["u","events"]'
    """
    cluster = event.get("cluster")
    cluster = cluster if isinstance(cluster, str) and cluster else DEFAULT_CLUSTER
    values = [_value(n, event) for n in by]
    return f"{cluster}|{orjson.dumps(values).decode()}"


def group_id(rule_id: str, key: str, window_index: int) -> str:
    """The deterministic id of one group: uuid5 of rule id, key and window index."""
    return str(uuid.uuid5(KLAXON_NS, f"{rule_id}|{key}|{window_index}"))


def update_id(gid: str, update: int) -> str:
    """The id of a group's alert number ``update`` (0: the first): uuid5 of group id and it."""
    return str(uuid.uuid5(KLAXON_NS, f"{gid}|{update}"))


def epoch(text: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time (None when absent or unparsable).

    >>> epoch("1970-01-01T00:01:00.5Z"), epoch("soon")
    (60.5, None)
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def group_block(rule: Rule, event: dict[str, Any], when: str | None) -> dict[str, Any]:
    """The ``group`` of a single match (a group of one), as `detections.alert.to_alert` adds it."""
    key = group_key(default_group_by(rule), event)
    t = epoch(when)
    index = int(t // window_of(rule)) if t is not None else 0
    audit_id = str(event.get("auditID") or "")
    return {
        "id": group_id(rule.id, key, index),
        "key": key,
        "count": 1,
        "first_seen": when,
        "last_seen": when,
        "event_ids": [audit_id] if audit_id else [],
        "update": 0,
    }


@dataclass(frozen=True)
class GroupOptions:
    """How the `Grouper` folds and limits (the worker's ``KLAXON_GROUP*`` settings)."""

    enabled: bool = True
    rule_limit: int = 100  # groups opened per rule and window before the overflow group
    incident_gap: float = 3600.0  # event seconds between two alerts of one incident
    lateness: float = 120.0  # a window closes this far behind the watermark
    idle_grace: float = 60.0  # wall seconds after which a silent source stops holding it


@dataclass
class _Group:
    """One open group: the last alert sent or counted, and what has been reported."""

    doc: dict[str, Any]  # the newest alert of the group (updates are built from it)
    rule_id: str
    closes: float  # event time at which the window is judged
    count: int = 1
    first_seen: Any = None
    last_seen: Any = None
    event_ids: list[str] = field(default_factory=list)
    update: int = 0
    reported: int = 1  # count at the last alert sent
    lead: str | None = None  # folded into this group id (never sent itself)
    related: dict[str, str] = field(default_factory=dict)  # folded group id -> rule title
    related_reported: int = 0


class Grouper:
    """Folds alert dicts into groups; `add` and `close` return the alerts to send now."""

    def __init__(
        self, options: GroupOptions | None = None, windows: Mapping[str, int] | None = None
    ) -> None:
        self.options = options or GroupOptions()
        self.windows: dict[str, int] = dict(windows or {})
        self.groups: dict[str, _Group] = {}
        self.opened: dict[tuple[str, int], int] = {}  # (rule id, window index) -> groups
        self.incidents: dict[str, tuple[str, float]] = {}  # principal -> (id, last time)
        #: Event time up to which every source has been read, less nothing: windows close
        #: ``lateness`` behind it. Never goes back.
        self.watermark = float("-inf")
        self.sources: dict[Any, tuple[float, float]] = {}  # source -> (newest time, wall seen)
        self.stats: dict[str, int] = {
            "matches": 0,
            "groups": 0,
            "sent": 0,
            "updates": 0,
            "folded": 0,
            "overflow": 0,
        }

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """The group windows of the current rules (hot reload keeps the open groups)."""
        self.windows = {r.id: window_of(r) for r in rules}

    # -- input ------------------------------------------------------------------------------

    def add(
        self,
        alerts: list[dict[str, Any]],
        latest: Any = None,
        *,
        source: Any = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """The alerts of one message, in order: what to send now (then closed windows).

        ``latest``: the newest event time of the message (RFC 3339), matched or not, read
        from ``source`` (the events partition) at wall time ``now``. The watermark is the
        oldest newest-time among the sources heard from within ``idle_grace`` wall seconds,
        so a partition read ahead of another never closes the other's windows early.
        Without ``latest`` no window closes (only `close` and `advance` close them)."""
        t = epoch(latest)
        if t is not None:
            old = self.sources.get(source)
            newest = t if old is None else max(old[0], t)
            self.sources[source] = (newest, now if now is not None else 0.0)
            self._move(now)
        if not self.options.enabled:
            return [self._incident(a) for a in alerts]
        out: list[dict[str, Any]] = []
        for event_alerts in _by_event(alerts):
            out += self._event(event_alerts)
        if t is None:
            return out
        return out + self.close(self.watermark - self.options.lateness)

    def _move(self, now: float | None) -> None:
        grace = self.options.idle_grace
        live = [t for t, seen in self.sources.values() if now is None or now - seen < grace]
        if live:
            self.watermark = max(self.watermark, min(live))

    def _event(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        grouped = sorted(  # most severe first: it leads the event's finding
            (a for a in alerts if isinstance(a.get("group"), dict)),
            key=lambda a: -_RANK.get(str(a.get("severity")), 0),
        )
        out += [self._incident(a) for a in alerts if not isinstance(a.get("group"), dict)]
        if not grouped:
            return out
        top = max(_RANK.get(str(a.get("severity")), 0) for a in grouped)
        lead: str | None = None
        due: list[_Due] = []
        for alert in grouped:
            t = epoch(alert.get("event_time"))
            self.stats["matches"] += 1
            gid = str(alert["group"]["id"])
            rank = _RANK.get(str(alert.get("severity")), 0)
            fold_into = lead if rank < top else None
            due += self._match(alert, gid, t, fold_into)
            if lead is None and rank == top:
                lead = self._root(self._landed(gid, alert))
        # sent once the whole event is counted, so a lead lists what was folded into it
        once: dict[str, bool] = {}  # each group once (as its first alert if it is one)
        for g, first in due:
            once[g] = once.get(g, False) or first
        return out + [self._send(self.groups[g], g, first=f) for g, f in once.items()]

    def _landed(self, gid: str, alert: dict[str, Any]) -> str:
        """The group a match ended in (its own, or its rule's overflow group)."""
        return gid if gid in self.groups else self._overflow_id(alert)

    def _root(self, gid: str) -> str:
        group = self.groups.get(gid)
        while group is not None and group.lead is not None:
            gid = group.lead
            group = self.groups.get(gid)
        return gid

    def _match(
        self, alert: dict[str, Any], gid: str, t: float | None, fold_into: str | None
    ) -> list[_Due]:
        group = self.groups.get(gid)
        if group is not None:
            return self._count(group, gid, alert)
        rule_id = str((alert.get("rule") or {}).get("id") or "")
        window = self.windows.get(rule_id, DEFAULT_WINDOW)
        index = int(t // window) if t is not None else 0
        if fold_into is not None and fold_into in self.groups:
            self._open(gid, alert, window, index, lead=fold_into)
            self.groups[fold_into].related[gid] = str((alert.get("rule") or {}).get("title"))
            self.stats["folded"] += 1
            return []
        opened = self.opened.get((rule_id, index), 0)
        if opened >= self.options.rule_limit:
            self.stats["overflow"] += 1
            return self._overflow(alert, window, index)
        self.opened[(rule_id, index)] = opened + 1
        self._open(gid, alert, window, index)
        return [(gid, True)]

    def _open(
        self, gid: str, alert: dict[str, Any], window: int, index: int, lead: str | None = None
    ) -> _Group:
        block = alert["group"]
        group = _Group(
            doc=alert,
            rule_id=str((alert.get("rule") or {}).get("id") or ""),
            closes=(index + 1) * window,
            first_seen=block.get("first_seen"),
            last_seen=block.get("last_seen"),
            event_ids=list(block.get("event_ids") or [])[:MAX_EVENT_IDS],
            lead=lead,
        )
        self.groups[gid] = group
        return group

    def _count(self, group: _Group, gid: str, alert: dict[str, Any]) -> list[_Due]:
        block = alert["group"]
        group.count += int(block.get("count") or 1)
        group.doc = alert
        group.last_seen = block.get("last_seen") or group.last_seen
        room = MAX_EVENT_IDS - len(group.event_ids)
        if room > 0:
            group.event_ids += [e for e in block.get("event_ids") or [] if e][:room]
        if group.count in THRESHOLDS:  # a folded group that keeps firing updates its lead
            return [(gid if group.lead is None else self._root(gid), False)]
        return []

    def _overflow_id(self, alert: dict[str, Any]) -> str:
        block = alert["group"]
        cluster = str(block.get("key", "")).split("|", 1)[0] or DEFAULT_CLUSTER
        rule_id = str((alert.get("rule") or {}).get("id") or "")
        t = epoch(alert.get("event_time"))
        window = self.windows.get(rule_id, DEFAULT_WINDOW)
        return group_id(rule_id, f"{cluster}|{OVERFLOW}", int(t // window) if t else 0)

    def _overflow(self, alert: dict[str, Any], window: int, index: int) -> list[_Due]:
        """Count a match over the rule's limit in the rule's overflow group."""
        gid = self._overflow_id(alert)
        cluster = str(alert["group"].get("key", "")).split("|", 1)[0] or DEFAULT_CLUSTER
        title = str((alert.get("rule") or {}).get("title") or "")
        doc = {
            **alert,
            "summary": f"rate limit: more than {self.options.rule_limit} groups of "
            f"'{title}' in {window}s; counted here",
            "group": {**alert["group"], "id": gid, "key": f"{cluster}|{OVERFLOW}"},
        }
        group = self.groups.get(gid)
        if group is not None:
            return self._count(group, gid, doc)
        self._open(gid, doc, window, index)
        return [(gid, True)]

    # -- output -----------------------------------------------------------------------------

    def _related(self, group: _Group) -> list[dict[str, Any]]:
        out = []
        for gid, title in group.related.items():
            folded = self.groups.get(gid)
            count = folded.count if folded is not None else 1
            rule_id = folded.rule_id if folded is not None else ""
            out.append({"group": gid, "rule": rule_id, "title": title, "count": count})
        return out

    def _related_total(self, group: _Group) -> int:
        return sum(g.count for gid in group.related if (g := self.groups.get(gid)) is not None)

    def _send(self, group: _Group, gid: str, *, first: bool = False) -> dict[str, Any]:
        doc = dict(group.doc)
        if first:
            self.stats["groups"] += 1
        else:
            group.update += 1
            self.stats["updates"] += 1
        # not the match's id: which match opens a group spanning partitions depends on timing
        doc["id"] = update_id(gid, group.update)
        block: dict[str, Any] = {
            "id": gid,
            "key": doc["group"]["key"],
            "count": group.count,
            "first_seen": group.first_seen,
            "last_seen": group.last_seen,
            "event_ids": list(group.event_ids),
            "update": group.update,
        }
        related = self._related(group)
        if related:
            block["related"] = related
        doc["group"] = block
        incident = self._incident_of(doc)  # of the principal of the match it describes
        if incident is not None:
            doc["incident"] = incident
        group.reported = group.count
        group.related_reported = self._related_total(group)
        self.stats["sent"] += 1
        return doc

    def close(self, watermark: float | None = None) -> list[dict[str, Any]]:
        """Judge every group whose window closed by ``watermark`` (event time; None: all):
        a last update when its count (or a folded group's) grew since the last one sent."""
        due = [gid for gid, g in self.groups.items() if watermark is None or g.closes <= watermark]
        if not due:
            return []
        out: list[dict[str, Any]] = []
        for gid in sorted(due, key=lambda k: (self.groups[k].closes, k)):
            group = self.groups[gid]
            if group.lead is not None:
                continue
            if group.count > group.reported or self._related_total(group) > group.related_reported:
                out.append(self._send(group, gid))
        for gid in due:
            del self.groups[gid]
        for group in self.groups.values():  # its lead closed first (a shorter window)
            if group.lead is not None and group.lead not in self.groups:
                group.lead, group.reported = None, group.count
        if watermark is None:
            self.opened.clear()
            self.incidents.clear()
        else:
            gap = self.options.incident_gap
            self.incidents = {p: i for p, i in self.incidents.items() if i[1] + gap > watermark}
            self.opened = {
                k: v
                for k, v in self.opened.items()
                if (k[1] + 1) * self.windows.get(k[0], DEFAULT_WINDOW) > watermark
            }
        return out

    def advance(self, seconds: float) -> list[dict[str, Any]]:
        """Move the watermark on by ``seconds`` (an idle worker's clock) and close windows."""
        if self.watermark == float("-inf"):
            if not self.sources:
                return []
            self.watermark = max(t for t, _ in self.sources.values())
        self.watermark += seconds
        return self.close(self.watermark - self.options.lateness)

    # -- incidents --------------------------------------------------------------------------

    def _incident_of(self, alert: dict[str, Any]) -> str | None:
        name = (alert.get("user") or {}).get("username")
        if not name:
            return None
        principal = f"{alert.get('cluster') or DEFAULT_CLUSTER}|{name}"
        t = epoch(alert.get("event_time"))
        t = t if t is not None else self.watermark
        known = self.incidents.get(principal)
        if known is not None and t <= known[1] + self.options.incident_gap:
            self.incidents[principal] = (known[0], max(known[1], t))
            return known[0]
        first = alert.get("audit_id") or alert.get("id")
        incident = str(uuid.uuid5(KLAXON_NS, f"incident|{principal}|{first}"))
        self.incidents[principal] = (incident, t)
        return incident

    def _incident(self, alert: dict[str, Any]) -> dict[str, Any]:
        incident = self._incident_of(alert)
        self.stats["sent"] += 1
        return alert if incident is None else {**alert, "incident": incident}


def _by_event(alerts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Alerts of one (auditID, stage) together, in the order of their first alert."""
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for alert in alerts:
        out.setdefault((alert.get("audit_id"), alert.get("stage")), []).append(alert)
    return list(out.values())
