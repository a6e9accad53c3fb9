"""The output interface: deliver one batch of alerts over HTTP, say what was refused.

An output gets a batch of alert documents (native shape, already filtered) and either
delivers it (returns a `Delivery` naming alerts refused for good and alerts to try again) or
raises `OutputUnavailable` (nothing was taken; the runner retries the whole batch with
backoff). Statuses are read once, here, for every HTTP output:

* 2xx: taken.
* 408, 429, 5xx, connection errors, timeouts: unavailable, retry (honouring ``Retry-After``).
* 401, 403, 404: unavailable too: a wrong token or URL is the output's configuration, not the
  alert's fault; retrying keeps the alerts until an operator fixes it (logged each attempt).
* 413 and other 4xx: the batch is refused. The runner retries a refused batch of several
  alerts one alert at a time, so only the alerts the output really refuses become dead letters.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.errors import ConfigError, OutputUnavailable
from pipeline.outputs.config import OutputConfig
from pipeline.sinks.formats import FORMATS, JsonFormat

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Delivery", "HttpReply", "Output", "classify"]

#: Settings of `OutputConfig` that only some output types read.
TYPE_SPECIFIC = frozenset({"index", "shape", "body", "auth_scheme"})
#: Statuses that mean "try again later" rather than "this alert is refused".
RETRYABLE = frozenset({401, 403, 404, 408, 425, 429})


@dataclass
class Delivery:
    """What became of a batch: indexes refused for good (with the reason) and to retry."""

    refused: dict[int, str] = field(default_factory=dict)
    retry: list[int] = field(default_factory=list)
    #: The whole batch was refused by one status (the runner then tries alerts one by one).
    whole_batch: bool = False


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An HTTP answer the output reads: status and (bounded) body."""

    status: int
    body: bytes


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


def classify(reply: HttpReply, size: int) -> Delivery:
    """The `Delivery` of a whole-batch answer (2xx taken; other 4xx refused); raises
    OutputUnavailable for the retryable statuses.

    >>> classify(HttpReply(200, b"ok"), 3)
    Delivery(refused={}, retry=[], whole_batch=False)
    >>> classify(HttpReply(400, b'{"text":"Invalid data format"}'), 2).refused
    {0: 'HTTP 400: {"text":"Invalid data format"}', 1: 'HTTP 400: {"text":"Invalid data format"}'}
    >>> classify(HttpReply(503, b"busy"), 1)
    Traceback (most recent call last):
    ...
    pipeline.errors.OutputUnavailable: HTTP 503: busy
    """
    if 200 <= reply.status < 300:
        return Delivery()
    text = f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}"
    if reply.status in RETRYABLE or reply.status >= 500 or reply.status < 200:
        raise OutputUnavailable(text)
    return Delivery(refused=dict.fromkeys(range(size), text), whole_batch=True)


class Output(ABC):
    """One configured output. Subclasses set `type`, `default_format` and `deliver`."""

    #: The output's ``type`` in the outputs file and its key in `OUTPUTS`.
    type: ClassVar[str]
    #: The format used when the file names none (None: the output renders alerts itself).
    default_format: ClassVar[str | None] = "native"
    #: The type-specific settings of `OutputConfig` this output reads (others are an error).
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: OutputConfig) -> None:
        unused = set((TYPE_SPECIFIC - self.options) & config.model_fields_set)
        if self.default_format is None and "format" in config.model_fields_set:
            unused.add("format")
        if unused:
            raise ConfigError(
                f"output {config.name}: {', '.join(sorted(unused))} does not apply to {self.type}"
            )
        self.config = config
        self.url = config.resolve_url()
        self.token = config.resolve_token()
        self.secret_headers = config.resolve_headers()
        self._ssl: ssl.SSLContext | bool | None = None
        name = config.format or self.default_format
        self.format: JsonFormat | None = None
        if name is not None:
            if name not in FORMATS:
                raise ConfigError(
                    f"output {config.name}: unknown format {name!r} (one of {', '.join(FORMATS)})"
                )
            self.format = FORMATS[name]

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings: the configured CA, or no verification if asked. Built once (loading
        the CA store costs tens of milliseconds: per request it capped a webhook at ~15/s)."""
        if self._ssl is None:
            self._ssl = (
                ssl.create_default_context(
                    cafile=str(self.config.ca_file) if self.config.ca_file else None
                )
                if self.config.verify_tls
                else False
            )
        return self._ssl

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for the token (none without a token)."""
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"} if self.token else {}

    async def post(
        self, http: aiohttp.ClientSession, body: bytes, content_type: str, path: str = ""
    ) -> HttpReply:
        """POST ``body``; OutputUnavailable on connection errors, timeouts and retryable
        statuses (with the server's ``Retry-After``). Never puts the URL or token in errors:
        a chat webhook URL is itself a credential."""
        import aiohttp

        headers = {"Content-Type": content_type, **self.auth_headers()}
        headers.update({k: v.get_secret_value() for k, v in self.secret_headers.items()})
        url = (
            self.url.get_secret_value().rstrip("/") + path if path else self.url.get_secret_value()
        )
        try:
            async with http.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                ssl=self.ssl_context(),
            ) as resp:
                reply = HttpReply(resp.status, await resp.content.read(64 * 1024))
                hint = _retry_after(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OutputUnavailable(f"{type(exc).__name__} talking to output") from None
        if reply.status in RETRYABLE or reply.status >= 500:
            text = reply.body[:200].decode("utf-8", "replace")
            raise OutputUnavailable(f"HTTP {reply.status}: {text}", hint)
        return reply

    def documents(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The alerts in the output's format (ValueError propagates: the runner refuses it)."""
        assert self.format is not None
        return [self.format.document(a) for a in alerts]

    @abstractmethod
    async def deliver(
        self, http: aiohttp.ClientSession, alerts: Sequence[dict[str, Any]]
    ) -> Delivery:
        """Send one batch; raise OutputUnavailable when nothing was taken and it may be
        retried, or return which alerts were refused or must be retried."""
