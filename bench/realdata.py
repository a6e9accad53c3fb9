"""Anomaly detection on data we did not generate (``python -m bench evaluate --real``).

Benign background: PerfSPEC's real audit events (cluster ``perfspec``, 16.5k events of one
kubeadm cluster) and the bundled sample's background (cluster ``sample``: the sample without
its attack story), each replayed every ``every`` hours for ``days`` days. Every copy is
stretched by a random factor in [0.5, 2] and thinned (each event kept with a probability in
[0.7, 1]), so an identity's volume per window swings 1.5-3x from copy to copy, and copies land
at every hour of the day (unusual-hour and volume deviations are exercised on purpose).

Attacks: Falco's k8s audit trace files (``falco-k8s-audit-traces``, all but Falco's own
negative examples) and Panther's positive unit-test events (``panther-unit-tests``, those in
raw audit shape), each inserted after the first ``learn`` days as a compromised workload
service account of the background would send them: the victim (round-robin over the
background's workload service accounts with a history) replaces the user, the source address
is one the victim never used, events 2 s apart. An attack is detected by a family when one of
its alerts at medium or above names the victim within the attack's span plus one window and
the timer delay; every other alert at medium or above is a false alert.

A victim attacked twice would have learnt the first attack (its second would no longer be a
first), so the anomaly model runs once per *lane* (:func:`lanes`): the background plus
attacks on distinct victims; its false alerts are the union over lanes (by alert id).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from detections.stateful.anomaly import peer_group
from detections.stateful.timeutil import iso, parse_time
from schemas.normalize import decode_payload

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
PERFSPEC = CORPUS / "perfspec-k8s-audit-csv" / "audit-logs.csv"
FALCO = CORPUS / "falco-k8s-audit-traces"
PANTHER = CORPUS / "panther-unit-tests" / "panther-tests.json"
START = 1_793_577_600.0  # 2026-11-02T00:00:00Z
HOUR = 3600.0
#: Falco's negative examples (its rules must not fire on them) and its malformed input.
FALCO_BENIGN = frozenset(
    {
        "create_configmap_no_sensitive_values",
        "create_nginx_pod_unprivileged",
        "create_nginx_pod_nohostnetwork",
        "create_nginx_pod_unsensitive_mount",
        "create_nginx_service_nonodeport",
        "fal_01_003",
    }
)


@dataclass
class Attack:
    """One inserted attack: its source, victim, span and events."""

    name: str
    victim: str
    cluster: str
    start: float
    end: float
    events: list[dict[str, Any]]


def perfspec_rows() -> list[dict[str, Any]]:
    """PerfSPEC's CSV rows as canonical events (times as in the file)."""
    out = []
    with PERFSPEC.open(newline="", encoding="utf-8") as fh:
        for r in csv.reader(fh):
            t = parse_time(r[1]) if len(r) >= 12 else None
            if t is None:
                continue
            parts = urlsplit(r[8]).path.split("/")
            ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None
            out.append(
                {
                    "kind": "Event",
                    "apiVersion": "audit.k8s.io/v1",
                    "level": "Metadata",
                    "auditID": r[9],
                    "stage": r[10],
                    "requestURI": r[8],
                    "verb": r[3],
                    "user": {"username": r[2], "groups": ["system:authenticated"]},
                    "objectRef": {
                        "resource": r[4] or None,
                        "subresource": r[5] or None,
                        "name": r[6] or None,
                        "namespace": ns,
                    },
                    "responseStatus": {"code": int(r[11]) if r[11].isdigit() else 200},
                    "requestReceivedTimestamp": iso(t),
                    "stageTimestamp": iso(t),
                    "cluster": "perfspec",
                }
            )
    return out


def sample_background() -> list[dict[str, Any]]:
    """The bundled sample without its attack story's events (cluster ``sample``)."""
    from replay.sample.generate import build_sample

    sample = build_sample()
    attack = {s.audit_id for s in sample.story}
    return [{**e, "cluster": "sample"} for e in sample.events if e["auditID"] not in attack]


def copies(
    rows: list[dict[str, Any]], rng: random.Random, days: float, every: float, tag: str
) -> Iterator[dict[str, Any]]:
    """``rows`` replayed every ``every`` hours for ``days`` days, each copy stretched and
    thinned at random (see the module docstring)."""
    times = [parse_time(r["requestReceivedTimestamp"]) or 0.0 for r in rows]
    first = min(times)
    for k in range(int(days * 24 / every)):
        base = START + k * every * HOUR + rng.uniform(0, 600)
        stretch, keep = rng.uniform(0.5, 2.0), rng.uniform(0.7, 1.0)
        for row, t in zip(rows, times, strict=True):
            if rng.random() > keep:
                continue
            at = base + (t - first) * stretch
            yield {
                **row,
                "auditID": f"{tag}{k}-{row['auditID']}",
                "requestReceivedTimestamp": iso(at),
                "stageTimestamp": iso(at + 0.005),
            }


def attack_traces() -> list[tuple[str, list[dict[str, Any]]]]:
    """(name, canonical events) of Falco's attack traces and Panther's positive raw-audit
    test events."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for path in sorted(FALCO.glob("*.json")):
        if path.stem in FALCO_BENIGN:
            continue
        events = decode_payload(path.read_bytes()).events
        if events:
            out.append((f"falco:{path.stem}", events))
    for i, test in enumerate(json.loads(PANTHER.read_text(encoding="utf-8"))):
        ev = test.get("event")
        if not test.get("expected_rules") or not isinstance(ev, dict) or "verb" not in ev:
            continue
        ev = {k: v for k, v in ev.items() if not k.startswith("p_")}
        ev.setdefault("auditID", f"panther-{i}")
        ev.setdefault("stage", "ResponseComplete")
        ev.setdefault("requestURI", "/")
        ev.setdefault("requestReceivedTimestamp", "2024-01-01T00:00:00Z")
        events = decode_payload(json.dumps(ev).encode()).events
        if events:
            out.append((f"panther:{test['file'].rsplit('#', 1)[-1]}", events))
    return out


def victims(background: list[dict[str, Any]], cluster: str, least: int = 20) -> list[str]:
    """Workload service accounts of ``cluster`` with at least ``least`` events."""
    counts: dict[str, int] = {}
    for e in background:
        if e["cluster"] == cluster:
            name = e["user"]["username"]
            counts[name] = counts.get(name, 0) + 1
    return sorted(n for n, c in counts.items() if c >= least and peer_group(n)[1] == "workload-sa")


def insert(
    traces: list[tuple[str, list[dict[str, Any]]]],
    who: dict[str, list[str]],
    rng: random.Random,
    learn: float,
    days: float,
) -> list[Attack]:
    """Every trace once, as a compromised victim, at its own slot after ``learn`` days."""
    slots = rng.sample(range(int(learn * 24 * 6), int(days * 24 * 6) - 2), k=len(traces))
    clusters = sorted(who)
    attacks = []
    for k, ((name, events), slot) in enumerate(zip(traces, slots, strict=True)):
        cluster = clusters[k % len(clusters)]
        victim = who[cluster][(k // len(clusters)) % len(who[cluster])]
        t0 = START + slot * 600.0 + rng.uniform(0, 200)
        ip = f"198.51.{100 + k // 250}.{k % 250 + 1}"
        evs = []
        for i, e in enumerate(events):
            evs.append(
                {
                    **e,
                    "auditID": f"atk{k}-{i}",
                    "user": {
                        "username": victim,
                        "groups": ["system:serviceaccounts", "system:authenticated"],
                    },
                    "sourceIPs": [ip],
                    "userAgent": e.get("userAgent") or "python-requests/2.31.0",
                    "requestReceivedTimestamp": iso(t0 + 2 * i),
                    "stageTimestamp": iso(t0 + 2 * i + 0.01),
                    "cluster": cluster,
                }
            )
        attacks.append(Attack(name, victim, cluster, t0, t0 + 2 * len(evs), evs))
    return attacks


def lanes(attacks: list[Attack]) -> list[list[Attack]]:
    """The attacks split so that no victim is attacked twice in one lane (the n-th attack on
    a victim goes to lane n).

    >>> a = [Attack(str(i), v, "c", 0.0, 0.0, []) for i, v in enumerate("xyx")]
    >>> [[x.name for x in lane] for lane in lanes(a)]
    [['0', '1'], ['2']]
    """
    seen: dict[tuple[str, str], int] = {}
    out: list[list[Attack]] = []
    for a in attacks:
        n = seen[(a.cluster, a.victim)] = seen.get((a.cluster, a.victim), -1) + 1
        while len(out) <= n:
            out.append([])
        out[n].append(a)
    return out
