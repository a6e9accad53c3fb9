"""The Kubernetes API server's audit webhook backend as a source: HTTPS in, raw topic out.

The API server POSTs an ``audit.k8s.io/v1`` ``EventList`` (batch mode, the default) or a
single ``Event`` and retries any answer but 2xx with backoff. So this receiver answers 200
only after the broker acknowledged the payload (``acks=all``), and 503 with ``Retry-After``
when it could not: nothing is lost, and a successful request is written once.

Per request: authenticate (bearer token compared in constant time and/or a client
certificate verified against a CA, optionally restricted to some names), bound the body
(``max_body_bytes``, gzip decompressed under the same bound), check it is JSON with an
``items`` list or ``kind: Event`` (`prepare`; the worker's normaliser does the rest) and
yield it as a `RawPayload` (`WebhookSource.payloads`). `WebhookSource.forward` writes each
payload with a `RawTopicWriter` and `acknowledge`s it, which answers the request. Normally
that is one message per request, the body as received; a body over ``max_message_bytes``
is split into several EventLists and an event over ``max_event_bytes`` becomes a dead
letter (the rest of the request goes on), all sent together.

>>> limits = Limits(max_event_bytes=60, max_message_bytes=150)
>>> body = b'{"kind":"EventList","items":[{"auditID":"a"},{"auditID":"b"}]}'
>>> prepare(body, limits) == Prepared([body], [], 2)
True
>>> big = b'{"kind":"EventList","items":[{"auditID":"a"},{"pad":"' + b"x" * 80 + b'"}]}'
>>> p = prepare(big, limits)
>>> p.messages, p.events, [reason for reason, _ in p.dead]
([b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a"}]}'], 2, \
['event 2 of 2 is 90 bytes, over the 60-byte per-event limit'])
>>> prepare(b'{"kind":"Status"}', limits)
Traceback (most recent call last):
...
pipeline.sources.webhook.BadRequest: not an audit EventList or Event (no items list, no kind Event)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pipeline.errors import ConfigError, IntakeUnavailable
from pipeline.processing import MAX_MESSAGE_BYTES, Source, dead_letter_bytes
from pipeline.sources.base import PayloadSource, RawPayload

if TYPE_CHECKING:
    from aiohttp import web

    from pipeline.sources.writer import RawTopicWriter
    from pipeline.telemetry import IntakeMetrics

__all__ = [
    "BadRequest",
    "Limits",
    "Prepared",
    "TlsFiles",
    "TokenFile",
    "WebhookConfig",
    "WebhookSource",
    "gunzip",
    "peer_names",
    "prepare",
]

log = logging.getLogger("klaxon.intake")

MIB = 1024 * 1024
_LIST_HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
_LIST_TAIL = b"]}"


class BadRequest(ValueError):
    """The body is not an audit payload (answered 400, dead-lettered with this reason)."""


class TooLarge(ValueError):
    """The body, or its decompressed form, is over the limit (answered 413)."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost."""

    #: Request body, and the decompressed body of a gzip request (Falco's default: 12 MiB).
    max_body_bytes: int = 12 * MIB
    #: An event larger than this is dead-lettered, the rest of its request written (Falco: 256 KiB).
    max_event_bytes: int = 256 * 1024
    #: Raw messages stay under this; a larger body is split into several EventLists.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Requests being received or written at once; more are answered 503.
    max_concurrent: int = 16
    #: Seconds the API server is told to wait (``Retry-After``) after a 503.
    retry_after: int = 5

    def check(self) -> None:
        """Raise `ConfigError` for limits that cannot work together."""
        for name in ("max_body_bytes", "max_event_bytes", "max_message_bytes", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_event_bytes + len(_LIST_HEAD) + len(_LIST_TAIL) > self.max_message_bytes:
            raise ConfigError(
                f"max_event_bytes ({self.max_event_bytes}) must leave room for the EventList"
                f" envelope under max_message_bytes ({self.max_message_bytes})"
            )


@dataclass(frozen=True)
class Prepared:
    """What one request becomes: raw messages, dead letters ``(reason, bytes)``, event count."""

    messages: list[bytes]
    dead: list[tuple[str, bytes]]
    events: int


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body (several members too), refusing more than ``limit`` bytes out.

    >>> import gzip
    >>> gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 10)
    b'abcdef'
    >>> gunzip(gzip.compress(b"x" * 100), 10)
    Traceback (most recent call last):
    ...
    pipeline.sources.webhook.TooLarge: gzip body decompresses to more than 10 bytes
    """
    out: list[bytes] = []
    size = 0
    data = body
    while data:
        d = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        try:
            chunk = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise BadRequest(f"invalid gzip body: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"gzip body decompresses to more than {limit} bytes")
        if not d.eof:
            raise BadRequest("truncated gzip body")
        out.append(chunk)
        data = d.unused_data.lstrip(b"\0")
    return b"".join(out)


def prepare(body: bytes, limits: Limits) -> Prepared:
    """Check ``body`` is an EventList or Event (else `BadRequest`) and cut it into raw messages.

    The body goes out as received when it fits; otherwise its events are re-encoded one by one,
    those over ``max_event_bytes`` dead-lettered, the rest packed into EventLists under
    ``max_message_bytes``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if doc.__class__ is not dict:
        raise BadRequest(f"not a JSON object but {type(doc).__name__}: not an audit EventList")
    items = doc.get("items")
    if items.__class__ is not list:
        if doc.get("kind") != "Event":
            raise BadRequest("not an audit EventList or Event (no items list, no kind Event)")
        if len(body) <= limits.max_event_bytes:
            return Prepared([body], [], 1)
        return Prepared([], [(_too_big(1, 1, len(body), limits), body)], 1)
    if not items:
        return Prepared([], [], 0)
    if len(body) <= min(limits.max_event_bytes, limits.max_message_bytes):
        return Prepared([body], [], len(items))  # no event can be over the limit
    return _repack(body, items, limits)


def _too_big(index: int, count: int, size: int, limits: Limits) -> str:
    return (
        f"event {index} of {count} is {size} bytes,"
        f" over the {limits.max_event_bytes}-byte per-event limit"
    )


def _repack(body: bytes, items: list[Any], limits: Limits) -> Prepared:
    kept: list[bytes] = []
    dead: list[tuple[str, bytes]] = []
    for i, item in enumerate(items, 1):
        try:
            encoded = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:
            dead.append((f"event {i} of {len(items)} cannot be re-encoded: {exc}", b""))
            continue
        if len(encoded) > limits.max_event_bytes:
            dead.append((_too_big(i, len(items), len(encoded), limits), encoded))
        else:
            kept.append(encoded)
    if not dead and len(body) <= limits.max_message_bytes:
        return Prepared([body], [], len(items))
    return Prepared(list(_pack(kept, limits.max_message_bytes)), dead, len(items))


def _pack(events: list[bytes], limit: int) -> Iterable[bytes]:
    """EventLists of ``events`` (each under ``limit`` with its envelope), in order."""
    room = limit - len(_LIST_HEAD) - len(_LIST_TAIL)
    chunk: list[bytes] = []
    size = 0
    for event in events:
        if chunk and size + len(event) + 1 > room:
            yield _LIST_HEAD + b",".join(chunk) + _LIST_TAIL
            chunk, size = [], 0
        chunk.append(event)
        size += len(event) + 1
    if chunk:
        yield _LIST_HEAD + b",".join(chunk) + _LIST_TAIL


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenFile:
    """Bearer tokens (one a line; blank lines and ``#`` comments ignored) from a file, re-read
    when its modification time changes, plus fixed ones (from the environment).

    Tokens are kept as SHA-256 digests and every one is compared (`hmac.compare_digest`), so
    neither the matching token's position nor its length shows in the answer time.
    """

    def __init__(self, path: Path | None, fixed: Iterable[str] = ()) -> None:
        self.path = path
        self._fixed = [_digest(t.encode()) for t in fixed if t.strip()]
        self._mtime: int | None = None
        self._digests: list[bytes] = []
        self.reload()

    def __bool__(self) -> bool:
        return bool(self._fixed or self._digests)

    def reload(self) -> bool:
        """Re-read the file if it changed; returns whether it did. Raises `ConfigError` only
        when the first read fails (later, the old tokens stay and the error is logged)."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime == self._mtime:
                return False
            lines = self.path.read_text().splitlines()
        except OSError as exc:
            if self._mtime is None:
                raise ConfigError(f"cannot read the token file {self.path}: {exc}") from None
            log.error("cannot re-read %s, keeping the old tokens: %s", self.path, exc)
            return False
        tokens = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        self._digests = [_digest(t.encode()) for t in tokens]
        self._mtime = mtime
        return True

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` is one of the tokens (constant time in which one)."""
        digest = _digest(presented)
        found = False
        for known in itertools.chain(self._fixed, self._digests):
            found |= hmac.compare_digest(digest, known)
        return found


@dataclass
class TlsFiles:
    """The server's certificate and key (PEM), and the CA client certificates must chain to.

    `context` is built once; `reload` loads a changed certificate/key pair into it (checked in
    a fresh context first, so a half-written pair is ignored until both files are complete).
    New handshakes use the new pair; open connections keep theirs.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    _mtimes: tuple[int, int] = (0, 0)
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    def _stamp(self) -> tuple[int, int]:
        return (self.cert.stat().st_mtime_ns, self.key.stat().st_mtime_ns)

    def _new_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=self.client_ca)
            # Optional at the TLS layer: a presented certificate must verify, an absent one is
            # answered with 401/403 by the HTTP layer, which can say why.
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    @property
    def context(self) -> ssl.SSLContext:
        """The server's TLS context (raises `ConfigError` if the files do not load)."""
        if self._context is None:
            try:
                self._mtimes = self._stamp()
                self._context = self._new_context()
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the TLS certificate/key/CA: {exc}") from None
        return self._context

    def reload(self) -> bool:
        """Load the certificate and key again if either file changed; returns whether it did."""
        try:
            stamp = self._stamp()
            if stamp == self._mtimes:
                return False
            self._new_context()  # complete and matching? (raises if not)
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS certificate not reloaded (will retry): %s", exc)
            return False
        self._mtimes = stamp
        log.info("TLS certificate reloaded from %s", self.cert)
        return True


@dataclass(frozen=True)
class WebhookConfig:
    """How the receiver listens and whom it lets in."""

    cluster: str
    host: str = "127.0.0.1"
    port: int = 9443
    path: str = "/audit"
    tls: TlsFiles | None = None
    tokens: TokenFile | None = None
    #: Client certificate names (subject CN or DNS/URI/IP SAN) allowed; empty: any verified one.
    allowed_clients: frozenset[str] = frozenset()
    insecure_no_auth: bool = False
    limits: Limits = field(default_factory=Limits)
    #: Seconds between checks of the TLS and token files for changes.
    reload_interval: float = 10.0

    @property
    def cert_auth(self) -> bool:
        return self.tls is not None and self.tls.client_ca is not None

    def check(self, *, insecure_no_tls: bool = False) -> None:
        """Refuse (`ConfigError`) to run without TLS or without authentication unless told to."""
        self.limits.check()
        if self.tls is None and not insecure_no_tls:
            raise ConfigError(
                "no TLS certificate: give --tls-cert and --tls-key (or --insecure-no-tls to"
                " accept audit events, which carry credentials and secrets, in clear text)"
            )
        if self.allowed_clients and not self.cert_auth:
            raise ConfigError("--allow-client needs --client-ca (and TLS)")
        if not (self.tokens or self.cert_auth or self.insecure_no_auth):
            raise ConfigError(
                "no authentication: give --token-file (or KLAXON_WEBHOOK_TOKENS) and/or"
                " --client-ca, or --insecure-no-auth to let anyone who reaches the port write"
                " audit events"
            )


def peer_names(peercert: dict[str, Any]) -> set[str]:
    """Subject common names and subjectAltName values of a verified peer certificate.

    >>> sorted(peer_names({"subject": ((("commonName", "kube-apiserver"),),),
    ...                    "subjectAltName": (("DNS", "api.local"),)}))
    ['api.local', 'kube-apiserver']
    """
    names = {v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"}
    names.update(v for _kind, v in peercert.get("subjectAltName", ()))
    return names


@dataclass
class _Pending:
    prepared: Prepared
    done: asyncio.Future[None]


class WebhookSource(PayloadSource):
    """The audit webhook receiver. `start` listens; `payloads` yields each accepted request's
    body; `acknowledge` (after the broker acknowledged it) answers 200, `refuse` 503.
    `forward` is the loop that does both with a `RawTopicWriter`."""

    name: ClassVar[str] = "webhook"

    def __init__(self, config: WebhookConfig, writer: RawTopicWriter) -> None:
        self.config = config
        self.writer = writer
        self.limits = config.limits
        self.origin_topic = f"webhook:{config.cluster}"
        self._queue: asyncio.Queue[RawPayload] = asyncio.Queue()
        self._pending: dict[int, _Pending] = {}
        self._seq = itertools.count()
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int | None = None
        self.counters: dict[str, int] = {}
        #: `pipeline.telemetry.IntakeMetrics` when /metrics is served (set by the command).
        self.metrics: IntakeMetrics | None = None

    # -- PayloadSource -------------------------------------------------------------------

    async def payloads(self) -> AsyncIterator[RawPayload]:
        while True:
            yield await self._queue.get()

    async def acknowledge(self, payload: RawPayload) -> None:
        pending = self._pending.get(payload.origin.offset or 0)
        if pending is not None and not pending.done.done():
            pending.done.set_result(None)

    def refuse(self, payload: RawPayload, exc: BaseException) -> None:
        """The payload could not be written: its request is answered 503."""
        pending = self._pending.get(payload.origin.offset or 0)
        if pending is not None and not pending.done.done():
            pending.done.set_exception(exc)

    def prepared(self, payload: RawPayload) -> Prepared | None:
        """The messages and dead letters a payload's request became (None if it went away)."""
        pending = self._pending.get(payload.origin.offset or 0)
        return None if pending is None else pending.prepared

    async def forward(self) -> None:
        """Write every payload with the writer and acknowledge or refuse it (runs until
        cancelled; payloads are written concurrently, each request's messages together)."""
        async for payload in self.payloads():
            task = asyncio.create_task(self._forward_one(payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward_one(self, payload: RawPayload) -> None:
        prepared = self.prepared(payload)
        if prepared is None:
            return
        messages = [RawPayload(m, payload.cluster, payload.origin) for m in prepared.messages]
        letters = [self._letter(reason, original) for reason, original in prepared.dead]
        try:
            await self.writer.write(messages, letters)
        except IntakeUnavailable as exc:
            self.refuse(payload, exc)
        except Exception as exc:
            log.exception("unexpected error writing a webhook payload")
            self.refuse(payload, IntakeUnavailable(repr(exc)))
        else:
            await self.acknowledge(payload)

    def _letter(self, reason: str, original: bytes) -> bytes:
        return dead_letter_bytes(reason, original, Source(self.origin_topic, None, None))

    # -- HTTP ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes: POST ``path``, GET /healthz and /readyz)."""
        from aiohttp import web

        # Bodies are read raw (auto_decompress off in `start`) and bounded here, and again
        # after decompression in `gunzip`.
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_post(self.config.path, self._audit)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Listen on the configured address; `port` is the bound port (for port 0)."""
        from aiohttp import web

        self._runner = web.AppRunner(self.app(), auto_decompress=False, access_log=None)
        await self._runner.setup()
        ssl_context = None if self.config.tls is None else self.config.tls.context
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=ssl_context
        )
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        self._tasks.add(asyncio.create_task(self.forward(), name="klaxon-webhook-forward"))
        self._tasks.add(asyncio.create_task(self._reload_loop(), name="klaxon-webhook-reload"))

    async def stop(self) -> None:
        """Stop listening (requests in progress are answered first), then stop forwarding."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            self.reload()

    def reload(self) -> None:
        """Check the TLS and token files now (also done every ``reload_interval``)."""
        if self.config.tls is not None:
            self.config.tls.reload()
        if self.config.tokens is not None and self.config.tokens.reload():
            log.info("bearer tokens reloaded from %s", self.config.tokens.path)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _answer(self, status: int, message: str, **headers: str) -> web.Response:
        from aiohttp import web

        self._count(str(status))
        body = orjson.dumps({"status": status, "message": message})
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    def _unavailable(self, message: str) -> web.Response:
        return self._answer(503, message, **{"Retry-After": str(self.limits.retry_after)})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._answer(200, "alive")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.writer.ready:
            return self._answer(200, "ready")
        return self._unavailable("not connected to Kafka")

    def _authenticate(self, request: web.Request) -> web.Response | None:
        """None if the request may write, else the 401/403 answer."""
        if self.config.insecure_no_auth:
            return None
        tokens = self.config.tokens
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip().encode() if header[:7].lower() == "bearer " else None
        if tokens and presented is not None:
            if tokens.matches(presented):
                return None
            return self._answer(401, "invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        if self.config.cert_auth:
            transport = request.transport
            peer = transport.get_extra_info("peercert") if transport is not None else None
            if peer:
                allowed = self.config.allowed_clients
                if not allowed or peer_names(peer) & allowed:
                    return None
                return self._answer(403, "client certificate not allowed")
        if tokens:
            return self._answer(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
        return self._answer(403, "client certificate required")

    async def _audit(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._audit_answer(request)
        if self.metrics is not None:
            self.metrics.request(response.status, time.perf_counter() - started)
        return response

    async def _audit_answer(self, request: web.Request) -> web.Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if self._in_flight >= self.limits.max_concurrent:
            return self._unavailable(f"more than {self.limits.max_concurrent} requests at once")
        self._in_flight += 1
        try:
            return await self._receive(request)
        finally:
            self._in_flight -= 1

    async def _read(self, request: web.Request) -> bytes:
        """The body as sent (`TooLarge` if it is over the limit)."""
        from aiohttp import web

        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(f"body of {request.content_length} bytes is over {limit} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge(f"body is over {limit} bytes") from None

    def _decode(self, request: web.Request, body: bytes) -> bytes:
        """The body decompressed (`TooLarge` / `BadRequest` if it cannot be)."""
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "gzip":
            return gunzip(body, self.limits.max_body_bytes)
        if encoding not in ("", "identity"):
            raise BadRequest(f"unsupported Content-Encoding {encoding!r} (gzip or none)")
        return body

    async def _receive(self, request: web.Request) -> web.Response:
        body = b""
        try:
            body = await self._read(request)
            body = self._decode(request, body)
            prepared = prepare(body, self.limits)
        except TooLarge as exc:
            return self._answer(413, str(exc))
        except BadRequest as exc:
            return await self._reject(str(exc), body)
        if not self.writer.ready:
            return self._unavailable("not connected to Kafka")
        if not prepared.messages and not prepared.dead:
            return self._answer(200, "no events")
        seq = next(self._seq)
        pending = _Pending(prepared, asyncio.get_running_loop().create_future())
        self._pending[seq] = pending
        origin = Source(self.origin_topic, None, seq)
        try:
            await self._queue.put(RawPayload(body, self.config.cluster, origin))
            await pending.done
        except IntakeUnavailable:
            return self._unavailable("Kafka did not acknowledge the events")
        finally:
            del self._pending[seq]
        self.counters["events"] = self.counters.get("events", 0) + prepared.events
        self.counters["dead_lettered"] = self.counters.get("dead_lettered", 0) + len(prepared.dead)
        return self._answer(
            200,
            f"{prepared.events} events, {len(prepared.messages)} messages,"
            f" {len(prepared.dead)} dead-lettered",
        )

    async def _reject(self, reason: str, body: bytes) -> web.Response:
        """400, once the body is in the dead-letter topic (503 if it cannot be written)."""
        try:
            await self.writer.write([], [self._letter(reason, body)])
        except IntakeUnavailable:
            return self._unavailable("Kafka did not acknowledge the dead letter")
        return self._answer(400, reason)
