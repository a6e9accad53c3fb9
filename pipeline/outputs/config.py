"""The outputs file (``klaxon outputs --config outputs.yml``): one entry per output.

Strict (a misspelled key is an error naming it). Credentials are never in the file itself:
``token_env``/``token_file`` (and ``url_env``/``url_file`` for a chat webhook, whose URL is the
credential) name where to read them at start; the values are held as `SecretStr`, so neither a
log line nor a repr prints them.

>>> cfg = OutputsFile.model_validate({"outputs": [{"name": "siem", "type": "webhook",
...     "url": "https://siem.example/hook", "min_severity": "high", "namespaces": ["prod-*"]}]})
>>> o = cfg.outputs[0]
>>> o.batch.max_alerts, o.retry.initial
(100, 0.5)
>>> o.wants({"severity": "critical", "object": {"namespace": "prod-eu"}})
True
>>> o.wants({"severity": "medium", "object": {"namespace": "prod-eu"}})
False
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from pipeline.errors import ConfigError
from schemas.alert import SEVERITIES, Severity

__all__ = ["Batching", "OutputConfig", "OutputsFile", "Retry", "load_outputs"]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = re.compile(r"[a-zA-Z0-9._-]{1,100}")


class Batching(BaseModel):
    """How many alerts go in one request, at most, and how long a partial batch may wait."""

    model_config = _STRICT
    max_alerts: int = Field(default=100, ge=1, le=10_000)
    max_bytes: int = Field(default=1_000_000, ge=1_000, le=100_000_000)
    max_wait: float = Field(default=1.0, ge=0.0, le=60.0)


class Retry(BaseModel):
    """Exponential backoff between attempts of one batch; ``max_attempts`` 0 retries forever
    (the default: a SIEM that is down for an hour gets its alerts when it is back)."""

    model_config = _STRICT
    initial: float = Field(default=0.5, gt=0.0, le=60.0)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay: float = Field(default=60.0, gt=0.0, le=3600.0)
    max_attempts: int = Field(default=0, ge=0)

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (the server's hint if larger).

        >>> r = Retry(initial=0.5, max_delay=3)
        >>> [r.delay(a) for a in (1, 2, 3, 4, 5)], r.delay(1, hint=2.5)
        ([0.5, 1.0, 2.0, 3.0, 3.0], 2.5)
        """
        backoff = min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1))
        return min(self.max_delay, max(backoff, hint or 0.0))


def _secret(inline: str | None, env: str | None, file: Path | None, what: str) -> SecretStr | None:
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return SecretStr(value.strip())
    if file is not None:
        try:
            return SecretStr(file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file}: {exc.strerror}") from None
    return SecretStr(inline) if inline else None


class OutputConfig(BaseModel):
    """One output: where, in which format, which alerts, how batched and retried."""

    model_config = _STRICT

    name: str = Field(description="Unique; names the consumer group and dead letters.")
    type: str = Field(description="A key of `pipeline.outputs.OUTPUTS`.")
    url: str | None = None
    url_env: str | None = None
    url_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None
    #: More credential headers, each read from an environment variable (header -> variable),
    #: e.g. Google SecOps' ``X-goog-api-key`` and ``X-Webhook-Access-Key``.
    secret_headers: dict[str, str] = Field(default_factory=dict)
    format: str | None = Field(default=None, description="A key of FORMATS; default per type.")
    #: Splunk index or Elasticsearch index / data stream.
    index: str | None = None
    #: Webhook body: Klaxon's format, or the Falco shape falcosidekick reads.
    shape: Literal["format", "falco"] = "format"
    #: Webhook request body: one alert per request, or a batch as newline-separated JSON.
    body: Literal["one", "ndjson"] = "one"
    #: Elasticsearch Authorization scheme for the token (``ApiKey`` or ``Bearer``).
    auth_scheme: Literal["ApiKey", "Bearer"] = "ApiKey"
    min_severity: Severity = "informational"
    rules: tuple[str, ...] = ()
    exclude_rules: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    batch: Batching = Batching()
    retry: Retry = Retry()
    timeout: float = Field(default=10.0, gt=0.0, le=300.0)
    ca_file: Path | None = None
    verify_tls: bool = True
    group_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> OutputConfig:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_' or '-'")
        if sum(x is not None for x in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError("give exactly one of url, url_env, url_file")
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("give token_env or token_file, not both")
        return self

    def resolve_url(self) -> SecretStr:
        """The URL, read from the environment or a file when so configured."""
        url = _secret(self.url, self.url_env, self.url_file, f"output {self.name}: url")
        assert url is not None  # the validator requires one source
        if not url.get_secret_value().startswith(("https://", "http://")):
            raise ConfigError(f"output {self.name}: url must be http(s)://")
        return url

    def resolve_token(self) -> SecretStr | None:
        """The token, read from the environment or a file (None when there is none)."""
        return _secret(None, self.token_env, self.token_file, f"output {self.name}: token")

    def resolve_headers(self) -> dict[str, SecretStr]:
        """The ``secret_headers`` values, read from their environment variables."""
        out: dict[str, SecretStr] = {}
        for header, env in self.secret_headers.items():
            value = _secret(None, env, None, f"output {self.name}: header {header}")
            assert value is not None
            out[header] = value
        return out

    def wants(self, alert: dict[str, Any]) -> bool:
        """Whether the alert passes this output's severity, rule, tag and namespace filters."""
        severity = alert.get("severity")
        if severity not in SEVERITIES or SEVERITIES.index(severity) < SEVERITIES.index(
            self.min_severity
        ):
            return False
        rule_id = (alert.get("rule") or {}).get("id")
        if (self.rules and rule_id not in self.rules) or rule_id in self.exclude_rules:
            return False
        if self.tags and not set(self.tags) & set(alert_tags(alert)):
            return False
        namespace = (alert.get("object") or {}).get("namespace") or ""
        return not self.namespaces or any(
            fnmatch.fnmatchcase(namespace, p) for p in self.namespaces
        )


def alert_tags(alert: dict[str, Any]) -> list[str]:
    """The rule's tags on the alert, else its ATT&CK ids as Sigma tags (``attack.t1611``).

    >>> alert_tags({"attack": {"tactics": ["TA0004"], "techniques": [{"id": "T1611"}]}})
    ['attack.ta0004', 'attack.t1611']
    """
    if alert.get("tags"):
        return [str(t) for t in alert["tags"]]
    attack = alert.get("attack") or {}
    ids = [*attack.get("tactics", []), *(t.get("id") for t in attack.get("techniques", []))]
    return [f"attack.{str(i).lower()}" for i in ids if i]


class OutputsFile(BaseModel):
    """The whole file."""

    model_config = _STRICT
    outputs: tuple[OutputConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> OutputsFile:
        names = [o.name for o in self.outputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"output names must be unique: {', '.join(dupes)}")
        return self


def load_outputs(path: Path) -> OutputsFile:
    """Read and validate the outputs file; ConfigError naming the file and the key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    try:
        return OutputsFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
