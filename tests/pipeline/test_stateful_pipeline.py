"""Stateful detections through the running pipeline, on Tansu and on Apache Kafka.

Real ``klaxon worker`` subprocesses read events written to the raw topic; the expected alert
ids come from the pure engines run offline on the same normalised events (`CorrelationEngine`
for correlations, `to_alert` for the stateless matches that are not held back).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detections import Engine, load_rules
from detections.alert import to_alert
from detections.stateful import CorrelationEngine, suppressed_rule_ids
from detections.stateful.timeutil import iso
from pipeline.config import DETECTOR_FAMILIES, Settings
from pipeline.routing import event_key, partition_for
from pipeline.stateful import packaged_new_terms
from pipeline.topics import changelog_topic, ensure_topics
from replay.producer import replay_events
from schemas.normalize import decode_payload
from tests.pipeline.conftest import CLUSTER, WorkerProcess, read_topic, unique_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

CORRELATIONS = Path(__file__).resolve().parents[2] / "detections" / "rules" / "correlations"
T0 = 1795770000.0  # 2026-11-27T08:20:00Z
BURST_IP = "203.0.113.7"


def audit(audit_id: str, user: str, t: float, **fields: Any) -> bytes:
    """One audit event as a JSON line."""
    event = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Event",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "get",
        "requestURI": "/api/v1/namespaces/default/pods",
        "user": {"username": user},
        "sourceIPs": ["192.0.2.10"],
        "userAgent": "kubectl/v1.31.2 (linux/amd64)",
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": iso(t),
        "stageTimestamp": iso(t + 0.01),
        **fields,
    }
    return orjson.dumps(event)


def refusal(i: int, user: str, t: float) -> bytes:
    """A 403 on listing secrets from `BURST_IP`."""
    return audit(
        f"refused-{user}-{i}",
        user,
        t,
        verb="list",
        requestURI="/api/v1/secrets",
        sourceIPs=[BURST_IP],
        objectRef={"resource": "secrets", "apiVersion": "v1"},
        responseStatus={"code": 403},
    )


def rbac_then_workload(user: str, t: float) -> list[bytes]:
    """A cluster role binding, then a deployment one minute later, by ``user``."""
    return [
        audit(
            f"rbac-{user}",
            user,
            t,
            verb="create",
            requestURI="/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            objectRef={
                "resource": "clusterrolebindings",
                "name": "pwn",
                "apiGroup": "rbac.authorization.k8s.io",
                "apiVersion": "v1",
            },
            responseStatus={"code": 201},
        ),
        audit(
            f"deploy-{user}",
            user,
            t + 60,
            verb="create",
            requestURI="/apis/apps/v1/namespaces/default/deployments",
            objectRef={
                "resource": "deployments",
                "namespace": "default",
                "name": "miner",
                "apiGroup": "apps",
                "apiVersion": "v1",
            },
            responseStatus={"code": 201},
        ),
    ]


def offline_alerts(lines: list[bytes]) -> dict[str, str]:
    """Alert id -> rule title, from the pure engines over ``lines`` in order."""
    rs = load_rules([str(CORRELATIONS)])
    events = decode_payload(b"\n".join(lines), cluster=CLUSTER).events
    matches = Engine(rs).evaluate_batch(events)
    held = suppressed_rule_ids(rs, packaged_new_terms(rs))
    out = {to_alert(m)["id"]: m.rule.title for m in matches if m.rule.id not in held}
    ce = CorrelationEngine(rs)
    out.update((a["id"], a["rule"]["title"]) for m in matches for a in ce.process(m))
    return out


def stateful_settings(bootstrap: str, tmp: Path) -> Settings:
    return unique_settings(bootstrap, tmp).replace(
        rules_paths=(CORRELATIONS,),
        stateful_detectors=DETECTOR_FAMILIES,
    )


def send(settings: Settings, lines: list[bytes]) -> None:
    """``lines`` as one raw message (fewer than 200 events)."""
    assert settings.bootstrap_servers and len(lines) < 200
    stats = asyncio.run(
        replay_events(
            lines, bootstrap=settings.bootstrap_servers, topic=settings.topic_raw, cluster=CLUSTER
        )
    )
    assert stats.messages == 1


def ready(worker: WorkerProcess) -> bool:
    """Assigned and reading (the status file lists lag per partition)."""
    return bool((worker.snapshot() or {}).get("lag"))


def idle(worker: WorkerProcess, events: int) -> bool:
    """``events`` detected and nothing left to read (by-group topic included)."""
    snap = worker.snapshot() or {}
    counters = snap.get("counters", {})
    return counters.get("detect_events", 0) >= events and snap.get("lag_total") == 0


def alerts_by_id(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    assert settings.bootstrap_servers
    out: dict[str, list[dict[str, Any]]] = {}
    for record in read_topic(settings.bootstrap_servers, settings.topic_alerts):
        out.setdefault(record.key.decode(), []).append(orjson.loads(record.value))
    return out


def wait_for_alerts(settings: Settings, worker: WorkerProcess, ids: set[str]) -> None:
    worker.wait_for(f"alerts {sorted(ids)}", lambda: ids <= set(alerts_by_id(settings)), 90)


def first_half_then_stop(settings: Settings, tmp_path: Path, lines: list[bytes]) -> None:
    """A worker processes ``lines``, lets one commit pass (its state is in the changelog)
    and stops cleanly."""
    first = WorkerProcess(settings, tmp_path, "first")
    try:
        first.wait_for("the first worker to be assigned", lambda: ready(first), 60)
        send(settings, lines)
        first.wait_for("the first half to be processed", lambda: idle(first, len(lines)), 60)
        time.sleep(1.5)  # past one commit interval
    finally:
        assert first.stop() == 0, first.log()[-3000:]


def test_burst_and_sequence_alerts_have_the_offline_ids(broker: str, tmp_path: Path) -> None:
    """Twenty refusals from one IP by twenty users (re-keyed across partitions) and an RBAC
    change followed by a deployment give exactly the pure engines' alerts, and the base
    rules' matches give none."""
    settings = stateful_settings(broker, tmp_path)
    lines = [refusal(i, f"user-{i}", T0 + i) for i in range(20)]
    lines += rbac_then_workload("mallory", T0 + 30)
    parts = {partition_for(event_key(orjson.loads(x) | {"cluster": CLUSTER}), 4) for x in lines}
    assert len(parts) == 4  # the burst really spans every partition
    expected = offline_alerts(lines)
    titles = sorted(expected.values())
    assert titles == [
        "Burst of refused requests from one source IP",
        "RBAC change followed by a workload write by the same identity",
    ]
    asyncio.run(ensure_topics(broker, settings))
    worker = WorkerProcess(settings, tmp_path, "solo")
    try:
        worker.wait_for("the worker to be assigned", lambda: ready(worker), 60)
        send(settings, lines)
        wait_for_alerts(settings, worker, set(expected))
        worker.wait_for("the worker to be idle", lambda: idle(worker, len(lines)), 60)
        got = alerts_by_id(settings)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert set(got) == set(expected)
    for alert_id, copies in got.items():
        assert {a["rule"]["title"] for a in copies} == {expected[alert_id]}
        assert copies[0]["evidence"]["detector"] == "correlation"


def test_restart_in_the_middle_of_a_window_gives_exactly_one_alert(
    broker: str, tmp_path: Path
) -> None:
    """Ten refusals by one user from one IP, a worker stop, a new worker, ten more: one alert
    per correlation (per user, per IP), with the ids the pure engine gives the twenty events;
    so the state came back from the changelog and nothing was counted twice."""
    settings = stateful_settings(broker, tmp_path)
    lines = [refusal(i, "eve", T0 + i) for i in range(20)]
    expected = offline_alerts(lines)
    assert sorted(expected.values()) == [
        "Burst of refused requests by one user",
        "Burst of refused requests from one source IP",
    ]
    asyncio.run(ensure_topics(broker, settings))
    first_half_then_stop(settings, tmp_path, lines[:10])
    assert alerts_by_id(settings) == {}
    assert broker and read_topic(broker, changelog_topic(settings))  # the state was written
    second = WorkerProcess(settings, tmp_path, "second")
    try:
        second.wait_for("the second worker to be assigned", lambda: ready(second), 60)
        send(settings, lines[10:])
        wait_for_alerts(settings, second, set(expected))
        second.wait_for("the second worker to be idle", lambda: idle(second, 10), 60)
        got = alerts_by_id(settings)
    finally:
        assert second.stop() == 0, second.log()[-3000:]
    assert set(got) == set(expected)
    assert "restored from" in second.log()


def test_a_restored_partition_kept_over_two_rebalances_keeps_its_state(
    broker: str, tmp_path: Path
) -> None:
    """Ten refusals and a stop; a worker restores the state (and releases Faust's copy once
    loaded), a second worker joins and the one not holding eve's partition stops, so the
    holder keeps that partition over two rebalances (Faust must read its changelog again in
    full: nothing was written since); ten more: the alerts the pure engine gives the twenty."""
    settings = stateful_settings(broker, tmp_path)
    lines = [refusal(i, "eve", T0 + i) for i in range(20)]
    expected = offline_alerts(lines)
    asyncio.run(ensure_topics(broker, settings))
    part = partition_for(f"{CLUSTER}|eve".encode(), settings.partitions)
    eve, topic = f"{settings.topic_events}:{part}", settings.topic_events

    def owned(w: WorkerProcess) -> set[str]:
        return {tp for tp in (w.snapshot() or {}).get("lag", {}) if tp.startswith(f"{topic}:")}

    first_half_then_stop(settings, tmp_path, lines[:10])
    a, b = WorkerProcess(settings, tmp_path, "a"), None
    workers = [a]
    try:
        a.wait_for("the restoring worker to be assigned", lambda: ready(a), 60)
        time.sleep(2.0)  # its timer loads every partition (and releases Faust's copy)
        b = WorkerProcess(settings, tmp_path, "b")
        workers.append(b)
        a.wait_for(
            "one worker each to hold eve's partition or not",
            lambda: (
                owned(a).isdisjoint(owned(b))
                and bool(owned(b))
                and (eve in owned(a)) != (eve in owned(b))
            ),
            90,
        )
        holder, other = (a, b) if eve in owned(a) else (b, a)
        time.sleep(2.0)
        restored = f"partition {part} restored from "
        before = holder.log().count(restored)
        assert other.stop() == 0, other.log()[-3000:]
        workers.remove(other)
        every = {f"{topic}:{p}" for p in range(settings.partitions)}
        holder.wait_for("the holder to own every partition", lambda: owned(holder) == every, 90)
        holder.wait_for("eve's partition reloaded", lambda: holder.log().count(restored) > before)
        send(settings, lines[10:])
        wait_for_alerts(settings, holder, set(expected))
        got = alerts_by_id(settings)
    finally:
        for w in workers:
            assert w.stop() == 0, w.log()[-3000:]
    assert set(got) == set(expected)
    # every reload found at least the keys of the first (no key of it was deleted since)
    keys = [int(n) for n in re.findall(rf"{restored}(\d+) changelog keys", holder.log())]
    assert len(keys) >= 2 and min(keys) == keys[0], keys
