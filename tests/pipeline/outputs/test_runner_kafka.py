"""`klaxon outputs` on a real broker: its own consumer group, commits only after the output
acknowledged, dead letters on the dead-letter topic, nothing lost across a stop."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings, isolated_settings
from pipeline.outputs import OUTPUTS
from pipeline.outputs.config import OutputConfig
from pipeline.outputs.runner import OutputRunner, group_id, run_outputs
from pipeline.topics import ensure_topics
from tests.pipeline.outputs.servers import POISON, TOKEN, FlakyServer, wait_for
from tests.pipeline.sinks.pack_alerts import rule_alerts

ALERTS = list(rule_alerts().values())[:30]


async def produce(settings: Settings, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(settings.topic_alerts, v, partition=0)
    finally:
        await producer.stop()


async def committed(settings: Settings, group: str) -> int | None:
    """The group's committed offset on the alert topic's partition 0."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(settings.topic_alerts, 0))
        return offset
    finally:
        await consumer.stop()


async def dead_letters(settings: Settings, expect: int) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic_deadletter,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while len(out) < expect:
                batch = await consumer.getmany(timeout_ms=500)
                for m in (m for ms in batch.values() for m in ms):
                    assert ("klaxon-output", b"hook") in list(m.headers)  # which output refused
                    out.append(orjson.loads(m.value))
    finally:
        await consumer.stop()
    return out


async def run_for(
    settings: Settings, server: FlakyServer, until: Any, monkeypatch: pytest.MonkeyPatch
) -> OutputRunner:
    """Run one webhook output until ``until(runner)`` holds, then stop it."""
    monkeypatch.setenv("KAFKA_OUTPUT_TEST_TOKEN", TOKEN)
    cfg = OutputConfig.model_validate(
        {
            "name": "hook",
            "type": "webhook",
            "url": server.url,
            "token_env": "KAFKA_OUTPUT_TEST_TOKEN",
            "retry": {"initial": 0.05, "max_delay": 0.2},
            "batch": {"max_alerts": 8, "max_wait": 0.2},
        }
    )
    stop = asyncio.Event()
    runners: list[OutputRunner] = []
    task = asyncio.create_task(
        run_outputs(
            [OUTPUTS["webhook"](cfg)],
            bootstrap=str(settings.bootstrap_servers),
            alerts_topic=settings.topic_alerts,
            deadletter_topic=settings.topic_deadletter,
            app_id=settings.app_id,
            client_kwargs={},
            stop=stop,
            runners=runners,
        )
    )
    try:
        await wait_for(lambda: bool(runners) and until(runners[0]), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return runners[0]


async def test_a_down_then_recovering_output_loses_nothing_and_commits_after_ack(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output is down through a whole first run (stopped mid-retry: nothing committed),
    then busy, then up: every alert arrives, the refused one and a non-alert are dead letters,
    and the group's offset reaches the end of the topic only then."""
    settings = isolated_settings(broker, tmp_path)
    await ensure_topics(broker, settings)
    poison = {
        **ALERTS[5],
        "id": "0b0f6a3e-0000-5000-8000-00000000dead",
        "rule": {**ALERTS[5]["rule"], "id": POISON},
    }
    alerts = [*ALERTS[:5], poison, *ALERTS[5:]]
    await produce(settings, [orjson.dumps(a) for a in alerts] + [b"not an alert"])
    group = f"{settings.app_id}-output-hook"

    down = FlakyServer("webhook", fail_first=10_000)
    await down.start()
    try:
        first = await run_for(settings, down, lambda r: r.stats.retries >= 3, monkeypatch)
    finally:
        await down.stop()
    assert first.stats.commits == 0 and await committed(settings, group) is None

    server = await FlakyServer("webhook", fail_first=2, port=down.port).start()
    try:
        second = await run_for(
            settings,
            server,
            lambda r: (
                r.stats.read >= len(alerts) + 1
                and r.stats.commits
                and len(server.accepted) == len(ALERTS)
            ),
            monkeypatch,
        )
    finally:
        await server.stop()
    assert sorted(d["id"] for d in server.accepted) == sorted(a["id"] for a in ALERTS)
    assert second.stats.retries >= 2 and second.stats.dead_lettered == 2
    assert await committed(settings, group) == len(alerts) + 1
    letters = await dead_letters(settings, 2)
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("output hook: not an alert")
    assert reasons[1].startswith("output hook: refused: HTTP 422")
    refused = next(x for x in letters if "422" in x["reason"])
    assert orjson.loads(base64.b64decode(refused["original_b64"]))["id"] == poison["id"]
    assert refused["source"]["offset"] == 5


def test_each_output_has_its_own_consumer_group() -> None:
    """Two outputs never share a group: one being down never holds back the other."""
    outs = [
        OUTPUTS["webhook"](OutputConfig(name=n, type="webhook", url="http://127.0.0.1:1"))
        for n in ("a", "b")
    ]
    assert len({group_id("klaxon", o) for o in outs}) == 2


async def test_klaxon_outputs_runs_from_its_config_file_and_stops_on_sigterm(
    tansu: Any, tmp_path: Path
) -> None:
    """The command itself: settings from the environment, the file's outputs, alerts
    delivered with the token from the file's variable, a clean exit on SIGTERM, no secret
    in its output."""
    import os
    import signal
    import sys

    from pipeline.worker import settings_env

    settings = isolated_settings(tansu.bootstrap_servers, tmp_path)
    await ensure_topics(tansu.bootstrap_servers, settings)
    await produce(settings, [orjson.dumps(a) for a in ALERTS[:6]])
    server = await FlakyServer("webhook", fail_first=1).start()
    config = tmp_path / "outputs.yml"
    config.write_text(
        f"outputs:\n  - name: hook\n    type: webhook\n    url: {server.url}\n"
        "    token_env: HOOK_TOKEN\n    retry: {initial: 0.05}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}
    env.update(settings_env(settings), HOOK_TOKEN=TOKEN)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "klaxon",
        "outputs",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await wait_for(lambda: len(server.accepted) == 6, timeout=60)
        assert proc.returncode is None  # still running: outputs run until stopped
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await server.stop()
    assert proc.returncode == 0, output.decode()[-2000:]
    assert sorted(d["id"] for d in server.accepted) == sorted(a["id"] for a in ALERTS[:6])
    assert server.unauthorised == 0 and TOKEN not in output.decode()
    assert "hook: webhook, format native" in output.decode()
    assert await committed(settings, f"{settings.app_id}-output-hook") == 6  # before exiting
