"""Runtime settings of the Kafka side of Klaxon, read from environment variables.

Every variable is optional; the defaults run a single local worker against the embedded
Tansu broker.

``KAFKA_BOOTSTRAP_SERVERS``
    Comma-separated ``host:port`` list of an existing Kafka cluster. Unset or empty: start
    the embedded Tansu broker (`pipeline.brokers.TansuBroker`) on a free 127.0.0.1 port.
``KLAXON_TOPIC_RAW`` (``klaxon.audit.raw``)
    Topic that shippers write audit payloads to.
``KLAXON_TOPIC_EVENTS`` (``klaxon.audit.events``)
    Topic of normalised event batches, keyed by ``cluster|user``.
``KLAXON_TOPIC_ALERTS`` (``klaxon.alerts``)
    Topic of alerts, keyed by alert id.
``KLAXON_TOPIC_DEADLETTER`` (``klaxon.deadletter``)
    Topic of payloads that could not be decoded or processed.
``KLAXON_PARTITIONS`` (``4``)
    Partitions of each of the four topics when Klaxon creates them. Bounds worker
    parallelism: one partition is processed by one worker at a time.
``KLAXON_REPLICATION_FACTOR`` (``1``)
    Replication factor of the topics Klaxon creates; use 3 on a production cluster.
``KLAXON_RAW_RETENTION_MS`` (``604800000``, 7 days)
    ``retention.ms`` of the raw and events topics: how far back a reprocess can go.
``KLAXON_ALERTS_RETENTION_MS`` (``2592000000``, 30 days)
    ``retention.ms`` of the alerts and dead-letter topics.
``KLAXON_RULES``
    Rule files or folders, separated by ``os.pathsep`` (``:``). Empty: the bundled pack.
``KLAXON_LISTS``
    Named value list files (``append:``/``replace:``), separated by ``os.pathsep``.
``KLAXON_CLUSTER`` (``default``)
    Cluster name given to events whose envelope does not name one.
``KLAXON_APP_ID`` (``klaxon``)
    Faust application id: the consumer group and the prefix of internal topics.
``KLAXON_DATA_DIR`` (``$XDG_DATA_HOME/klaxon``, else ``~/.local/share/klaxon``)
    Worker state directory (Faust tables, embedded broker logs).

>>> s = Settings.from_env({"KLAXON_PARTITIONS": "8", "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092"})
>>> s.partitions, s.bootstrap_servers, s.topic_alerts
(8, 'k1:9092,k2:9092', 'klaxon.alerts')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

__all__ = ["Settings"]

DAY_MS = 24 * 60 * 60 * 1000


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(base) / "klaxon"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in env.get(name, "").split(os.pathsep) if p.strip())


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    # Kafka's own rule for topic and group names: [a-zA-Z0-9._-]{1,249}.
    if len(value) > 249 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise ConfigError(f"{name}={value!r} is not a valid Kafka name ([a-zA-Z0-9._-]{{1,249}})")
    return value


@dataclass(frozen=True)
class Settings:
    """Immutable runtime settings; build with `Settings.from_env()` or override with
    `dataclasses.replace` (e.g. tests pointing at a fixture broker)."""

    bootstrap_servers: str | None = None
    topic_raw: str = "klaxon.audit.raw"
    topic_events: str = "klaxon.audit.events"
    topic_alerts: str = "klaxon.alerts"
    topic_deadletter: str = "klaxon.deadletter"
    partitions: int = 4
    replication_factor: int = 1
    raw_retention_ms: int = 7 * DAY_MS
    alerts_retention_ms: int = 30 * DAY_MS
    rules_paths: tuple[Path, ...] = ()
    lists_paths: tuple[Path, ...] = ()
    cluster: str = "default"
    app_id: str = "klaxon"
    data_dir: Path = dataclasses.field(default_factory=lambda: _default_data_dir(os.environ))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: `os.environ`); raises `ConfigError` on bad values.

        >>> Settings.from_env({}).bootstrap_servers is None   # None: use embedded Tansu
        True
        >>> Settings.from_env({"KLAXON_PARTITIONS": "0"})
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: KLAXON_PARTITIONS='0' must be at least 1
        """
        env = os.environ if env is None else env
        servers = ",".join(s.strip() for s in env.get("KAFKA_BOOTSTRAP_SERVERS", "").split(","))
        servers = ",".join(s for s in servers.split(",") if s)
        data_dir = env.get("KLAXON_DATA_DIR", "").strip()
        return cls(
            bootstrap_servers=servers or None,
            topic_raw=_name(env, "KLAXON_TOPIC_RAW", cls.topic_raw),
            topic_events=_name(env, "KLAXON_TOPIC_EVENTS", cls.topic_events),
            topic_alerts=_name(env, "KLAXON_TOPIC_ALERTS", cls.topic_alerts),
            topic_deadletter=_name(env, "KLAXON_TOPIC_DEADLETTER", cls.topic_deadletter),
            partitions=_positive_int(env, "KLAXON_PARTITIONS", cls.partitions),
            replication_factor=_positive_int(
                env, "KLAXON_REPLICATION_FACTOR", cls.replication_factor
            ),
            raw_retention_ms=_positive_int(env, "KLAXON_RAW_RETENTION_MS", cls.raw_retention_ms),
            alerts_retention_ms=_positive_int(
                env, "KLAXON_ALERTS_RETENTION_MS", cls.alerts_retention_ms
            ),
            rules_paths=_paths(env, "KLAXON_RULES"),
            lists_paths=_paths(env, "KLAXON_LISTS"),
            cluster=env.get("KLAXON_CLUSTER", "").strip() or cls.cluster,
            app_id=_name(env, "KLAXON_APP_ID", cls.app_id),
            data_dir=Path(data_dir).expanduser() if data_dir else _default_data_dir(env),
        )

    @property
    def topics(self) -> tuple[str, str, str, str]:
        """The four topic names: raw, events, alerts, dead-letter."""
        return (self.topic_raw, self.topic_events, self.topic_alerts, self.topic_deadletter)
