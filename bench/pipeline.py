"""Pipeline throughput: the bare-consumer ceiling versus a real worker, on one broker.

``python -m bench pipeline [--events N] [--batch N] [--kafka] [--rules PATH] [--workers N]
[--worker-arg ARG ...] [--profile OUT]``

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
``--workers N`` starts N worker processes in one consumer group at once (partitions >= N):
the rate is then N events over the first message any of them took to the last any
processed, and the CPU is theirs together.
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
    settings: Settings,
    workdir: Path,
    n: int,
    timeout: float,
    profile: Path | None = None,
    extra: Sequence[str] = (),
    count: int = 1,
) -> list[dict[str, Any]]:
    """Start ``count`` workers (one consumer group) on the loaded topics; return each one's
    final status snapshot once together they have processed all ``n`` events.

    With ``profile``, the (first) worker runs under ``py-spy record --idle --threads``
    (written there when it stops; idle frames show where the worker waits).
    """
    from pipeline.worker import settings_env

    env = {**os.environ, **settings_env(settings)}
    procs: list[tuple[subprocess.Popen[bytes], Path, Any]] = []
    started = time.time()
    for i in range(count):
        status = workdir / f"status-{i}.json"
        log = open(workdir / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed below
        argv = [sys.executable, "-m", "klaxon", "worker", "--status-file", str(status)]
        argv += ["--health-interval", "0.25", *extra]
        if profile is not None and i == 0:
            spy = Path(sys.executable).with_name("py-spy")
            spied = ["record", "--idle", "--threads", "-r", "250", "-f", "speedscope"]
            argv = [str(spy), *spied, "-o", str(profile), "--", *argv]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, status, log))
    try:
        while True:
            time.sleep(0.25)
            snaps = []
            for i, (proc, status, _) in enumerate(procs):
                if proc.poll() is not None:
                    tail = (workdir / f"worker-{i}.log").read_text(errors="replace")[-4000:]
                    raise SystemExit(f"worker {i} exited {proc.returncode}; its log ends:\n{tail}")
                try:
                    snaps.append(json.loads(status.read_text()))
                except (OSError, ValueError):
                    continue
            if len(snaps) == count and _finished(snaps, n):
                for snap in snaps:
                    snap["worker_started_at"] = started
                return snaps
            if time.time() - started > timeout:
                raise SystemExit(f"workers did not finish in {timeout}s")
    finally:
        for proc, _, _log in procs:
            if profile is not None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            else:
                proc.terminate()
        for proc, _, log in procs:
            proc.wait(30)
            log.close()


def source_names(sources: int, partitions: int) -> list[str]:
    """``sources`` cluster names whose raw partition keys land on different partitions
    (as evenly as the count allows), so a bench with N sources loads N raw partitions.

    >>> from pipeline.routing import partition_for
    >>> sorted(partition_for(n.encode(), 4) for n in source_names(4, 4))
    [0, 1, 2, 3]
    """
    from pipeline.routing import partition_for

    names: list[str] = []
    used: dict[int, int] = {}
    j = 0
    while len(names) < sources:
        name = f"bench-{j}"
        part = partition_for(name.encode(), partitions)
        if used.get(part, 0) <= min(used.get(p, 0) for p in range(partitions)):
            names.append(name)
            used[part] = used.get(part, 0) + 1
        j += 1
    return names


async def load_sources(
    bootstrap: str, topic: str, n: int, batch: int, sources: int, partitions: int
) -> Any:
    """Produce the ``n`` bench events as ``sources`` replayed sources (clusters named by
    `source_names`, each its own raw partition key: how several clusters' audit sinks spread
    the raw topic); one source is one cluster, as `klaxon replay` sends one file."""
    from replay.producer import ReplayStats, replay_events

    if sources <= 1:
        return await replay_events(events(n), bootstrap=bootstrap, topic=topic, max_events=batch)
    started = time.perf_counter()
    messages = size = 0
    everything = list(events(n))
    for i, name in enumerate(source_names(sources, partitions)):
        stats = await replay_events(
            everything[i::sources], bootstrap=bootstrap, topic=topic, max_events=batch, cluster=name
        )
        messages, size = messages + stats.messages, size + stats.bytes
    return ReplayStats(n, messages, size, time.perf_counter() - started)


def _finished(snaps: list[dict[str, Any]], n: int) -> bool:
    """All ``n`` events read, every events message processed, no lag, nothing in flight."""
    counters = [s["counters"] for s in snaps]
    return (
        sum(c["events_in"] for c in counters) >= n
        and sum(c["events_messages_in"] for c in counters)
        >= sum(c["events_messages_out"] for c in counters)
        and all(s["lag_total"] == 0 and not s.get("sends_in_flight") for s in snaps)
    )


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
        "--sources",
        type=int,
        default=1,
        help="replay the events as N clusters, each its own raw partition key (1)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes in one group (1; <= partitions)"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="OUT", help="run the worker under py-spy, write OUT"
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `klaxon worker` (repeatable): --worker-arg=--events-linger=0",
    )
    args = parser.parse_args(argv)

    from pipeline.brokers import KafkaCluster, TansuBroker
    from pipeline.topics import ensure_topics

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
            load_sources(
                bootstrap, settings.topic_raw, n, args.batch, args.sources, settings.partitions
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
        snaps = run_worker(
            settings, Path(tmp), n, args.timeout, args.profile, args.worker_arg, args.workers
        )
        broker_cpu = _cpu_seconds(getattr(broker, "pids", [])) - broker_cpu
        alerts, last_alert = asyncio.run(
            last_alert_time(bootstrap, settings.topic_alerts, settings.partitions)
        )
        report(snaps, n, ceil, broker_cpu, alerts, last_alert)
    return 0


def report(
    snaps: list[dict[str, Any]],
    n: int,
    ceil: float,
    broker_cpu: float,
    alerts: int,
    last_alert: float,
) -> None:
    """Print the workers' rates, ratios to the ceiling, CPU and (one worker) its stages."""
    busy = [s for s in snaps if s.get("first_message_at") is not None]
    first = min(s["first_message_at"] for s in busy)
    last = max(s["last_message_at"] for s in busy)
    snap = snaps[0]
    rate = n / (last - first) if last > first else float("nan")
    e2e = n / (last_alert - first) if alerts and last_alert > first else float("nan")
    print(
        f"worker      {rate:,.0f} events/s processed (first -> last message,"
        f" {snap['rules']} rules, {alerts} alerts, {len(snaps)} worker process"
        f"{'es' if len(snaps) > 1 else ''})"
    )
    print(f"end-to-end  {e2e:,.0f} events/s (first raw message taken -> last alert written)")
    print(f"start-up    {first - snap['worker_started_at']:.1f}s (process start -> first message)")
    print(
        f"ratio       worker / ceiling = {rate / ceil:.2f}, end-to-end / ceiling = {e2e / ceil:.2f}"
    )
    if len(snaps) > 1:
        for i, s in enumerate(snaps):
            c = s["counters"]
            print(
                f"worker {i}    {c['events_in']} raw events, {c['events_messages_in']} events"
                f" messages, CPU {(s.get('cpu_s_first_to_last') or {}).get('process', 0):.2f}s"
            )
    cpu = _sum_cpu(snaps)
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
    if stages and len(snaps) == 1:
        print_stages(stages, cpu, n)
    c = snap["counters"]
    if "handoff_hits" in c and len(snaps) == 1:
        print(
            f"handoff     {c['handoff_hits']} events messages taken parsed from the"
            f" normalise agent, {c['handoff_misses']} parsed"
        )
    for s in snaps:
        c = s["counters"]
        assert c["events_in"] == (
            c["normalised"] + c["dead_lettered"] + sum(c["filtered"].values())
        )


def _sum_cpu(snaps: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds (process, loop thread) over every worker's first -> last message."""
    cpus = [s.get("cpu_s_first_to_last") or {} for s in snaps]
    if not all(cpus):
        return {}
    return {k: sum(c[k] for c in cpus) for k in ("process", "loop")}


if __name__ == "__main__":
    sys.exit(main())
