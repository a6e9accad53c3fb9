"""``klaxon worker | status | topics``: the pipeline's commands.

Settings come from the environment (`pipeline.config.Settings`, e.g.
``KAFKA_BOOTSTRAP_SERVERS``); flags override the bootstrap servers and tune the worker.
Heavy imports (Faust, aiokafka) happen inside the command functions: ``klaxon status`` is
the liveness probe and must start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import topics_cli
from pipeline.errors import PipelineError
from pipeline.options import WorkerOptions

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["options_from_args", "register", "with_metrics_address"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the pipeline's subcommands to the ``klaxon`` parser."""
    _register_worker(subparsers)
    _register_status(subparsers)
    topics_cli.register(subparsers)


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    d = WorkerOptions()
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=d.session_timeout,
        metavar="S",
        help="consumer group session timeout; a dead worker's partitions move after it"
        " (default %(default)s; Kafka's minimum is 6)",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=d.health_interval,
        metavar="S",
        help="seconds between health lines / status file writes (default %(default)s)",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=d.reload_interval,
        metavar="S",
        help="seconds between rule file checks (default %(default)s)",
    )
    parser.add_argument(
        "--status-file", metavar="PATH", help="also write the health snapshot (JSON) here"
    )
    parser.add_argument(
        "--stall-after",
        type=float,
        default=d.stall_after,
        metavar="S",
        help="seconds an input partition may wait with uncommitted messages before it counts"
        " as stalled (default %(default)s)",
    )
    parser.add_argument(
        "--rewind-after",
        type=float,
        default=d.rewind_after,
        metavar="S",
        help="seconds an input partition may wait with uncommitted messages before it is"
        " read again from its next offset (default %(default)s)",
    )
    parser.add_argument(
        "--stall-exit",
        type=float,
        default=d.stall_exit,
        metavar="S",
        help="seconds stalled, or without a broker answer while a new client gets one, after"
        " which the worker exits to be restarted (default %(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        metavar="N",
        help="larger outputs become dead letters; keep it under your topics'"
        " max.message.bytes (default %(default)s)",
    )
    parser.add_argument(
        "--events-batch",
        type=int,
        default=d.events_batch,
        metavar="N",
        help="join consecutive raw messages' events messages per partition up to N events"
        " (default %(default)s)",
    )
    parser.add_argument(
        "--events-linger",
        type=float,
        default=d.events_linger,
        metavar="S",
        help="... sending what waits once the oldest waited S seconds; 0 sends one events"
        " message per raw message and partition (default %(default)s)",
    )
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="idempotent producer (Apache Kafka with acks=all; Tansu refuses it)",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="where /metrics, /healthz and /readyz are served, or off (default:"
        " $KLAXON_METRICS_ADDRESS, else 127.0.0.1:9464)",
    )
    parser.add_argument(
        "--event-loop",
        default=d.event_loop,
        choices=["uvloop", "asyncio"],
        help="event loop of the worker and its Kafka consumer thread (default %(default)s;"
        " asyncio's own when uvloop is not installed)",
    )
    parser.add_argument(
        "--loglevel",
        default=d.loglevel,
        choices=["debug", "info", "warning", "error"],
        help="Faust's log level (default %(default)s)",
    )


def options_from_args(args: argparse.Namespace) -> WorkerOptions:
    """`WorkerOptions` from parsed worker flags."""
    session = float(args.session_timeout)
    return WorkerOptions(
        session_timeout=session,
        heartbeat_interval=min(1.0, session / 3),
        health_interval=float(args.health_interval),
        reload_interval=float(args.reload_interval),
        status_file=args.status_file,
        loglevel=str(args.loglevel),
        stall_after=float(args.stall_after),
        rewind_after=float(args.rewind_after),
        stall_exit=float(args.stall_exit),
        max_message_bytes=int(args.max_message_bytes),
        events_batch=max(1, int(args.events_batch)),
        events_linger=max(0.0, float(args.events_linger)),
        idempotent=bool(args.idempotent),
        event_loop=str(args.event_loop),
    )


def with_metrics_address(settings: Settings, flag: str | None) -> Settings:
    """``settings`` with ``--metrics-address`` applied (checked like the variable).

    >>> from pipeline.config import Settings
    >>> with_metrics_address(Settings(), "127.0.0.1:0").metrics_address
    '127.0.0.1:0'
    """
    from pipeline.config import check_metrics_address

    if not flag:
        return settings
    return settings.replace(metrics_address=check_metrics_address(flag, settings.metrics_token))


def _register_worker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a worker: raw topic -> normalise -> detect -> alerts (needs a Kafka cluster)",
        description="Run one worker. Workers with the same KLAXON_APP_ID share the partitions.",
    )
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes in this group (0: one per core); each gets the metrics"
        " port + i, status file NAME-i.EXT and its own data dir (default %(default)s)",
    )
    _add_worker_flags(p)
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.worker import run_worker

    try:
        settings = with_metrics_address(Settings.from_env(), args.metrics_address)
        bootstrap = settings.bootstrap_for(
            args.bootstrap, "`klaxon up` starts an embedded broker and a worker"
        )
    except PipelineError as exc:
        print(f"klaxon worker: {exc}", file=sys.stderr)
        return 2
    if args.processes != 1:
        from pipeline.supervise import process_count, supervise

        return supervise(
            list(args.command_line),
            process_count(args.processes),
            metrics_address=settings.metrics_address,
            status_file=args.status_file,
            data_dir=str(settings.data_dir),
        )
    return run_worker(settings, options_from_args(args), bootstrap=bootstrap)


def _register_status(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="show a worker's health snapshot (written with `klaxon worker --status-file`)",
    )
    p.add_argument("file", metavar="STATUS_FILE", type=Path)
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from pipeline.metrics import snapshot_problems

    try:
        snapshot = json.loads(args.file.read_text())
        age = time.time() - args.file.stat().st_mtime
    except (OSError, ValueError) as exc:
        print(f"klaxon status: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    problems = snapshot_problems(snapshot, age=age)
    if args.json:
        print(json.dumps(snapshot, indent=2, sort_keys=True))
    else:
        c = snapshot.get("counters", {})
        print(f"status      {snapshot.get('status')} (written {age:.0f}s ago)")
        print(f"uptime      {snapshot.get('uptime_s')}s, rules {snapshot.get('rules')}")
        print(f"last msg    {snapshot.get('seconds_since_last_message')}s ago")
        print(f"lag         {snapshot.get('lag_total')}  {snapshot.get('lag')}")
        print(
            f"events      in {c.get('events_in')}  normalised {c.get('normalised')}"
            f"  dead-lettered {c.get('dead_lettered')}  filtered {c.get('filtered')}"
        )
        print(
            f"detect      events {c.get('detect_events')}  alerts {c.get('alerts')}"
            f"  dead-lettered {c.get('detect_dead_lettered')}  send errors {c.get('send_errors')}"
        )
        if snapshot.get("metrics_url"):
            print(f"metrics     {snapshot['metrics_url']}/metrics (/healthz, /readyz)")
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0
