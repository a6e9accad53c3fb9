"""`pipeline.stateful.StatefulProcessor`, without Kafka: partitioned state, changelog round
trips, re-keying, watermarks and the suppression of base-rule alerts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detections import Engine, load_rules
from detections.rule import RuleSet
from detections.stateful import CorrelationEngine
from detections.stateful.anomaly import AnomalySettings
from detections.stateful.timeutil import iso
from pipeline.routing import event_key, partition_for
from pipeline.stateful import StatefulOptions, StatefulProcessor
from tests.pipeline.conftest import sample_events

CORRELATIONS = Path(__file__).resolve().parents[2] / "detections" / "rules" / "correlations"
T0 = 1795770000.0  # 2026-11-27T08:20:00Z
PARTITIONS = 4
NO_ANOMALY = StatefulOptions(anomaly=False, silence=False)


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_rules([str(CORRELATIONS)])


@pytest.fixture(scope="module")
def engine(ruleset: RuleSet) -> Engine:
    return Engine(ruleset)


def refused(i: int, *, user: str, ip: str, t: float) -> dict[str, Any]:
    """A 403 for ``user`` from ``ip`` at event time ``t``."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Event",
        "auditID": f"refused-{user}-{i}",
        "stage": "ResponseComplete",
        "verb": "list",
        "requestURI": "/api/v1/secrets",
        "user": {"username": user},
        "sourceIPs": [ip],
        "objectRef": {"resource": "secrets", "apiVersion": "v1"},
        "responseStatus": {"code": 403},
        "cluster": "prod",
        "requestReceivedTimestamp": iso(t),
        "stageTimestamp": iso(t),
    }


def by_partition(events: list[dict[str, Any]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Events grouped as the normalise agent routes them (``cluster|user`` key)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        groups.setdefault(partition_for(event_key(e), PARTITIONS), []).append(e)
    yield from sorted(groups.items())


def offline_ids(ruleset: RuleSet, engine: Engine, events: list[dict[str, Any]]) -> set[str]:
    """Correlation alert ids of the pure engine over ``events`` in order."""
    ce = CorrelationEngine(ruleset)
    return {a["id"] for m in engine.evaluate_batch(events) for a in ce.process(m)}


def run(
    proc: StatefulProcessor, engine: Engine, events: list[dict[str, Any]], offset: int
) -> list[dict[str, Any]]:
    """Feed ``events`` as one events message per partition, then deliver the by-group
    messages they caused; returns every stateful alert."""
    alerts: list[dict[str, Any]] = []
    for part, group in by_partition(events):
        matches = engine.evaluate_batch(group)
        alerts += proc.process(group, matches, part, topic="events", offset=offset)
    for part in list(proc.parts):
        for i, rec in enumerate(proc.take_rekeyed(part)):
            alerts += proc.process_rekeyed(
                rec.value, rec.partition, topic="by-group", offset=offset * 100 + part * 10 + i
            )
    return alerts


def test_base_rule_matches_of_correlations_are_not_alerts_on_their_own(
    ruleset: RuleSet, engine: Engine
) -> None:
    """The detect step drops matches of informational base rules that only feed correlations."""
    proc = StatefulProcessor(ruleset, partitions=PARTITIONS, options=NO_ANOMALY)
    events = [refused(i, user="eve", ip="203.0.113.7", t=T0 + i) for i in range(3)]
    matches = engine.evaluate_batch(events)
    assert matches and {m.rule.title for m in matches} == {
        "Request refused (401 or 403)",
        "Resource read (get or list)",  # refused reads count towards discovery too
    }
    assert proc.suppress(matches) == []


def test_source_ip_burst_across_partitions_is_rekeyed_and_matches_the_offline_id(
    ruleset: RuleSet, engine: Engine
) -> None:
    """Twenty refusals from one IP by twenty users (all partitions) make one alert, the id the
    pure engine computes when it sees every event."""
    events = [refused(i, user=f"user-{i}", ip="203.0.113.7", t=T0 + i) for i in range(20)]
    assert len({p for p, _ in by_partition(events)}) == PARTITIONS
    proc = StatefulProcessor(ruleset, partitions=PARTITIONS, options=NO_ANOMALY)
    alerts = run(proc, engine, events, 0)
    assert [a["rule"]["title"] for a in alerts] == ["Burst of refused requests from one source IP"]
    assert {a["id"] for a in alerts} == offline_ids(ruleset, engine, events)


def test_state_written_as_changes_and_loaded_again_continues_the_window(
    ruleset: RuleSet, engine: Engine
) -> None:
    """Half a burst, the changelog writes replayed into a new processor, the other half: one
    alert with the offline id (a restart in the middle of a window)."""
    events = [refused(i, user="eve", ip=f"198.51.100.{i}", t=T0 + i) for i in range(20)]
    first = StatefulProcessor(ruleset, partitions=PARTITIONS, options=NO_ANOMALY)
    assert run(first, engine, events[:10], 0) == []
    log: dict[bytes, bytes | None] = {}
    for part in list(first.parts):
        log.update(first.changes(part))
    second = StatefulProcessor(ruleset, partitions=PARTITIONS, options=NO_ANOMALY)
    for part in range(PARTITIONS):
        second.load(part, log.items())
    alerts = run(second, engine, events[10:], 1)
    assert [a["rule"]["title"] for a in alerts] == ["Burst of refused requests by one user"]
    assert {a["id"] for a in alerts} == offline_ids(ruleset, engine, events)


def test_a_message_read_again_after_a_crash_is_not_counted_twice(
    ruleset: RuleSet, engine: Engine
) -> None:
    """Ten refusals applied, then the same message again (offset not past the meta key): the
    state still holds ten, so no burst of twenty is invented."""
    events = [refused(i, user="eve", ip=f"198.51.100.{i}", t=T0 + i) for i in range(10)]
    proc = StatefulProcessor(ruleset, partitions=PARTITIONS, options=NO_ANOMALY)
    assert run(proc, engine, events, 5) == []
    assert run(proc, engine, events, 5) == []
    assert proc.skipped_messages == 1
    held = [v for p in proc.parts for v in proc.state(p, "correlations").store.values()]
    # eve's window of the refused-burst and of the discovery sweep: ten each, not twenty
    assert sorted(len(v["ev"]) for v in held if v["group"] == ["eve"]) == [10, 10]


def test_closed_window_is_judged_by_the_timer_when_input_stops() -> None:
    """A ``lt`` correlation is decided once the idle watermark passes the window's end."""
    rs = load_rules(
        [],
        texts={
            "few.yml": """
title: Login
id: 0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b
name: login
detection: {selection: {verb: create}, condition: selection}
---
title: Too few logins
id: 1f2a3b4c-5d6e-4f70-8b9c-0d1e2f3a4b5c
correlation: {type: event_count, rules: [login], group-by: [user.username], timespan: 1m,
              condition: {lt: 3}}
"""
        },
    )
    proc = StatefulProcessor(rs, partitions=1, options=NO_ANOMALY)
    event = {**refused(0, user="eve", ip="10.0.0.1", t=T0), "verb": "create"}
    matches = Engine(rs).evaluate_batch([event])
    assert proc.process([event], matches, 0, topic="events", offset=0, now=0.0) == []
    assert proc.tick(0, now=30.0) == []  # still within the idle grace
    opts = proc.options
    later = opts.idle_grace + opts.advance_delay + 60 + opts.correlation.lateness + 1
    assert [a["rule"]["title"] for a in proc.tick(0, now=later)] == ["Too few logins"]


def test_a_quiet_cluster_is_reported_once_and_its_return_once(ruleset: RuleSet) -> None:
    """Heartbeats reach the cluster's owner; silence past the threshold alerts once, and the
    next heartbeat says it came back."""
    opts = StatefulOptions(anomaly=False, correlations=False, new_terms=False)
    proc = StatefulProcessor(ruleset, partitions=PARTITIONS, options=opts)
    event = refused(0, user="eve", ip="10.0.0.1", t=T0)
    part = partition_for(event_key(event), PARTITIONS)
    proc.process([event], [], part, topic="events", offset=0, now=0.0)
    (beat,) = proc.take_rekeyed(part)
    proc.process_rekeyed(beat.value, beat.partition, topic="by-group", offset=0, now=0.0)
    quiet_at = opts.idle_grace + opts.silence_threshold + 1
    titles = [a["rule"]["title"] for a in proc.tick(beat.partition, now=quiet_at)]
    assert titles == ["Cluster audit log went quiet"]
    assert proc.tick(beat.partition, now=quiet_at + 100) == []
    later = refused(1, user="eve", ip="10.0.0.1", t=T0 + 2000)
    proc.process([later], [], part, topic="events", offset=1, now=quiet_at + 100)
    (beat,) = proc.take_rekeyed(part)
    back = proc.process_rekeyed(beat.value, beat.partition, topic="by-group", offset=1)
    assert [a["rule"]["title"] for a in back] == ["Cluster audit log resumed"]


def test_anomaly_baselines_survive_a_changelog_round_trip(ruleset: RuleSet) -> None:
    """Principal baselines written as changes and loaded again equal the originals."""
    proc = StatefulProcessor(ruleset, partitions=1, options=StatefulOptions(silence=False))
    events = [refused(i, user="eve", ip="10.0.0.1", t=T0 + 60 * i) for i in range(30)]
    proc.process(events, [], 0, topic="events", offset=0)
    log = dict(proc.changes(0))
    again = StatefulProcessor(ruleset, partitions=1, options=StatefulOptions(silence=False))
    again.load(0, log.items())
    restored, original = again.state(0, "anomaly").model, proc.state(0, "anomaly").model
    assert restored.to_json()["principals"] == original.to_json()["principals"]
    assert restored.to_json()["peers"] == original.to_json()["peers"] != []
    assert again.applied(0, "events", 0)


def test_a_v1_anomaly_checkpoint_loads_or_is_reported_and_reset(ruleset: RuleSet) -> None:
    """A changelog written before peer baselines (state v1): its principals are migrated
    (baseline kept), its HalfSpaceTrees is reported as unreadable and starts afresh, and the
    worker keeps running."""
    v1_principal = {
        "v": 1,
        "window": 5,
        "counts": [3.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        "spaces": ["shop"],
        "res": ["secrets"],
        "new_agents": [],
        "new_networks": [],
        "last": ["a1", "ResponseComplete", "10.0.0.1", "app/1"],
        "n": 40,
        "mean": [4.0, 1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
        "dev": [1.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
        "hours": 3,
        "agents": [1],
        "networks": [2],
        "late": 0,
    }
    v1_hst = {"v": 1, "params": {}, "masses": []}
    log = [
        (b"0|a|prod|alice", orjson.dumps(v1_principal)),
        (b"0|h|", orjson.dumps(v1_hst)),
    ]
    proc = StatefulProcessor(ruleset, partitions=1, options=StatefulOptions(silence=False))
    assert proc.load(0, log) == 1 and proc.errors == 1
    alice = proc.state(0, "anomaly").model.principals["prod|alice"]
    assert (alice.n, alice.mean[0], alice.mean[1], alice.mean[2]) == (40, 4.0, 0.5, 1.0)
    assert alice.done_n == 0  # its sensitive-action memory starts afresh
    events = [refused(i, user="alice", ip="10.0.0.1", t=T0 + 60 * i) for i in range(10)]
    proc.process(events, [], 0, topic="events", offset=0)  # and the model runs on
    assert proc.state(0, "anomaly").model.windows_scored > 0


def test_on_the_sample_only_informational_base_rules_are_held_back() -> None:
    """On the bundled sample most matches are informational base-rule matches and are held
    back; every match of a rule above informational still becomes an alert."""
    rs = load_rules()
    proc = StatefulProcessor(rs, partitions=1, options=NO_ANOMALY)
    matches = Engine(rs).evaluate_batch(sample_events())
    kept = proc.suppress(matches)
    held = [m for m in matches if m.rule.id in proc.suppressed]
    assert len(held) > len(kept) > 0
    assert {m.rule.level for m in held} == {"informational"}
    assert [m for m in matches if m.rule.level != "informational"] == [
        m for m in kept if m.rule.level != "informational"
    ]


def secret_burst_messages() -> list[list[dict[str, Any]]]:
    """One principal's events messages: 20 quiet one-minute windows (five pod reads each),
    then a window opened by one pod read, one secret read, and 40 more in two messages."""

    def ev(t: float, resource: str, i: int) -> dict[str, Any]:
        return {
            "auditID": f"sa-{t}-{i}", "stage": "ResponseComplete", "verb": "get",
            "user": {"username": "sa"}, "cluster": "prod", "sourceIPs": ["10.0.0.1"],
            "userAgent": "app/1.0", "objectRef": {"resource": resource, "namespace": "shop"},
            "responseStatus": {"code": 200}, "requestReceivedTimestamp": iso(t),
        }  # fmt: skip

    day = T0 + 9 * 3600
    messages = [[ev(day + w * 60 + i * 7, "pods", i) for i in range(5)] for w in range(20)]
    messages.append([ev(day + 20 * 60, "pods", 0)])
    messages.append([ev(day + 20 * 60 + 1, "secrets", 0)])  # a first: written at once
    for m in range(2):
        messages.append([ev(day + 20 * 60 + 2 + m * 20 + i, "secrets", i) for i in range(20)])
    return messages


def anomaly_ids(options: StatefulOptions, crash_after: int | None) -> set[str]:
    """Alert ids of `secret_burst_messages` fed as the detect agent does (one message per
    wall second, its changelog writes after it), with a SIGKILL after message
    ``crash_after``: a new processor loads the changelog and the input is read again from
    two messages before the crash (at-least-once), then the windows are closed."""
    rs = load_rules([str(CORRELATIONS)])
    changelog: dict[bytes, bytes | None] = {}
    proc = StatefulProcessor(rs, partitions=1, options=options)
    messages = secret_burst_messages()
    ids: set[str] = set()
    i, now, crashed = 0, 0.0, False
    while i < len(messages):
        now += 1.0
        ids |= {a["id"] for a in proc.process(messages[i], [], 0, topic="ev", offset=i, now=now)}
        changelog.update(proc.changes(0, now))
        if i == crash_after and not crashed:
            crashed = True
            proc = StatefulProcessor(rs, partitions=1, options=options)
            proc.load(0, changelog.items(), now)
            i -= 2
        i += 1
    return ids | {a["id"] for a in proc.tick(0, now + 10_000)}


def test_an_anomaly_alert_survives_a_crash_in_the_middle_of_its_window() -> None:
    """Killed right after the burst, the restarted worker still raises the burst's anomaly
    alert: the open window's counts are checkpointed with every message (the default); with
    the former five-second checkpoints the crash loses them, and the alert with them."""
    exact = StatefulOptions(
        correlations=False, new_terms=False, silence=False, advance_delay=0.0,
        anomaly_settings=AnomalySettings(window=60, warmup=5, lateness=0),
    )  # fmt: skip
    whole = anomaly_ids(exact, None)
    assert len(whole) == 1
    assert anomaly_ids(exact, len(secret_burst_messages()) - 1) == whole
    periodic = dataclasses.replace(exact, anomaly_checkpoint_every=5.0)
    assert anomaly_ids(periodic, None) == whole
    assert anomaly_ids(periodic, len(secret_burst_messages()) - 1) == set()
