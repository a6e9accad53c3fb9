"""Stage timers: every stage a message goes through is counted, and nothing twice."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from pipeline.processing import Source, detect_message, normalise_message
from pipeline.stages import STAGES, StageTimes


class Ticks:
    """A clock that moves 1000 ns per reading: each timed span is a known count of ticks."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def test_a_message_through_both_agents_charges_each_of_their_stages() -> None:
    times = StageTimes(clock=Ticks())
    raw = b"\n".join(
        orjson.dumps({"auditID": f"a{i}", "stage": "ResponseComplete", "verb": "get",
                      "requestURI": "/api?timeout=5s", "user": {"username": "u"}})
        for i in range(4)
    )  # fmt: skip
    n = normalise_message(raw, Source("raw", 0, 0), partitions=1, cluster="c", times=times)
    times.events += n.normalised
    engine = SimpleNamespace(evaluate_batch=lambda evs: [("rule", e) for e in evs])
    to_alert: Any = lambda m: {"id": m[1]["auditID"]}  # noqa: E731
    detect_message(n.messages[0].value, Source("events", 0, 0), engine, to_alert, times=times)
    spent = {k: v for k, v in times.ns.items() if v}
    assert set(spent) == {"decode", "redact", "route", "encode", "parse", "engine", "alert_build"}
    # one tick each; redaction (timed per event by the decoder) is carved out of decoding
    assert spent["decode"] + spent["redact"] == 1000
    assert [spent[k] for k in ("route", "encode", "parse", "engine", "alert_build")] == [1000] * 5
    assert set(times.per_event()) == {*STAGES, "total"}
    assert times.per_event()["total"] == sum(spent.values()) / 1000 / 4


def test_nothing_is_reported_before_the_first_event() -> None:
    assert StageTimes().per_event() == {}
