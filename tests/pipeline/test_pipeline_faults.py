"""A running worker under change and failure: rule edits, and being killed mid-stream."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.topics import ensure_topics
from replay.producer import rate_schedule, replay_events
from tests.pipeline.conftest import (
    CLUSTER,
    RULES,
    Expected,
    WorkerProcess,
    read_topic,
    unique_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_rule_edits_reload_in_a_running_worker_and_broken_ones_are_kept_out(
    tansu: Any, tmp_path: Path, start_worker: Any
) -> None:
    """Removing a rule file reloads the engine; a broken file is refused and counted."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    settings = unique_settings(tansu.bootstrap_servers, tmp_path).replace(rules_paths=(rules,))
    asyncio.run(ensure_topics(tansu.bootstrap_servers, settings))
    worker = start_worker(settings)
    worker.wait_for("the first status", lambda: worker.snapshot() is not None)
    assert worker.snapshot()["rules"] == 2  # type: ignore[index]
    (rules / "pod-exec.yml").unlink()
    worker.wait_for("a reload", lambda: worker.counters().get("engine_reloads") == 1)
    assert worker.snapshot()["rules"] == 1  # type: ignore[index]
    (rules / "broken.yml").write_text("title: x\nid: not-a-uuid\n")
    worker.wait_for("a refused reload", lambda: worker.counters().get("reload_failures") == 1)
    assert worker.snapshot()["rules"] == 1  # type: ignore[index]
    assert "rule problem: " in worker.log() and "broken.yml" in worker.log()


def test_a_worker_killed_mid_stream_loses_nothing(
    broker: str,
    tmp_path: Path,
    replay_input: list[bytes],
    expected: Expected,
) -> None:
    """SIGKILL a worker halfway through; its successor ends with every expected alert id
    (at-least-once: uncommitted input is processed again, duplicates repeat ids)."""
    settings = unique_settings(broker, tmp_path)
    asyncio.run(ensure_topics(broker, settings))
    first = WorkerProcess(settings, tmp_path, "first")
    first.wait_for("partitions", lambda: bool((first.snapshot() or {}).get("lag")), 90)
    sent: list[int] = []

    def produce() -> None:  # ~6 s of paced replay, so the kill lands mid-stream
        stats = asyncio.run(
            replay_events(
                replay_input,
                bootstrap=broker,
                topic=settings.topic_raw,
                cluster=CLUSTER,
                schedule=rate_schedule(len(replay_input) / 6),
            )
        )
        sent.append(stats.messages)

    producer = threading.Thread(target=produce)
    producer.start()
    first.wait_for("some progress", lambda: first.counters().get("raw_messages", 0) >= 3, 60)
    first.kill()
    killed_at = first.counters().get("raw_messages", 0)
    producer.join()
    assert 0 < killed_at < sent[0], "the kill must land mid-stream"
    second = WorkerProcess(settings, tmp_path, "second")
    try:

        def done() -> bool:
            snap = second.snapshot() or {}
            c = snap.get("counters", {})
            return (
                snap.get("lag_total") == 0
                and c.get("events_messages_in", 0) >= c.get("events_messages_out", 1)
                and bool(snap.get("lag"))
            )

        time.sleep(1)
        second.wait_for("the rest of the stream", done, 120)
    finally:
        assert second.stop() == 0
    alerts = read_topic(broker, settings.topic_alerts)
    assert {r.key.decode() for r in alerts} == expected.alert_ids
