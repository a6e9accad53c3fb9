"""`pipeline.coalesce`: consecutive raw messages' events messages, joined per partition.

A joined message is exactly what encoding the joined events would give, holds no more
than the limits allow, keeps each partition's order, and nothing held is ever lost: what
`add` does not let out, `drain` does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.coalesce import EventsBuffer, join_events_messages
from pipeline.processing import Outgoing, Source, encode_events_messages, normalise_message
from tests.pipeline.conftest import sample_events


def events(n: int, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    return [
        {"auditID": f"e{i}", "user": {"username": "u"}, "pad": "x" * pad}
        for i in range(start, start + n)
    ]


def test_a_joined_message_is_the_encoding_of_the_joined_events() -> None:
    parts = [encode_events_messages(events(3, 3 * k), 1)[0] for k in range(4)]
    joined = join_events_messages(parts)
    [expected] = encode_events_messages(events(12), 1)
    assert joined.value == expected.value
    assert joined.events == events(12)
    assert (joined.key, joined.partition) == (parts[0].key, 1)


def test_the_sample_joined_per_partition_is_byte_identical_to_encoding_it_whole() -> None:
    lines = [orjson.dumps(e) for e in sample_events()[:1200]]
    raws = [b"\n".join(lines[i : i + 100]) for i in range(0, len(lines), 100)]
    buffer = EventsBuffer(max_events=10**9, max_bytes=10**9)
    out: list[Outgoing] = []
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for offset, raw in enumerate(raws):
        result = normalise_message(raw, Source("raw", 0, offset), partitions=4, cluster="c")
        for m in result.messages:
            assert m.partition is not None and m.events is not None
            by_partition.setdefault(m.partition, []).extend(m.events)
        out += buffer.add_all(result.messages)
    out += buffer.drain()
    assert sorted(m.partition for m in out if m.partition is not None) == sorted(by_partition)
    for m in out:
        assert m.partition is not None
        [whole] = encode_events_messages(by_partition[m.partition], m.partition, max_bytes=10**9)
        assert m.value == whole.value


def test_a_partition_is_let_out_when_it_holds_max_events() -> None:
    buffer = EventsBuffer(max_events=10)
    sent = buffer.add(encode_events_messages(events(6), 0)[0])
    sent += buffer.add(encode_events_messages(events(3, 6), 2)[0])
    assert sent == [] and buffer.events == 9
    sent = buffer.add(encode_events_messages(events(5, 9), 0)[0])
    assert [(m.partition, len(orjson.loads(m.value)["events"])) for m in sent] == [(0, 11)]
    assert buffer.events == 3
    [rest] = buffer.drain()
    assert (rest.partition, rest.events) == (2, events(3, 6))


@pytest.mark.parametrize("limit", [600, 1000, 5000])
def test_a_joined_message_never_passes_max_bytes(limit: int) -> None:
    buffer = EventsBuffer(max_events=10**6, max_bytes=limit)
    sent: list[Outgoing] = []
    for k in range(40):
        sent += buffer.add_all(encode_events_messages(events(2, 2 * k, pad=50), 3))
    sent += buffer.drain()
    assert all(len(m.value) <= limit for m in sent)
    got = [e for m in sent for e in orjson.loads(m.value)["events"]]
    assert got == events(80, pad=50)  # all of them, in order


def test_each_partition_keeps_its_order_and_nothing_is_lost() -> None:
    buffer = EventsBuffer(max_events=7)
    sent: list[Outgoing] = []
    expected: dict[int, list[dict[str, Any]]] = {}
    for k in range(30):
        batch = events(k % 4 + 1, 100 * k)
        part = k % 3
        expected.setdefault(part, []).extend(batch)
        sent += buffer.add(encode_events_messages(batch, part)[0])
    sent += buffer.drain()
    got: dict[int, list[dict[str, Any]]] = {}
    for m in sent:
        assert m.partition is not None
        got.setdefault(m.partition, []).extend(orjson.loads(m.value)["events"])
    assert got == expected
    assert buffer.events == 0 and buffer.since is None


def test_a_message_it_did_not_encode_goes_out_at_once_after_its_partition() -> None:
    buffer = EventsBuffer()
    held = encode_events_messages(events(2), 1)[0]
    foreign = Outgoing(b"k", b'{"v":1,"events":[]}', 1)
    assert buffer.add(held) == []
    assert buffer.add(foreign) == [held, foreign]


def test_it_remembers_when_the_oldest_message_came() -> None:
    now = [10.0]
    buffer = EventsBuffer(clock=lambda: now[0])
    assert buffer.since is None
    buffer.add(encode_events_messages(events(1), 0)[0])
    now[0] = 11.0
    buffer.add(encode_events_messages(events(1), 1)[0])
    assert buffer.since == 10.0
    assert buffer.waited(1.0) and not buffer.waited(1.5)
    buffer.drain()
    assert buffer.since is None and not buffer.waited(0.0)
