"""``klaxon replay FILE...``: write audit log files to the raw topic, as a shipper would.

The command-line layer joins `replay` (reader, producer) with the pipeline's shared settings
(`pipeline.config.Settings`: bootstrap servers, topic names, and the connection's TLS/SASL
as aiokafka arguments from `pipeline.security.KafkaSecurity.client_kwargs`), so `replay`
itself never imports `pipeline`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.security import connection_problem
from replay.errors import ReplayConnectError, ReplayError
from replay.reader import MAX_PAYLOAD_BYTES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the ``klaxon`` parser."""
    p = subparsers.add_parser(
        "replay",
        help="write audit log files (JSON lines, JSON, EventList, .gz) to the raw topic",
        description="Replay audit events into the raw topic; a running worker does the rest.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument("--topic", help="raw topic (default: $KLAXON_TOPIC_RAW or klaxon.audit.raw)")
    p.add_argument(
        "--batch", type=int, default=200, metavar="N", help="events per message (default 200)"
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_PAYLOAD_BYTES,
        metavar="B",
        help=f"bytes per message (default {MAX_PAYLOAD_BYTES})",
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="EV/S", help="send at most this many events/s")
    pace.add_argument(
        "--speed",
        type=float,
        metavar="X",
        help="pace by event timestamps, X times faster than they happened",
    )
    p.add_argument(
        "--cluster", help="cluster name for events whose envelope names none (message header)"
    )
    p.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from replay.producer import EventTimeSchedule, rate_schedule, replay_files

    try:
        settings = Settings.from_env()
        bootstrap = settings.bootstrap_for(
            args.bootstrap, "`klaxon demo FILE` replays into an embedded broker"
        )
    except PipelineError as exc:
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 2
    if args.batch < 1 or args.max_bytes < 1:
        print("klaxon replay: --batch and --max-bytes must be positive", file=sys.stderr)
        return 2
    schedule = None
    try:
        if args.rate is not None:
            schedule = rate_schedule(args.rate)
        elif args.speed is not None:
            schedule = EventTimeSchedule(args.speed)
    except ValueError as exc:
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or settings.topic_raw
    security = settings.kafka_security
    try:
        stats = asyncio.run(
            replay_files(
                args.files,
                bootstrap=bootstrap,
                topic=topic,
                max_events=args.batch,
                max_bytes=args.max_bytes,
                schedule=schedule,
                cluster=args.cluster,
                client_options=security.client_kwargs(),
            )
        )
    except ReplayConnectError as exc:
        why = asyncio.run(connection_problem(bootstrap, security.client_kwargs()))
        print(
            f"klaxon replay: cannot connect to {bootstrap} ({security.describe()}): {why or exc}",
            file=sys.stderr,
        )
        return 1
    except ReplayError as exc:
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 1
    print(
        f"replayed {stats.events} events in {stats.messages} messages ({stats.bytes} bytes)"
        f" to {topic} in {stats.seconds:.2f}s ({stats.rate:,.0f} events/s)"
    )
    return 0
