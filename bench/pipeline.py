"""Pipeline throughput: the bare-consumer ceiling versus a real worker, on one broker.

``python -m bench pipeline [--events N] [--kafka] [--rules PATH]``

1. Start a broker (embedded Tansu; ``--kafka``: Apache Kafka from ``.cache/kafka/lib``) and
   create fresh topics.
2. Load N events (the bundled sample's events, repeated with fresh ``auditID``s) into the raw
   topic with `replay.producer.replay_events` (200 events per message).
3. Ceiling: a bare aiokafka consumer (``getmany`` + ``orjson.loads`` of every event) reads
   the raw topic: the most any Python consumer of this topic can do here.
4. Worker: start ``klaxon worker`` (full packaged rule pack unless ``--rules``) on the loaded
   topic; throughput is N / (time of its last processed message - first processed message),
   read from its status file, and end-to-end is first raw message taken -> last alert written
   (the alert record's timestamp).

Prints both rates and their ratio. Start-up time (group join) is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import Settings, isolated_settings


def events(n: int) -> Iterator[bytes]:
    """``n`` realistic audit events: the sample's, cycled, each with a unique auditID."""
    from replay.sample.generate import build_sample

    base = build_sample().events
    for i in range(n):
        event = dict(base[i % len(base)])
        event["auditID"] = str(uuid.UUID(int=i))
        yield orjson.dumps(event)


async def ceiling(bootstrap: str, topic: str, partitions: int, expect: int) -> float:
    """Events/s of a bare ``getmany`` + orjson consumer over ``topic`` from the beginning."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=50 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    for line in record.value.split(b"\n"):
                        orjson.loads(line)
                        seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def last_alert_time(bootstrap: str, topic: str, partitions: int) -> tuple[int, float]:
    """(count, latest record timestamp in epoch seconds) of the alerts topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        count, latest = 0, 0.0
        while count < total:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    count += 1
                    latest = max(latest, r.timestamp / 1000)
        return count, latest
    finally:
        await consumer.stop()


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (Linux ``/proc``; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_worker(
    settings: Settings, workdir: Path, n: int, timeout: float, profile: Path | None = None
) -> dict[str, Any]:
    """Start a worker on the loaded topics; return its final status snapshot.

    With ``profile``, the worker runs under ``py-spy record --idle --threads`` (raw collapsed
    stacks written there when it stops; idle frames show where the worker waits).
    """
    from pipeline.worker import settings_env

    status = workdir / "status.json"
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, **settings_env(settings)}
    argv = [sys.executable, "-m", "klaxon", "worker", "--status-file", str(status)]
    argv += ["--health-interval", "0.25"]
    if profile is not None:
        spy = Path(sys.executable).with_name("py-spy")
        argv = [str(spy), "record", "--idle", "--threads", "-r", "250", "-f", "speedscope"]
        argv += ["-o", str(profile), "--", sys.executable, "-m", "klaxon", "worker"]
        argv += ["--status-file", str(status), "--health-interval", "0.25"]
    started = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            time.sleep(0.25)
            if proc.poll() is not None:
                tail = (workdir / "worker.log").read_text(errors="replace")[-4000:]
                raise SystemExit(f"worker exited {proc.returncode}; its log ends:\n{tail}")
            try:
                snap: dict[str, Any] = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            c = snap["counters"]
            if (
                c["events_in"] >= n
                and c["events_messages_in"] >= c["events_messages_out"]
                and snap["lag_total"] == 0
                and not snap.get("sends_in_flight")  # every alert acknowledged by the broker
            ):
                snap["worker_started_at"] = started
                return snap
            if time.time() - started > timeout:
                raise SystemExit(f"worker did not finish in {timeout}s: {c}")
    finally:
        if profile is not None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        else:
            proc.terminate()
        proc.wait(30)
        log.close()


def print_stages(stages: dict[str, float], cpu: dict[str, float], n: int) -> None:
    """CPU µs per event by stage (the worker's own timers, `pipeline.stages`), and what no
    timer covers: the rest of the event-loop thread (Faust's streams, producer I/O, timers)
    and the other threads (Faust's Kafka consumer thread: fetching, unpacking records)."""
    from pipeline.stages import STAGES

    timed = stages.get("total", 0.0)
    parts = [f"{k} {stages[k]:.1f}" for k in STAGES if stages.get(k, 0.0) >= 0.05]
    print(f"stages      us/event: {', '.join(parts)}; timed {timed:.1f}")
    if cpu:
        loop, process = 1e6 * cpu["loop"] / n, 1e6 * cpu["process"] / n
        print(
            f"untimed     us/event: event loop rest {loop - timed:.1f} (Kafka in via Faust"
            f" streams, producer I/O, timers), other threads {process - loop:.1f}"
            " (Kafka consumer thread)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events to load (50000)")
    parser.add_argument("--kafka", action="store_true", help="Apache Kafka instead of Tansu")
    parser.add_argument("--rules", type=Path, help="rule file/folder (default: packaged pack)")
    parser.add_argument(
        "--batch", type=int, default=200, help="events per raw message (200, as klaxon replay)"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--profile", type=Path, metavar="OUT", help="run the worker under py-spy, write OUT"
    )
    args = parser.parse_args(argv)

    from pipeline.brokers import KafkaCluster, TansuBroker
    from pipeline.topics import ensure_topics
    from replay.producer import replay_events

    broker: TansuBroker | KafkaCluster = KafkaCluster(1) if args.kafka else TansuBroker()
    kind = "Apache Kafka" if args.kafka else "Tansu"
    with tempfile.TemporaryDirectory(prefix="klaxon-bench-") as tmp, broker:
        bootstrap = broker.bootstrap_servers
        settings = isolated_settings(
            bootstrap,
            Path(tmp) / "data",
            prefix="bench.",
            app="klaxon-bench",
            rules_paths=(args.rules,) if args.rules else (),
        )
        asyncio.run(ensure_topics(bootstrap, settings))
        n = args.events
        load = asyncio.run(
            replay_events(
                events(n), bootstrap=bootstrap, topic=settings.topic_raw, max_events=args.batch
            )
        )
        print(f"broker      {kind} at {bootstrap}, {settings.partitions} partitions")
        print(
            f"load        {n} events in {load.messages} messages, {load.bytes / 1e6:.1f} MB,"
            f" {load.rate:,.0f} events/s produced"
        )
        ceil = asyncio.run(ceiling(bootstrap, settings.topic_raw, settings.partitions, n))
        print(f"ceiling     {ceil:,.0f} events/s (bare aiokafka getmany + orjson, 1 process)")
        broker_cpu = _cpu_seconds(getattr(broker, "pids", []))
        snap = run_worker(settings, Path(tmp), n, args.timeout, args.profile)
        broker_cpu = _cpu_seconds(getattr(broker, "pids", [])) - broker_cpu
        first, last = snap["first_message_at"], snap["last_message_at"]
        rate = n / (last - first) if last > first else float("nan")
        alerts, last_alert = asyncio.run(
            last_alert_time(bootstrap, settings.topic_alerts, settings.partitions)
        )
        e2e = n / (last_alert - first) if alerts and last_alert > first else float("nan")
        print(
            f"worker      {rate:,.0f} events/s processed (first -> last message,"
            f" {snap['rules']} rules, {alerts} alerts)"
        )
        print(f"end-to-end  {e2e:,.0f} events/s (first raw message taken -> last alert written)")
        print(
            f"start-up    {first - snap['worker_started_at']:.1f}s (process start -> first message)"
        )
        print(
            f"ratio       worker / ceiling = {rate / ceil:.2f},"
            f" end-to-end / ceiling = {e2e / ceil:.2f}"
        )
        cpu = snap.get("cpu_s_first_to_last") or {}
        if cpu and last > first:
            wall = last - first
            print(
                f"cpu         worker {cpu['process']:.2f}s"
                f" ({cpu['process'] / wall:.0%} of one core,"
                f" event loop thread {cpu['loop']:.2f}s) over {wall:.2f}s;"
                f" {1e6 * cpu['process'] / n:.0f} us/event;"
                f" broker {broker_cpu:.2f}s (whole worker run)"
            )
        stages = snap.get("stages") or {}
        if stages:
            print_stages(stages, cpu, n)
        c = snap["counters"]
        if "handoff_hits" in c:
            print(
                f"handoff     {c['handoff_hits']} events messages taken parsed from the"
                f" normalise agent, {c['handoff_misses']} parsed"
            )
        assert c["events_in"] == c["normalised"] + c["dead_lettered"] + sum(c["filtered"].values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
