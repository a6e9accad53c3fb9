"""Prometheus metrics and ``/metrics``, ``/healthz``, ``/readyz`` over HTTP (worker and intakes).

One small aiohttp server per process (`TelemetryServer`), on the process's own event loop, at
``KLAXON_METRICS_ADDRESS``; every path needs ``Authorization: Bearer <KLAXON_METRICS_TOKEN>``
when a token is set (required off loopback). Requests are GETs of a few hundred bytes: bodies
over 1 KiB are refused, headers are bounded by aiohttp (8 KiB).

Cheap on the hot path: what the worker already counts (`pipeline.metrics.Counters`, the
offset ledger, the watchdog's lag and stalls) is read at scrape time by a collector, not
counted twice. Only four things are counted as they happen, each once per message or per
rare item: alerts by rule and severity (per alert batch), dead letters by reason (per dead
letter), engine seconds per event (one histogram observation per events message) and the
newest event time per cluster (the last event of each events message).

Labels are bounded: ``stage`` and ``reason`` come from fixed sets (`reason_class`), ``topic``
and ``partition`` from the configured topics, ``rule`` from the loaded rules, ``sink`` from
the configured sinks, ``code`` from the answers the webhook gives. ``cluster`` comes from
configuration and from cloud envelopes (input), so a process labels at most `MAX_CLUSTERS`
clusters and counts the rest under ``cluster="_other"``. Never a user or an object name.

>>> reason_class("invalid JSON line: unexpected"), reason_class("aks-category:kube-apiserver")
('invalid-json', 'aks-category')
>>> reason_class("something nobody wrote a class for")
'other'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.processing import Outgoing, Source
from pipeline.sinks.base import AlertSink

if TYPE_CHECKING:
    from aiohttp import web

    from pipeline.agents import Runtime
    from pipeline.processing import DetectResult, NormaliseResult

__all__ = [
    "CONTENT_TYPE",
    "MAX_CLUSTERS",
    "IntakeMetrics",
    "MeteredSink",
    "TelemetryServer",
    "WorkerMetrics",
    "reason_class",
]

log = logging.getLogger("klaxon.telemetry")

# No *_created series: they would double every counter for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Prometheus text format 0.0.4 (what every Prometheus scrapes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Distinct ``cluster`` label values per process; later clusters are counted as ``_other``.
MAX_CLUSTERS = 64
#: Engine seconds per event: 1 µs to 10 ms.
ENGINE_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2)
#: Webhook request seconds (POST to answer, Kafka's acknowledgement included).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Reason classes, matched in order on the start of a filter or dead-letter reason.
_REASONS: tuple[tuple[str, str], ...] = (
    ("stage:", "stage"),
    ("aks-category:", "aks-category"),
    ("eks-stream:", "eks-stream"),
    ("cloudwatch:", "cloudwatch"),
    ("gke-service:", "gke-service"),
    ("empty-message", "empty-message"),
    ("invalid json", "invalid-json"),
    ("not an audit", "not-an-event"),
    ("not a json", "not-an-event"),
    ("invalid gzip", "gzip"),
    ("truncated gzip", "gzip"),
    ("gzip payload", "gzip"),
    ("aks ", "aks-envelope"),
    ("cloudwatch ", "cloudwatch-envelope"),
    ("eventlist ", "malformed-list"),
    ("json arrays", "malformed-list"),
    ("malformed events message", "malformed-events-message"),
    ("unsupported events message", "malformed-events-message"),
    ("event over", "too-large"),
    ("event cannot be encoded", "too-large"),
    ("too large", "too-large"),
    ("normaliser error", "worker-error"),
    ("normalise error", "worker-error"),
    ("detect error", "worker-error"),
    ("detection error", "worker-error"),
    ("alert error", "worker-error"),
)


#: Classes of the filter reasons `schemas.normalize` and `pipeline.processing` give.
FILTER_CLASSES = (
    "stage",
    "aks-category",
    "eks-stream",
    "cloudwatch",
    "gke-service",
    "empty-message",
)
#: Classes of dead-letter reasons (`reason_class` of anything else is one of these too).
DEAD_LETTER_CLASSES = tuple(
    dict.fromkeys([*(c for _, c in _REASONS if c not in FILTER_CLASSES), "other"])
)


def reason_class(reason: str) -> str:
    """The bounded label of a filter or dead-letter reason (whose text may quote input)."""
    low = reason[:40].lower()
    for prefix, label in _REASONS:
        if low.startswith(prefix):
            return label
    if " bytes, over the " in reason or "larger than" in low:
        return "too-large"
    return "other"


def letter_reason(letter: bytes) -> str:
    """The reason of an encoded dead letter (`schemas.deadletter`: ``reason`` comes first),
    read from its first bytes only: no parse of a letter that may hold 600 KB of base64.

    >>> letter_reason(b'{"reason":"invalid JSON: x","source":null}')
    'invalid JSON: x'
    """
    head = letter[:160]
    if not head.startswith(b'{"reason":"'):
        return ""
    return head[11:].split(b'"', 1)[0].decode("utf-8", "replace")


def _parts(key: str) -> tuple[str, str]:
    topic, _, partition = key.rpartition(":")
    return topic, partition


class ClusterLabels:
    """At most ``limit`` distinct cluster labels; the rest are ``_other``."""

    def __init__(self, limit: int = MAX_CLUSTERS) -> None:
        self.limit = limit
        self.newest: dict[str, float] = {}

    def label(self, cluster: str) -> str:
        if cluster in self.newest or len(self.newest) < self.limit:
            return cluster
        return "_other"

    def saw(self, cluster: str, at: float) -> None:
        label = self.label(cluster)
        if at > self.newest.get(label, 0.0):
            self.newest[label] = at


# -- the worker ----------------------------------------------------------------------------


class WorkerMetrics:
    """The worker's registry: counted instruments plus a collector over its runtime."""

    def __init__(self, rt: Runtime) -> None:
        from detections.stateful.timeutil import event_time
        from schemas.keys import cluster_of

        self._event_time = event_time
        self._cluster_of = cluster_of
        self.rt = rt
        self.registry = CollectorRegistry()
        self.clusters = ClusterLabels()
        r = self.registry
        self.alerts = Counter(
            "klaxon_alerts",
            "Alerts the worker made, by rule and severity (stateful detectors included).",
            ["rule_id", "rule", "severity"],
            registry=r,
        )
        self.dead = Counter(
            "klaxon_dead_letters",
            "Items written to the dead-letter topic, by stage and reason class.",
            ["stage", "reason"],
            registry=r,
        )
        self.engine = Histogram(
            "klaxon_engine_seconds_per_event",
            "Detection seconds per event: one observation per events message (its time / its"
            " events), decoding and stateful detectors included.",
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        for stage in ("normalise", "detect"):  # every series from the start: rate() works
            for reason in DEAD_LETTER_CLASSES:
                self.dead.labels(stage, reason)
        self.sink = Counter(
            "klaxon_sink_alerts",
            "Alerts handed to each sink: accepted, or refused (dead-lettered).",
            ["sink", "outcome"],
            registry=r,
        )
        r.register(_WorkerCollector(self))

    # -- the hot path (per message) --------------------------------------------------------

    def normalised(self, result: NormaliseResult) -> None:
        """One raw message's dead letters and its clusters' newest event times."""
        for letter in result.dead_letters:
            self.dead.labels("normalise", reason_class(letter_reason(letter))).inc()
        for out in result.messages:
            if out.events:
                last = out.events[-1]
                at = self._event_time(last)
                if at is not None:
                    self.clusters.saw(self._cluster_of(last), at)

    def detected(self, result: DetectResult, seconds: float) -> None:
        """One events message: engine time per event, dead letters."""
        if result.events:
            self.engine.observe(seconds / result.events)
        for letter in result.dead_letters:
            self.dead.labels("detect", reason_class(letter_reason(letter))).inc()

    def count_alerts(self, alerts: Sequence[Outgoing]) -> None:
        tally: Tally[tuple[str, str, str]] = Tally()
        for alert in alerts:
            doc = alert.doc or {}
            rule = doc.get("rule") or {}
            tally[
                (str(rule.get("id", "")), str(rule.get("title", "")), str(doc.get("severity")))
            ] += 1
        for labels, n in tally.items():
            self.alerts.labels(*labels).inc(n)

    def wrap_sinks(self) -> None:
        """Count what reaches each sink; alerts by rule are counted at the first one."""
        self.rt.sinks = [
            s if isinstance(s, MeteredSink) else MeteredSink(s, self, first=i == 0)
            for i, s in enumerate(self.rt.sinks)
        ]


class MeteredSink(AlertSink):
    """A sink that counts the alerts it was given, accepted and refused (`pipeline.sinks`)."""

    name: ClassVar[str] = "metered"

    def __init__(self, inner: AlertSink, metrics: WorkerMetrics, *, first: bool) -> None:
        super().__init__(inner.format)
        self.inner = inner
        self.metrics = metrics
        self.first = first
        self.label = f"{inner.name}:{inner.format.name}"
        self._accepted = metrics.sink.labels(self.label, "accepted")
        self._refused = metrics.sink.labels(self.label, "refused")

    async def send(self, alerts: Sequence[Outgoing], source: Source) -> int:
        refused = await self.inner.send(alerts, source)
        if alerts:
            if self.first:
                self.metrics.count_alerts(alerts)
            self._accepted.inc(len(alerts) - refused)
            if refused:
                self._refused.inc(refused)
        return refused

    async def flush(self) -> None:
        await self.inner.flush()


class _WorkerCollector:
    """Reads the worker's own counters and the watchdog at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # names are dynamic only in label values; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        rt = self.m.rt
        c = rt.counters
        yield _counter(
            "klaxon_messages_in", "Kafka messages processed.", ["stage"],
            [(["normalise"], c.raw_messages), (["detect"], c.events_messages_in)],
        )  # fmt: skip
        yield _counter(
            "klaxon_messages_out", "Events messages the normaliser produced.", ["stage"],
            [(["normalise"], c.events_messages_out)],
        )  # fmt: skip
        yield _counter(
            "klaxon_events_in", "Audit events (payload items) processed.", ["stage"],
            [(["normalise"], c.events_in), (["detect"], c.detect_events)],
        )  # fmt: skip
        yield _counter(
            "klaxon_events_normalised", "Events the normaliser passed on to detection.", [],
            [([], c.normalised)],
        )  # fmt: skip
        filtered: Tally[str] = Tally(dict.fromkeys(FILTER_CLASSES, 0))
        for reason, n in c.filtered.items():
            filtered[reason_class(reason)] += n
        yield _counter(
            "klaxon_events_filtered",
            "Events dropped on purpose, by reason class (RequestReceived duplicates, non-audit"
            " cloud records).",
            ["reason"],
            [([reason], n) for reason, n in sorted(filtered.items())],
        )
        yield _counter(
            "klaxon_rule_reloads", "Rule hot reloads, by result.", ["result"],
            [(["ok"], c.engine_reloads), (["failed"], c.reload_failures)],
        )  # fmt: skip
        yield _counter(
            "klaxon_send_errors", "Produce calls that failed (the worker stops).", [],
            [([], c.send_errors)],
        )  # fmt: skip
        yield _counter(
            "klaxon_handoff_messages", "Events messages whose parsed events were reused (hit)"
            " or parsed again (miss).", ["result"],
            [(["hit"], rt.handoff.hits), (["miss"], rt.handoff.misses)],
        )  # fmt: skip
        yield from self._ledger()
        yield from self._stateful()
        yield from self._watchdog()
        yield _gauge(
            "klaxon_rules", "Rules loaded in the running engine.", [], [([], rt.holder.rules)]
        )
        newest = self.m.clusters.newest
        yield _gauge(
            "klaxon_newest_event_timestamp_seconds",
            "Event time (requestReceivedTimestamp) of the newest event seen per cluster;"
            " time() minus it is the cluster's freshness.",
            ["cluster"],
            [([cluster], at) for cluster, at in sorted(newest.items())],
        )
        if rt.progress.last_wall is not None:
            yield _gauge(
                "klaxon_last_message_timestamp_seconds",
                "Wall time the worker last processed a message.",
                [],
                [([], rt.progress.last_wall)],
            )

    def _ledger(self) -> Iterator[Metric]:
        ledger = self.m.rt.ledger
        if ledger is None:
            return
        s = ledger.stats
        for name, help_, value in (
            ("klaxon_redelivered", "Input messages fetched again after processing (skipped).",
             s.redelivered),
            ("klaxon_offset_gaps", "Times an input partition skipped offsets and was sought"
             " back.", s.gaps),
            ("klaxon_lost_to_retention", "Input offsets retention deleted before they were"
             " processed.", s.lost_to_retention),
            ("klaxon_commit_failures", "Offset commits the broker refused (retried).",
             s.commit_failures),
            ("klaxon_rewinds", "Times an input partition without a commit was sought back.",
             self.m.rt.counters.rewinds),
        ):  # fmt: skip
            yield _counter(name, help_, [], [([], value)])

    def _stateful(self) -> Iterator[Metric]:
        shell = self.m.rt.stateful
        if shell is None:
            return
        nudge = shell.nudge
        yield _counter(
            "klaxon_stateful_errors",
            "Exceptions stateful detectors raised on an event (logged once per kind).",
            [],
            [([], shell.processor.errors)],
        )
        if nudge is not None:
            yield _counter(
                "klaxon_recovery_nudges",
                "Times the state recovery read nothing for --rewind-after seconds and was"
                " sought back to where it stopped.",
                [],
                [([], nudge.nudges)],
            )
            yield _gauge(
                "klaxon_recovery_remaining",
                "Changelog records the state recovery under way has still to read (0: none).",
                [],
                [([], nudge.remaining())],
            )

    def _watchdog(self) -> Iterator[Metric]:
        dog = self.m.rt.watchdog
        if dog is None:
            return
        seen = dog.assess()
        yield _gauge(
            "klaxon_consumer_lag",
            "Messages not yet committed per assigned input partition (end offset - committed).",
            ["topic", "partition"],
            [(list(_parts(key)), n) for key, n in seen.lag.items()],
        )
        stalled = set(seen.stalled)
        yield _gauge(
            "klaxon_partition_stalled",
            "1 while an input partition has messages waiting and its commit has not moved for"
            " --stall-after seconds.",
            ["topic", "partition"],
            [(list(_parts(key)), float(key in stalled)) for key in seen.lag],
        )
        yield _gauge(
            "klaxon_broker_up",
            "1 when the last end-offset probe of the broker answered.",
            [],
            [([], float(seen.broker == "ok"))],
        )


def _counter(
    name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _gauge(
    name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


# -- the intakes ---------------------------------------------------------------------------


class IntakeMetrics:
    """An intake's registry: webhook requests by answer and their latency, plus what its
    writer wrote (read at scrape time)."""

    def __init__(self, intake: str) -> None:
        self.intake = intake
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "klaxon_webhook_requests",
            "Audit webhook POSTs, by the HTTP status answered.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "klaxon_webhook_request_duration_seconds",
            "Audit webhook POSTs from receipt to answer (Kafka's acknowledgement included).",
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        #: The server exposing it (set by whoever starts one).
        self.server: TelemetryServer | None = None
        #: ``() -> (events, messages, dead letters)`` written so far, set by the intake.
        self.events: Callable[[], tuple[int, int, int]] | None = None
        self.registry.register(_IntakeCollector(self))

    def request(self, status: int, seconds: float) -> None:
        """One answered POST."""
        self.requests.labels(str(status)).inc()
        self.latency.observe(seconds)


class _IntakeCollector:
    def __init__(self, metrics: IntakeMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.m.events is None:
            return
        events, messages, dead = self.m.events()
        label = [self.m.intake]
        yield _counter(
            "klaxon_intake_events", "Audit events the intake wrote to the raw topic"
            " (acknowledged by Kafka).", ["intake"], [(label, events)],
        )  # fmt: skip
        yield _counter(
            "klaxon_intake_messages", "Raw messages the intake wrote (acknowledged).",
            ["intake"], [(label, messages)],
        )  # fmt: skip
        yield _counter(
            "klaxon_intake_dead_letters", "Items the intake wrote to the dead-letter topic.",
            ["intake"], [(label, dead)],
        )  # fmt: skip


# -- the HTTP server -----------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TelemetryServer:
    """``GET /metrics`` (the registry), ``/healthz`` (the event loop answers), ``/readyz``
    (``unready()`` returns no reason); bearer token on every path when one is set."""

    def __init__(
        self,
        registry: CollectorRegistry,
        address: tuple[str, int],
        *,
        token: str | None = None,
        unready: Callable[[], list[str]] = list,
    ) -> None:
        self.registry = registry
        self.host, self.port = address
        self._token = _digest(token) if token else None
        self.unready = unready
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        from aiohttp import web

        @web.middleware
        async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._auth(request, handler)

        app = web.Application(client_max_size=1024, middlewares=[auth])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Listen (raises `OSError` if the address is taken); `port` is then the bound port."""
        from aiohttp import web

        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        from aiohttp import web

        if self._token is not None:
            header = request.headers.get("Authorization", "")
            presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(_digest(presented), self._token):
                return web.json_response(
                    {"status": 401, "message": "bearer token required"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        response: web.StreamResponse = await handler(request)
        return response

    async def _metrics(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        started = time.perf_counter()
        body = generate_latest(self.registry)
        elapsed = time.perf_counter() - started
        if elapsed > 0.05:
            log.warning("metrics exposition took %.0f ms", elapsed * 1000)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        try:
            reasons = self.unready()
        except Exception as exc:  # a bug in a check must not read as ready
            log.exception("readiness check failed")
            reasons = [f"readiness check failed: {type(exc).__name__}"]
        if reasons:
            return web.json_response({"status": "unready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})
