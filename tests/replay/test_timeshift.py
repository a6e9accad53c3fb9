"""`replay.timeshift`: one constant shift of every event's timestamps, spacing kept."""

from __future__ import annotations

import orjson
import pytest

from replay.reader import event_time, iter_events
from replay.sample import SAMPLE_PATH
from replay.timeshift import TimeShifter, parse_time, shift_timestamp
from schemas.normalize import decode_payload

TARGET = parse_time("2031-03-04T05:06:07Z")


def canonical_times(line: bytes) -> list[float]:
    """(requestReceived, stage) epoch seconds of each event the normaliser makes of ``line``."""
    out = []
    for ev in decode_payload(line, cluster="c").events:
        for key in ("requestReceivedTimestamp", "stageTimestamp"):
            if key in ev:
                out.append(parse_time(ev[key]))
    return out


def test_the_sample_moves_to_the_target_with_its_spacing_and_bodies_kept() -> None:
    """First event at the target, every gap the same to the microsecond, nothing else changed."""
    lines = list(iter_events(SAMPLE_PATH))
    shift = TimeShifter(start=TARGET)
    moved = [shift(line) for line in lines]
    first = orjson.loads(moved[0])
    assert parse_time(first["requestReceivedTimestamp"]) == TARGET
    assert shift.delta_us is not None
    before = [event_time(line) for line in lines]
    after = [event_time(line) for line in moved]
    for b, a in zip(before, after, strict=True):
        assert b is not None and a is not None
        assert round((a - b) * 1_000_000) == shift.delta_us
    for old, new in zip(lines[:200], moved[:200], strict=True):
        o, n = orjson.loads(old), orjson.loads(new)
        for key in ("requestReceivedTimestamp", "stageTimestamp"):
            o.pop(key, None), n.pop(key, None)
        assert o == n


def test_now_is_the_clock_when_the_first_timestamped_event_is_seen() -> None:
    """Lines before it (no timestamp, not JSON) pass as they are."""
    shift = TimeShifter(clock=lambda: 1000.0)
    assert shift(b"garbage") == b"garbage"
    assert shift(b'{"verb":"get"}') == b'{"verb":"get"}'
    out = shift(b'{"verb":"get","stageTimestamp":"1970-01-01T00:00:10Z"}')
    assert orjson.loads(out)["stageTimestamp"] == "1970-01-01T00:16:40Z"
    assert shift.delta_us == 990_000_000


EVENT = {
    "kind": "Event",
    "auditID": "x1",
    "stage": "ResponseComplete",
    "verb": "get",
    "user": {"username": "alice"},
    "requestURI": "/api/v1/pods",
    "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
    "stageTimestamp": "2024-05-01T10:00:00.250000Z",
    "requestObject": {"metadata": {"creationTimestamp": "2024-05-01T09:00:00Z"}},
}


@pytest.mark.parametrize(
    "doc",
    [
        {
            "records": [
                {
                    "time": "2024-05-01T10:00:01Z",
                    "category": "kube-audit",
                    "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/"
                    "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/aks1",
                    "properties": {"log": orjson.dumps(EVENT).decode()},
                }
            ]
        },
        {
            "time": "2024-05-01T10:00:01Z",
            "category": "kube-audit",
            "properties": {"log": EVENT},
        },
        {
            "messageType": "DATA_MESSAGE",
            "logGroup": "/aws/eks/eks1/cluster",
            "logStream": "kube-apiserver-audit-abc",
            "logEvents": [
                {"id": "1", "timestamp": 1714557601000, "message": orjson.dumps(EVENT).decode()}
            ],
        },
        {"kind": "EventList", "items": [EVENT]},
        [EVENT],
    ],
    ids=["aks", "aks-record", "eks", "eventlist", "array"],
)
def test_cloud_envelopes_shift_the_event_inside_and_their_own_times(doc: object) -> None:
    """What the normaliser makes of the shifted envelope is the event at the target; bodies
    (here a ``creationTimestamp``) are left alone."""
    line = orjson.dumps(doc)
    out = TimeShifter(start=TARGET)(line)
    assert canonical_times(out) == [TARGET, TARGET + 0.25]
    assert b"2024-05-01T09:00:00Z" in out  # the body's timestamp
    assert b"2024-05-01T10:00:01" not in out and b"1714557601000" not in out


def test_gke_entries_shift_timestamp_and_receive_timestamp() -> None:
    entry = {
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "k8s.io",
            "methodName": "io.k8s.core.v1.pods.get",
            "resourceName": "core/v1/namespaces/default/pods/p",
            "authenticationInfo": {"principalEmail": "bob@example.com"},
        },
        "insertId": "g1",
        "timestamp": "2024-05-01T10:00:00.123456789Z",
        "receiveTimestamp": "2024-05-01T10:00:01.5Z",
    }
    out = orjson.loads(TimeShifter(start=TARGET)(orjson.dumps(entry)))
    assert out["timestamp"] == "2031-03-04T05:06:07.000000789Z"
    assert out["receiveTimestamp"] == "2031-03-04T05:06:08.376544Z"
    assert canonical_times(orjson.dumps(out)) == [TARGET]


@pytest.mark.parametrize(
    ("value", "delta", "expected"),
    [
        ("2024-12-31T23:59:59.999999Z", 1, "2025-01-01T00:00:00.000000Z"),
        ("2024-01-01T00:00:00Z", -1_500_000, "2023-12-31T23:59:58.5Z"),
        ("2024-01-01T00:00:00+02:00", 3_600_000_000, "2024-01-01T01:00:00+02:00"),
        ("not a time", 5, "not a time"),
    ],
)
def test_shift_timestamp_keeps_precision_and_zone(value: str, delta: int, expected: str) -> None:
    assert shift_timestamp(value, delta) == expected
