"""The agents' pure core: routing, normalising one raw message, detecting on one events message."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from pipeline.processing import (
    MAX_DEADLETTER_ORIGINAL,
    Source,
    decode_events_message,
    detect_message,
    encode_events_messages,
    normalise_message,
)
from pipeline.routing import event_key, group_by_partition, partition_for, partitioner
from pipeline.routing import murmur2 as fast_murmur2

SRC = Source("raw", 2, 41)


def event(i: int, user: str = "alice", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": f"id-{i}",
        "stage": "ResponseComplete",
        "verb": "get",
        "requestURI": "/api/v1/namespaces/default/pods",
        "user": {"username": user},
        **extra,
    }


def jsonl(*items: Any) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else orjson.dumps(i) for i in items)


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's own test vectors (clients UtilsTest.testMurmur2), as signed Java ints.
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
def test_partitioning_uses_kafkas_murmur2(key: bytes, java_murmur2: int) -> None:
    """Keys hash exactly like Kafka's Java client, so other producers agree with us."""
    assert murmur2(key) == java_murmur2 & 0xFFFFFFFF
    assert fast_murmur2(key) == java_murmur2 & 0xFFFFFFFF
    assert partition_for(key, 7) == (java_murmur2 & 0x7FFFFFFF) % 7


@given(st.binary(max_size=600))
def test_fast_murmur2_equals_aiokafkas_for_any_bytes(data: bytes) -> None:
    """Our word-at-a-time murmur2 gives aiokafka's byte-at-a-time result for every input."""
    assert fast_murmur2(data) == murmur2(data)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_for_agrees_with_aiokafka_default_partitioner(key: bytes, n: int) -> None:
    """Our partition for a key is the one aiokafka's default partitioner picks."""
    parts = list(range(n))
    assert partition_for(key, n) == DefaultPartitioner()(key, parts, parts)
    assert partitioner(key, parts, parts) == DefaultPartitioner()(key, parts, parts)


def test_group_by_partition_keeps_each_principal_together_in_order() -> None:
    """All events of one cluster|user land in one group, in input order."""
    evs = [event(i, user=f"u{i % 3}", cluster="c") for i in range(30)]
    groups = group_by_partition(evs, 4)
    for group in groups.values():
        for user in {e["user"]["username"] for e in group}:
            ids = [e["auditID"] for e in group if e["user"]["username"] == user]
            assert ids == [e["auditID"] for e in evs if e["user"]["username"] == user]
    for part, group in groups.items():
        assert all(partition_for(event_key(e), 4) == part for e in group)


def test_one_raw_message_of_n_events_yields_at_most_one_message_per_partition() -> None:
    """200 events of 50 users become at most 4 events messages holding all 200."""
    payload = jsonl(*(event(i, user=f"user{i % 50}") for i in range(200)))
    result = normalise_message(payload, SRC, partitions=4, cluster="prod")
    assert result.events_in == result.normalised == 200
    assert len(result.messages) <= 4
    total = 0
    for msg in result.messages:
        doc = orjson.loads(msg.value)
        assert doc["v"] == 1
        total += len(doc["events"])
        assert {partition_for(event_key(e), 4) for e in doc["events"]} == {msg.partition}
        assert all(e["cluster"] == "prod" for e in doc["events"])
    assert total == 200


def test_rejected_items_become_dead_letters_with_reason_source_and_bytes() -> None:
    """A bad line is dead-lettered with its reason, where it came from and its exact bytes."""
    result = normalise_message(jsonl(event(1), b"{oops"), SRC, partitions=4, cluster="c")
    assert (result.events_in, result.normalised, len(result.dead_letters)) == (2, 1, 1)
    letter = orjson.loads(result.dead_letters[0])
    assert letter["reason"]
    assert letter["source"] == {"topic": "raw", "partition": 2, "offset": 41}
    assert base64.b64decode(letter["original_b64"]) == b"{oops"


def test_filtered_events_are_counted_not_sent() -> None:
    """RequestReceived duplicates are counted as filtered and never reach the events topic."""
    payload = jsonl(event(1, stage="RequestReceived"), event(2))
    result = normalise_message(payload, SRC, partitions=4, cluster="c")
    assert result.filtered == {"stage:RequestReceived": 1}
    assert result.events_in == result.normalised + len(result.dead_letters) + 1


def test_a_normaliser_crash_dead_letters_the_whole_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """If decode_payload itself raises, the message is dead-lettered, not lost or fatal."""
    # The module run from its source: compiled (schemas.native), it calls decode_payload
    # directly and would not see the replacement.
    path = Path(__file__).resolve().parents[2] / "pipeline" / "processing.py"
    spec = importlib.util.spec_from_file_location("processing_source", path)
    assert spec is not None and spec.loader is not None
    processing = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "processing_source", processing)  # dataclasses look it up
    spec.loader.exec_module(processing)

    def boom(payload: bytes, **_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(processing, "decode_payload", boom)
    result = processing.normalise_message(b'{"x":1}', SRC, partitions=4, cluster="c")
    assert (result.events_in, result.normalised, len(result.dead_letters)) == (1, 0, 1)
    assert orjson.loads(result.dead_letters[0])["reason"].startswith("normaliser error: Runtime")


def test_huge_originals_are_truncated_so_the_dead_letter_stays_sendable() -> None:
    """A dead letter never carries more than MAX_DEADLETTER_ORIGINAL original bytes."""
    payload = b"x" * (MAX_DEADLETTER_ORIGINAL + 10)
    result = normalise_message(payload, SRC, partitions=4, cluster="c")
    letter = orjson.loads(result.dead_letters[0])
    assert len(base64.b64decode(letter["original_b64"])) == MAX_DEADLETTER_ORIGINAL
    assert "truncated" in letter["reason"]


def test_big_partition_groups_are_split_under_the_size_limit() -> None:
    """Events messages are split so each stays under max_bytes, losing no event."""
    evs = [event(i, pad="y" * 1000) for i in range(50)]
    messages = encode_events_messages(evs, 0, max_bytes=10_000)
    assert all(len(m.value) <= 10_000 for m in messages)
    assert [e for m in messages for e in orjson.loads(m.value)["events"]] == evs


@pytest.mark.parametrize(
    "value", [None, b"", b"nope", b"[1]", b'{"v":2,"events":[]}', b'{"v":1,"events":{}}']
)
def test_malformed_events_messages_are_named(value: bytes | None) -> None:
    """Anything but {"v":1,"events":[...]} is reported as a malformed events message."""
    reason = decode_events_message(value)
    assert isinstance(reason, str) and reason.startswith("malformed events message")


def engine_matching(pred: Any) -> Any:
    return SimpleNamespace(
        evaluate_batch=lambda evs: [SimpleNamespace(event=e) for e in evs if pred(e)]
    )


def alert_of(match: Any) -> dict[str, Any]:
    return {"id": "alert-" + match.event["auditID"]}


def test_detect_sends_one_alert_per_match_keyed_by_alert_id() -> None:
    """Each match becomes one alert message whose key is the alert id."""
    value = orjson.dumps({"v": 1, "events": [event(1), event(2, verb="delete")]})
    engine = engine_matching(lambda e: e["verb"] == "delete")
    result = detect_message(value, SRC, engine, alert_of)
    assert [(a.key, orjson.loads(a.value)) for a in result.alerts] == [
        (b"alert-id-2", {"id": "alert-id-2"})
    ]
    assert (result.events, result.errors, result.dead_letters) == (2, 0, [])


def test_an_event_that_breaks_the_engine_is_dead_lettered_alone() -> None:
    """One poisonous event costs its own dead letter; the rest of the batch still alerts."""

    def evaluate_batch(evs: list[dict[str, Any]]) -> list[Any]:
        if any(e.get("poison") for e in evs):
            raise ValueError("engine bug")
        return [SimpleNamespace(event=e) for e in evs]

    value = orjson.dumps({"v": 1, "events": [event(1), event(2, poison=True), event(3)]})
    engine = SimpleNamespace(evaluate_batch=evaluate_batch)
    result = detect_message(value, SRC, engine, alert_of)
    assert [a.key for a in result.alerts] == [b"alert-id-1", b"alert-id-3"]
    assert result.errors == 1
    letter = orjson.loads(result.dead_letters[0])
    assert letter["reason"].startswith("detection error: ValueError: engine bug")
    assert orjson.loads(base64.b64decode(letter["original_b64"]))["auditID"] == "id-2"


def test_malformed_events_message_and_non_object_items_are_dead_lettered() -> None:
    """A broken events message, and non-object items inside a good one, become dead letters."""
    engine = engine_matching(lambda e: True)
    broken = detect_message(b"garbage", SRC, engine, alert_of)
    assert (broken.errors, len(broken.dead_letters), broken.alerts) == (1, 1, [])
    mixed = detect_message(b'{"v":1,"events":[3,{"auditID":"a"}]}', SRC, engine, alert_of)
    assert [a.key for a in mixed.alerts] == [b"alert-a"]
    assert mixed.errors == 1


def test_an_alert_that_cannot_be_built_is_dead_lettered() -> None:
    """If to_alert raises for a match, that event is dead-lettered with the reason."""

    def bad_alert(match: Any) -> dict[str, Any]:
        raise KeyError("stage")

    value = orjson.dumps({"v": 1, "events": [event(1)]})
    result = detect_message(value, SRC, engine_matching(lambda e: True), bad_alert)
    assert result.alerts == [] and result.errors == 1
    assert orjson.loads(result.dead_letters[0])["reason"].startswith("alert error: KeyError")
