"""Runtime settings of the Kafka side of Klaxon, read from environment variables.

Every variable is optional; the defaults run a single local worker against the embedded
Tansu broker.

``KLAXON_CONFIG``
    A YAML file of these variables (``KLAXON_PARTITIONS: 12``), read under the environment:
    a variable set (non-empty) in the environment wins. ``klaxon config show`` says where
    each value came from.
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
``KLAXON_METRICS_ADDRESS`` (``127.0.0.1:9464``; flag ``--metrics-address``)
    ``HOST:PORT`` (``[v6]:port``) where a worker or an intake serves ``/metrics``,
    ``/healthz`` and ``/readyz`` (`pipeline.telemetry`); port 0 picks a free one, ``off``
    serves nothing.
``KLAXON_METRICS_TOKEN``
    Bearer token those paths require (every path, probes included); a `ConfigError` without
    it when the address is not loopback. A secret: never printed.
``KLAXON_WEBHOOK_TOKENS``
    Comma-separated bearer tokens the audit webhook intake accepts, besides those of its
    ``--token-file``. Secrets: never printed.
``KLAXON_LABELS``
    Static labels set on every alert (``labels``), comma-separated ``key=value`` pairs:
    ``env=prod,team=sec,region=eu-west-1``. Keys: letters, digits, ``._/-`` (at most 63);
    values at most 256 characters, without commas.
``KLAXON_RULES_ENABLE``, ``KLAXON_RULES_DISABLE``
    Comma-separated rule selectors, ``id:<id, name or file stem>``, ``tag:<tag>``,
    ``level:<level>`` or ``status:<status>`` (`detections.selection`): disabled rules do not
    run; deprecated and unsupported rules are off unless enabled; enable wins over disable.
    Read by the worker (and its hot reload), ``klaxon replay --offline``, ``klaxon demo``
    and ``klaxon rules list``.
``KLAXON_REDACT_PATTERNS``
    Extra redaction patterns (RE2 syntax, one per line, at most 32 of 512 characters):
    every match in a request or response body string, a query value of ``requestURI`` or
    an audit annotation becomes ``[REDACTED sha256:...]`` (only the first group, if the
    pattern has groups). Added to the built-in redaction (`schemas.redact`).

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
``KLAXON_GROUPING`` (``on``)
    ``off``: every match is its own alert (still with ``group`` and ``incident``); ``on``:
    matches of one rule on one key within a window are one alert with updates
    (`detections.grouping`, ``docs/operations.md``, "Alert grouping").
``KLAXON_GROUP_RULE_LIMIT`` (``100``)
    Groups one rule may open per window; further matches are counted in the rule's
    overflow group (one alert, updated), never dropped.
``KLAXON_INCIDENT_GAP`` (``3600``)
    Event-time seconds between two alerts of one principal that still share an ``incident``.
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
import difflib
import ipaddress
import math
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidatorFunctionWrapHandler,
    field_serializer,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.errors import ConfigError
from pipeline.options import WorkerOptions
from pipeline.security import KafkaSecurity, Secret
from schemas.keys import DEFAULT_CLUSTER
from schemas.redact import Redaction

if TYPE_CHECKING:
    from detections.grouping import GroupOptions
    from detections.selection import RuleSelection
    from detections.stateful.offline import IsolationModel

__all__ = [
    "DETECTOR_FAMILIES",
    "METRICS_ADDRESS",
    "Settings",
    "WorkerOptions",
    "check_metrics_address",
    "config_file",
    "effective",
    "is_loopback",
    "parse_address",
    "setting",
    "stateful_env",
]

DAY_MS = 24 * 60 * 60 * 1000
#: The variable naming a YAML file of settings (under the environment's).
CONFIG_VARIABLE = "KLAXON_CONFIG"
#: The stateful detector families, in their canonical order.
DETECTOR_FAMILIES = ("correlations", "new-terms", "anomaly", "silence")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Where workers and intakes serve /metrics, /healthz and /readyz by default (loopback only).
METRICS_ADDRESS = "127.0.0.1:9464"


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(base) / "klaxon"


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(os.pathsep) if p.strip())


def _text(name: str, raw: str) -> str:
    return raw


def _servers(name: str, raw: str) -> str | None:
    return ",".join(s.strip() for s in raw.split(",") if s.strip()) or None


def _kafka_name(name: str, value: str) -> str:
    # Kafka's own rule for topic and group names: [a-zA-Z0-9._-]{1,249}.
    if len(value) > 249 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise ConfigError(f"{name}={value!r} is not a valid Kafka name ([a-zA-Z0-9._-]{{1,249}})")
    return value


def _seconds(name: str, raw: str) -> float:
    number, unit = (raw[:-1], raw[-1]) if raw[-1] in _UNITS else (raw, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a duration (seconds, or 30s, 2m, 1h)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be a finite duration of at least 0")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number above 0")
    return value


def _switch(name: str, raw: str) -> bool:
    """``on``/``off`` (also true/false, 1/0, yes/no).

    >>> _switch("X", "Off"), _switch("X", "yes")
    (False, True)
    """
    value = raw.lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}={value!r} must be on or off")


def _families(name: str, raw: str) -> tuple[str, ...]:
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


_LABEL_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")


def _labels(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs, comma-separated, keys unique.

    >>> _labels("L", "env=prod, team=sec")
    (('env', 'prod'), ('team', 'sec'))
    >>> _labels("L", "env")
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: L: 'env' is not key=value
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or not key:
            raise ConfigError(f"{name}: {part!r} is not key=value")
        if len(key) > 63 or not set(key) <= _LABEL_KEY_CHARS:
            raise ConfigError(f"{name}: label key {key!r} must be 1-63 of [A-Za-z0-9._/-]")
        if len(value) > 256:
            raise ConfigError(f"{name}: the value of {key!r} is longer than 256 characters")
        if key in out:
            raise ConfigError(f"{name}: label {key!r} given twice")
        out[key] = value
    return tuple(out.items())


def _selectors(name: str, raw: str) -> tuple[str, ...]:
    """Rule selectors, checked now (`detections.selection.Selector`)."""
    from detections.selection import Selector, parse_list

    values = tuple(parse_list(raw))
    for value in values:
        try:
            Selector.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return values


def _patterns(name: str, raw: str) -> tuple[str, ...]:
    """Redaction patterns, one per line, compiled now so a bad one stops the start-up."""
    values = tuple(line.strip() for line in raw.splitlines() if line.strip())
    try:
        Redaction.compile(values)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return values


def _model(name: str, raw: str) -> Path:
    """The offline model path, checked now so that a bad file stops the start-up."""
    path = Path(raw).expanduser()
    check_model(path, name)
    return path


def _user_path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def parse_address(text: str, name: str = "KLAXON_METRICS_ADDRESS") -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` (``[v6]:port``) address; None for ``off``.

    >>> parse_address("0.0.0.0:9464"), parse_address("[::1]:0"), parse_address("off")
    (('0.0.0.0', 9464), ('::1', 0), None)
    >>> parse_address("9464")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: KLAXON_METRICS_ADDRESS='9464' is not HOST:PORT (e.g. ...) or off
    """
    raw = text.strip()
    if raw.lower() == "off":
        return None
    host, sep, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name}={text!r} is not HOST:PORT (e.g. 0.0.0.0:9464) or off")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_metrics_address(raw: str, token: SecretStr | str | None) -> str:
    """``raw`` if it is a valid metrics address that may be served with ``token``
    (`ConfigError` off loopback without a token).

    >>> check_metrics_address("0.0.0.0:9464", None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: KLAXON_METRICS_ADDRESS=0.0.0.0:9464 is not loopback: set ...
    """
    address = parse_address(raw)
    if address is not None and not is_loopback(address[0]) and not token:
        raise ConfigError(
            f"KLAXON_METRICS_ADDRESS={raw.strip()} is not loopback: set KLAXON_METRICS_TOKEN"
            " (the bearer token /metrics, /healthz and /readyz require)"
        )
    return raw.strip()


def _address(name: str, raw: str) -> str:
    parse_address(raw, name)
    return raw


def _secret(name: str, raw: str) -> SecretStr:
    return SecretStr(raw)


def _secrets(name: str, raw: str) -> tuple[SecretStr, ...]:
    """Comma-separated secrets.

    >>> _secrets("T", "a, b,,")
    (SecretStr('**********'), SecretStr('**********'))
    """
    return tuple(SecretStr(t.strip()) for t in raw.split(",") if t.strip())


def config_file(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of the YAML file ``KLAXON_CONFIG`` names (none if it names none): a
    mapping of setting variables to scalars, e.g. ``KLAXON_PARTITIONS: 12``. Read as text
    and parsed like the environment, which wins over the file. `ConfigError` on a file that
    cannot be read, is not such a mapping, or names an unknown variable.
    """
    raw = env.get(CONFIG_VARIABLE, "").strip()
    if not raw:
        return {}
    where = f"{CONFIG_VARIABLE}={raw}"
    try:
        doc = yaml.safe_load(Path(raw).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a mapping of setting variables to values")
    known = Settings.variables() - {CONFIG_VARIABLE}
    out = {}
    for key, value in doc.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: {key!r} is not a setting{hint}")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: {key} must be a string or a number")
        out[str(key)] = str(value)
    return out


def _parsed(key: str, value: Any) -> tuple[str, Any]:
    """``(key, value)`` with text of a variable parsed; ``("", None)`` drops blank text."""
    parse = _PARSERS.get(key)
    if parse is None or not isinstance(value, str):
        return key, value
    raw = value.strip()
    if not raw:
        return "", None
    return key, parse(key, raw)


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


#: How each setting's variable is parsed (name, stripped non-empty text) -> value; filled by
#: `setting` as the fields of `Settings` are declared.
_PARSERS: dict[str, Callable[[str, str], Any]] = {}


def setting(
    variable: str,
    default: Any = None,
    parse: Callable[[str, str], Any] = _text,
    *,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a field of `Settings`: its environment ``variable``, default and parser.

    ``parse(variable, text)`` gets the stripped, non-empty value and returns the field's value
    or raises `ConfigError` naming the variable; an unset or blank variable keeps the default.
    """
    _PARSERS[variable] = parse
    if default_factory is not None:
        return Field(default_factory=default_factory, validation_alias=variable)
    return Field(default, validation_alias=variable)


class _EnvMapping(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of `os.environ`
    (so ``Settings.from_env(env)`` is a pure function of ``env``)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._mapping)


class Settings(BaseSettings):
    """Immutable runtime settings, one typed pydantic-settings model: build with
    `Settings.from_env()`, or with keyword arguments (defaults for the rest, the environment
    is not read), and override with `Settings.replace` (e.g. tests pointing at a fixture
    broker). Secrets are `SecretStr` (or `pipeline.security.Secret`): never printed.

    Adding a setting is one line here (``name: type = setting("KLAXON_…", default, parser)``)
    and one entry in the module docstring; `from_env`, `klaxon config show` and the Helm
    chart's test pick it up from the field.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        enable_decoding=False,  # every variable is text, parsed by its field's `setting` parser
    )

    bootstrap_servers: str | None = setting("KAFKA_BOOTSTRAP_SERVERS", None, _servers)
    topic_raw: str = setting("KLAXON_TOPIC_RAW", "klaxon.audit.raw", _kafka_name)
    topic_events: str = setting("KLAXON_TOPIC_EVENTS", "klaxon.audit.events", _kafka_name)
    topic_alerts: str = setting("KLAXON_TOPIC_ALERTS", "klaxon.alerts", _kafka_name)
    topic_deadletter: str = setting("KLAXON_TOPIC_DEADLETTER", "klaxon.deadletter", _kafka_name)
    partitions: int = setting("KLAXON_PARTITIONS", 4, _positive_int)
    replication_factor: int = setting("KLAXON_REPLICATION_FACTOR", 1, _positive_int)
    raw_retention_ms: int = setting("KLAXON_RAW_RETENTION_MS", 7 * DAY_MS, _positive_int)
    alerts_retention_ms: int = setting("KLAXON_ALERTS_RETENTION_MS", 30 * DAY_MS, _positive_int)
    rules_paths: tuple[Path, ...] = setting("KLAXON_RULES", (), _paths)
    lists_paths: tuple[Path, ...] = setting("KLAXON_LISTS", (), _paths)
    cluster: str = setting("KLAXON_CLUSTER", DEFAULT_CLUSTER)
    app_id: str = setting("KLAXON_APP_ID", "klaxon", _kafka_name)
    data_dir: Path = setting(
        "KLAXON_DATA_DIR",
        parse=_user_path,
        default_factory=lambda: _default_data_dir(os.environ),
    )
    stateful_detectors: tuple[str, ...] = setting(
        "KLAXON_STATEFUL_DETECTORS", DETECTOR_FAMILIES, _families
    )
    correlation_lateness: float = setting("KLAXON_CORRELATION_LATENESS", 30.0, _seconds)
    advance_delay: float = setting("KLAXON_STATEFUL_ADVANCE_DELAY", 120.0, _seconds)
    idle_grace: float = setting("KLAXON_STATEFUL_IDLE_GRACE", 60.0, _seconds)
    anomaly_threshold: float = setting("KLAXON_ANOMALY_THRESHOLD", 4.0, _positive_float)
    silence_threshold: float = setting("KLAXON_SILENCE_THRESHOLD", 600.0, _seconds)
    anomaly_model: Path | None = setting("KLAXON_ANOMALY_MODEL", None, _model)
    metrics_address: str = setting("KLAXON_METRICS_ADDRESS", METRICS_ADDRESS, _address)
    metrics_token: SecretStr | None = setting("KLAXON_METRICS_TOKEN", None, _secret)
    webhook_tokens: tuple[SecretStr, ...] = setting("KLAXON_WEBHOOK_TOKENS", (), _secrets)
    #: Static labels of every alert, in the order given.
    labels: tuple[tuple[str, str], ...] = setting("KLAXON_LABELS", (), _labels)
    rules_enable: tuple[str, ...] = setting("KLAXON_RULES_ENABLE", (), _selectors)
    rules_disable: tuple[str, ...] = setting("KLAXON_RULES_DISABLE", (), _selectors)
    #: Operator redaction patterns, RE2 source text.
    redact_patterns: tuple[str, ...] = setting("KLAXON_REDACT_PATTERNS", (), _patterns)
    #: Alert grouping (`detections.grouping`): on/off, groups per rule and window, and the
    #: gap that ends a principal's incident.
    grouping: bool = setting("KLAXON_GROUPING", True, _switch)
    group_rule_limit: int = setting("KLAXON_GROUP_RULE_LIMIT", 100, _positive_int)
    incident_gap: float = setting("KLAXON_INCIDENT_GAP", 3600.0, _seconds)
    #: TLS and SASL of every Kafka client (secrets masked in ``repr``); read by
    #: `KafkaSecurity.from_env`, which checks that the variables fit together.
    kafka_security: KafkaSecurity = KafkaSecurity()

    @field_serializer("kafka_security")
    def _masked_security(self, security: KafkaSecurity) -> dict[str, str]:
        """``model_dump``/``model_dump_json`` show Kafka security as text, secrets masked."""
        return {f.name: _shown(getattr(security, f.name)) for f in dataclasses.fields(security)}

    @model_validator(mode="wrap")
    @classmethod
    def _parse_variables(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Settings:
        """Text from the environment goes through each field's parser (its `ConfigError`
        names the variable); blank text keeps the default. Typed values pass as they are."""
        if isinstance(data, dict):
            data = {k: v for k, v in (_parsed(k, v) for k, v in data.items()) if k}
        result: Settings = handler(data)
        return result

    @model_validator(mode="after")
    def _metrics_token_off_loopback(self) -> Settings:
        """Off loopback the metrics and health endpoint needs a token."""
        check_metrics_address(self.metrics_address, self.metrics_token)
        return self

    @property
    def metrics_bearer(self) -> str | None:
        """The metrics token as text, for the server that compares it (never log it)."""
        return self.metrics_token.get_secret_value() if self.metrics_token else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: the environment is read by `from_env`, explicitly."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: `os.environ`), under them those of the
        ``KLAXON_CONFIG`` file if it names one; raises `ConfigError` on bad values.

        >>> Settings.from_env({}).bootstrap_servers is None   # None: use embedded Tansu
        True
        >>> Settings.from_env({"KLAXON_PARTITIONS": "0"})
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: KLAXON_PARTITIONS='0' must be at least 1
        """
        env = os.environ if env is None else env
        merged = {**config_file(env), **{k: v for k, v in env.items() if v != ""}}
        values: dict[str, Any] = dict(_EnvMapping(cls, merged)())
        if not str(values.get("KLAXON_DATA_DIR", "")).strip():
            values["KLAXON_DATA_DIR"] = str(_default_data_dir(env))
        return cls(**values, kafka_security=KafkaSecurity.from_env(merged))

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every environment variable a setting is read from (Kafka security's included).

        >>> {"KLAXON_PARTITIONS", "KAFKA_SASL_PASSWORD_FILE"} <= Settings.variables()
        True
        """
        return frozenset(_PARSERS) | frozenset(KafkaSecurity().env()) | {CONFIG_VARIABLE}

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names), validated like the original.

        >>> Settings().replace(partitions=8).partitions
        8
        """
        return type(self)(**{**dict(self), **changes})

    @property
    def label_map(self) -> dict[str, str]:
        """The static alert labels as a dict."""
        return dict(self.labels)

    def redaction(self) -> Redaction:
        """The operator redaction patterns, compiled (checked in `from_env`)."""
        return Redaction.compile(self.redact_patterns)

    def rule_selection(self) -> RuleSelection:
        """The rule selectors as a `detections.selection.RuleSelection`."""
        from detections.selection import RuleSelection

        return RuleSelection.parse(enable=self.rules_enable, disable=self.rules_disable)

    def group_options(self) -> GroupOptions:
        """The `detections.grouping.Grouper` options of these settings."""
        from detections.grouping import GroupOptions

        return GroupOptions(
            enabled=self.grouping,
            rule_limit=self.group_rule_limit,
            incident_gap=self.incident_gap,
            idle_grace=self.idle_grace,
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


def _shown(value: Any) -> str:
    """A setting's value as `effective` prints it: secrets as ``***``, sequences joined."""
    if isinstance(value, SecretStr | Secret):
        return "***"
    if isinstance(value, tuple) and any(isinstance(v, SecretStr) for v in value):
        return "***"
    if isinstance(value, tuple):
        sep = os.pathsep if value and isinstance(value[0], Path) else ","
        return sep.join(str(v) for v in value)
    return "" if value is None else str(value)


def effective(settings: Settings) -> dict[str, str]:
    """Every setting's variable with the value in effect, as text; secrets are ``***``
    (what ``klaxon config show`` prints).

    >>> shown = effective(Settings.from_env({"KLAXON_METRICS_TOKEN": "hunter2",
    ...     "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
    ...     "KAFKA_SASL_USERNAME": "klaxon", "KAFKA_SASL_PASSWORD": "hunter2"}))
    >>> shown["KLAXON_METRICS_TOKEN"], shown["KAFKA_SASL_PASSWORD"], shown["KLAXON_PARTITIONS"]
    ('***', '***', '4')
    >>> "hunter2" in repr(shown)
    False
    """
    shown = {}
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, str):
            shown[field.validation_alias] = _shown(getattr(settings, name))
    security = settings.kafka_security
    for f in dataclasses.fields(security):
        variable = "KAFKA_SECURITY_PROTOCOL" if f.name == "protocol" else f"KAFKA_{f.name.upper()}"
        shown[variable] = _shown(getattr(security, f.name))
    return shown


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
    return Settings.from_env({}).replace(
        bootstrap_servers=bootstrap,
        topic_raw=f"{prefix}raw.{tag}",
        topic_events=f"{prefix}events.{tag}",
        topic_alerts=f"{prefix}alerts.{tag}",
        topic_deadletter=f"{prefix}deadletter.{tag}",
        app_id=f"{app}-{tag}",
        data_dir=data_dir,
        rules_paths=rules_paths,
        metrics_address="127.0.0.1:0",  # a free port: runs side by side never collide
    )


def stateful_env(settings: Settings) -> dict[str, str]:
    """The variables of the stateful and alert grouping settings (for
    `pipeline.worker.settings_env`).

    >>> env = stateful_env(Settings(advance_delay=5.0, stateful_detectors=()))
    >>> env["KLAXON_STATEFUL_ADVANCE_DELAY"], env["KLAXON_STATEFUL_DETECTORS"]
    ('5.0', 'none')
    >>> Settings.from_env(env).advance_delay
    5.0
    >>> grouped = Settings.from_env(stateful_env(Settings(grouping=False, group_rule_limit=7)))
    >>> grouped.grouping, grouped.group_rule_limit, grouped.incident_gap
    (False, 7, 3600.0)
    >>> Settings.from_env({"KLAXON_GROUPING": "maybe"})
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: KLAXON_GROUPING='maybe' must be on or off
    """
    return {
        "KLAXON_STATEFUL_DETECTORS": ",".join(settings.stateful_detectors) or "none",
        "KLAXON_CORRELATION_LATENESS": repr(settings.correlation_lateness),
        "KLAXON_STATEFUL_ADVANCE_DELAY": repr(settings.advance_delay),
        "KLAXON_STATEFUL_IDLE_GRACE": repr(settings.idle_grace),
        "KLAXON_ANOMALY_THRESHOLD": repr(settings.anomaly_threshold),
        "KLAXON_SILENCE_THRESHOLD": repr(settings.silence_threshold),
        "KLAXON_ANOMALY_MODEL": str(settings.anomaly_model or ""),
        "KLAXON_GROUPING": "on" if settings.grouping else "off",
        "KLAXON_GROUP_RULE_LIMIT": str(settings.group_rule_limit),
        "KLAXON_INCIDENT_GAP": repr(settings.incident_gap),
    }
