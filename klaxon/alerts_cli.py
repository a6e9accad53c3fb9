"""``klaxon alerts tail|stats``: read the alert topic as a person (or a script) would.

Both commands read the topic without a consumer group and never commit, so they change
nothing for the worker, the outputs or any SIEM connector reading the same topic. Kafka
connection security comes from the settings (``KAFKA_SECURITY_PROTOCOL`` and the rest,
`pipeline.security`), the cluster from ``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS``.

- ``tail`` prints alerts as they arrive (from now, ``--since 1h`` or ``--from-beginning``) as
  a table, JSON lines (``--json``) or any registered format (``--format NAME``, the names of
  `pipeline.sinks.formats.FORMATS`), filtered by severity, rule, technique, namespace and
  principal. ``--limit N`` stops after N alerts, ``--idle S`` after S quiet seconds.
- ``stats`` counts the alerts written in a time range (``--since``/``--until``, Kafka record
  time) by rule, severity and ATT&CK technique, as a table or one JSON document.

The filters and the counting are plain functions over alert documents (`AlertFilter`,
`AlertStats`), tested without a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from klaxon.cli import needs_subcommand

__all__ = ["AlertFilter", "AlertStats", "parse_time", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: ``stats`` gives up when the broker sends nothing for this long before the range's end.
STALL_SECONDS = 30


def parse_time(text: str, now: float) -> float:
    """A point in time as epoch seconds: a duration back from ``now`` (``90s``, ``15m``,
    ``24h``, ``7d``) or an ISO 8601 timestamp (UTC if it names no zone).

    >>> parse_time("2h", 10_000.0), parse_time("2026-12-05T10:00:00Z", 0)
    (2800.0, 1796464800.0)
    >>> parse_time("soon", 0)
    Traceback (most recent call last):
    ...
    ValueError: 'soon' is neither a duration (30s, 15m, 24h, 7d) nor an ISO 8601 time
    """
    raw = text.strip()
    if raw and raw[-1] in _UNITS:
        try:
            return now - float(raw[:-1]) * _UNITS[raw[-1]]
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 15m, 24h, 7d) nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _techniques(alert: dict[str, Any]) -> list[str]:
    attack = alert.get("attack") if isinstance(alert.get("attack"), dict) else {}
    techs = attack.get("techniques") if isinstance(attack, dict) else None
    return [str(t.get("id")) for t in techs or () if isinstance(t, dict) and t.get("id")]


def _sub(alert: dict[str, Any], key: str) -> dict[str, Any]:
    value = alert.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show; empty criteria match everything, several values of one
    criterion are alternatives, different criteria must all hold.

    - ``severities``: exact severities; ``min_severity``: this one or worse;
    - ``rules``: a rule id, or a case-insensitive part of its title;
    - ``techniques``: ``T1552`` matches T1552 and its sub-techniques (``T1552.007``);
    - ``namespaces``: the object's namespace; ``principals``: the user name, shell-style
      wildcards allowed (``system:serviceaccount:ci:*``).

    >>> from schemas.alert import example_alert
    >>> a = example_alert()
    >>> AlertFilter(techniques=("t1611",), principals=("minikube-*",)).matches(a)
    True
    >>> AlertFilter(min_severity="critical").matches(a)
    False
    >>> AlertFilter(rules=("privileged",)).matches(a)
    True
    """

    severities: tuple[str, ...] = ()
    min_severity: str | None = None
    rules: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether ``alert`` (a native alert document) passes every criterion."""
        return (
            self._severity(str(alert.get("severity") or ""))
            and self._rule(_sub(alert, "rule"))
            and self._technique(_techniques(alert))
            and (not self.namespaces or _sub(alert, "object").get("namespace") in self.namespaces)
            and self._principal(_sub(alert, "user").get("username"))
        )

    def _severity(self, severity: str) -> bool:
        from schemas.alert import SEVERITIES

        if self.severities and severity not in self.severities:
            return False
        if self.min_severity is None:
            return True
        order: list[str] = list(SEVERITIES)
        return severity in order and order.index(severity) >= order.index(self.min_severity)

    def _rule(self, rule: dict[str, Any]) -> bool:
        if not self.rules:
            return True
        title = str(rule.get("title") or "").lower()
        return any(r == rule.get("id") or r.lower() in title for r in self.rules)

    def _technique(self, ids: list[str]) -> bool:
        if not self.techniques:
            return True
        wanted = [t.upper() for t in self.techniques]
        return any(i == w or i.startswith(w + ".") for i in ids for w in wanted)

    def _principal(self, username: Any) -> bool:
        if not self.principals:
            return True
        name = username if isinstance(username, str) else ""
        return any(fnmatch.fnmatchcase(name, p) for p in self.principals)


@dataclass
class AlertStats:
    """Counts of alerts by rule, severity and technique (plus what could not be read).

    >>> from schemas.alert import example_alert
    >>> s = AlertStats()
    >>> s.add(example_alert()); s.add(example_alert()); s.add_unreadable()
    >>> s.alerts, dict(s.by_severity), dict(s.by_technique), s.unreadable
    (2, {'high': 2}, {'T1611': 2}, 1)
    """

    alerts: int = 0
    unreadable: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    titles: dict[str, str] = field(default_factory=dict)
    by_severity: Counter[str] = field(default_factory=Counter)
    by_technique: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None

    def add(self, alert: dict[str, Any], at: float | None = None) -> None:
        """Count one alert (``at``: its record time, epoch seconds)."""
        self.alerts += 1
        rule = _sub(alert, "rule")
        rule_id = str(rule.get("id") or "?")
        self.by_rule[rule_id] += 1
        self.titles.setdefault(rule_id, str(rule.get("title") or rule_id))
        self.by_severity[str(alert.get("severity") or "?")] += 1
        for tid in _techniques(alert) or ["-"]:
            self.by_technique[tid] += 1
        if at is not None:
            self.first = at if self.first is None else min(self.first, at)
            self.last = at if self.last is None else max(self.last, at)

    def add_unreadable(self) -> None:
        """Count one record that is not a native alert document."""
        self.unreadable += 1

    def document(self, since: float, until: float) -> dict[str, Any]:
        """The counts as one JSON-able document (most frequent first)."""
        return {
            "since": _iso(since),
            "until": _iso(until),
            "alerts": self.alerts,
            "unreadable": self.unreadable,
            "by_rule": [
                {"id": rid, "title": self.titles[rid], "count": n}
                for rid, n in self.by_rule.most_common()
            ],
            "by_severity": dict(_by_severity(self.by_severity)),
            "by_technique": dict(self.by_technique.most_common()),
        }

    def render(self, since: float, until: float, out: TextIO) -> None:
        """The counts as three small tables."""
        print(f"{self.alerts} alerts from {_iso(since)} to {_iso(until)}", file=out)
        if self.unreadable:
            print(f"{self.unreadable} records were not native alerts", file=out)
        sections: list[tuple[str, Iterable[tuple[str, int]]]] = [
            ("SEVERITY", _by_severity(self.by_severity)),
            ("RULE", ((self.titles[r], n) for r, n in self.by_rule.most_common())),
            ("TECHNIQUE", self.by_technique.most_common()),
        ]
        for title, rows in sections:
            print(f"\n{'COUNT':>7}  {title}", file=out)
            for name, count in rows:
                print(f"{count:>7}  {name}", file=out)


def _by_severity(counts: Counter[str]) -> list[tuple[str, int]]:
    from schemas.alert import SEVERITIES

    order: dict[str, int] = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- command line --------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``klaxon alerts tail|stats`` to the ``klaxon`` parser."""
    alerts = subparsers.add_parser("alerts", help="read the alert topic: tail and stats")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    needs_subcommand(alerts)

    tail = sub.add_parser("tail", help="print alerts as they arrive, filtered")
    _common(tail)
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since", metavar="WHEN", help="start at a time: 15m, 24h, or ISO 8601")
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    out = tail.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="native alerts as JSON lines")
    out.add_argument(
        "--format", metavar="NAME", help="alerts in a registered format (JSON lines): native, ..."
    )
    tail.add_argument("--severity", action="append", default=[], help="exact severity (repeat)")
    tail.add_argument("--min-severity", help="this severity or worse")
    tail.add_argument("--rule", action="append", default=[], help="rule id or part of its title")
    tail.add_argument("--technique", action="append", default=[], help="T1609 (sub-techniques too)")
    tail.add_argument("--namespace", action="append", default=[], help="the object's namespace")
    tail.add_argument(
        "--principal", action="append", default=[], help="user name; wildcards: 'system:*'"
    )
    tail.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N alerts")
    tail.add_argument(
        "--idle", type=float, default=0.0, metavar="S", help="stop after S quiet seconds"
    )
    tail.set_defaults(func=cmd_tail)

    stats = sub.add_parser("stats", help="count alerts by rule, severity and technique")
    _common(stats)
    stats.add_argument("--since", default="24h", metavar="WHEN", help="from (default 24h ago)")
    stats.add_argument("--until", metavar="WHEN", help="to (default now)")
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.set_defaults(func=cmd_stats)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT[,...]", help="the Kafka cluster")
    parser.add_argument("--topic", help="alert topic (default $KLAXON_TOPIC_ALERTS)")


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"klaxon alerts {command}: {message}", file=sys.stderr)
    return code


def _connection(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """Bootstrap servers, topic and aiokafka security options; raises `ConfigError`."""
    from pipeline.config import Settings

    settings = Settings.from_env()
    bootstrap = settings.bootstrap_for(args.bootstrap, "or run `klaxon up`")
    return bootstrap, args.topic or settings.topic_alerts, settings.kafka_security.client_kwargs()


def _filter(args: argparse.Namespace) -> AlertFilter:
    from schemas.alert import SEVERITIES

    for severity in [*args.severity, *([args.min_severity] if args.min_severity else [])]:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    return AlertFilter(
        severities=tuple(args.severity),
        min_severity=args.min_severity,
        rules=tuple(args.rule),
        techniques=tuple(args.technique),
        namespaces=tuple(args.namespace),
        principals=tuple(args.principal),
    )


def cmd_tail(args: argparse.Namespace) -> int:
    """``klaxon alerts tail``: see the module docstring."""
    from pipeline.errors import PipelineError

    try:
        flt = _filter(args)
        encode = _encoder(args.format)
        start = parse_time(args.since, time.time()) if args.since else None
        bootstrap, topic, security = _connection(args)
    except (ValueError, PipelineError) as exc:
        return _fail("tail", str(exc))
    try:
        return asyncio.run(_tail(args, bootstrap, topic, security, flt, encode, start))
    except KeyboardInterrupt:
        return 0
    except PipelineError as exc:
        return _fail("tail", str(exc), 1)


def _encoder(name: str | None) -> Any:
    """``None`` for the table or ``--json``; else the format's ``encode``."""
    if name is None:
        return None
    from pipeline.sinks.formats import FORMATS

    fmt = FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unknown format {name!r} (known: {', '.join(sorted(FORMATS))})")
    return fmt.encode


async def _tail(
    args: argparse.Namespace,
    bootstrap: str,
    topic: str,
    security: dict[str, Any],
    flt: AlertFilter,
    encode: Any,
    start: float | None,
) -> int:
    from klaxon.demo import format_row, header_row

    table = not args.json and encode is None
    consumer, partitions = await _open(bootstrap, topic, security)
    try:
        if args.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        elif start is not None:
            await _seek_to_time(consumer, partitions, start)
        else:
            await consumer.seek_to_end(*partitions)
        if table:
            print(header_row(), flush=True)
        shown, quiet_since = 0, time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                quiet_since = time.monotonic()
                for record in records:
                    if start is not None and record.timestamp < start * 1000:
                        continue  # the seek is a shortcut; some brokers (Tansu) ignore times
                    alert = _load(record.value)
                    if alert is None or not flt.matches(alert):
                        continue
                    if encode is not None:
                        line = encode(alert).decode("utf-8")
                    else:
                        line = json.dumps(alert) if args.json else format_row(alert)
                    print(line, flush=True)
                    shown += 1
                    if args.limit and shown >= args.limit:
                        return 0
            if args.idle and time.monotonic() - quiet_since >= args.idle:
                return 0
    finally:
        await consumer.stop()


def cmd_stats(args: argparse.Namespace) -> int:
    """``klaxon alerts stats``: see the module docstring."""
    from pipeline.errors import PipelineError

    now = time.time()
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
        if until <= since:
            raise ValueError("--until must be after --since")
        bootstrap, topic, security = _connection(args)
    except (ValueError, PipelineError) as exc:
        return _fail("stats", str(exc))
    try:
        stats = asyncio.run(_stats(bootstrap, topic, security, since, until))
    except PipelineError as exc:
        return _fail("stats", str(exc), 1)
    if args.json:
        print(json.dumps(stats.document(since, until), indent=2))
    else:
        stats.render(since, until, sys.stdout)
    return 0


async def _stats(
    bootstrap: str, topic: str, security: dict[str, Any], since: float, until: float
) -> AlertStats:
    """Count every record written in [since, until): from the first offset at ``since`` to
    the end offsets as they were when counting started (so it always finishes)."""
    from pipeline.errors import PipelineError

    consumer, partitions = await _open(bootstrap, topic, security)
    stats = AlertStats()
    try:
        ends = await consumer.end_offsets(partitions)
        await _seek_to_time(consumer, partitions, since)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        progress = time.monotonic()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            if batch:
                progress = time.monotonic()
            elif time.monotonic() - progress > STALL_SECONDS:
                raise PipelineError(f"no records from {topic!r} for {STALL_SECONDS}s")
            for tp, records in batch.items():
                for record in records:
                    at = record.timestamp / 1000.0
                    if record.offset < ends[tp] and since <= at < until:
                        alert = _load(record.value)
                        if alert is None:
                            stats.add_unreadable()
                        else:
                            stats.add(alert, at)
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return stats


def _load(value: bytes | None) -> dict[str, Any] | None:
    """A native alert document, or None for anything else on the topic."""
    try:
        alert = json.loads(value or b"")
    except ValueError:
        return None
    return alert if isinstance(alert, dict) and isinstance(alert.get("rule"), dict) else None


async def _open(bootstrap: str, topic: str, security: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A started consumer without a group (nothing is ever committed), assigned every
    partition of ``topic``; `PipelineError` if the topic does not exist."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from pipeline.errors import PipelineError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **security,
    )
    try:
        await consumer.start()
        topics = await consumer.topics()
    except KafkaError as exc:
        await consumer.stop()
        raise PipelineError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    ids = consumer.partitions_for_topic(topic) if topic in topics else None
    if not ids:
        await consumer.stop()
        raise PipelineError(f"topic {topic!r} does not exist on {bootstrap}")
    partitions = [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(partitions)
    return consumer, partitions


async def _seek_to_time(consumer: Any, partitions: Sequence[Any], since: float) -> None:
    """Each partition to its first record written at or after ``since`` (else its end)."""
    found = await consumer.offsets_for_times({tp: int(since * 1000) for tp in partitions})
    missing = [tp for tp, at in found.items() if at is None]
    for tp, at in found.items():
        if at is not None:
            consumer.seek(tp, at.offset)
    if missing:
        await consumer.seek_to_end(*missing)
