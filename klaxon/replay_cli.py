"""``klaxon replay FILE...``: write audit log files to the raw topic, as a shipper would; or,
with no broker (or ``--offline``), run them through the worker's processing in this process.

The command-line layer joins `replay` (reader, producer, time shift) with the pipeline's
shared settings (`pipeline.config.Settings`: bootstrap servers, topic names, and the
connection's TLS/SASL as aiokafka arguments from `pipeline.security.KafkaSecurity.client_kwargs`)
and, offline, its processing functions (`klaxon.offline`), so `replay` itself never imports
`pipeline`. Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise),
then a summary; offline alerts go to stdout (a table like ``klaxon demo``'s, or ``--json``
lines).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.security import connection_problem
from replay.errors import ReplayConnectError, ReplayError
from replay.reader import MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from klaxon.offline import OfflineSummary
    from klaxon.progress import Progress

__all__ = ["read_files", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the ``klaxon`` parser."""
    p = subparsers.add_parser(
        "replay",
        help="write audit log files (JSON lines, JSON, EventList, .gz) to the raw topic,"
        " or detect offline",
        description="Replay audit events into the raw topic; a running worker does the rest."
        " With no broker (no --bootstrap, no KAFKA_BOOTSTRAP_SERVERS) or --offline, the"
        " worker's normalise and detect steps (stateful ones included) run in this process"
        " and alerts are printed.",
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
    p.add_argument(
        "--rewrite-time",
        metavar="now|TIMESTAMP",
        help="shift every event's timestamps by one constant so the first event is at this"
        " time (RFC 3339, e.g. 2025-01-01T00:00:00Z), keeping their spacing",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="no Kafka: normalise and detect in this process and print alerts (the default"
        " when no broker is configured)",
    )
    p.add_argument("--json", action="store_true", help="offline: print alerts as JSON lines")
    p.add_argument(
        "--format",
        metavar="NAME",
        help="offline: print alerts as JSON lines in this format: native, ocsf, ecs,"
        " splunk_hec (implies --json)",
    )
    p.set_defaults(func=_replay)


def _time_shift(value: str | None) -> Callable[[bytes], bytes] | None:
    """The ``--rewrite-time`` shifter (ValueError for a bad timestamp)."""
    if value is None:
        return None
    from replay.timeshift import TimeShifter, parse_time

    return TimeShifter(None if value.strip().lower() == "now" else parse_time(value))


def read_files(
    paths: Sequence[str | Path],
    progress: Progress | None = None,
    shift: Callable[[bytes], bytes] | None = None,
) -> Iterator[bytes]:
    """The events of ``paths`` in order, time-shifted by ``shift``, reported to ``progress``."""
    from replay.reader import iter_events

    base = 0
    count = 0
    done = [0]

    def at(offset: int) -> None:
        done[0] = base + offset

    for path in paths:
        for event in iter_events(path, on_position=at if progress is not None else None):
            count += 1
            if progress is not None:
                progress.update(count, done[0])
            yield shift(event) if shift is not None else event
        base += _size(path)


def _size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _replay(args: argparse.Namespace) -> int:
    from replay.producer import EventTimeSchedule, rate_schedule

    try:
        settings = Settings.from_env()
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
        shift = _time_shift(args.rewrite_time)
    except ValueError as exc:
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 2
    from klaxon.progress import Progress

    progress = Progress(sum(_size(f) for f in args.files))
    events = read_files(args.files, progress, shift)
    if args.offline or not (args.bootstrap or settings.bootstrap_servers):
        return _offline(args, settings, events, schedule, progress)
    return _to_broker(args, settings, events, schedule, progress)


def _to_broker(
    args: argparse.Namespace,
    settings: Settings,
    events: Iterator[bytes],
    schedule: Callable[[int, bytes], float] | None,
    progress: Progress,
) -> int:
    from replay.producer import replay_events

    bootstrap = settings.bootstrap_for(args.bootstrap, "")
    topic = args.topic or settings.topic_raw
    security = settings.kafka_security
    try:
        stats = asyncio.run(
            replay_events(
                events,
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
        progress.done()
        why = asyncio.run(connection_problem(bootstrap, security.client_kwargs()))
        print(
            f"klaxon replay: cannot connect to {bootstrap} ({security.describe()}): {why or exc}",
            file=sys.stderr,
        )
        return 1
    except ReplayError as exc:
        progress.done()
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 1
    progress.done()
    print(
        f"replayed {stats.events} events in {stats.messages} messages ({stats.bytes} bytes)"
        f" to {topic} in {stats.seconds:.2f}s ({stats.rate:,.0f} events/s)"
    )
    print(
        "klaxon replay: the worker normalises and detects them; `klaxon status` shows how many"
        " it normalised, filtered and dead-lettered",
        file=sys.stderr,
    )
    return 0


def _offline(
    args: argparse.Namespace,
    settings: Settings,
    events: Iterator[bytes],
    schedule: Callable[[int, bytes], float] | None,
    progress: Progress,
) -> int:
    from detections import RuleLoadError
    from klaxon.demo import alert_renderer, header_row
    from klaxon.offline import build_offline
    from replay.reader import iter_batches

    render = orjson_line if args.json and not args.format else alert_renderer(args)
    if render is None:
        return 2
    try:
        run = build_offline(settings, cluster=args.cluster)
    except (RuleLoadError, PipelineError) as exc:
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 1

    def show(alert: dict[str, Any]) -> None:
        progress.clear()
        line = render(alert)
        if line is not None:
            print(line, flush=True)

    if not args.json:
        print(header_row(), flush=True)
    started = time.monotonic()
    batches = iter_batches(
        events, max_events=args.batch, max_bytes=args.max_bytes, schedule=schedule
    )
    try:
        for batch in batches:
            if batch.due is not None:
                wait = batch.due - (time.monotonic() - started)
                if wait > 0:
                    time.sleep(wait)
            for alert in run.raw(batch.payload):
                show(alert)
        for alert in run.finish():
            show(alert)
    except ReplayError as exc:
        progress.done()
        print(f"klaxon replay: {exc}", file=sys.stderr)
        return 1
    progress.done()
    print(format_summary(run.summary, time.monotonic() - started), file=sys.stderr)
    return 0


def orjson_line(alert: dict[str, Any]) -> str:
    """One alert as a JSON line."""
    import orjson

    return orjson.dumps(alert).decode()


def format_summary(s: OfflineSummary, seconds: float) -> str:
    """The end-of-run summary of an offline replay.

    >>> from collections import Counter
    >>> from klaxon.offline import OfflineSummary
    >>> print(format_summary(OfflineSummary(read=3, normalised=2, filtered=Counter(
    ...     {"stage:RequestReceived": 1}), by_rule=Counter({"Pod exec": 2}),
    ...     by_severity=Counter({"high": 2}), grouping={"matches": 12, "groups": 1,
    ...     "updates": 1, "folded": 0, "overflow": 0}), 2.0))
    <BLANKLINE>
    read 3 events in 2.0s (2 events/s): 2 normalised, 1 filtered, 0 dead-lettered
      filtered: stage:RequestReceived 1
    2 alerts
      grouping: 12 matches in 1 groups (1 updates), 0 folded, 0 over the rule limit
      by severity: high 2
      by rule:
             2  Pod exec
    """
    from schemas.alert import SEVERITIES

    rate = s.read / seconds if seconds > 0 else float(s.read)
    lines = [
        "",
        f"read {s.read} events in {seconds:.1f}s ({rate:,.0f} events/s):"
        f" {s.normalised} normalised, {sum(s.filtered.values())} filtered,"
        f" {sum(s.dead_lettered.values())} dead-lettered",
    ]
    if s.filtered:
        lines.append("  filtered: " + ", ".join(f"{r} {n}" for r, n in s.filtered.most_common()))
    for reason, n in s.dead_lettered.most_common(5):
        lines.append(f"  dead letter: {n} x {reason[:100]}")
    lines.append(f"{s.alerts} alerts")
    g = s.grouping
    if g.get("matches"):
        lines.append(
            f"  grouping: {g['matches']} matches in {g['groups']} groups ({g['updates']}"
            f" updates), {g['folded']} folded, {g['overflow']} over the rule limit"
        )
    if s.alerts:
        order: list[str] = [sev for sev in reversed(SEVERITIES) if s.by_severity[sev]]
        order += [sev for sev in s.by_severity if sev not in SEVERITIES]
        lines.append("  by severity: " + ", ".join(f"{sev} {s.by_severity[sev]}" for sev in order))
        lines.append("  by rule:")
        lines += [f"    {n:6d}  {rule}" for rule, n in s.by_rule.most_common()]
    return "\n".join(lines)
