"""The intakes' /metrics and /readyz (`klaxon.ingest_cli.telemetry`), without a broker."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from klaxon.ingest_cli import telemetry
from pipeline.config import Settings


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_the_file_intake_exposes_its_counters_and_is_unready_without_kafka() -> None:
    settings = Settings().replace(metrics_address="127.0.0.1:0")
    writer: Any = SimpleNamespace(ready=False, last_error="Kafka at k:9092 does not answer")
    counters = {"lines": 5, "batches": 1, "dead_lettered": 2}
    names = {"events": "lines", "messages": "batches", "dead_lettered": "dead_lettered"}
    async with telemetry(settings, "file", writer, counters, names) as metrics:
        assert metrics is not None
        server = metrics.server
        status, body = await asyncio.to_thread(get, server.url + "/readyz")
        assert status == 503 and "does not answer" in body
        writer.ready = True
        assert (await asyncio.to_thread(get, server.url + "/readyz"))[0] == 200
        _, text = await asyncio.to_thread(get, server.url + "/metrics")
    samples = {
        (s.name, s.labels.get("intake")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("klaxon_intake_events_total", "file")] == 5
    assert samples[("klaxon_intake_messages_total", "file")] == 1
    assert samples[("klaxon_intake_dead_letters_total", "file")] == 2


async def test_off_serves_nothing() -> None:
    settings = Settings().replace(metrics_address="off")
    async with telemetry(settings, "file", SimpleNamespace(), {}) as metrics:
        assert metrics is None
