"""The worker's fast path gives the same results as the plain one: handoff, GC tuning, metrics."""

from __future__ import annotations

import gc
import platform
import sys
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pipeline.coalesce import join_events_messages
from pipeline.handoff import Evaluated, Handoff, fingerprint
from pipeline.metrics import Counters, Progress, health_snapshot
from pipeline.processing import Source, decode_events_message, detect_message, normalise_message
from pipeline.reload import build_engine
from pipeline.worker import tune_gc, tune_malloc
from tests.pipeline.conftest import RULES, build_input


def _raw_payloads(lines: list[bytes], per_message: int = 50) -> list[bytes]:
    return [b"\n".join(lines[i : i + per_message]) for i in range(0, len(lines), per_message)]


def test_handed_off_events_are_exactly_what_the_detect_agent_would_parse() -> None:
    """For the bundled sample, every events message's attached events equal its parsed value."""
    messages = 0
    for i, payload in enumerate(_raw_payloads(build_input())):
        result = normalise_message(payload, Source("raw", 0, i), partitions=4, cluster="c")
        for out in result.messages:
            parsed = decode_events_message(out.value)
            assert out.events == parsed
            assert _types(out.events) == _types(parsed)  # list stays list, int stays int
            messages += 1
    assert messages > 10


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def test_detect_finds_the_same_alerts_from_handed_off_and_from_parsed_events() -> None:
    """Taking events from the handoff changes no alert (ids and bodies)."""
    from detections.alert import to_alert

    engine, _ = build_engine([RULES], [])
    handoff = Handoff()
    plain: list[bytes] = []
    fast: list[bytes] = []
    for i, payload in enumerate(_raw_payloads(build_input())):
        result = normalise_message(payload, Source("raw", 0, i), partitions=4, cluster="c")
        for out in result.messages:
            assert out.events is not None
            handoff.put(out.value, out.events)
        for j, out in enumerate(result.messages):
            src = Source("events", out.partition, j)
            plain += [a.value for a in detect_message(out.value, src, engine, to_alert).alerts]
            decoded = handoff.take(out.value)
            assert decoded is not None
            res = detect_message(out.value, src, engine, to_alert, decoded=decoded)
            fast += [a.value for a in res.alerts]
    assert plain and fast == plain
    assert handoff.misses == 0 and len(handoff) == 0


def test_matches_found_at_decode_and_joined_are_the_detect_agents_own() -> None:
    """The normalise agent's matches of each events message, joined as the messages are
    joined, are exactly what evaluating the joined batch gives, and the detect agent finds
    the same alerts (ids and bodies) from them as from evaluating itself."""
    from detections.alert import to_alert

    engine, _ = build_engine([RULES], [])
    by_partition: dict[int, list[Any]] = {}
    for i, payload in enumerate(_raw_payloads(build_input())):
        result = normalise_message(payload, Source("raw", 0, i), partitions=4, cluster="c")
        for out in result.messages:
            assert out.events is not None
            known = replace(out, matches=list(engine.evaluate_batch(out.events)))
            by_partition.setdefault(out.partition or 0, []).append(known)
    handoff = Handoff()
    found = 0
    for part, messages in sorted(by_partition.items()):
        joined = join_events_messages(messages)
        assert joined.events is not None and joined.matches is not None
        assert joined.matches == list(engine.evaluate_batch(joined.events))
        found += len(joined.matches)
        handoff.put(joined.value, joined.events, joined.matches)
        src = Source("events", part, 0)
        plain = detect_message(joined.value, src, engine, to_alert).alerts
        batch = handoff.take_batch(joined.value)
        assert batch is not None and batch.matches is not None
        given = Evaluated(_Refusing(), batch.events, batch.matches)
        fast = detect_message(joined.value, src, given, to_alert, decoded=batch.events).alerts
        assert [a.value for a in fast] == [a.value for a in plain]
    assert found > 10


class _Refusing:
    """An engine that must not be asked (the matches are known)."""

    def evaluate_batch(self, events: list[dict[str, Any]]) -> list[Any]:
        raise AssertionError("evaluated again")


def test_a_message_without_matches_makes_the_joined_message_evaluate_again() -> None:
    """Matches are joined all or none: a part the normalise agent did not evaluate (another
    worker's partition when it was encoded, or an evaluation that failed) leaves the
    joined message to the detect agent's engine."""
    from pipeline.processing import encode_events_messages

    [a] = encode_events_messages([{"auditID": "a"}], 0)
    [b] = encode_events_messages([{"auditID": "b"}], 0)
    assert join_events_messages([replace(a, matches=["m"]), b]).matches is None
    assert join_events_messages([replace(a, matches=["m"]), replace(b, matches=[])]).matches == [
        "m"
    ]


def test_known_matches_answer_only_for_their_own_events() -> None:
    """The one-by-one retry after a failing batch asks for other lists: those are evaluated."""
    calls: list[int] = []

    class Engine:
        def evaluate_batch(self, events: list[dict[str, Any]]) -> list[Any]:
            calls.append(len(events))
            return ["fresh"] * len(events)

    events = [{"auditID": "a"}, {"auditID": "b"}]
    known = Evaluated(Engine(), events, ["known"])
    assert known.evaluate_batch(list(events)) == ["known"] and calls == []
    assert known.evaluate_batch(events[:1]) == ["fresh"] and calls == [1]
    assert known.evaluate_batch([{"auditID": "c"}, {"auditID": "b"}]) == ["fresh", "fresh"]


def test_handoff_files_the_matches_with_the_events() -> None:
    handoff = Handoff()
    handoff.put(b"v", [{"auditID": "a"}], ["m"])
    handoff.put(b"w", [{"auditID": "b"}])
    assert handoff.take(b"v") == [{"auditID": "a"}]  # events only, the matches forgotten too
    batch = handoff.take_batch(b"w")
    assert batch is not None and batch.matches is None and handoff.events == 0


def test_handoff_only_answers_for_the_exact_bytes_it_was_given() -> None:
    """A value that differs by one byte, or was never put, is a miss (the agent parses it)."""
    handoff = Handoff()
    value = orjson.dumps({"v": 1, "events": [{"auditID": "a"}]})
    handoff.put(value, [{"auditID": "a"}])
    assert handoff.take(value.replace(b'"a"', b'"b"')) is None
    assert handoff.take(None) is None
    assert handoff.take(bytes(bytearray(value))) == [{"auditID": "a"}]  # equal bytes, new object
    assert (handoff.hits, handoff.misses) == (1, 2)


def test_handoff_tells_apart_values_that_differ_only_between_head_and_tail() -> None:
    """Batches are filed by length, head and tail; a value sharing those with a held one but
    differing in the middle is a miss, and the held batch still answers for its own bytes."""
    events = [{"auditID": "a", "pad": "x" * 400}, {"auditID": "b", "pad": "y" * 400}]
    value = orjson.dumps({"v": 1, "events": events})
    middle = len(value) // 2
    other = (
        value[:middle]
        + (b"z" if value[middle : middle + 1] != b"z" else b"w")
        + value[middle + 1 :]
    )
    assert fingerprint(other) == fingerprint(value) and other != value
    handoff = Handoff()
    handoff.put(value, events)
    assert handoff.take(other) is None
    assert handoff.take(bytes(bytearray(value))) == events
    assert (handoff.hits, handoff.misses, len(handoff), handoff.events) == (1, 1, 0, 0)


def test_handoff_put_again_under_the_same_print_replaces_the_batch() -> None:
    """A second batch under the same fingerprint replaces the first (which then misses):
    the events count stays exact."""
    first = b'{"v":1,"events":[' + b"1" * 400 + b"]}"
    second = b'{"v":1,"events":[' + b"1" * 200 + b"2" + b"1" * 199 + b"]}"
    assert fingerprint(first) == fingerprint(second)
    handoff = Handoff()
    handoff.put(first, [{}] * 3)
    handoff.put(second, [{}] * 2)
    assert handoff.events == 2 and len(handoff) == 1
    assert handoff.take(first) is None and handoff.take(second) == [{}] * 2
    assert handoff.events == 0


def test_handoff_holds_at_most_its_bound_dropping_the_oldest_first() -> None:
    """Events held never exceed the bound; the oldest batches go, oversized ones never enter."""
    handoff = Handoff(max_events=10)
    for i in range(6):
        handoff.put(str(i).encode(), [{"n": i}] * 4)
        assert handoff.events <= 10
    assert handoff.take(b"0") is None and handoff.take(b"5") == [{"n": 5}] * 4
    handoff.put(b"huge", [{}] * 11)
    assert handoff.take(b"huge") is None
    assert handoff.dropped == 4


def test_handoff_bound_of_zero_keeps_nothing() -> None:
    """``handoff_events=0`` turns the handoff off."""
    handoff = Handoff(max_events=0)
    handoff.put(b"x", [{}])
    assert len(handoff) == 0 and handoff.take(b"x") is None


@pytest.fixture
def restore_gc() -> Any:
    old = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*old)


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold(restore_gc: Any) -> None:
    """After tuning, start-up objects are out of collections and young collections are rare."""
    before = gc.get_threshold()
    assert tune_gc(12_345) == before
    assert gc.get_threshold() == (12_345, before[1], before[2])
    assert gc.get_freeze_count() > 0


def test_snapshot_reports_cpu_seconds_and_sends_in_flight() -> None:
    """The status file says how much CPU processing took and whether output is still unacked."""
    ticks = iter([10.0, 5.0, 12.5, 6.0])
    progress = Progress(cpu=lambda: next(ticks), thread_cpu=lambda: next(ticks))
    progress.mark("raw", 0, 1)
    progress.mark("raw", 0, 2)
    snap = health_snapshot(
        Counters(),
        lag={},
        since_last=0.0,
        now=1.0,
        started=0.0,
        rules=1,
        interval=1.0,
        progress=progress,
        sends_in_flight=3,
    )
    assert snap["cpu_s_first_to_last"] == {"process": 2.5, "loop": 1.0}
    assert snap["sends_in_flight"] == 3


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc only",
)
def test_tune_malloc_is_taken_by_glibc() -> None:
    """The worker's malloc settings reach glibc (mallopt answers 1 for each)."""
    assert tune_malloc() is True
