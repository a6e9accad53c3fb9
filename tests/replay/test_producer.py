"""`klaxon replay` against a real broker: what lands on the raw topic."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest

from klaxon.cli import main
from pipeline.config import Settings
from pipeline.topics import ensure_topics
from replay.errors import ReplayDeliveryError
from replay.producer import CLUSTER_HEADER, replay_events
from tests.pipeline.conftest import read_topic


def test_replay_cli_writes_batches_of_events_with_the_cluster_header(
    klaxon_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`klaxon replay FILE --batch 50` writes ceil(N/50) JSON-lines messages holding all N,
    keyed by the cluster so they share one raw partition and keep the file's order."""
    assert klaxon_settings.bootstrap_servers
    asyncio.run(ensure_topics(klaxon_settings.bootstrap_servers, klaxon_settings))
    events = [{"auditID": str(i), "verb": "get"} for i in range(120)]
    path = tmp_path / "audit.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(e) for e in events)))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", klaxon_settings.bootstrap_servers)
    monkeypatch.setenv("KLAXON_TOPIC_RAW", klaxon_settings.topic_raw)
    assert main(["replay", str(path), "--batch", "50", "--cluster", "prod"]) == 0
    assert "replayed 120 events in 3 messages" in capsys.readouterr().out
    records = read_topic(klaxon_settings.bootstrap_servers, klaxon_settings.topic_raw)
    assert [len(r.value.split(b"\n")) for r in records] == [50, 50, 20]
    assert {(r.key, r.partition) for r in records} == {(b"prod", records[0].partition)}
    got = [orjson.loads(line) for r in records for line in r.value.split(b"\n")]
    assert got == events
    assert all((CLUSTER_HEADER, b"prod") in list(r.headers) for r in records)


def test_replay_to_an_unreachable_broker_is_a_delivery_error() -> None:
    """No broker at the address: ReplayDeliveryError, not a hang or a traceback."""
    from pipeline.brokers import free_port

    with pytest.raises(ReplayDeliveryError):
        asyncio.run(replay_events([b"{}"], bootstrap=f"127.0.0.1:{free_port()}", topic="t"))


def test_replay_refuses_messages_over_the_broker_limit(klaxon_settings: Settings) -> None:
    """An event bigger than the producer's request limit is reported, not silently lost."""
    assert klaxon_settings.bootstrap_servers
    settings = klaxon_settings
    asyncio.run(ensure_topics(settings.bootstrap_servers or "", settings))
    with pytest.raises(ReplayDeliveryError, match="after 1 events"):
        asyncio.run(
            replay_events(
                [b"{}", b'"' + b"x" * 2_000_000 + b'"'],
                bootstrap=settings.bootstrap_servers or "",
                topic=settings.topic_raw,
                max_events=1,
            )
        )
