"""Intake rate: the audit webhook (HTTPS + bearer token) next to the raw-topic producer.

``python -m bench intake [--events N] [--batch N] [--concurrency N] [--no-tls] [--kafka]``

1. Start a broker (embedded Tansu; ``--kafka``: Apache Kafka) and create fresh topics.
2. Producer: `replay.producer.replay_events` writes N events to the raw topic (200 per
   message): what a shipper or ``klaxon replay`` can do, the ceiling for an intake.
3. Webhook: `WebhookSource` + `RawTopicWriter` in this process; ``--concurrency`` aiohttp
   clients (also in this process, as the API server's batch sender would be several
   connections) POST EventLists of ``--batch`` events (the API server's default batch is
   400) until N events are in; each answer is 200 only after Kafka acknowledged it.

Prints events/s of both and the webhook's request latency (p50, p99). Print, don't assert.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.pipeline import events
from pipeline.config import Settings, isolated_settings

TOKEN = "bench-token"


def _eventlists(n: int, batch: int) -> list[bytes]:
    items = [orjson.loads(e) for e in events(n)]
    return [
        orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": chunk})
        for chunk in (items[i : i + batch] for i in range(0, n, batch))
    ]


def _tls(tmp: Path) -> tuple[Any, ssl.SSLContext]:
    """Server `TlsFiles` and a client context trusting it (a throwaway trustme CA)."""
    import trustme

    from pipeline.sources.webhook import TlsFiles

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp / "server.pem")
    cert.private_key_pem.write_to_path(tmp / "server.key")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TlsFiles(tmp / "server.pem", tmp / "server.key"), client


async def webhook_rate(
    settings: Settings, bodies: list[bytes], concurrency: int, tls: bool, tmp: Path
) -> tuple[float, list[float], int]:
    """(events/s, request latencies in seconds, non-200 answers) of the webhook."""
    import aiohttp

    from pipeline.sources.webhook import Limits, TokenFile, WebhookConfig, WebhookSource
    from pipeline.sources.writer import RawTopicWriter

    server_tls, client_ctx = _tls(tmp) if tls else (None, None)
    config = WebhookConfig(
        cluster="bench",
        port=0,
        tls=server_tls,
        tokens=TokenFile(None, [TOKEN]),
        limits=Limits(max_concurrent=max(16, concurrency)),
    )
    config.check(insecure_no_tls=not tls)
    bootstrap = settings.bootstrap_servers or ""
    writer = RawTopicWriter(bootstrap, settings.topic_raw, settings.topic_deadletter)
    source = WebhookSource(config, writer)
    await writer.start()
    await source.start()
    if not await writer.wait_ready(30):
        raise SystemExit(f"webhook not ready: {writer.last_error}")
    url = f"{'https' if tls else 'http'}://127.0.0.1:{source.port}{config.path}"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    queue = list(reversed(bodies))
    latencies: list[float] = []
    failed = 0

    async def client() -> None:
        nonlocal failed
        connector = aiohttp.TCPConnector(ssl=client_ctx if tls else False, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    failed += r.status != 200
                latencies.append(time.perf_counter() - t0)

    n = sum(len(orjson.loads(b)["items"]) for b in bodies)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await source.stop()
        await writer.stop()
    return n / seconds, latencies, failed


def _ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench intake", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events per side (100000)")
    parser.add_argument("--batch", type=int, default=400, help="events per POST (400)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP")
    parser.add_argument("--kafka", action="store_true", help="Apache Kafka instead of Tansu")
    args = parser.parse_args(argv)

    from pipeline.brokers import KafkaCluster, TansuBroker
    from pipeline.topics import ensure_topics
    from replay.producer import replay_events

    broker: TansuBroker | KafkaCluster = KafkaCluster(1) if args.kafka else TansuBroker()
    kind = "Apache Kafka" if args.kafka else "Tansu"
    with tempfile.TemporaryDirectory(prefix="klaxon-bench-") as tmp, broker:
        bootstrap = broker.bootstrap_servers
        n = args.events
        produced = isolated_settings(bootstrap, Path(tmp) / "p", prefix="bench.")
        received = isolated_settings(bootstrap, Path(tmp) / "w", prefix="bench.")
        asyncio.run(ensure_topics(bootstrap, produced))
        asyncio.run(ensure_topics(bootstrap, received))
        bodies = _eventlists(n, args.batch)
        load = asyncio.run(replay_events(events(n), bootstrap=bootstrap, topic=produced.topic_raw))
        rate, latencies, failed = asyncio.run(
            webhook_rate(received, bodies, args.concurrency, not args.no_tls, Path(tmp))
        )
        mb = sum(map(len, bodies)) / 1e6
        print(f"broker      {kind} at {bootstrap}")
        print(
            f"producer    {load.rate:,.0f} events/s (replay_events, {load.messages} messages"
            " of 200 events, acks=all)"
        )
        print(
            f"webhook     {rate:,.0f} events/s ({'HTTP' if args.no_tls else 'HTTPS'} + token,"
            f" {len(bodies)} POSTs of {args.batch} events, {mb:.1f} MB, {args.concurrency}"
            f" clients in the same process, {failed} not 200)"
        )
        print(
            f"latency     p50 {_ms(latencies, 50):.1f} ms, p99 {_ms(latencies, 99):.1f} ms"
            " per request (POST -> 200 after Kafka acknowledged)"
        )
        print(f"ratio       webhook / producer = {rate / load.rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
