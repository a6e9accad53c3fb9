"""Alert grouping (`detections.grouping`): one rule on one key within a window is one alert
with a count and a few updates; nothing is dropped without being counted in a sent alert."""

from __future__ import annotations

import itertools
import uuid
from functools import cache
from typing import Any

import pytest

from detections import Engine, load_rules
from detections.alert import to_alert
from detections.errors import RuleLoadError
from detections.fixtures import fixture_event
from detections.grouping import (
    MAX_EVENT_IDS,
    THRESHOLDS,
    Grouper,
    GroupOptions,
    group_id,
    update_id,
    workload_owner,
)
from detections.rule import RuleSet
from schemas.alert import Alert

PRIVILEGED = "93b17069-d7ab-4865-84de-f41755461188"
_ids = itertools.count()


@cache
def pack() -> tuple[RuleSet, Engine]:
    ruleset = load_rules()
    return ruleset, Engine(ruleset)


def seconds(t: float) -> str:
    """An RFC 3339 time ``t`` seconds after 2026-11-27T09:00:00Z."""
    whole, frac = divmod(t, 1)
    m, s = divmod(int(whole), 60)
    h, m = divmod(m, 60)
    return f"2026-11-27T{9 + h:02d}:{m:02d}:{s:02d}.{int(frac * 1e6):06d}Z"


def privileged_pod(t: float, **meta: Any) -> dict[str, Any]:
    """A privileged pod created in ``shop`` (``meta``: its metadata; ``user``: the creator)."""
    user = meta.pop("user", "alice")
    name = meta.get("name")
    return fixture_event(
        {
            "auditID": str(uuid.UUID(int=next(_ids))),
            "verb": "create",
            "level": "RequestResponse",
            "user": {"username": user},
            "objectRef": {"resource": "pods", "namespace": "shop", "name": name},
            "requestURI": "/api/v1/namespaces/shop/pods",
            "responseStatus": {"code": 201},
            "stageTimestamp": seconds(t),
            "requestObject": {
                "kind": "Pod",
                "metadata": {"namespace": "shop", **meta},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "nginx", "securityContext": {"privileged": True}}
                    ]
                },
            },
        }
    )


def alerts_of(
    events: list[dict[str, Any]], rule_id: str | None = PRIVILEGED
) -> list[dict[str, Any]]:
    _, engine = pack()
    return [
        to_alert(m)
        for m in engine.evaluate_batch(events)
        if rule_id is None or m.rule.id == rule_id
    ]


def grouper(**options: Any) -> Grouper:
    g = Grouper(GroupOptions(**options))
    g.set_rules(pack()[0].rules)
    return g


def run(g: Grouper, alerts: list[dict[str, Any]], batch: int = 50) -> list[dict[str, Any]]:
    """``alerts`` through ``g`` in messages of ``batch``, then the end of input."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(alerts), batch):
        out += g.add(alerts[i : i + batch])
    return out + g.close()


def test_every_rule_alert_is_a_valid_group_of_one() -> None:
    """`to_alert` gives each match its group: count 1, its own event id, update 0."""
    (alert,) = alerts_of([privileged_pod(0, name="web-0")])
    group = alert["group"]
    assert (group["count"], group["update"], group["event_ids"]) == (1, 0, [alert["audit_id"]])
    assert group["key"] == 'default|["shop/StatefulSet/web"]'
    Alert.model_validate(alert)


def test_a_flood_of_10000_matches_on_one_key_is_one_group_with_a_few_updates() -> None:
    """10,000 privileged pods named alike within a window: one group of 10,000, sent as the
    first alert and one update per power of ten, ids capped."""
    events = [privileged_pod(i * 0.05, name="flood-0") for i in range(10_000)]
    out = run(grouper(), alerts_of(events))
    assert {a["group"]["id"] for a in out} == {out[0]["group"]["id"]}
    assert [a["group"]["count"] for a in out] == [1, 10, 100, 1000, 10_000]
    assert [a["group"]["update"] for a in out] == [0, 1, 2, 3, 4]
    last = out[-1]["group"]
    assert len(last["event_ids"]) == MAX_EVENT_IDS
    assert last["first_seen"] == seconds(0) and last["last_seen"] == seconds(9999 * 0.05)
    for alert in out:
        Alert.model_validate(alert)


def test_a_replica_set_of_20_privileged_pods_is_one_group() -> None:
    """The Deployment and the 20 pods its ReplicaSet creates (by ownerReference, by
    generateName, or only by name) fold into one group of the Deployment."""
    deploy = privileged_pod(0, name="web")
    deploy["objectRef"]["resource"] = "deployments"
    deploy["requestObject"] = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": deploy["requestObject"]["spec"]}},
    }
    owner = [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}]
    controller = "system:serviceaccount:kube-system:replicaset-controller"
    pods = [
        privileged_pod(
            1 + i, generateName="web-7d9f8b6c5d-", ownerReferences=owner, user=controller
        )
        for i in range(10)
    ]
    pods += [
        privileged_pod(11 + i, generateName="web-7d9f8b6c5d-", user=controller) for i in range(5)
    ]
    names = ("x2k2q", "b4zkq", "m6w9t", "c8qpl", "r7tnv")  # the generated-name alphabet
    pods += [privileged_pod(16 + i, name=f"web-7d9f8b6c5d-{n}") for i, n in enumerate(names)]
    alerts = alerts_of([deploy, *pods])
    assert len(alerts) == 21  # one per match before grouping
    assert {workload_owner(p) for p in [deploy, *pods]} == {"shop/Deployment/web"}
    out = run(grouper(), alerts)
    assert len({a["group"]["id"] for a in out}) == 1
    assert [a["group"]["count"] for a in out] == [1, 10, 21]  # first, threshold, closing


def test_the_same_input_twice_gives_the_same_alert_and_group_ids() -> None:
    """Ids come from rule, key and event-time window, never the clock or the run."""
    events = [privileged_pod(i, name=f"db-{i % 3}") for i in range(40)]
    first = run(grouper(), alerts_of(events))
    second = run(grouper(), alerts_of(events), batch=7)
    assert [(a["id"], a["group"]["id"]) for a in first] == [
        (a["id"], a["group"]["id"]) for a in second
    ]
    assert first[0]["id"] == update_id(first[0]["group"]["id"], 0)
    key = first[0]["group"]["key"]
    assert first[0]["group"]["id"] == group_id(PRIVILEGED, key, 1_795_770_000 // 600)


def test_a_new_window_is_a_new_group() -> None:
    """Tumbling windows of event time (600 s by default): a match 10 minutes later opens
    another group."""
    events = [privileged_pod(t, name="web-0") for t in (0, 30, 600, 610)]
    out = run(grouper(), alerts_of(events))
    assert len({a["group"]["id"] for a in out if a["group"]["update"] == 0}) == 2


def test_a_noisy_rule_is_rate_limited_into_one_counted_overflow_group() -> None:
    """150 keys of one rule with a limit of 100: 100 groups, then one overflow group that
    counts the other 50 and is sent; nothing is dropped uncounted."""
    events = [privileged_pod(i, name=f"solo-{i}x") for i in range(150)]
    g = grouper(rule_limit=100)
    out = run(g, alerts_of(events))
    firsts = [a for a in out if a["group"]["update"] == 0]
    assert len(firsts) == 101
    overflow = [a for a in out if a["group"]["key"].endswith("#rate-limit")]
    assert overflow[0]["summary"].startswith("rate limit: more than 100 groups")
    assert overflow[-1]["group"]["count"] == 50
    assert g.stats["overflow"] == 50
    assert (
        sum(
            max(a["group"]["count"] for a in out if a["group"]["id"] == gid)
            for gid in {a["group"]["id"] for a in out}
        )
        == 150
    )


def test_less_severe_rules_on_the_same_event_ride_with_the_most_severe() -> None:
    """A pod with hostPID (medium) and a privileged container (high): one alert, the medium
    group listed in its ``related`` with its count; equally severe rules are all sent."""
    event = privileged_pod(0, name="web-0")
    event["requestObject"]["spec"]["hostPID"] = True
    alerts = alerts_of([event], rule_id=None)
    levels = sorted(a["severity"] for a in alerts)
    assert "high" in levels and "medium" in levels
    out = run(grouper(), alerts)
    assert {a["severity"] for a in out} == {"high"}
    related = [r for a in out for r in a["group"].get("related", [])]
    assert {r["title"] for r in related} >= {
        a["rule"]["title"] for a in alerts if a["severity"] != "high"
    }
    assert all(r["count"] == 1 for r in related)
    for alert in out:
        Alert.model_validate(alert)


def test_one_principals_chain_shares_an_incident_until_a_long_gap() -> None:
    """alice's alerts 30 minutes apart share an incident; two hours later is a new one; bob's
    is his own. Grouping off still sets incidents."""
    for enabled in (True, False):
        g = grouper(enabled=enabled, incident_gap=3600)
        times = [(0, "alice"), (1800, "alice"), (9000, "alice"), (10, "bob")]
        out = []
        for t, user in times:
            out += g.add(alerts_of([privileged_pod(t, name=f"p{t}-0", user=user)]))
        a1, a2, a3, b = (a["incident"] for a in out[:4])
        assert a1 == a2 != a3 and b not in (a1, a3)


@pytest.mark.parametrize(
    ("event", "owner"),
    [
        (
            {"objectRef": {"resource": "pods", "namespace": "n", "name": "web-7d9f8b6c5d-x2x4z"}},
            "n/Deployment/web",
        ),
        (
            {"objectRef": {"resource": "pods", "namespace": "n", "name": "agent-x2x4z"}},
            "n/Workload/agent",
        ),
        (
            {"objectRef": {"resource": "pods", "namespace": "n", "name": "backup-29034720-x2x4z"}},
            "n/CronJob/backup",
        ),
        ({"objectRef": {"resource": "pods", "namespace": "n", "name": "pg-0"}}, "n/StatefulSet/pg"),
        ({"objectRef": {"resource": "pods", "namespace": "n", "name": "debug"}}, "n/Pod/debug"),
        (
            {"objectRef": {"resource": "replicasets", "namespace": "n", "name": "web-7d9f8b6c5d"}},
            "n/Deployment/web",
        ),
        (
            {"objectRef": {"resource": "daemonsets", "namespace": "n", "name": "agent"}},
            "n/Workload/agent",
        ),
        (
            {
                "objectRef": {"resource": "pods", "namespace": "n"},
                "requestObject": {
                    "metadata": {
                        "generateName": "agent-",
                        "ownerReferences": [
                            {"kind": "DaemonSet", "name": "agent", "controller": True}
                        ],
                    }
                },
            },
            "n/Workload/agent",
        ),
        (
            {
                "objectRef": {"resource": "jobs", "namespace": "n", "name": "backup-29034720"},
                "requestObject": {
                    "metadata": {
                        "ownerReferences": [
                            {"kind": "CronJob", "name": "backup", "controller": True}
                        ]
                    }
                },
            },
            "n/CronJob/backup",
        ),
    ],
)
def test_workload_owner_follows_references_and_naming_conventions(
    event: dict[str, Any], owner: str
) -> None:
    assert workload_owner(event) == owner


def test_thresholds_are_powers_of_ten() -> None:
    assert sorted(THRESHOLDS)[:4] == [10, 100, 1000, 10_000]


RULE = """title: Grouped rule
id: 0b3f2f2e-0f4a-4c1e-9d2a-1c2b3c4d5e6f
status: test
logsource: {product: kubernetes, service: audit}
detection:
  selection: {verb: delete}
  condition: selection
level: low
klaxon:
  group: {by: [principal, source_ip], window: 5m}
"""


def test_a_rule_can_choose_its_group_key_and_window() -> None:
    rules = load_rules(texts={"r.yml": RULE})
    rule = rules.find("0b3f2f2e-0f4a-4c1e-9d2a-1c2b3c4d5e6f")
    assert rule is not None and rule.klaxon.group is not None
    assert (rule.klaxon.group.by, rule.klaxon.group.window) == (("principal", "source_ip"), 300)
    matches = Engine(rules).evaluate_batch([fixture_event({"verb": "delete"})])
    (match,) = [m for m in matches if m.rule is rule]
    assert to_alert(match)["group"]["key"] == 'default|["alice","10.20.30.40"]'


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("{by: [principle]}", "r.yml:10:16: klaxon.group.by[0]: cannot group by 'principle';"),
        ("{by: principal, window: 3s}", "r.yml:10:34: klaxon.group.window: window must be between"),
        ("{by: [principal], windwo: 5m}", "r.yml:10:28: klaxon.group.windwo: unknown key 'windwo'"),
        ("{window: soon}", "r.yml:10:19: klaxon.group.window: window 'soon' must look like"),
        ("[principal]", "r.yml:10:10: klaxon.group: group must be a mapping"),
    ],
)
def test_a_bad_group_block_is_a_positioned_error(group: str, message: str) -> None:
    text = RULE.replace("{by: [principal, source_ip], window: 5m}", group)
    with pytest.raises(RuleLoadError) as info:
        load_rules(texts={"r.yml": text})
    assert message in str(info.value)


def test_a_folded_rule_that_keeps_firing_updates_the_alert_it_rides_with() -> None:
    """hostPID rides with the privileged alert; 9 more hostPID-only pods of the same
    workload reach the threshold of 10: the privileged group's update lists hostPID at 10."""
    first = privileged_pod(0, name="web-0")
    first["requestObject"]["spec"]["hostPID"] = True
    later = []
    for i in range(9):
        pod = privileged_pod(1 + i, name="web-0")
        spec = pod["requestObject"]["spec"]
        spec["hostPID"] = True
        spec["containers"][0]["securityContext"] = {}
        later.append(pod)
    g = grouper()
    sent = g.add(alerts_of([first], rule_id=None))
    sent += g.add(alerts_of(later, rule_id=None))
    assert [a["group"]["update"] for a in sent] == [0, 1]
    assert {a["rule"]["id"] for a in sent} == {PRIVILEGED}
    counts = {r["title"]: r["count"] for r in sent[-1]["group"]["related"]}
    assert max(counts.values()) == 10


def test_a_correlation_cannot_have_a_group_block() -> None:
    text = """title: c
id: 1b3f2f2e-0f4a-4c1e-9d2a-1c2b3c4d5e6f
correlation:
  type: event_count
  rules: [0b3f2f2e-0f4a-4c1e-9d2a-1c2b3c4d5e6f]
  group-by: [user.username]
  timespan: 5m
  condition: {gte: 3}
klaxon:
  group: {window: 5m}
"""
    with pytest.raises(RuleLoadError, match=r"c\.yml:10:3: klaxon\.group: group applies to"):
        load_rules(texts={"r.yml": RULE, "c.yml": text})


def test_a_partition_read_ahead_does_not_close_another_partitions_windows() -> None:
    """The watermark is the oldest newest-time of the sources heard from lately: partition 1
    at +1 h does not close the window partition 0 is still filling, until partition 0 falls
    silent for longer than the idle grace (wall seconds)."""
    g = grouper(idle_grace=60.0)
    pods = [privileged_pod(i, name="web-0") for i in range(12)]
    sent = g.add(alerts_of(pods[:5]), seconds(5), source=0, now=0.0)
    sent += g.add([], seconds(3600), source=1, now=1.0)
    sent += g.add(alerts_of(pods[5:]), seconds(12), source=0, now=2.0)
    assert [a["group"]["count"] for a in sent] == [1, 10]  # one group, nothing closed early
    sent = g.add([], seconds(3601), source=1, now=100.0)  # partition 0 silent for 98 s
    assert [a["group"]["count"] for a in sent] == [12]
