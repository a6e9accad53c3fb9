"""Detection quality of the stateful detectors (``python -m bench evaluate``).

Benign background: the PerfSPEC audit CSV (real Helm install/uninstall traffic on a kubeadm
cluster, 16.5k events in 4 minutes; replayed once a day as cluster ``perfspec``) plus nine days
of generated traffic on cluster ``lab``: developers working office hours in their namespaces,
an on-call admin, 20 application service accounts, a CI deployer and control-plane chatter.
After the 7-day learning period, attack *scenarios* are injected (each a labelled burst or
sequence by one principal). Every event goes through the stateless engine (packaged rules),
then the correlation engine, the new terms engine (on matches) and the anomaly model (on all
events), in arrival order with up to 3 s of out-of-order jitter.

Scoring, per family (correlation, new terms, anomaly):

* an alert is a true positive when it names a scenario's principal or source IP and falls in
  the scenario's time span (plus the window length); otherwise it is a false positive;
* recall is the fraction of the scenarios *expected* of the family that got at least one of
  its alerts (correlation: bursts and sequences; new terms: unseen terms; anomaly: behavioural
  scenarios of principals with a history);
* the anomaly family is scored on its alerts at medium or above (its low alerts, volume or
  warm-up only, are counted apart);
* alert volume is alerts per 10,000 events; cost is the family's time per event of the whole
  stream (µs/event), measured with ``time.perf_counter`` around its calls.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from detections import Engine, load_rules
from detections.alert import to_alert
from detections.stateful.anomaly import AnomalyModel, AnomalySettings
from detections.stateful.correlation import CorrelationEngine
from detections.stateful.new_terms import NewTermsEngine, load_new_terms
from detections.stateful.timeutil import iso, parse_time

PERFSPEC = (
    Path(__file__).resolve().parents[1].parent
    / "shared/corpus/perfspec-k8s-audit-csv/audit-logs.csv"
)
START = 1_793_577_600.0  # 2026-11-02T00:00:00Z, a Monday
DAY = 86400.0
DAYS = 9
ATTACK_FROM = START + 7.2 * DAY  # after the 7-day new terms learning period
FAMILIES = ("correlation", "new_terms", "anomaly")


class Maker:
    """Builds canonical events with deterministic audit ids."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(
        self,
        t: float,
        user: str,
        verb: str,
        resource: str,
        ns: str | None = None,
        name: str | None = None,
        sub: str | None = None,
        *,
        code: int = 200,
        ua: str = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
        ip: str = "10.0.0.1",
        groups: list[str] | None = None,
        cluster: str = "lab",
        tag: str = "b",
    ) -> dict[str, Any]:
        self.n += 1
        path = f"/api/v1/namespaces/{ns}/{resource}" if ns else f"/api/v1/{resource}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": f"{tag}-{self.n:08d}",
            "stage": "ResponseStarted" if sub in ("exec", "attach") else "ResponseComplete",
            "requestURI": path,
            "verb": verb,
            "user": {"username": user, "groups": groups or ["system:authenticated"]},
            "sourceIPs": [ip],
            "userAgent": ua,
            "objectRef": {"resource": resource, "namespace": ns, "name": name, "subresource": sub},
            "responseStatus": {"code": 101 if sub in ("exec", "attach") else code},
            "requestReceivedTimestamp": iso(t),
            "stageTimestamp": iso(t + 0.005),
            "annotations": {"authorization.k8s.io/decision": "forbid" if code == 403 else "allow"},
            "cluster": cluster,
        }


def perfspec_events(path: Path, day: int) -> Iterator[dict[str, Any]]:
    """PerfSPEC CSV rows as canonical events, shifted to 14:00 UTC of simulation day ``day``."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if len(r) >= 12]
    first = min(parse_time(r[1]) or 0.0 for r in rows)
    shift = START + day * DAY + 14 * 3600 - first
    for r in rows:
        t = parse_time(r[1])
        if t is None:
            continue
        uri = r[8]
        parts = urlsplit(uri).path.split("/")
        ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None
        code = int(r[11]) if r[11].isdigit() else 200
        yield {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": f"p{day}-{r[9]}",
            "stage": r[10],
            "requestURI": uri,
            "verb": r[3],
            "user": {"username": r[2], "groups": ["system:authenticated"]},
            "objectRef": {
                "resource": r[4] or None,
                "subresource": r[5] or None,
                "name": r[6] or None,
                "namespace": ns,
            },
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": iso(t + shift),
            "stageTimestamp": iso(t + shift),
            "cluster": "perfspec",
        }


HUMANS = [f"dev{i}@example.com" for i in range(12)]
SECRET_READERS = set(HUMANS[:3])
APPS = [f"system:serviceaccount:app{i}:app{i}" for i in range(20)]
JENKINS = "system:serviceaccount:ci:jenkins"
ADMIN = "kubernetes-admin"
KINDS = ["pods", "deployments", "services", "configmaps", "events", "replicasets"]


def benign(rng: random.Random, make: Maker) -> list[dict[str, Any]]:
    """Nine days of ordinary traffic on cluster ``lab``."""
    out: list[dict[str, Any]] = []
    for day in range(DAYS):
        base = START + day * DAY
        out += _humans(rng, make, base)
        out += _admin(rng, make, base)
        out += _apps(rng, make, base)
        out += _ci(rng, make, base)
        out += _nodes(rng, make, base)
    return out


def _humans(rng: random.Random, make: Maker, base: float) -> list[dict[str, Any]]:
    """Developers: bursts in working hours in their team namespaces."""
    out: list[dict[str, Any]] = []
    for hi, user in enumerate(HUMANS):
        home = [f"team{hi}", f"team{hi}-staging"]
        ip = f"10.1.{hi}.{rng.randint(2, 250)}"
        for hour in range(8, 18):
            if rng.random() > 0.6:
                continue
            t = base + hour * 3600 + rng.uniform(0, 3000)
            for _ in range(rng.randint(4, 18)):
                t += rng.uniform(2, 40)
                ns = rng.choice(home)
                r = rng.random()
                if r < 0.05:
                    out.append(
                        make(
                            t,
                            user,
                            "create",
                            "pods",
                            ns,
                            f"web-{rng.randint(0, 2)}",
                            "exec",
                            ip=ip,
                        )
                    )
                elif r < 0.15:
                    out.append(make(t, user, "patch", "deployments", ns, "web", ip=ip))
                elif r < 0.2 and user in SECRET_READERS:
                    out.append(make(t, user, "get", "secrets", ns, "app-config", ip=ip))
                elif r < 0.22:
                    out.append(make(t, user, "list", "secrets", "kube-system", code=403, ip=ip))
                else:
                    out.append(
                        make(t, user, rng.choice(["get", "list"]), rng.choice(KINDS), ns, ip=ip)
                    )
    return out


def _admin(rng: random.Random, make: Maker, base: float) -> list[dict[str, Any]]:
    """The on-call admin: one or two sessions of reads."""
    out: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 2)):  # on-call admin
        t = base + rng.uniform(9, 17) * 3600
        ip = f"10.0.0.{rng.randint(2, 60)}"
        for _ in range(rng.randint(5, 15)):
            t += rng.uniform(3, 30)
            out.append(
                make(
                    t,
                    ADMIN,
                    rng.choice(["get", "list"]),
                    rng.choice([*KINDS, "nodes", "namespaces"]),
                    rng.choice([None, "kube-system", "team1"]),
                    ip=ip,
                    groups=["system:masters", "system:authenticated"],
                )
            )
    return out


def _apps(rng: random.Random, make: Maker, base: float) -> list[dict[str, Any]]:
    """Workloads: their service accounts read config and secrets all day."""
    out: list[dict[str, Any]] = []
    for ai, app in enumerate(APPS):
        ns = f"app{ai}"
        ua = f"app{ai}/1.{ai % 3}" if ai % 2 else "Go-http-client/2.0"
        t = base + rng.uniform(0, 300)
        while t < base + DAY:
            ip = f"10.244.{ai}.{rng.randint(2, 250)}"
            out.append(make(t, app, "get", "configmaps", ns, "settings", ua=ua, ip=ip))
            if rng.random() < 0.3:
                out.append(make(t + 1, app, "get", "secrets", ns, "db", ua=ua, ip=ip))
            if rng.random() < 0.2:
                out.append(make(t + 2, app, "list", "endpoints", ns, ua=ua, ip=ip))
            t += rng.uniform(120, 480)
    return out


def _ci(rng: random.Random, make: Maker, base: float) -> list[dict[str, Any]]:
    """CI deploys by Jenkins, in about half of the hours."""
    out: list[dict[str, Any]] = []
    for hour in range(24):  # CI deploys
        if rng.random() < 0.5:
            t = base + hour * 3600 + rng.uniform(0, 3000)
            ns = rng.choice(["team1", "team2", "team3"])
            for k in range(3):
                out.append(
                    make(
                        t + k,
                        JENKINS,
                        "patch",
                        "deployments",
                        ns,
                        "web",
                        ua="kubectl/v1.29.0",
                        ip="10.3.0.5",
                    )
                )
    return out


def _nodes(rng: random.Random, make: Maker, base: float) -> list[dict[str, Any]]:
    """Control plane chatter (system principals): node lease renewals."""
    out: list[dict[str, Any]] = []
    for node in range(3):  # control plane chatter (system principals)
        user = f"system:node:worker-{node}"
        t = base + rng.uniform(0, 60)
        while t < base + DAY:
            out.append(
                make(
                    t,
                    user,
                    "update",
                    "leases",
                    "kube-node-lease",
                    f"worker-{node}",
                    ua="kubelet/v1.31.2",
                    ip=f"10.0.1.{node + 10}",
                )
            )
            t += 120
    return out


@dataclass
class Scenario:
    """One injected attack: who, when, and which families are expected to see it."""

    kind: str
    principal: str
    start: float
    end: float
    expect: tuple[str, ...]
    ips: tuple[str, ...] = ()
    detected: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def attacks(rng: random.Random, make: Maker) -> tuple[list[dict[str, Any]], list[Scenario]]:
    """Injected attack events and their labels (times after the learning period)."""
    events: list[dict[str, Any]] = []
    scenarios: list[Scenario] = []
    slots = iter(rng.sample(range(int(ATTACK_FROM), int(START + DAYS * DAY - 7200), 1800), k=60))

    def add(kind: str, who: str, evs: list[dict[str, Any]], expect: tuple[str, ...]) -> None:
        times = [parse_time(e["requestReceivedTimestamp"]) or 0.0 for e in evs]
        ips = tuple(sorted({e["sourceIPs"][0] for e in evs}))
        scenarios.append(Scenario(kind, who, min(times), max(times), expect, ips))
        events.extend(evs)

    def m(*a: Any, **k: Any) -> dict[str, Any]:
        return make(*a, **k, tag="x")

    for k in range(5):  # refused burst from an outside address
        t, ip = float(next(slots)), f"203.0.113.{k + 1}"
        who = "system:anonymous" if k % 2 else f"intruder{k}"
        add(
            "refused-burst",
            who,
            [
                m(
                    t + i * 1.6,
                    who,
                    "list",
                    rng.choice([*KINDS, "secrets"]),
                    code=401 if k % 2 else 403,
                    ua="python-requests/2.31",
                    ip=ip,
                )
                for i in range(25)
            ],
            ("correlation",),
        )
    for k in range(5):  # stolen service-account token sweeps the API
        t, who = float(next(slots)), APPS[k]
        kinds = [
            "pods",
            "secrets",
            "configmaps",
            "services",
            "nodes",
            "namespaces",
            "roles",
            "rolebindings",
            "clusterroles",
            "deployments",
            "daemonsets",
            "serviceaccounts",
            "ingresses",
            "networkpolicies",
        ]
        add(
            "discovery-sweep",
            who,
            [
                m(t + i * 2, who, "list", r, ua="kubectl/v1.28.0", ip=f"198.51.100.{k + 1}")
                for i, r in enumerate(kinds)
            ],
            ("correlation", "anomaly"),
        )
    for k in range(5):  # a developer harvests secrets
        t, who = float(next(slots)), HUMANS[3 + k % 2]
        add(
            "secret-harvest",
            who,
            [
                m(t + i * 9, who, "get", "secrets", f"ns{i % 4}", f"s{i}", ip=f"10.1.{3 + k % 2}.9")
                for i in range(20)
            ],
            ("correlation", "anomaly"),
        )
    for k in range(5):  # exec into many pods
        t, who = float(next(slots)), HUMANS[k]
        add(
            "exec-spree",
            who,
            [
                m(
                    t + i * 40,
                    who,
                    "create",
                    "pods",
                    f"team{k}",
                    f"api-{i}",
                    "exec",
                    ip=f"10.1.{k}.7",
                )
                for i in range(6)
            ],
            ("correlation", "anomaly"),
        )
    for k in range(5):  # RBAC change then a workload
        t, who = float(next(slots)), HUMANS[(k + 2) % 8]
        add(
            "rbac-then-workload",
            who,
            [
                m(
                    t,
                    who,
                    "create",
                    "clusterrolebindings",
                    None,
                    f"me-admin-{k}",
                    code=201,
                    ip=f"10.1.{(k + 2) % 8}.7",
                ),
                m(
                    t + 120,
                    who,
                    "create",
                    "daemonsets",
                    "kube-system",
                    f"agent-{k}",
                    code=201,
                    ip=f"10.1.{(k + 2) % 8}.7",
                ),
            ],
            ("correlation",),
        )
    for k in range(4):  # first secret read by a developer who never reads secrets
        t, who = float(next(slots)), HUMANS[8 + k]
        add(
            "first-secret-read",
            who,
            [m(t, who, "get", "secrets", f"team{8 + k}", "db", ip=f"10.1.{8 + k}.5")],
            ("new_terms",),
        )
    for k in range(4):  # service-account token used with curl
        t, who = float(next(slots)), APPS[10 + k]
        add(
            "sa-new-agent",
            who,
            [
                m(
                    t + i,
                    who,
                    "get",
                    "configmaps",
                    f"app{10 + k}",
                    "settings",
                    ua="curl/8.5.0",
                    ip=f"10.244.{10 + k}.3",
                )
                for i in range(2)
            ],
            ("new_terms",),
        )
    for k in range(4):  # admin kubeconfig used from a new network
        t = float(next(slots))
        add(
            "admin-new-network",
            ADMIN,
            [
                m(t + i * 5, ADMIN, "get", "nodes", ip=f"198.18.{k}.1", groups=["system:masters"])
                for i in range(3)
            ],
            ("new_terms",),
        )
    for k in range(4):  # CI deployer writes outside its lane
        t = float(next(slots))
        add(
            "ci-new-namespace",
            JENKINS,
            [
                m(
                    t,
                    JENKINS,
                    "patch",
                    "deployments",
                    "kube-system" if k == 0 else f"payments{k}",
                    "web",
                    ua="kubectl/v1.29.0",
                    ip="10.3.0.5",
                )
            ],
            ("new_terms",),
        )
    for k in range(5):  # a service account slowly reads secrets (below the burst threshold)
        t, who = float(next(slots)), APPS[k + 5]
        add(
            "slow-secret-reads",
            who,
            [
                m(
                    t + i * 25,
                    who,
                    "get",
                    "secrets",
                    f"app{k + 5}",
                    f"k{i}",
                    ua="Go-http-client/2.0",
                    ip=f"10.244.{k + 5}.4",
                )
                for i in range(36)
            ],
            ("anomaly",),
        )
    for k in range(5):  # a developer deletes things at night
        day = int((float(next(slots)) - START) // DAY)
        t, who = START + day * DAY + 3 * 3600 + k * 60, HUMANS[k]
        add(
            "night-deletes",
            who,
            [
                m(
                    t + i * 8,
                    who,
                    "delete",
                    rng.choice(KINDS[:4]),
                    f"team{k}",
                    f"o{i}",
                    ip=f"10.1.{k}.8",
                )
                for i in range(25)
            ],
            ("anomaly",),
        )
    for k in range(5):  # a service account starts creating pods
        t, who = float(next(slots)), APPS[k + 14 if k + 14 < 20 else k]
        add(
            "sa-creates-pods",
            who,
            [
                m(
                    t + i * 15,
                    who,
                    "create",
                    "pods",
                    f"app{k + 14}",
                    f"miner-{i}",
                    code=201,
                    ua="Go-http-client/2.0",
                    ip="10.244.99.9",
                )
                for i in range(15)
            ],
            ("anomaly",),
        )
    return events, scenarios


def _alert_time(alert: dict[str, Any]) -> float:
    return parse_time(alert["event_time"]) or 0.0


def attribute(alert: dict[str, Any], scenarios: list[Scenario], slack: float) -> Scenario | None:
    """The scenario an alert belongs to (same principal or IP, inside its span), if any."""
    t = _alert_time(alert)
    user = alert["user"]["username"]
    ips = set(alert["source_ips"])
    group = alert["evidence"].get("group") or {}
    for s in scenarios:
        named = (
            user == s.principal
            or bool(ips & set(s.ips))
            or (group.get("sourceIP") in s.ips)
            or group.get("user.username") == s.principal
        )
        if named and s.start - 1 <= t <= s.end + slack:
            return s
    return None


def run(quick: bool = False, seed: int = 7) -> dict[str, Any]:
    """Build the stream, run every detector, and score them (returns the report)."""
    rng = random.Random(seed)
    make = Maker()
    events = benign(rng, make)
    if PERFSPEC.is_file():
        for day in range(2 if quick else DAYS):
            events.extend(perfspec_events(PERFSPEC, day))
    injected, scenarios = attacks(rng, make)
    events.extend(injected)
    arrival = [
        (parse_time(e["requestReceivedTimestamp"]) or 0.0) + rng.uniform(0, 3) for e in events
    ]
    order = sorted(range(len(events)), key=arrival.__getitem__)
    stream = [events[i] for i in order]

    rs = load_rules()
    engine = Engine(rs)
    corr = CorrelationEngine(rs)
    nt = NewTermsEngine(load_new_terms(ruleset=rs), rs)
    settings = AnomalySettings()
    model = AnomalyModel(settings)
    alerts: dict[str, list[dict[str, Any]]] = {f: [] for f in FAMILIES}
    cost = dict.fromkeys(("stateless", *FAMILIES), 0.0)
    clock = time.perf_counter
    for event in stream:
        t0 = clock()
        matches = engine.evaluate(event)
        t1 = clock()
        for mt in matches:
            alerts["correlation"] += corr.process(mt)
        t2 = clock()
        for mt in matches:
            alerts["new_terms"] += nt.process(mt)
        t3 = clock()
        alerts["anomaly"] += model.observe(event)
        t4 = clock()
        cost["stateless"] += t1 - t0
        cost["correlation"] += t2 - t1
        cost["new_terms"] += t3 - t2
        cost["anomaly"] += t4 - t3
    end = START + DAYS * DAY + 3600
    alerts["correlation"] += corr.advance(end)
    alerts["anomaly"] += model.advance(end)

    slack = settings.window + settings.lateness + 600
    report: dict[str, Any] = {"events": len(stream), "scenarios": len(scenarios), "families": {}}
    report["anomaly_low_alerts"] = sum(1 for a in alerts["anomaly"] if a["severity"] == "low")
    alerts["anomaly"] = [a for a in alerts["anomaly"] if a["severity"] != "low"]
    for fam in FAMILIES:
        report["families"][fam] = _score(fam, alerts[fam], scenarios, slack, len(stream), cost)
    report["stateless_us_per_event"] = round(1e6 * cost["stateless"] / len(stream), 2)
    report["principals"] = len(model.principals)
    report["late_correlation_events"] = corr.late()
    return report


def _score(
    fam: str,
    alerts: list[dict[str, Any]],
    scenarios: list[Scenario],
    slack: float,
    events: int,
    cost: dict[str, float],
) -> dict[str, Any]:
    """One family's line of the report: its alerts attributed to the injected scenarios."""
    tp = fp = 0
    fps: list[str] = []
    for a in alerts:
        s = attribute(a, scenarios, slack)
        if s is None:
            fp += 1
            fps.append(a["summary"])
        else:
            tp += 1
            s.detected[fam] += 1
    expected = [s for s in scenarios if fam in s.expect]
    found = [s for s in expected if s.detected[fam]]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = len(found) / len(expected) if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    missed = sorted({s.kind for s in expected if not s.detected[fam]})
    return {
        "alerts": tp + fp,
        "true_positive_alerts": tp,
        "false_positive_alerts": fp,
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "expected_scenarios": len(expected),
        "detected_scenarios": len(found),
        "missed_kinds": missed,
        "alerts_per_10k_events": round(10_000 * (tp + fp) / events, 2),
        "us_per_event": round(1e6 * cost[fam] / events, 2),
        "false_positive_examples": fps[:5],
    }


def _print(report: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out(
        f"events {report['events']:,}  injected scenarios {report['scenarios']}  "
        f"principals {report['principals']}  stateless engine "
        f"{report['stateless_us_per_event']} µs/event  anomaly low alerts (not scored) "
        f"{report['anomaly_low_alerts']}"
    )
    out(
        f"{'family':<12} {'P':>6} {'R':>6} {'F1':>6} {'found':>7} {'alerts':>7} "
        f"{'per10k':>7} {'µs/ev':>7}"
    )
    for fam, r in report["families"].items():
        out(
            f"{fam:<12} {r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f} "
            f"{r['detected_scenarios']:>3}/{r['expected_scenarios']:<3} {r['alerts']:>7} "
            f"{r['alerts_per_10k_events']:>7} {r['us_per_event']:>7}"
        )
        if r["missed_kinds"]:
            out(f"  missed: {', '.join(r['missed_kinds'])}")
        for s in r["false_positive_examples"]:
            out(f"  FP: {s}")


def main(argv: list[str]) -> int:
    """Command line: ``python -m bench evaluate [--quick] [--seed N] [--json]``."""
    p = argparse.ArgumentParser(prog="python -m bench evaluate", description=__doc__)
    p.add_argument("--quick", action="store_true", help="PerfSPEC replayed 2 days instead of 9")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--real",
        action="store_true",
        help="PerfSPEC and the sample's background with Falco's and Panther's attacks inserted",
    )
    p.add_argument("--days", type=float, default=3.0, help="--real: days of replayed background")
    args = p.parse_args(argv)
    report = run_real(args.seed, args.days) if args.real else run(args.quick, args.seed)
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    elif args.real:
        _print_real(report)
    else:
        _print(report)
    return 0


# -- data we did not generate ----------------------------------------------------------------

_MEDIUM_UP = frozenset({"medium", "high", "critical"})


def run_real(seed: int = 11, days: float = 3.0, every: float = 2.0) -> dict[str, Any]:
    """PerfSPEC and the sample's background replayed over ``days`` days with Falco's and
    Panther's attacks inserted as compromised service accounts (`bench.realdata`); every
    family and the stateless rules scored on the same stream."""
    from bench import realdata

    rng = random.Random(seed)
    perf, samp = realdata.perfspec_rows(), realdata.sample_background()
    background = list(realdata.copies(perf, rng, days, every, "p"))
    background += realdata.copies(samp, rng, days, every, "s")
    who = {c: realdata.victims(background, c) for c in ("perfspec", "sample")}
    attacks = realdata.insert(realdata.attack_traces(), who, rng, days / 2, days)
    owner = {e["auditID"]: a for a in attacks for e in a.events}
    stream = _ordered(background, attacks)
    rs = load_rules()
    engine, corr = Engine(rs), CorrelationEngine(rs)
    nt = NewTermsEngine(load_new_terms(ruleset=rs), rs)
    settings = AnomalySettings()
    names = ("stateless", *FAMILIES)
    alerts: dict[str, list[dict[str, Any]]] = {f: [] for f in names}
    cost = dict.fromkeys(names, 0.0)
    clock = time.perf_counter
    for event in stream:
        t0 = clock()
        matches = engine.evaluate(event)
        t1 = clock()
        for mt in matches:
            alerts["correlation"] += corr.process(mt)
            alerts["new_terms"] += nt.process(mt)
        t2 = clock()
        alerts["stateless"] += [to_alert(mt) for mt in matches]
        cost["stateless"] += t1 - t0
        cost["correlation"] += t2 - t1
    end = START + days * DAY + 3600
    alerts["correlation"] += corr.advance(end)
    lanes = realdata.lanes(attacks)
    by_id: dict[str, dict[str, Any]] = {}
    for lane in lanes:
        model = AnomalyModel(settings)
        lane_stream = _ordered(background, lane)
        t0 = clock()
        for event in lane_stream:
            for a in model.observe(event):
                by_id[a["id"]] = a
        for a in model.advance(end):
            by_id[a["id"]] = a
        cost["anomaly"] += (clock() - t0) * len(stream) / len(lane_stream) / len(lanes)
    alerts["anomaly"] = list(by_id.values())
    slack = settings.window + settings.lateness + 120
    benign = {c: sum(1 for e in background if e["cluster"] == c) for c in who}
    report: dict[str, Any] = {
        "seed": seed,
        "days": days,
        "events": len(stream),
        "benign_events": benign,
        "attacks": len(attacks),
        "anomaly_lanes": len(lanes),
        "families": {},
    }
    for fam in names:
        report["families"][fam] = _score_real(alerts[fam], attacks, owner, slack, benign)
        report["families"][fam]["us_per_event"] = round(1e6 * cost[fam] / len(stream), 2)
    levels: dict[str, int] = defaultdict(int)
    for a in alerts["anomaly"]:
        levels[a["severity"]] += 1
    report["anomaly_alerts_by_level"] = dict(levels)
    return report


def _ordered(background: list[dict[str, Any]], attacks: list[Any]) -> list[dict[str, Any]]:
    stream = background + [e for a in attacks for e in a.events]
    stream.sort(key=lambda e: e["requestReceivedTimestamp"])
    return stream


def _score_real(
    alerts: list[dict[str, Any]],
    attacks: list[Any],
    owner: dict[str, Any],
    slack: float,
    benign: dict[str, int],
) -> dict[str, Any]:
    """Alerts at medium or above attributed to the inserted attacks (by the victim within the
    span, or by an attack event's auditID); the rest are false alerts, per background."""
    found: set[int] = set()
    tp = 0
    false: dict[str, int] = dict.fromkeys(benign, 0)
    examples: list[str] = []
    for a in alerts:
        if a["severity"] not in _MEDIUM_UP:
            continue
        hit = owner.get(a.get("audit_id", ""))
        if hit is None:
            t, user = _alert_time(a), a["user"]["username"]
            hit = next(
                (
                    x
                    for x in attacks
                    if x.victim == user and x.cluster == a["cluster"] and x.start - 1 <= t
                    if t <= x.end + slack
                ),
                None,
            )
        if hit is None:
            false[a["cluster"]] = false.get(a["cluster"], 0) + 1
            examples.append(a["summary"][:160])
        else:
            tp += 1
            found.add(id(hit))
    n_false = sum(false.values())
    return {
        "alerts_medium_up": tp + n_false,
        "precision": round(tp / (tp + n_false), 3) if tp + n_false else 0.0,
        "recall": round(len(found) / len(attacks), 3) if attacks else 0.0,
        "detected": len(found),
        "false_alerts": false,
        "false_per_100k": {c: round(1e5 * false[c] / n, 2) for c, n in benign.items() if n},
        "missed": sorted({x.name for x in attacks if id(x) not in found})[:12],
        "false_examples": examples[:4],
    }


def _print_real(report: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out(
        f"real background (seed {report['seed']}, {report['days']} days): "
        f"{report['events']:,} events, benign {report['benign_events']}, "
        f"{report['attacks']} inserted attacks (Falco + Panther as compromised service accounts)"
    )
    out(
        f"{'family':<11} {'P':>6} {'R':>6} {'found':>7} {'>=med':>6} "
        f"{'FP/100k perfspec':>17} {'FP/100k sample':>15} {'µs/ev':>7}"
    )
    for fam, r in report["families"].items():
        fp = r["false_per_100k"]
        out(
            f"{fam:<11} {r['precision']:>6.3f} {r['recall']:>6.3f} "
            f"{r['detected']:>3}/{report['attacks']:<3} {r['alerts_medium_up']:>6} "
            f"{fp.get('perfspec', 0):>17} {fp.get('sample', 0):>15} {r['us_per_event']:>7}"
        )
        for s in r["false_examples"][:2]:
            out(f"  false: {s}")
        if fam == "anomaly" and r["missed"]:
            out(f"  missed: {', '.join(r['missed'])}")
    out(f"anomaly alerts by level: {report['anomaly_alerts_by_level']}")
