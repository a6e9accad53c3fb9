"""Event time parsing: the API server's own form and every other RFC 3339 form agree."""

from __future__ import annotations

import datetime as dt
import random

from detections.stateful.timeutil import event_time, iso, parse_time


def test_the_api_servers_form_reads_exactly_like_the_general_path() -> None:
    """``...SS.ffffffZ`` (the fast path) gives the very float the general path gives for
    the same instant written with ``+00:00`` (general path), over 1970-2100."""
    rng = random.Random(13)
    for _ in range(20_000):
        t = rng.randrange(0, 4_102_444_800) + rng.randrange(1_000_000) / 1e6
        text = iso(t)
        assert len(text) == 27
        fast = parse_time(text)
        general = parse_time(text[:-1] + "+00:00")
        assert fast is not None and fast == general
        assert parse_time(" " + text) == fast  # padded: the general path


def test_shapes_the_fast_path_cannot_read_fall_back_or_fail() -> None:
    assert parse_time("2026-11-27T09:15:60.104526Z") is None  # no leap seconds
    assert parse_time("2026-13-27T09:15:02.104526Z") is None
    assert parse_time("2026-11-27T09:15:02.104526z") == parse_time("2026-11-27T09:15:02.104526Z")
    assert parse_time("2026-11-27T09:15:02.1045261Z") == parse_time("2026-11-27T09:15:02.104526Z")
    assert parse_time("2026-11-27T09:15:02Z") == 1_795_770_902.0
    assert event_time({"requestReceivedTimestamp": "nonsense", "stageTimestamp": 3}) is None


def _by_fromisoformat(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def test_the_fast_path_is_fromisoformat_for_every_second_seen_again_or_not() -> None:
    """Many events share a second (its epoch value is remembered, up to a bound): the
    remembered second plus the microseconds is the float ``fromisoformat`` gives, for
    seconds seen before, new ones, and after the memory of seconds was cleared."""
    rng = random.Random(5)
    seconds = [rng.randrange(0, 4_102_444_800) for _ in range(6_000)]  # > the bound
    for _ in range(30_000):
        text = iso(rng.choice(seconds) + rng.randrange(1_000_000) / 1e6)
        assert parse_time(text) == _by_fromisoformat(text)


def test_odd_texts_of_the_fast_paths_length_read_as_fromisoformat_reads_them() -> None:
    for text in (
        "2026-11-27T09:15+02.104526Z",  # an offset where the seconds belong
        "2026-11-27T09:15:02.1_4526Z",  # int() would take the underscore
        "2026-11-27T09:15:02.١٠٤٥٢٦Z",  # digits, not ASCII ones
        "2026-11-27 09:15:02.104526Z",  # a space for the T
        "2026-11-27T09:15:02.+04526Z",
    ):
        assert parse_time(text) == _by_fromisoformat(text), text
