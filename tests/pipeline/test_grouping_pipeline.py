"""Alert grouping in the running worker (`detections.grouping` behind `pipeline.agents`):
the same input twice gives the same alert and group ids, and the alerts topic holds groups,
not one alert per match."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from detections.grouping import THRESHOLDS
from pipeline.reload import build_engine
from pipeline.topics import ensure_topics
from schemas.normalize import decode_payload
from tests.pipeline.conftest import CLUSTER, WorkerProcess, read_topic, unique_settings
from tests.pipeline.test_pipeline import caught_up, replay

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


def grouped_run(tansu: Any, tmp: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    """A fresh worker (own topics and group), the shipped rules and grouping on over
    ``lines``; its alerts."""
    bootstrap = tansu.bootstrap_servers
    tmp.mkdir()
    settings = unique_settings(bootstrap, tmp).replace(grouping=True, rules_paths=())
    asyncio.run(ensure_topics(bootstrap, settings))
    worker = WorkerProcess(settings, tmp, "grouped")
    try:
        sent = replay(settings, lines)
        worker.wait_for("the replay to be processed", lambda: caught_up(worker, sent), 120)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    return [orjson.loads(r.value) for r in read_topic(bootstrap, settings.topic_alerts)]


def test_the_same_input_twice_gives_the_same_alert_and_group_ids(
    tansu: Any, tmp_path: Path, replay_input: list[bytes]
) -> None:
    """Two workers, each on its own topics, over the same replay: the same first alerts and
    threshold updates, with the same alert ids, group ids and counts (closing updates depend
    on when the watermark passes the window and are not compared); fewer alerts than
    matches."""
    first = grouped_run(tansu, tmp_path / "one", replay_input)
    second = grouped_run(tansu, tmp_path / "two", replay_input)

    def ids(alerts: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
        """(alert id, group id, count) of first alerts and threshold updates."""
        return {
            (a["id"], a["group"]["id"], a["group"]["count"])
            for a in alerts
            if a.get("group") and (a["group"]["update"] == 0 or a["group"]["count"] in THRESHOLDS)
        }

    assert ids(first) == ids(second)
    engine, _ = build_engine([], [])  # the shipped rules, one alert per match
    events = decode_payload(b"\n".join(replay_input), cluster=CLUSTER).events
    matches = engine.evaluate_batch(events)
    assert ids(first) and len(first) < len(matches) / 2  # groups, not one alert per match
    assert {a["group"]["count"] for a in first} - {1}  # some group covers several matches
