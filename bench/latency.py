"""Alert latency at steady input rates, start-up, and memory over a soak (``python -m bench
latency``).

``python -m bench latency [--rates 5000,20000,40000] [--duration 20] [--kafka]
[--soak SECONDS --soak-rate R] [--principals N]``

1. Start a broker (embedded Tansu; ``--kafka``: Apache Kafka from ``.cache/kafka/lib``), fresh
   topics and one ``klaxon worker`` (full pack, every stateful family); report its start-up:
   process start -> first processed message.
2. For each rate: produce the bundled sample's events (each with a fresh ``auditID``, cycled)
   for ``--duration`` seconds, as a cluster's audit sink would: one message every 20 ms
   holding the events of those 20 ms. Every message also carries one *marker*: an exec into a
   pod by a principal never seen before, which the pack always alerts on and no grouping can
   fold into an earlier alert (the per-rule group limit is lifted for this). Latency is
   marker produced -> its alert's record timestamp on the alert topic (the worker's producer
   stamps it when it sends). Printed: p50, p99 and max, with the rate actually produced and
   the worker's CPU per event.
3. ``--soak S``: one steady rate for S seconds; the worker's RSS is sampled every 10 s and the
   least-squares slope printed (MB per hour), over the whole soak and over its second half
   (after the warm-up), so a leak shows as a trend, not a guess.
   ``--principals N`` spreads the background over N distinct principals (default: the
   sample's own), e.g. 100,000 to measure the memory that much per-principal state costs.
   The soak sends no markers (a fixed population: each marker is an identity never seen
   before, 50 a second, whose state is kept like any identity's, so they grow the state by
   design); ``--soak-markers`` sends them, to measure that growth.

A figure measured here is for this machine and the broker beside the worker on its 2 cores
(the producer, the broker, the worker and this consumer share them); say so when quoting it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.pipeline import _cpu_seconds
from pipeline.config import Settings, isolated_settings

_TICK = 0.02  # seconds between raw messages: a sink flushing every 20 ms
_ID = "00000000-0000-0000-0000-000000000000"
#: Groups per rule and window the bench's worker may open: every marker must be the first
#: alert of its own group (the default limit, 100, folds the rest into an overflow group).
_NO_RATE_LIMIT = 1_000_000_000


def _templates(principals: int) -> list[bytes]:
    """The sample's events as JSON with a placeholder auditID (and, with ``principals``,
    a placeholder user name) to patch per event without re-serialising."""
    from replay.sample.generate import build_sample

    out = []
    for event in build_sample().events:
        e = dict(event)
        e["auditID"] = _ID
        if principals:
            e["user"] = {**(e.get("user") or {}), "username": "bench-user-PPPPPPP"}
        out.append(orjson.dumps(e))
    return out


def _marker(i: int, now: float) -> bytes:
    """An exec into a pod by principal ``latency-<i>``: alerts, and starts its own group."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".000000Z"
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"1a7e0c10-0000-4000-8000-{i:012d}",
        "stage": "ResponseStarted",
        "verb": "create",
        "user": {"username": f"latency-{i}@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.1.2.3"],
        "userAgent": "kubectl/v1.31.2",
        "objectRef": {
            "resource": "pods",
            "subresource": "exec",
            "namespace": "bench",
            "name": f"web-{i}",
            "apiVersion": "v1",
        },
        "requestURI": f"/api/v1/namespaces/bench/pods/web-{i}/exec?command=sh&stdin=true",
        "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }
    return orjson.dumps(event)


class Load:
    """Paced producer of sample events plus one marker per message."""

    def __init__(self, producer: Any, topic: str, templates: list[bytes], principals: int):
        self.producer, self.topic = producer, topic
        self.templates, self.principals = templates, principals
        self.sent_at: dict[str, float] = {}  # marker auditID -> when its message was sent
        self.events = 0
        self.markers = 0

    def _line(self, n: int) -> bytes:
        line = self.templates[n % len(self.templates)].replace(
            _ID.encode(), str(uuid.UUID(int=n)).encode(), 1
        )
        if self.principals:
            line = line.replace(b"PPPPPPP", f"{n % self.principals:07d}".encode(), 1)
        return line

    async def run(self, rate: float, seconds: float, *, markers: bool = True) -> float:
        """Produce at ``rate`` events/s for ``seconds`` (one marker per message unless
        ``markers`` is false); returns the rate achieved."""
        per_tick = max(1, round(rate * _TICK))
        start = time.perf_counter()
        sent = 0
        tick = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + tick * _TICK
            if due > now:
                await asyncio.sleep(due - now)
            lines = [self._line(self.events + k) for k in range(per_tick)]
            self.events += per_tick
            if markers:
                lines.append(_marker(self.markers, time.time()))
                self.sent_at[f"1a7e0c10-0000-4000-8000-{self.markers:012d}"] = time.time()
                self.markers += 1
            await self.producer.send(self.topic, b"\n".join(lines), key=b"bench")
            sent += len(lines)
            tick += 1
        await self.producer.flush()
        return sent / (time.perf_counter() - start)


async def _alerts(bootstrap: str, topic: str, partitions: int, out: dict[str, float]) -> None:
    """Fill ``out`` with marker auditID -> its alert's record timestamp, until cancelled."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    alert = orjson.loads(r.value)
                    audit_id = alert.get("audit_id") or ""
                    if audit_id.startswith("1a7e0c10-") and audit_id not in out:
                        out[audit_id] = r.timestamp / 1000
    finally:
        await consumer.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour.

    >>> round(_slope_per_hour([(0, 100.0), (10, 101.0), (20, 102.0)]), 1)
    360.0
    """
    xs = [x for x, _ in samples]
    ys = [y for _, y in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 3600 * sum((x - mx) * (y - my) for x, y in samples) / var if var else 0.0


def _start_worker(settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    from pipeline.worker import settings_env

    env = {**os.environ, **settings_env(settings)}
    argv = [sys.executable, "-m", "klaxon", "worker", "--status-file", str(workdir / "s.json")]
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(
    args: argparse.Namespace, settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    from aiokafka import AIOKafkaProducer

    bootstrap = settings.bootstrap_servers or ""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=0, max_request_size=16 * 1024 * 1024
    )
    await producer.start()
    seen: dict[str, float] = {}
    reader = asyncio.create_task(
        _alerts(bootstrap, settings.topic_alerts, settings.partitions, seen)
    )
    load = Load(producer, settings.topic_raw, _templates(args.principals), args.principals)
    started = time.time()
    try:
        # Start-up: the first marker's alert, from the worker's process start.
        await load.run(100, 1.0)
        while not seen and time.time() - started < 60:
            await asyncio.sleep(0.05)
        print(
            f"start-up    {min(seen.values(), default=float('nan')) - args.t0:.1f}s"
            " (worker process start -> first alert on the topic)"
        )
        if args.soak:
            await _soak(args, load, worker)
        else:
            for rate in args.rates:
                await _one_rate(rate, args.duration, load, seen, worker)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()


async def _one_rate(
    rate: float, seconds: float, load: Load, seen: dict[str, float], worker: Any
) -> None:
    first = load.markers
    cpu0 = _cpu_seconds([worker.pid])
    events0 = load.events
    achieved = await load.run(rate, seconds)
    ids = [f"1a7e0c10-0000-4000-8000-{i:012d}" for i in range(first, load.markers)]
    deadline = time.time() + 30
    while time.time() < deadline and not all(i in seen for i in ids):
        await asyncio.sleep(0.1)
    cpu = _cpu_seconds([worker.pid]) - cpu0
    lat = [1000 * (seen[i] - load.sent_at[i]) for i in ids if i in seen]
    missing = len(ids) - len(lat)
    if not lat:
        print(f"rate {rate:>7,.0f}  no alert arrived within 30 s")
        return
    print(
        f"rate {rate:>7,.0f}  produced {achieved:>7,.0f} ev/s  latency p50"
        f" {_percentile(lat, 0.5):6.0f} ms  p99 {_percentile(lat, 0.99):6.0f} ms  max"
        f" {max(lat):6.0f} ms  ({len(lat)} markers, {missing} late/missing;"
        f" worker {1e6 * cpu / max(1, load.events - events0):.0f} µs CPU/event)"
    )


async def _soak(args: argparse.Namespace, load: Load, worker: Any) -> None:
    samples: list[tuple[float, float]] = []
    start = time.time()
    markers0 = load.markers
    task = asyncio.create_task(load.run(args.soak_rate, args.soak, markers=args.soak_markers))
    while not task.done():
        samples.append((time.time() - start, _rss_mb(worker.pid)))
        await asyncio.sleep(min(10.0, max(0.5, args.soak / 60)))
    achieved = await task
    peak = max(mb for _, mb in samples)
    # the first half holds the warm-up (every principal's state created, buffers grown):
    # a leak shows in the second half's slope as well
    late = samples[len(samples) // 2 :]
    print(
        f"soak        {args.soak:.0f}s at {achieved:,.0f} ev/s: RSS {samples[0][1]:.0f} ->"
        f" {samples[-1][1]:.0f} MB (peak {peak:.0f}), slope"
        f" {_slope_per_hour(samples):+.1f} MB/hour over {len(samples)} samples,"
        f" {_slope_per_hour(late):+.1f} MB/hour over the second half;"
        f" {load.events:,} events, principals {args.principals or 'as in the sample'}"
        f" + {load.markers - markers0:,} new ones (markers)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[5000.0, 20000.0, 40000.0],
        help="events/s, comma-separated (5000,20000,40000)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate (20)")
    parser.add_argument("--kafka", action="store_true", help="Apache Kafka instead of Tansu")
    parser.add_argument("--soak", type=float, default=0.0, help="soak SECONDS instead of rates")
    parser.add_argument("--soak-rate", type=float, default=5000.0, help="events/s of the soak")
    parser.add_argument(
        "--principals", type=int, default=0, help="distinct principals in the background"
    )
    parser.add_argument(
        "--soak-markers",
        action="store_true",
        help="the soak also sends a marker (a new principal) per message",
    )
    args = parser.parse_args(argv)

    from pipeline.brokers import KafkaCluster, TansuBroker
    from pipeline.topics import ensure_topics

    broker: TansuBroker | KafkaCluster = KafkaCluster(1) if args.kafka else TansuBroker()
    with tempfile.TemporaryDirectory(prefix="klaxon-latency-") as tmp, broker:
        settings = isolated_settings(
            broker.bootstrap_servers, Path(tmp) / "data", prefix="bench.", app="klaxon-bench"
        ).replace(group_rule_limit=_NO_RATE_LIMIT)
        asyncio.run(ensure_topics(broker.bootstrap_servers, settings))
        print(
            f"broker      {'Apache Kafka' if args.kafka else 'Tansu'} at"
            f" {broker.bootstrap_servers}, {settings.partitions} partitions"
        )
        args.t0 = time.time()
        worker = _start_worker(settings, Path(tmp))
        try:
            asyncio.run(_measure(args, settings, worker))
            print(f"worker RSS  {_rss_mb(worker.pid):.0f} MB at the end")
        finally:
            worker.terminate()
            worker.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
