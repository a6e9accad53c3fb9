"""Helpers for pipeline tests: worker subprocesses, topic readers, the test input and rules.

Workers run as real ``klaxon worker`` subprocesses (what production runs), configured only
through the environment variables of `pipeline.config.Settings`, with a status file that
tests poll instead of sleeping.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings, isolated_settings
from pipeline.metrics import read_status
from pipeline.reload import build_engine
from pipeline.worker import settings_env
from replay.reader import iter_batches
from schemas.normalize import decode_payload

RULES = Path(__file__).parent / "rules"


class WorkerProcess:
    """One ``klaxon worker`` subprocess; `stop` (SIGTERM) or `kill` (SIGKILL) it."""

    def __init__(
        self, settings: Settings, workdir: Path, name: str = "w", args: tuple[str, ...] = ()
    ) -> None:
        self.status = workdir / f"{name}.status.json"
        self.log_path = workdir / f"{name}.log"
        env = {**base_env(), **settings_env(settings)}
        argv = [sys.executable, "-m", "klaxon", "worker", "--status-file", str(self.status)]
        argv += ["--health-interval", "0.5", "--reload-interval", "0.5", *args]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def snapshot(self) -> dict[str, Any] | None:
        return read_status(self.status)

    def counters(self) -> dict[str, Any]:
        snap = self.snapshot() or {}
        counters: dict[str, Any] = snap.get("counters", {})
        return counters

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``check`` until true; fail with the worker log if it dies or times out."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"worker exited ({self.proc.returncode}) waiting for {what}:\n"
                    f"{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()


def base_env() -> dict[str, str]:
    """The parent's variables a ``klaxon`` subprocess needs (no Kafka or Klaxon settings:
    tests pass those explicitly)."""
    import os

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(settings, name="w")`` starts a worker, stopped after the test."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "w") -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path, name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def read_topic(bootstrap: str, topic: str, partitions: int = 4) -> list[Any]:
    """Every record of ``topic`` from the beginning to the current end (all partitions)."""
    return asyncio.run(_read_topic(bootstrap, topic, partitions))


async def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    # Each step bounded: a broker that stops answering fails here, naming the step, instead
    # of hanging the test run.
    await asyncio.wait_for(consumer.start(), 30)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await asyncio.wait_for(consumer.seek_to_beginning(*tps), 30)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 30)
        out: list[Any] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        assert not pending, f"could not read {topic} to its end"
        return out
    finally:
        await consumer.stop()


def committed_and_end(bootstrap: str, group: str, topics: list[str]) -> dict[str, tuple[int, int]]:
    """``{"topic:partition": (committed offset or -1, end offset)}`` as the broker sees them."""

    async def read() -> dict[str, tuple[int, int]]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            out: dict[str, tuple[int, int]] = {}
            for topic in topics:
                parts = consumer.partitions_for_topic(topic) or set()
                if not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    committed = await consumer.committed(tp)
                    out[f"{topic}:{tp.partition}"] = (
                        -1 if committed is None else committed,
                        ends[tp],
                    )
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def stranded(
    bootstrap: str, group: str, topics: list[str], *, within: float = 30.0
) -> dict[str, tuple[int, int]]:
    """Partitions of ``topics`` whose committed offset is still not their end offset after
    ``within`` seconds (the last commit lags processing by up to a commit interval, and a
    worker's own lag is as fresh as its last probe): ``{"topic:partition": (committed, end)}``.
    """
    deadline = time.monotonic() + within
    while True:
        offsets = committed_and_end(bootstrap, group, topics)
        left = {tp: ce for tp, ce in offsets.items() if ce[0] != ce[1] and ce[1] > 0}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def sample_events() -> list[dict[str, Any]]:
    """The bundled sample's events (deterministic generator in `replay.sample.generate`)."""
    from replay.sample.generate import build_sample

    return build_sample().events


def build_input() -> list[bytes]:
    """JSON-lines items for a replay: the sample, RequestReceived duplicates (filtered) and
    unusable lines (dead-lettered)."""
    events = sample_events()
    lines = [orjson.dumps(e) for e in events]
    for event in events[:40:4]:
        lines.append(orjson.dumps({**event, "stage": "RequestReceived"}))
    lines += [b"this is not json", b'{"kind":"Event","verb":"get"}', b"[1, 2", b'"a string"']
    return lines


@pytest.fixture(scope="session")
def replay_input() -> list[bytes]:
    """`build_input`, built once."""
    return build_input()


CLUSTER = "test-cluster"
GARBAGE = b"\x00\xff\xfe binary, not an audit payload"


@dataclass
class Expected:
    """What the offline engine says the worker must produce."""

    alert_ids: set[str]
    normalised: int
    rejected_reasons: Counter[str]
    filtered: dict[str, int]
    items: int


def expected_for(lines: list[bytes], *, with_garbage: bool = True) -> Expected:
    """Run decode + engine offline over exactly the payloads replay sends."""
    from detections.alert import to_alert

    engine, _ = build_engine([RULES], [])
    events: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    items = 0
    for batch in iter_batches(lines):
        result = decode_payload(batch.payload, cluster=CLUSTER)
        events += result.events
        reasons.update(r.reason for r in result.rejected)
        filtered.update(result.filtered)
        items += result.found
    if with_garbage:
        garbage = decode_payload(GARBAGE, cluster=CLUSTER)
        reasons.update(r.reason for r in garbage.rejected)
        items += garbage.found
    ids = {to_alert(m)["id"] for m in engine.evaluate_batch(events)}
    return Expected(ids, len(events), reasons, dict(filtered), items)


def unique_settings(bootstrap: str, tmp: Path) -> Settings:
    """Fresh topics and group on ``bootstrap``, the test rules, no stateful detectors and no
    alert grouping: these tests compare the alerts topic with the stateless engine's offline
    result (one alert per match), and anomaly or new terms alerts depend on timing and
    partitioning (their own tests set the families they check; grouping has its own)."""
    return isolated_settings(bootstrap, tmp / "data", rules_paths=(RULES,)).replace(
        stateful_detectors=(), grouping=False
    )


@pytest.fixture(scope="session")
def expected(replay_input: list[bytes]) -> Expected:
    """What the worker must produce for `replay_input` (offline engine)."""
    return expected_for(replay_input)
