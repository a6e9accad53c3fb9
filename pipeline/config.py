"""Runtime settings of the Kafka side of Klaxon, read from environment variables.

Every variable is optional; the defaults run a single local worker against the embedded
Tansu broker.

``KAFKA_BOOTSTRAP_SERVERS``
    Comma-separated ``host:port`` list of an existing Kafka cluster. Unset or empty: start
    the embedded Tansu broker (`pipeline.brokers.TansuBroker`) on a free 127.0.0.1 port.
``KAFKA_SECURITY_PROTOCOL`` (``PLAINTEXT``), ``KAFKA_SSL_*``, ``KAFKA_SASL_*``
    How every Kafka client of Klaxon connects (TLS, SASL PLAIN/SCRAM):
    `pipeline.security.KafkaSecurity`, ``settings.kafka_security``; ``docs/operations.md``,
    "Secure Kafka".
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

Stateful detections (``docs/stateful.md``). Durations are seconds, or a number with ``s``,
``m`` or ``h``; the defaults are those of `pipeline.stateful.StatefulOptions`.

``KLAXON_STATEFUL_DETECTORS`` (``correlations,new-terms,anomaly,silence``)
    Comma-separated stateful detector families to run; ``none`` runs none. ``anomaly`` is
    the online per-principal model (its windows are kept anyway when a model file is set).
``KLAXON_CORRELATION_LATENESS`` (``30``)
    How far behind a correlation group's newest event an event may arrive and still count.
``KLAXON_STATEFUL_ADVANCE_DELAY`` (``120``)
    The timer judges correlation and anomaly windows this far behind a partition's
    watermark (a partition's events are only roughly in time order).
``KLAXON_STATEFUL_IDLE_GRACE`` (``60``)
    Wall seconds without input after which a partition's watermark follows the wall clock.
``KLAXON_ANOMALY_THRESHOLD`` (``4``)
    z of a security feature (against the identity's own or peer baseline) at which the online
    anomaly model raises a medium alert (volume, novelty and hour alone stay low).
``KLAXON_SILENCE_THRESHOLD`` (``600``)
    A cluster without events for this long (event time) is reported quiet.
``KLAXON_ANOMALY_MODEL``
    JSON model written by ``klaxon anomaly train``: every closed per-principal window is
    also scored by this offline IsolationForest (in batches) and alerts above the threshold
    saved in the model. Checked here: a file that is not such a model, or one trained with
    another window length than the worker's, is a `ConfigError`.

>>> s = Settings.from_env({"KLAXON_PARTITIONS": "8", "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092"})
>>> s.partitions, s.bootstrap_servers, s.topic_alerts
(8, 'k1:9092,k2:9092', 'klaxon.alerts')
>>> s = Settings.from_env({"KLAXON_STATEFUL_DETECTORS": "anomaly, silence",
...                        "KLAXON_STATEFUL_ADVANCE_DELAY": "2m"})
>>> s.stateful_detectors, s.advance_delay
(('anomaly', 'silence'), 120.0)
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.security import KafkaSecurity
from schemas.keys import DEFAULT_CLUSTER

if TYPE_CHECKING:
    from detections.stateful.offline import IsolationModel

__all__ = ["DETECTOR_FAMILIES", "Settings", "WorkerOptions", "stateful_env"]

DAY_MS = 24 * 60 * 60 * 1000
#: The stateful detector families, in their canonical order.
DETECTOR_FAMILIES = ("correlations", "new-terms", "anomaly", "silence")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


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


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    number, unit = (raw[:-1], raw[-1]) if raw[-1] in _UNITS else (raw, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a duration (seconds, or 30s, 2m, 1h)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be a finite duration of at least 0")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number above 0")
    return value


def _families(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return DETECTOR_FAMILIES
    if raw.lower() == "none":
        return ()
    given = {p.strip().lower().replace("_", "-") for p in raw.split(",") if p.strip()}
    unknown = sorted(given - set(DETECTOR_FAMILIES))
    if unknown:
        raise ConfigError(
            f"{name}={raw!r}: unknown {', '.join(unknown)} (known: {', '.join(DETECTOR_FAMILIES)},"
            " or none)"
        )
    return tuple(f for f in DETECTOR_FAMILIES if f in given)


def _model(env: Mapping[str, str], name: str) -> Path | None:
    """The offline model path, checked now so that a bad file stops the start-up."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    check_model(path, name)
    return path


def check_model(path: Path, name: str = "KLAXON_ANOMALY_MODEL") -> IsolationModel:
    """Load an offline anomaly model for the worker; raises `ConfigError` naming ``name``.

    >>> check_model(Path("/nonexistent/model.json"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: KLAXON_ANOMALY_MODEL=/nonexistent/model.json: cannot read ...
    """
    from detections.stateful.anomaly import AnomalySettings
    from detections.stateful.errors import ModelFormatError
    from detections.stateful.offline import load

    try:
        model = load(path)
    except ModelFormatError as exc:
        raise ConfigError(f"{name}={path}: {exc}") from None
    window = AnomalySettings().window
    if model.window != window:
        raise ConfigError(
            f"{name}={path}: trained on {model.window:g}-second windows, the worker uses"
            f" {window:g}-second windows (train again with --window {window:g})"
        )
    return model


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
    cluster: str = DEFAULT_CLUSTER
    app_id: str = "klaxon"
    data_dir: Path = dataclasses.field(default_factory=lambda: _default_data_dir(os.environ))
    stateful_detectors: tuple[str, ...] = DETECTOR_FAMILIES
    correlation_lateness: float = 30.0
    advance_delay: float = 120.0
    idle_grace: float = 60.0
    anomaly_threshold: float = 4.0
    silence_threshold: float = 600.0
    anomaly_model: Path | None = None
    #: TLS and SASL of every Kafka client (secrets masked in ``repr``).
    kafka_security: KafkaSecurity = KafkaSecurity()  # noqa: RUF009 - frozen, so shareable

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
            stateful_detectors=_families(env, "KLAXON_STATEFUL_DETECTORS"),
            correlation_lateness=_seconds(
                env, "KLAXON_CORRELATION_LATENESS", cls.correlation_lateness
            ),
            advance_delay=_seconds(env, "KLAXON_STATEFUL_ADVANCE_DELAY", cls.advance_delay),
            idle_grace=_seconds(env, "KLAXON_STATEFUL_IDLE_GRACE", cls.idle_grace),
            anomaly_threshold=_positive_float(
                env, "KLAXON_ANOMALY_THRESHOLD", cls.anomaly_threshold
            ),
            silence_threshold=_seconds(env, "KLAXON_SILENCE_THRESHOLD", cls.silence_threshold),
            anomaly_model=_model(env, "KLAXON_ANOMALY_MODEL"),
            kafka_security=KafkaSecurity.from_env(env),
        )

    @property
    def topics(self) -> tuple[str, str, str, str]:
        """The four topic names: raw, events, alerts, dead-letter."""
        return (self.topic_raw, self.topic_events, self.topic_alerts, self.topic_deadletter)

    def bootstrap_for(self, flag: str | None, hint: str) -> str:
        """The cluster a command talks to: its ``--bootstrap`` flag, else
        ``KAFKA_BOOTSTRAP_SERVERS``; `ConfigError` ending in ``hint`` when neither is given.

        >>> Settings(bootstrap_servers="k:9092").bootstrap_for(None, "")
        'k:9092'
        >>> Settings().bootstrap_for(None, "try `klaxon up`")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: no cluster given (...KAFKA_BOOTSTRAP_SERVERS); try `klaxon up`
        """
        bootstrap = flag or self.bootstrap_servers
        if not bootstrap:
            raise ConfigError(f"no cluster given (--bootstrap or KAFKA_BOOTSTRAP_SERVERS); {hint}")
        return bootstrap


def isolated_settings(
    bootstrap: str,
    data_dir: Path,
    *,
    prefix: str = "",
    app: str = "klaxon-test",
    rules_paths: tuple[Path, ...] = (),
) -> Settings:
    """Default settings for ``bootstrap`` whose topics and app id no other run shares (tests and
    benchmarks on a shared broker): ``{prefix}raw.<tag>`` ... and ``{app}-<tag>``.

    >>> s = isolated_settings("127.0.0.1:9092", Path("/tmp/x"), prefix="bench.", app="klaxon-bench")
    >>> s.topic_raw.startswith("bench.raw."), s.app_id.startswith("klaxon-bench-")
    (True, True)
    >>> s.topic_alerts.rsplit(".", 1)[1] == s.app_id.rsplit("-", 1)[1]
    True
    """
    tag = uuid.uuid4().hex[:12]
    return dataclasses.replace(
        Settings.from_env({}),
        bootstrap_servers=bootstrap,
        topic_raw=f"{prefix}raw.{tag}",
        topic_events=f"{prefix}events.{tag}",
        topic_alerts=f"{prefix}alerts.{tag}",
        topic_deadletter=f"{prefix}deadletter.{tag}",
        app_id=f"{app}-{tag}",
        data_dir=data_dir,
        rules_paths=rules_paths,
    )


def stateful_env(settings: Settings) -> dict[str, str]:
    """The variables of the stateful settings (for `pipeline.worker.settings_env`).

    >>> env = stateful_env(Settings(advance_delay=5.0, stateful_detectors=()))
    >>> env["KLAXON_STATEFUL_ADVANCE_DELAY"], env["KLAXON_STATEFUL_DETECTORS"]
    ('5.0', 'none')
    >>> Settings.from_env(env).advance_delay
    5.0
    """
    return {
        "KLAXON_STATEFUL_DETECTORS": ",".join(settings.stateful_detectors) or "none",
        "KLAXON_CORRELATION_LATENESS": repr(settings.correlation_lateness),
        "KLAXON_STATEFUL_ADVANCE_DELAY": repr(settings.advance_delay),
        "KLAXON_STATEFUL_IDLE_GRACE": repr(settings.idle_grace),
        "KLAXON_ANOMALY_THRESHOLD": repr(settings.anomaly_threshold),
        "KLAXON_SILENCE_THRESHOLD": repr(settings.silence_threshold),
        "KLAXON_ANOMALY_MODEL": str(settings.anomaly_model or ""),
    }


@dataclass(frozen=True)
class WorkerOptions:
    """Worker tuning that is not part of the shared `Settings` (flags of ``klaxon worker``)."""

    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    rebalance_timeout: float = 20.0
    commit_interval: float = 1.0
    stream_buffer_maxsize: int = 256
    max_poll_records: int = 200
    producer_linger: float = 0.005
    fetch_max_wait: float = 0.1
    handoff_events: int = 20_000
    health_interval: float = 30.0
    reload_interval: float = 5.0
    #: Outputs larger than this become dead letters instead (Kafka's default topic limit is
    #: 1,048,588 bytes; lower this if your topics' ``max.message.bytes`` is lower).
    max_message_bytes: int = 1_000_000
    #: Seconds an input partition may keep uncommitted messages without its commit moving
    #: before it counts as stalled (and is read again from its next offset).
    stall_after: float = 60.0
    #: Seconds stalled after which the worker exits (non-zero) to be restarted.
    stall_exit: float = 300.0
    #: Produce with an idempotent producer (Apache Kafka; Tansu refuses it).
    idempotent: bool = False
    loglevel: str = "warning"
    status_file: str | None = None
