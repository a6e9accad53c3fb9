"""Klaxon's topics: their layout (pure) and idempotent creation on any Kafka-protocol broker.

`topic_specs` says what the topics should look like for given `Settings`; `ensure_topics`
makes a broker match: it creates missing topics, accepts existing ones with the right
partition count, and refuses (`TopicError`) ones whose partition count differs, because
events are routed to partitions by key and a silent mismatch would break co-partitioning.
Works on Apache Kafka and on the embedded Tansu broker.

Besides the four topics of the contract, the stateful detections (`pipeline.tables`) need two
internal topics, `stateful_topic_specs`: the changelog of their Faust table (compacted, named
the way Faust names it, ``<app id>-stateful-changelog``) and ``<events>.by-group``, which
carries matches of correlations whose group is not the events topic's ``cluster|user`` key
to the partition of their own group. Both have the events topic's partition count (Faust
co-partitions them with it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import Settings
from pipeline.errors import TopicError
from pipeline.security import connection_problem

__all__ = [
    "STATE_TABLE",
    "TopicSpec",
    "changelog_topic",
    "ensure_topics",
    "rekey_topic",
    "stateful_topic_specs",
    "topic_specs",
]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    """One topic as Klaxon wants it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The raw, events, alerts and dead-letter topics for ``settings``, in that order.

    Raw and events keep ``raw_retention_ms`` (the reprocessing window); alerts and dead
    letters keep ``alerts_retention_ms``. All are delete-retention topics. With replication
    factor 3 or more, ``min.insync.replicas`` is 2, so an ``acks=all`` write survives the
    loss of any one broker.

    >>> [(s.name, s.partitions, s.configs["retention.ms"]) for s in topic_specs(Settings())][:2]
    [('klaxon.audit.raw', 4, '604800000'), ('klaxon.audit.events', 4, '604800000')]
    """
    short = str(settings.raw_retention_ms)
    long = str(settings.alerts_retention_ms)
    retention = {
        settings.topic_raw: short,
        settings.topic_events: short,
        settings.topic_alerts: long,
        settings.topic_deadletter: long,
    }
    durability = {"min.insync.replicas": "2"} if settings.replication_factor >= 3 else {}
    return [
        TopicSpec(
            name=name,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            configs={"cleanup.policy": "delete", "retention.ms": retention[name], **durability},
        )
        for name in settings.topics
    ]


#: Name of the Faust table that holds the stateful detectors' state (see `pipeline.tables`).
STATE_TABLE = "stateful"


def changelog_topic(settings: Settings) -> str:
    """The state table's changelog topic, named as Faust names it (``<id>-<table>-changelog``).

    >>> changelog_topic(Settings())
    'klaxon-stateful-changelog'
    """
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def rekey_topic(settings: Settings) -> str:
    """The repartition topic for correlations grouped by something other than the user.

    >>> rekey_topic(Settings())
    'klaxon.audit.events.by-group'
    """
    return f"{settings.topic_events}.by-group"


def stateful_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The state changelog (compacted: the latest value per key is the state) and the
    repartition topic (delete retention, like the events topic), with the events topic's
    partition count so Faust assigns partition *p* of all of them to the same worker.

    >>> [(s.name, s.configs["cleanup.policy"]) for s in stateful_topic_specs(Settings())]
    [('klaxon-stateful-changelog', 'compact'), ('klaxon.audit.events.by-group', 'delete')]
    """
    durability = {"min.insync.replicas": "2"} if settings.replication_factor >= 3 else {}
    retention = {"retention.ms": str(settings.raw_retention_ms)}
    return [
        TopicSpec(
            name=changelog_topic(settings),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            configs={"cleanup.policy": "compact", **durability},
        ),
        TopicSpec(
            name=rekey_topic(settings),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            configs={"cleanup.policy": "delete", **retention, **durability},
        ),
    ]


def _error_name(code: int) -> str:
    from aiokafka.errors import for_code

    return str(for_code(code).__name__)


async def ensure_topics(
    bootstrap: str,
    settings: Settings,
    *,
    timeout: float = 30.0,
    extra: Sequence[TopicSpec] = (),
) -> dict[str, Literal["created", "exists"]]:
    """Create Klaxon's topics on ``bootstrap`` unless they exist with the same partition count.

    ``extra`` adds more topics (the worker passes `stateful_topic_specs`). Returns each
    topic's outcome. Raises `TopicError` when a topic exists with another
    partition count, the broker refuses a topic, or the topics have no leaders within
    ``timeout`` seconds (the call also waits for that, so producers can start right away).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, KafkaError

    specs = topic_specs(settings) + list(extra)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        **settings.kafka_security.client_kwargs(),
    )
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
                for s in specs
            ],
            timeout_ms=int(timeout * 1000),
        )
        outcome: dict[str, Literal["created", "exists"]] = {}
        problems = []
        for name, code, message in (tuple(e)[:3] for e in response.topic_errors):
            if code == 0:
                outcome[name] = "created"
            elif code == _TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                problems.append(f"{name}: {_error_name(code)}: {message or ''}".rstrip(": "))
        if problems:
            raise TopicError(f"broker {bootstrap} refused topics: " + "; ".join(problems))
        await _wait_for_leaders(bootstrap, settings, specs, outcome, timeout)
        return outcome
    except KafkaConnectionError as exc:
        why = await connection_problem(bootstrap, settings.kafka_security.client_kwargs())
        raise TopicError(
            f"cannot connect to {bootstrap} ({settings.kafka_security.describe()}):"
            f" {why or repr(exc)}"
        ) from exc
    except KafkaError as exc:
        raise TopicError(f"cannot create topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()


async def _wait_for_leaders(
    bootstrap: str,
    settings: Settings,
    specs: list[TopicSpec],
    outcome: Mapping[str, str],
    timeout: float,
) -> None:
    """Check existing topics' partition counts; wait until every reachable broker knows every
    partition's leader (metadata reaches brokers one by one on a multi-node cluster)."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError
    from aiokafka.protocol.metadata import MetadataRequest

    deadline = time.monotonic() + timeout
    by_name = {s.name: s for s in specs}
    checked: set[str] = set()
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=5000,
        **settings.kafka_security.client_kwargs(),
    )
    try:
        await client.bootstrap()
        while True:
            views = []
            for broker in client.cluster.brokers():
                try:
                    response = await client.send(broker.nodeId, MetadataRequest(list(by_name)))
                except (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError):
                    continue  # a broker that is down does not hold up topic creation
                views.append({t["topic"]: t for t in response.to_object()["topics"]})
            pending = set() if views else set(by_name)
            for view in views:
                for name, spec in by_name.items():
                    topic = view.get(name)
                    if topic is None or topic["error_code"] != 0 or not topic["partitions"]:
                        pending.add(name)
                        continue
                    partitions = topic["partitions"]
                    if outcome.get(name) == "exists" and name not in checked:
                        checked.add(name)
                        _check_existing(spec, partitions)
                    if len(partitions) != spec.partitions or any(
                        p["leader"] < 0 for p in partitions
                    ):
                        pending.add(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TopicError(
                    f"topics without leaders after {timeout:.0f}s: {', '.join(sorted(pending))}"
                )
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def _check_existing(spec: TopicSpec, partitions: list[dict[str, Any]]) -> None:
    """Refuse an existing topic with another partition count; warn on another RF."""
    name = spec.name
    if len(partitions) != spec.partitions:
        raise TopicError(
            f"topic {name} exists with {len(partitions)} partitions but"
            f" {spec.partitions} are configured; set KLAXON_PARTITIONS={len(partitions)}"
            " or recreate the topic (keyed routing depends on the partition count)"
        )
    replicas = {len(p["replicas"]) for p in partitions}
    if replicas != {spec.replication_factor}:
        log.warning(
            "topic %s exists with replication factor %s, configured %d",
            name,
            sorted(replicas),
            spec.replication_factor,
        )
