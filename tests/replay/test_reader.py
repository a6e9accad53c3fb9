"""Reading audit log files into single events and grouping them into raw-topic payloads."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from replay.errors import ReplayInputError
from replay.producer import EventTimeSchedule, rate_schedule
from replay.reader import iter_batches, iter_events

EVENTS = [{"auditID": str(i), "verb": "get", "stage": "ResponseComplete"} for i in range(5)]


def write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_json_lines_pass_through_byte_for_byte(tmp_path: Path, gz: bool) -> None:
    """Each non-blank line is one event, unparsed and unchanged, gzip or not."""
    lines = [orjson.dumps(e) for e in EVENTS] + [b"not json at all"]
    data = b"\n".join(lines[:2]) + b"\n\n  \n" + b"\r\n".join(lines[2:]) + b"\n"
    path = write(tmp_path / "log.jsonl", data, gz=gz)
    assert list(iter_events(path)) == lines


@pytest.mark.parametrize(
    "doc",
    [EVENTS, {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": EVENTS}],
    ids=["array", "eventlist"],
)
def test_json_documents_are_expanded_to_events(tmp_path: Path, doc: object) -> None:
    """A JSON array or an EventList, even pretty-printed, yields its items."""
    path = write(tmp_path / "doc.json", orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    assert [orjson.loads(e) for e in iter_events(path)] == EVENTS


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    """A gzip file without .gz in its name is still read."""
    path = write(tmp_path / "audit.log", orjson.dumps(EVENTS), gz=True)
    assert len(list(iter_events(path))) == len(EVENTS)


def test_a_single_pretty_printed_object_is_one_item(tmp_path: Path) -> None:
    """One multi-line JSON object (an event or a cloud envelope) is yielded whole."""
    envelope = {"records": [{"category": "kube-audit", "properties": {"log": "{}"}}]}
    path = write(tmp_path / "aks.json", orjson.dumps(envelope, option=orjson.OPT_INDENT_2))
    assert [orjson.loads(e) for e in iter_events(path)] == [envelope]


@pytest.mark.parametrize("data", [b"[1, 2", b"42", b"{\n broken"])
def test_unreadable_documents_raise_replay_input_error(tmp_path: Path, data: bytes) -> None:
    """Files that are neither JSON lines nor one JSON document of events are refused."""
    with pytest.raises(ReplayInputError):
        list(iter_events(write(tmp_path / "bad.json", data)))


def test_missing_file_raises_replay_input_error(tmp_path: Path) -> None:
    """A missing file is a ReplayInputError naming it."""
    with pytest.raises(ReplayInputError, match="nope"):
        list(iter_events(tmp_path / "nope"))


def test_empty_file_has_no_events(tmp_path: Path) -> None:
    """An empty (or blank) file yields nothing."""
    assert list(iter_events(write(tmp_path / "e", b"\n \n"))) == []


def test_batches_respect_event_and_byte_limits_and_keep_order() -> None:
    """Batches hold at most N events and B bytes; joined back they are the input."""
    events = [b"x" * (i % 7 + 1) for i in range(1000)]
    batches = list(iter_batches(events, max_events=200, max_bytes=500))
    assert all(b.events <= 200 and len(b.payload) <= 500 for b in batches)
    assert b"\n".join(b.payload for b in batches).split(b"\n") == events
    assert sum(b.events for b in batches) == 1000


def test_an_event_bigger_than_the_byte_limit_travels_alone() -> None:
    """An oversized event gets a batch of its own instead of being dropped."""
    batches = list(iter_batches([b"a", b"b" * 50, b"c"], max_bytes=10))
    assert [b.payload for b in batches] == [b"a", b"b" * 50, b"c"]


def test_rate_pacing_spreads_batches_over_time() -> None:
    """With a rate, batches carry due times i/rate of their first event."""
    batches = list(iter_batches([b"e"] * 10, schedule=rate_schedule(10), window=0.25))
    assert [(b.events, b.due) for b in batches] == [(3, 0.0), (3, 0.3), (3, 0.6), (1, 0.9)]


def test_event_time_pacing_follows_timestamps_divided_by_speed() -> None:
    """Events are due as far apart as their timestamps, scaled by speed, never backwards."""
    stamps = ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "2024-01-01T00:00:30Z"]
    events = [orjson.dumps({"stageTimestamp": s}) for s in stamps]
    schedule = EventTimeSchedule(speed=60)
    assert [schedule(i, e) for i, e in enumerate(events)] == [0.0, 1.0, 1.0]
