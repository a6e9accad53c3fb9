"""/metrics, /healthz and /readyz of a running worker and a running intake.

The accounting test starts a real ``klaxon worker`` and a real ``klaxon ingest webhook`` on the
embedded broker, sends the bundled sample through the webhook (plus unusable items through
replay), and checks that what the two processes expose adds up to the replay's accounting and
to what the topics hold. Readiness is checked against a broker that is killed and restarted,
and against a stalled partition simulated with the watchdog's own clock.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.brokers import TansuBroker, free_port
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.topics import ensure_topics
from pipeline.worker import settings_env
from replay.producer import replay_events
from tests.conftest import _start_kafka
from tests.faults import FaultyKafka
from tests.pipeline.conftest import (
    CLUSTER,
    GARBAGE,
    Expected,
    WorkerProcess,
    base_env,
    expected_for,
    read_topic,
    sample_events,
    unique_settings,
)

TOKEN = "webhook-token-for-the-test"
JUNK = [b"this is not json", b'{"kind":"Event","verb":"get"}', b"[1, 2", b'"a string"']


class TopicPartition(NamedTuple):
    topic: str
    partition: int


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers -------------------------------------------------------------------------------


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(base: str, token: str | None = None) -> Samples:
    """Every sample of ``base``/metrics: ``{(name, labels): value}``."""
    status, body = get(base + "/metrics", token)
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out: Counter[tuple[str, ...]] = Counter()
    for (n, ls), v in samples.items():
        if n == name and v:
            labels = dict(ls)
            out[tuple(labels[k] for k in keys)] += v  # type: ignore[assignment]
    return dict(out)


def wait(what: str, check: Any, timeout: float, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def metrics_url(worker: WorkerProcess) -> str:
    url: str = wait(
        "the worker's metrics URL",
        lambda: (worker.snapshot() or {}).get("metrics_url"),
        90,
        worker.proc,
    )
    return url


class Intake:
    """``klaxon ingest webhook`` (plain HTTP, a token) as a subprocess."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.metrics = f"http://127.0.0.1:{self.metrics_port}"
        self.url = f"http://127.0.0.1:{self.port}/audit"
        env = {**base_env(), **settings_env(settings), "KLAXON_WEBHOOK_TOKENS": TOKEN}
        argv = [sys.executable, "-m", "klaxon", "ingest", "webhook", "--insecure-no-tls"]
        argv += ["--cluster", CLUSTER, "--port", str(self.port)]
        argv += ["--metrics-address", f"127.0.0.1:{self.metrics_port}"]
        self.log_path = workdir / "intake.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        try:
            return get(self.metrics + "/readyz")[0] == 200
        except OSError:
            return False

    def post(self, events: list[dict[str, Any]]) -> int:
        body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events})
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# -- the accounting ------------------------------------------------------------------------


@dataclass
class Observed:
    """What the worker and the intake exposed, and what the topics held, after the replay."""

    worker: Samples
    intake: Samples
    expositions: dict[str, str]  # the raw text of each scrape: "worker", "intake"
    sent: int  # events POSTed to the webhook
    duplicates: int  # of which RequestReceived (filtered by the worker)
    posts: int
    junk: Expected  # replayed unusable items, as the offline decoder accounts them
    sample: int  # usable events of the bundled sample
    alerts: list[dict[str, Any]]
    dead: list[dict[str, Any]]


@pytest.fixture(scope="module")
def observed(tansu: TansuBroker, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """A worker and a webhook intake on the embedded broker; the bundled sample (plus
    RequestReceived duplicates) POSTed to the webhook, unusable items replayed to the raw
    topic; both scraped once the worker has caught up."""
    tmp = tmp_path_factory.mktemp("telemetry")
    bootstrap = tansu.bootstrap_servers
    settings = unique_settings(bootstrap, tmp)
    asyncio.run(ensure_topics(bootstrap, settings))
    worker = WorkerProcess(settings, tmp)
    intake = Intake(settings, tmp)
    try:
        base = metrics_url(worker)
        wait("the intake to be ready", intake.ready, 60, intake.proc)
        events = sample_events()
        duplicates = [{**e, "stage": "RequestReceived"} for e in events[:40:4]]
        sent = events + duplicates
        posts = [sent[i : i + 400] for i in range(0, len(sent), 400)]
        assert [intake.post(batch) for batch in posts] == [200] * len(posts)
        junk = expected_for(JUNK)  # JSON lines and one garbage message, through replay

        async def replay_junk() -> None:
            for lines in (JUNK, [GARBAGE]):
                await replay_events(lines, bootstrap=bootstrap, topic=settings.topic_raw)

        asyncio.run(replay_junk())
        items = len(sent) + junk.items

        def caught_up() -> Samples | None:
            m = scrape(base)
            done = (
                total(m, "klaxon_events_in_total", stage="normalise") >= items
                and total(m, "klaxon_messages_in_total", stage="detect")
                >= total(m, "klaxon_messages_out_total", stage="normalise")
                and total(m, "klaxon_consumer_lag") == 0
                and any(n == "klaxon_consumer_lag" for n, _ in m)
            )
            return m if done else None

        m = wait("the worker to catch up", caught_up, 120, worker.proc)
        texts = {"worker": get(base + "/metrics")[1], "intake": get(intake.metrics + "/metrics")[1]}
        return Observed(
            worker=m,
            intake=scrape(intake.metrics),
            expositions={k: v.decode() for k, v in texts.items()},
            sent=len(sent),
            duplicates=len(duplicates),
            posts=len(posts),
            junk=junk,
            sample=len(events),
            alerts=[orjson.loads(r.value) for r in read_topic(bootstrap, settings.topic_alerts)],
            dead=[orjson.loads(r.value) for r in read_topic(bootstrap, settings.topic_deadletter)],
        )
    finally:
        intake.stop()
        worker.stop()


@pytest.mark.slow
def test_events_in_are_normalised_filtered_or_dead_lettered(observed: Observed) -> None:
    """Worker: events in = normalised + filtered + dead-lettered = every item sent, and each
    term is what the replay's own accounting says."""
    m, junk = observed.worker, observed.junk
    events_in = total(m, "klaxon_events_in_total", stage="normalise")
    normalised = total(m, "klaxon_events_normalised_total")
    filtered = total(m, "klaxon_events_filtered_total")
    dead_lettered = total(m, "klaxon_dead_letters_total", stage="normalise")
    assert events_in == normalised + filtered + dead_lettered == observed.sent + junk.items
    assert normalised == observed.sample + junk.normalised
    assert by(m, "klaxon_events_filtered_total", "reason") == {("stage",): observed.duplicates}
    assert dead_lettered == sum(junk.rejected_reasons.values())
    assert total(m, "klaxon_events_in_total", stage="detect") == normalised


@pytest.mark.slow
def test_alerts_by_rule_and_severity_match_the_alert_topic(observed: Observed) -> None:
    m = observed.worker
    topic = Counter((a["rule"]["id"], a["severity"]) for a in observed.alerts)
    assert observed.alerts and by(m, "klaxon_alerts_total", "rule_id", "severity") == dict(topic)
    assert total(m, "klaxon_sink_alerts_total", outcome="accepted") == len(observed.alerts)


@pytest.mark.slow
def test_dead_letters_by_reason_match_the_dead_letter_topic(observed: Observed) -> None:
    from pipeline.telemetry import reason_class

    topic = Counter((reason_class(d["reason"]),) for d in observed.dead)
    assert observed.dead and by(observed.worker, "klaxon_dead_letters_total", "reason") == topic


@pytest.mark.slow
def test_engine_time_freshness_and_broker_state_are_exposed(observed: Observed) -> None:
    """One engine-time observation per events message; the sample's cluster has a newest
    event time; the broker is up."""
    m = observed.worker
    assert total(m, "klaxon_engine_seconds_per_event_count") == total(
        m, "klaxon_messages_in_total", stage="detect"
    )
    assert 0 < total(m, "klaxon_engine_seconds_per_event_sum") < 10
    assert total(m, "klaxon_newest_event_timestamp_seconds", cluster=CLUSTER) > 1.7e9
    assert total(m, "klaxon_broker_up") == 1


@pytest.mark.slow
def test_the_intake_counts_requests_events_and_messages(observed: Observed) -> None:
    m = observed.intake
    assert total(m, "klaxon_intake_events_total", intake="webhook") == observed.sent
    assert total(m, "klaxon_intake_messages_total", intake="webhook") == observed.posts
    assert by(m, "klaxon_webhook_requests_total", "code") == {("200",): observed.posts}
    assert total(m, "klaxon_webhook_request_duration_seconds_count") == observed.posts


@pytest.mark.slow
def test_every_dashboard_query_reads_a_metric_the_worker_or_intake_exposes(
    observed: Observed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy/grafana/klaxon.json against the live scrapes: no query names a metric that is
    not exposed; `klaxon dashboard` renders every panel from the saved expositions."""
    from klaxon.cli import main
    from klaxon.dashboard_cli import DASHBOARD, panels, problems, read_exposition

    found = panels(orjson.loads(DASHBOARD.read_bytes()))
    files = []
    exposed: dict[str, Any] = {}
    for name, text in observed.expositions.items():
        (tmp_path / f"{name}.prom").write_text(text)
        files += ["--metrics", str(tmp_path / f"{name}.prom")]
        exposed.update(read_exposition(str(tmp_path / f"{name}.prom")))
    assert len(found) >= 12 and problems(found, exposed) == []
    page = tmp_path / "dashboard.html"
    assert main(["dashboard", *files, "--html", str(page)]) == 0
    assert "0 problems" in capsys.readouterr().out
    text = page.read_text()
    assert all(p.title in text for p in found) and "not exposed" not in text
    assert "no series yet" not in text  # this run exercised every series a panel reads


@pytest.mark.slow
def test_every_alerting_rule_of_the_chart_reads_an_exposed_metric(
    observed: Observed, tmp_path: Path
) -> None:
    """The Helm chart's PrometheusRule (full values) against the live scrapes: every metric
    its expressions name is one a worker or the intake exposes."""
    from klaxon.dashboard_cli import metric_names, read_exposition
    from tests.helm import CHART, need_helm

    helm = need_helm(tmp_path / "helm-home")
    objects = helm.template(CHART / "ci" / "full-values.yaml")
    exprs = [
        r["expr"]
        for o in objects
        if o["kind"] == "PrometheusRule"
        for g in o["spec"]["groups"]
        for r in g["rules"]
    ]
    exposed: set[str] = set()
    for name, text in observed.expositions.items():
        (tmp_path / f"{name}.prom").write_text(text)
        exposed |= set(read_exposition(str(tmp_path / f"{name}.prom")))
    assert len(exprs) >= 4
    named: set[str] = set()
    for expr in exprs:
        names = metric_names(expr) - {"up"}  # `up`: Prometheus' own series of every target
        assert names <= exposed, expr
        named |= names
    assert len(named) >= 4


# -- readiness -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[FaultyKafka]:
    """A 1-node Kafka of this module alone: the readiness test kills and restarts it."""
    cluster = _start_kafka(1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_readyz_follows_the_broker(own_kafka: FaultyKafka, tmp_path: Path) -> None:
    """Ready with the broker up; 503 naming the broker while it is down; ready once it is back.
    /healthz stays 200 throughout (the process is alive; restarting it would not help)."""
    bootstrap = own_kafka.bootstrap_servers
    settings = unique_settings(bootstrap, tmp_path)
    asyncio.run(ensure_topics(bootstrap, settings))
    worker = WorkerProcess(settings, tmp_path)
    try:
        base = metrics_url(worker)
        wait("ready", lambda: get(base + "/readyz")[0] == 200, 90, worker.proc)
        own_kafka.kill_node(0)
        _status, body = wait(
            "unready", lambda: (a := get(base + "/readyz"))[0] == 503 and a, 60, worker.proc
        )
        assert b"broker unreachable" in body
        assert get(base + "/healthz")[0] == 200
        assert total(scrape(base), "klaxon_broker_up") == 0
        own_kafka.start_node(0)
        wait("ready again", lambda: get(base + "/readyz")[0] == 200, 120, worker.proc)
        assert total(scrape(base), "klaxon_broker_up") == 1
    finally:
        worker.stop()


async def test_a_stalled_partition_makes_the_worker_unready() -> None:
    """Messages waiting and no commit for --stall-after: /readyz is 503 naming the partition,
    and /metrics shows it stalled (the watchdog's judgement, on its own clock)."""
    from pipeline.agents import Runtime, unready_reasons
    from pipeline.offsets import FakePort, OffsetLedger
    from pipeline.telemetry import TelemetryServer, WorkerMetrics
    from pipeline.watchdog import Watchdog

    now = [0.0]
    ledger = OffsetLedger(FakePort(committed={("raw", 0): 3}), clock=lambda: now[0])
    await ledger.start(("raw", 0))
    dog = Watchdog(ledger, stall_after=30, exit_after=120, clock=lambda: now[0])
    rt = Runtime(
        settings=Settings(),
        options=SimpleNamespace(),  # type: ignore[arg-type]
        holder=SimpleNamespace(rules=1),  # type: ignore[arg-type]
        events_partitions=4,
        to_alert=dict,
        ledger=ledger,
        watchdog=dog,
    )
    assigned = {TopicPartition("raw", 0)}
    app: Any = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: assigned))
    rt.metrics = WorkerMetrics(rt)
    server = TelemetryServer(
        rt.metrics.registry, ("127.0.0.1", 0), unready=lambda: unready_reasons(app, rt)
    )
    await server.start()
    try:
        dog.record_probe({("raw", 0): 10})  # 7 messages waiting, the commit just moved
        assert (await asyncio.to_thread(get, server.url + "/readyz"))[0] == 200
        now[0] = 31.0
        dog.record_probe({("raw", 0): 10})
        status, body = await asyncio.to_thread(get, server.url + "/readyz")
        assert status == 503 and b"stalled for 31s: raw:0" in body
        m = await asyncio.to_thread(scrape, server.url)
        assert total(m, "klaxon_partition_stalled", topic="raw", partition="0") == 1
        assert total(m, "klaxon_consumer_lag", topic="raw", partition="0") == 7
        await ledger.admit("raw", 0, 3)
        ledger.done("raw", 0, 3)
        await ledger.commit()  # the partition moves again
        dog.record_probe({("raw", 0): 10})
        assert (await asyncio.to_thread(get, server.url + "/readyz"))[0] == 200
    finally:
        await server.stop()


async def test_a_worker_reading_its_state_back_says_so_and_what_it_has_left() -> None:
    """While Faust reads the state back every stream waits: the status is recovering, /readyz
    is 503 with the records left, and /metrics counts them, the recovery's nudges and the
    stateful detectors' errors."""
    from pipeline.agents import Runtime, health_now, unready_reasons
    from pipeline.tables import RecoveryNudge
    from pipeline.telemetry import TelemetryServer, WorkerMetrics

    class Recovery:
        def __init__(self) -> None:
            self.in_recovery = True
            self.active_offsets = {("changelog", 0): 4}

        def active_remaining(self) -> dict[tuple[str, int], int]:
            return {("changelog", 0): 7}

    async def seek(offsets: dict[Any, int]) -> None:
        pass

    recovery = Recovery()
    nudge = RecoveryNudge(recovery, seek)
    nudge.nudges = 2
    rt = Runtime(
        settings=Settings(),
        options=SimpleNamespace(health_interval=1.0),  # type: ignore[arg-type]
        holder=SimpleNamespace(rules=1),  # type: ignore[arg-type]
        events_partitions=4,
        to_alert=dict,
        stateful=SimpleNamespace(
            nudge=nudge, processor=SimpleNamespace(errors=3), changelog="changelog"
        ),
    )
    assigned = {TopicPartition("raw", 0)}
    app: Any = SimpleNamespace(
        consumer=SimpleNamespace(assignment=lambda: assigned),
        tables=SimpleNamespace(recovery=recovery),
        delivery=SimpleNamespace(pending=()),
    )
    rt.metrics = WorkerMetrics(rt)
    server = TelemetryServer(
        rt.metrics.registry, ("127.0.0.1", 0), unready=lambda: unready_reasons(app, rt)
    )
    await server.start()
    try:
        status, body = await asyncio.to_thread(get, server.url + "/readyz")
        assert status == 503
        assert b"reading the detectors' state back (7 changelog records left)" in body
        m = await asyncio.to_thread(scrape, server.url)
        assert total(m, "klaxon_recovery_remaining") == 7
        assert total(m, "klaxon_recovery_nudges_total") == 2
        assert total(m, "klaxon_stateful_errors_total") == 3
    finally:
        await server.stop()
    rt.watchdog = None
    snap = health_now(app, rt)
    assert snap["recovery_remaining"] == 7
    assert snap["counters"]["recovery_nudges"] == 2 and snap["counters"]["stateful_errors"] == 3
    recovery.in_recovery = False
    assert health_now(app, rt)["recovery_remaining"] == 0
    assert not any("state back" in r for r in unready_reasons(app, rt))


# -- the endpoint's own rules --------------------------------------------------------------


def test_a_non_loopback_address_needs_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From the variable or the flag: refused without a token (exit 2 for the command)."""
    from klaxon.cli import main

    monkeypatch.delenv("KLAXON_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["worker", "--metrics-address", "0.0.0.0:9464"]) == 2
    assert "KLAXON_METRICS_TOKEN" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="KLAXON_METRICS_TOKEN"):
        Settings.from_env({"KLAXON_METRICS_ADDRESS": "0.0.0.0:9464"})
    s = Settings.from_env({"KLAXON_METRICS_ADDRESS": "0.0.0.0:9464", "KLAXON_METRICS_TOKEN": "t"})
    assert s.metrics_address == "0.0.0.0:9464" and "'t'" not in repr(s)
    assert Settings.from_env({}).metrics_address == "127.0.0.1:9464"


async def test_every_path_needs_the_token_when_one_is_set() -> None:
    from prometheus_client import CollectorRegistry

    from pipeline.telemetry import TelemetryServer

    server = TelemetryServer(CollectorRegistry(), ("127.0.0.1", 0), token="s3cret")
    await server.start()
    try:
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await asyncio.to_thread(get, server.url + path))[0] == 401
            assert (await asyncio.to_thread(get, server.url + path, "wrong"))[0] == 401
            assert (await asyncio.to_thread(get, server.url + path, "s3cret"))[0] == 200
    finally:
        await server.stop()


async def test_a_taken_address_is_an_error() -> None:
    from prometheus_client import CollectorRegistry

    from pipeline.telemetry import TelemetryServer

    first = TelemetryServer(CollectorRegistry(), ("127.0.0.1", 0))
    await first.start()
    try:
        with pytest.raises(OSError):
            await TelemetryServer(CollectorRegistry(), ("127.0.0.1", first.port)).start()
    finally:
        await first.stop()
