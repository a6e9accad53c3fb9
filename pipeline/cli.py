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
from typing import TYPE_CHECKING, Any

from pipeline import topics_cli
from pipeline.config import Settings
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.app import WorkerOptions

__all__ = ["options_from_args", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the pipeline's subcommands to the ``klaxon`` parser."""
    _register_worker(subparsers)
    _register_status(subparsers)
    topics_cli.register(subparsers)


class _WorkerDefault:
    """The default of one `WorkerOptions` field, looked up only when ``klaxon worker --help``
    is printed or the worker starts (`pipeline.app` imports Faust; registering must not)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def value(self) -> object:
        from pipeline.app import WorkerOptions

        value: object = getattr(WorkerOptions(), self.name)
        return value

    def __str__(self) -> str:
        value = self.value()
        return f"{value:g}" if isinstance(value, float) else str(value)


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=_WorkerDefault("session_timeout"),
        metavar="S",
        help="consumer group session timeout; a dead worker's partitions move after it"
        " (default %(default)s; Kafka's minimum is 6)",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=_WorkerDefault("health_interval"),
        metavar="S",
        help="seconds between health lines / status file writes (default %(default)s)",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=_WorkerDefault("reload_interval"),
        metavar="S",
        help="seconds between rule file checks (default %(default)s)",
    )
    parser.add_argument(
        "--status-file", metavar="PATH", help="also write the health snapshot (JSON) here"
    )
    parser.add_argument(
        "--loglevel",
        default=_WorkerDefault("loglevel"),
        choices=["debug", "info", "warning", "error"],
        help="Faust's log level (default %(default)s)",
    )


def options_from_args(args: argparse.Namespace) -> WorkerOptions:
    """`WorkerOptions` from parsed worker flags."""
    from pipeline.app import WorkerOptions

    defaults = WorkerOptions()

    def given(name: str) -> Any:
        value = getattr(args, name)
        return getattr(defaults, name) if isinstance(value, _WorkerDefault) else value

    session = float(given("session_timeout"))
    return WorkerOptions(
        session_timeout=session,
        heartbeat_interval=min(1.0, session / 3),
        health_interval=float(given("health_interval")),
        reload_interval=float(given("reload_interval")),
        status_file=args.status_file,
        loglevel=str(given("loglevel")),
    )


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
    _add_worker_flags(p)
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from pipeline.worker import run_worker

    try:
        settings = Settings.from_env()
        bootstrap = settings.bootstrap_for(
            args.bootstrap, "`klaxon up` starts an embedded broker and a worker"
        )
    except PipelineError as exc:
        print(f"klaxon worker: {exc}", file=sys.stderr)
        return 2
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
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0
