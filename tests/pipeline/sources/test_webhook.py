"""`klaxon ingest webhook`: a real HTTPS client against the receiver and a real broker.

Certificates are made per session with trustme (a CA, the server's certificate for
127.0.0.1, client certificates for the API server and for an intruder). Each test gets its
own topics (`isolated_settings`) and its own receiver on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gzip
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme

from pipeline.brokers import TansuBroker, free_port
from pipeline.config import Settings, isolated_settings
from pipeline.errors import ConfigError
from pipeline.sources import SOURCES
from pipeline.sources.webhook import Limits, TlsFiles, TokenFile, WebhookConfig, WebhookSource
from pipeline.sources.writer import RawTopicWriter
from pipeline.topics import ensure_topics
from schemas.keys import CLUSTER_HEADER
from schemas.normalize import decode_payload
from tests.pipeline.conftest import WorkerProcess, _read_topic

REPO = Path(__file__).resolve().parents[3]
PRIVILEGED_RULE = REPO / "detections" / "rules" / "privileged-container.yml"
TOKEN = "s3cret-token-for-the-apiserver"
CLUSTER = "prod-eu"


# -- certificates ------------------------------------------------------------------------


@dataclass
class Certs:
    ca: trustme.CA
    server: trustme.LeafCert
    apiserver: trustme.LeafCert  # client certificate the receiver allows
    intruder: trustme.LeafCert  # signed by the same CA, name not allowed
    folder: Path

    def tls(self, *, client_ca: bool = False) -> TlsFiles:
        ca = self.folder / "ca.pem" if client_ca else None
        return TlsFiles(self.folder / "server.pem", self.folder / "server.key", ca)

    def client_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(folder / "server.pem")
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(folder / "server.pem", append=True)
    server.private_key_pem.write_to_path(folder / "server.key")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    return Certs(ca, server, ca.issue_cert("kube-apiserver"), ca.issue_cert("intruder"), folder)


# -- a receiver ----------------------------------------------------------------------------


@dataclass
class Hook:
    source: WebhookSource
    writer: RawTopicWriter
    settings: Settings
    certs: Certs | None

    @property
    def base(self) -> str:
        scheme = "http" if self.source.config.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.source.port}"

    @property
    def url(self) -> str:
        return self.base + self.source.config.path

    def session(self, cert: trustme.LeafCert | None = None) -> aiohttp.ClientSession:
        ssl_ctx: ssl.SSLContext | bool = False
        if self.certs is not None and self.source.config.tls is not None:
            ssl_ctx = self.certs.client_context(cert)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx))

    async def post(
        self, body: bytes, *, token: str | None = TOKEN, cert: Any = None, **headers: str
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        headers.setdefault("Content-Type", "application/json")
        async with self.session(cert) as s, s.post(self.url, data=body, headers=headers) as r:
            return r.status, dict(r.headers), orjson.loads(await r.read())

    async def get(self, path: str) -> int:
        async with self.session() as s, s.get(self.base + path) as r:
            return r.status

    async def raw(self) -> list[Any]:
        return await _read_topic(self.settings.bootstrap_servers or "", self.settings.topic_raw, 4)

    async def dead(self) -> list[dict[str, Any]]:
        records = await _read_topic(
            self.settings.bootstrap_servers or "", self.settings.topic_deadletter, 4
        )
        return [orjson.loads(r.value) for r in records]


def settings_for(bootstrap: str, tmp: Path) -> Settings:
    return isolated_settings(bootstrap, tmp / "data", prefix="webhook.")


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    certs: Certs | None,
    *,
    tokens: tuple[str, ...] = (TOKEN,),
    client_ca: bool = False,
    allowed: tuple[str, ...] = (),
    limits: Limits | None = None,
    timeout: float = 5.0,
    wait_ready: bool = True,
) -> AsyncIterator[Hook]:
    """A receiver on a free port writing to ``settings``' topics (created here)."""
    bootstrap = settings.bootstrap_servers or ""
    # Every step bounded, so a broker that stops answering fails the test at that step.
    await asyncio.wait_for(ensure_topics(bootstrap, settings), 60)
    config = WebhookConfig(
        cluster=CLUSTER,
        port=0,
        tls=None if certs is None else certs.tls(client_ca=client_ca),
        tokens=TokenFile(None, tokens) if tokens else None,
        allowed_clients=frozenset(allowed),
        insecure_no_auth=not tokens and not client_ca,
        limits=limits or Limits(),
    )
    config.check(insecure_no_tls=certs is None)
    writer = RawTopicWriter(
        bootstrap, settings.topic_raw, settings.topic_deadletter, timeout=timeout,
        probe_interval=0.3,
    )  # fmt: skip
    source = WebhookSource(config, writer)
    await asyncio.wait_for(writer.start(), 60)
    await source.start()
    try:
        if wait_ready:
            assert await writer.wait_ready(30), writer.last_error
        yield Hook(source, writer, settings, certs)
    finally:
        await asyncio.wait_for(source.stop(), 60)
        await asyncio.wait_for(writer.stop(), 60)


# -- payloads ------------------------------------------------------------------------------


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"00000000-0000-0000-0000-{i:012d}",
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/default/pods/p{i}",
        "verb": "get",
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "name": f"p{i}"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-12-01T10:00:00.000000Z",
        "stageTimestamp": "2026-12-01T10:00:00.100000Z",
        **extra,
    }


def event_list(events: list[dict[str, Any]]) -> bytes:
    """An EventList as the API server sends it (indented, like client-go's JSON? no: compact)."""
    return orjson.dumps(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": events}
    )


def privileged_pod_create(i: int) -> dict[str, Any]:
    return event(
        i,
        level="RequestResponse",
        verb="create",
        requestURI="/api/v1/namespaces/payments/pods",
        user={"username": "mallory@example.com", "groups": ["system:authenticated"]},
        objectRef={
            "resource": "pods",
            "namespace": "payments",
            "name": "escape",
            "apiVersion": "v1",
        },
        requestObject={
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "escape", "namespace": "payments"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "alpine:3.20", "securityContext": {"privileged": True}}
                ]
            },
        },
        responseStatus={"code": 201},
    )


# -- tests without a broker ---------------------------------------------------------------


def test_registered_as_a_source() -> None:
    assert SOURCES["webhook"] is WebhookSource


def test_refuses_to_start_without_tls_or_authentication(certs: Certs) -> None:
    with pytest.raises(ConfigError, match=r"no authentication.*--insecure-no-auth"):
        WebhookConfig(cluster="c", tls=certs.tls()).check()
    with pytest.raises(ConfigError, match=r"no TLS certificate.*--insecure-no-tls"):
        WebhookConfig(cluster="c", tokens=TokenFile(None, [TOKEN])).check()
    with pytest.raises(ConfigError, match="--allow-client needs --client-ca"):
        WebhookConfig(
            cluster="c",
            tls=certs.tls(),
            tokens=TokenFile(None, [TOKEN]),
            allowed_clients=frozenset("x"),
        ).check()
    WebhookConfig(cluster="c", insecure_no_auth=True).check(insecure_no_tls=True)
    WebhookConfig(cluster="c", tls=certs.tls(client_ca=True)).check()


def test_cli_refuses_without_auth_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from klaxon.cli import main

    code = main(["ingest", "webhook", "--bootstrap", "127.0.0.1:1", "--insecure-no-tls"])
    assert code == 2
    assert "no authentication" in capsys.readouterr().err


def test_tokens_from_the_settings_authenticate_without_a_token_file() -> None:
    """KLAXON_WEBHOOK_TOKENS (a secret setting) is enough authentication for the receiver."""
    from klaxon.cli import build_parser
    from klaxon.ingest_cli import config_from_args

    args = build_parser("ingest").parse_args(["ingest", "webhook", "--insecure-no-tls"])
    settings = Settings.from_env({"KLAXON_WEBHOOK_TOKENS": "tok-a, tok-b"})
    assert "tok-a" not in repr(settings)
    config = config_from_args(args, settings)
    assert config.tokens is not None
    assert config.tokens.matches(b"tok-b") and not config.tokens.matches(b"tok-c")
    with pytest.raises(ConfigError, match="no authentication"):
        config_from_args(args, Settings.from_env({}))


def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# the API servers\nfirst\n\n")
    tokens = TokenFile(path, ["from-env"])
    assert tokens.matches(b"first") and tokens.matches(b"from-env")
    assert not tokens.matches(b"second") and not tokens.matches(b"")
    path.write_text("second\n")
    import os

    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert tokens.reload()
    assert tokens.matches(b"second") and not tokens.matches(b"first")


# -- with a broker -------------------------------------------------------------------------


async def test_eventlist_lands_in_the_raw_topic_as_received(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    body = event_list([event(i) for i in range(5)])
    async with running(settings_for(tansu.bootstrap_servers, tmp_path), certs) as hook:
        status, _headers, answer = await hook.post(body)
        assert status == 200, answer
        records = await hook.raw()
    assert [r.value for r in records] == [body]
    assert records[0].key == CLUSTER.encode()
    assert (CLUSTER_HEADER, CLUSTER.encode()) in list(records[0].headers)


async def test_a_single_event_and_a_gzip_body(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    single = orjson.dumps(event(1))
    listed = event_list([event(i) for i in range(2, 40)])
    async with running(settings_for(tansu.bootstrap_servers, tmp_path), certs) as hook:
        assert (await hook.post(single))[0] == 200
        status, _h, answer = await hook.post(gzip.compress(listed), **{"Content-Encoding": "gzip"})
        assert status == 200, answer
        records = await hook.raw()
    assert sorted(r.value for r in records) == sorted([single, listed])  # decompressed


async def test_a_gzip_bomb_is_refused(tansu: TansuBroker, tmp_path: Path, certs: Certs) -> None:
    bomb = gzip.compress(b" " * (2 * 1024 * 1024))  # 2 MiB of spaces in ~2 KiB
    limits = Limits(max_body_bytes=1024 * 1024)
    async with running(
        settings_for(tansu.bootstrap_servers, tmp_path), certs, limits=limits
    ) as hook:
        status, _h, answer = await hook.post(bomb, **{"Content-Encoding": "gzip"})
        assert status == 413, answer
        assert await hook.raw() == [] and await hook.dead() == []


async def test_bad_or_missing_token_is_401_and_writes_nothing(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    body = event_list([event(1)])
    async with running(settings_for(tansu.bootstrap_servers, tmp_path), certs) as hook:
        status, headers, _ = await hook.post(body, token="wrong")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert (await hook.post(body, token=None))[0] == 401
        assert (await hook.post(b"not json", token=None))[0] == 401  # before anything is read
        assert await hook.raw() == [] and await hook.dead() == []


async def test_client_certificates_verified_against_the_ca(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    body = event_list([event(1)])
    settings = settings_for(tansu.bootstrap_servers, tmp_path)
    async with running(
        settings, certs, tokens=(), client_ca=True, allowed=("kube-apiserver",)
    ) as hook:
        status, _h, answer = await hook.post(body, token=None)  # no client certificate
        assert (status, answer["message"]) == (403, "client certificate required")
        status, _h, answer = await hook.post(body, token=None, cert=certs.intruder)
        assert (status, answer["message"]) == (403, "client certificate not allowed")
        outsider = trustme.CA().issue_cert("kube-apiserver")  # right name, wrong CA
        with pytest.raises(aiohttp.ClientError):
            await hook.post(body, token=None, cert=outsider)
        assert await hook.raw() == []
        assert (await hook.post(body, token=None, cert=certs.apiserver))[0] == 200
        assert [r.value for r in await hook.raw()] == [body]


async def test_oversized_body_is_413(tansu: TansuBroker, tmp_path: Path, certs: Certs) -> None:
    limits = Limits(max_body_bytes=64 * 1024, max_event_bytes=32 * 1024)
    body = event_list([event(i, pad="x" * 1000) for i in range(100)])  # ~120 KiB
    async with running(
        settings_for(tansu.bootstrap_servers, tmp_path), certs, limits=limits
    ) as hook:
        status, _h, answer = await hook.post(body)
        assert status == 413, answer
        assert await hook.raw() == []


async def test_invalid_json_is_400_and_a_dead_letter_with_the_reason(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    async with running(settings_for(tansu.bootstrap_servers, tmp_path), certs) as hook:
        status, _h, answer = await hook.post(b'{"kind":"EventList","items":[{"verb":')
        assert status == 400 and answer["message"].startswith("invalid JSON")
        status, _h, answer = await hook.post(b'{"kind":"Status","code":500}')
        assert status == 400 and "not an audit EventList" in answer["message"]
        letters = sorted(await hook.dead(), key=lambda d: str(d["reason"]))  # 2 partitions
        assert await hook.raw() == []
    assert [d["reason"].split(":")[0] for d in letters] == [
        "invalid JSON",
        "not an audit EventList or Event (no items list, no kind Event)",
    ]
    assert letters[0]["source"] == {
        "topic": f"webhook:{CLUSTER}",
        "partition": None,
        "offset": None,
    }
    assert base64.b64decode(letters[0]["original_b64"]) == b'{"kind":"EventList","items":[{"verb":'


async def test_large_requests_are_split_and_oversized_events_dead_lettered(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    """A body over the raw message limit becomes several EventLists; an event over the
    per-event limit is dead-lettered, the rest written; all of it decodes (no worker)."""
    limits = Limits(max_event_bytes=8 * 1024, max_message_bytes=20 * 1024)
    events = [event(i, pad="y" * 1000) for i in range(60)]
    events[7]["requestObject"] = {"data": "z" * 10_000}  # over the per-event limit
    body = event_list(events)
    async with running(
        settings_for(tansu.bootstrap_servers, tmp_path), certs, limits=limits
    ) as hook:
        status, _h, answer = await hook.post(body)
        assert status == 200, answer
        records = await hook.raw()
        letters = await hook.dead()
    assert len(records) >= 3 and all(len(r.value) <= 20 * 1024 for r in records)
    assert {r.key for r in records} == {CLUSTER.encode()}
    assert len({r.partition for r in records}) == 1  # one key: in order, in one partition
    decoded = []
    for record in sorted(records, key=lambda r: r.offset):
        result = decode_payload(record.value, cluster=CLUSTER)
        assert result.rejected == [] and result.format == "eventlist"
        decoded += result.events
    assert [e["auditID"] for e in decoded] == [e["auditID"] for i, e in enumerate(events) if i != 7]
    assert {e["cluster"] for e in decoded} == {CLUSTER}
    assert len(letters) == 1 and "event 8 of 60" in letters[0]["reason"]
    assert (
        orjson.loads(base64.b64decode(letters[0]["original_b64"]))["auditID"]
        == events[7]["auditID"]
    )


async def test_more_concurrent_requests_than_allowed_are_503(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"kind":"EventList","items":['
        await release.wait()  # the request stays in flight, its body half sent
        yield b"]}"

    limits = Limits(max_concurrent=1, retry_after=7)
    async with running(
        settings_for(tansu.bootstrap_servers, tmp_path), certs, limits=limits
    ) as hook:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with hook.session() as s:
            first = asyncio.create_task(s.post(hook.url, data=slow_body(), headers=headers))
            for _ in range(100):
                if hook.source._in_flight:
                    break
                await asyncio.sleep(0.02)
            status, headers2, answer = await hook.post(event_list([event(1)]))
            assert (status, headers2["Retry-After"]) == (503, "7"), answer
            release.set()
            response = await first
            assert response.status == 200
            response.release()
        assert (await hook.post(event_list([event(2)])))[0] == 200


async def test_broker_outage_is_503_then_200_and_readyz_follows(
    tmp_path: Path, certs: Certs
) -> None:
    """Broker stopped: readyz 503, POST 503 with Retry-After and nothing written later;
    broker back: readyz 200, the retried POST 200, written exactly once."""
    port = free_port()
    broker = await TansuBroker(port=port).astart()
    body = event_list([event(i) for i in range(3)])
    settings = settings_for(broker.bootstrap_servers, tmp_path)
    try:
        async with running(settings, certs, timeout=2.0) as hook:
            assert await hook.get("/readyz") == 200 and await hook.get("/healthz") == 200
            broker.stop()
            started = time.monotonic()
            status, headers, answer = await hook.post(body)
            assert (status, headers.get("Retry-After")) == (503, "5"), answer
            assert time.monotonic() - started < 10
            await _until(lambda: not hook.writer.ready, 10)
            assert await hook.get("/readyz") == 503 and await hook.get("/healthz") == 200
            status, _h, _a = await hook.post(body)  # not connected: refused at once
            assert status == 503
            broker = await TansuBroker(port=port).astart()  # memory storage: topics are gone
            await ensure_topics(broker.bootstrap_servers, settings)
            await _until(lambda: hook.writer.ready, 30)
            assert await hook.get("/readyz") == 200
            status, _h, answer = await hook.post(body)  # the API server's retry
            assert status == 200, answer
            await asyncio.sleep(3)  # anything the failed attempts left behind would be in by now
            assert [r.value for r in await hook.raw()] == [body]
    finally:
        broker.stop()


async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_certificate_reloaded_when_the_files_change(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    for name in ("server.pem", "server.key", "ca.pem"):
        (folder / name).write_bytes((certs.folder / name).read_bytes())
    local = dataclasses.replace(certs, folder=folder)
    async with running(settings_for(tansu.bootstrap_servers, tmp_path), local) as hook:
        assert await _serial(hook) == _serial_of(certs.server)
        renewed = certs.ca.issue_cert("127.0.0.1")
        renewed.private_key_and_cert_chain_pem.write_to_path(folder / "server.pem")
        renewed.private_key_pem.write_to_path(folder / "server.key")
        import os

        for name in ("server.pem", "server.key"):
            os.utime(folder / name, ns=(time.time_ns(), time.time_ns() + 10**9))
        hook.source.reload()  # what the timer does every --reload-interval
        assert await _serial(hook) == _serial_of(renewed)
        assert (await hook.post(event_list([event(1)])))[0] == 200


def _serial_of(cert: trustme.LeafCert) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number


async def _serial(hook: Hook) -> int:
    """Serial number of the certificate a new TLS handshake gets."""
    from cryptography import x509

    assert hook.certs is not None
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", hook.source.port, ssl=hook.certs.client_context()
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_on_apache_kafka(kafka: Any, tmp_path: Path, certs: Certs) -> None:
    body = event_list([event(i) for i in range(10)])
    async with running(settings_for(kafka.bootstrap_servers, tmp_path), certs) as hook:
        status, _h, answer = await hook.post(gzip.compress(body), **{"Content-Encoding": "gzip"})
        assert status == 200, answer
        records = await hook.raw()
    assert [(r.key, r.value) for r in records] == [(CLUSTER.encode(), body)]


@pytest.mark.slow
async def test_end_to_end_a_privileged_pod_becomes_an_alert(
    tansu: TansuBroker, tmp_path: Path, certs: Certs
) -> None:
    """Webhook -> raw topic -> `klaxon worker` -> an alert of the privileged container rule."""
    settings = settings_for(tansu.bootstrap_servers, tmp_path).replace(
        rules_paths=(PRIVILEGED_RULE,),
        stateful_detectors=(),
    )
    worker = WorkerProcess(settings, tmp_path)
    try:
        async with running(settings, certs) as hook:
            body = event_list([event(1), privileged_pod_create(2), event(3)])
            status, _h, answer = await hook.post(body)
            assert status == 200, answer
        alerts = await _alerts(settings, worker, timeout=90)
    finally:
        worker.stop()
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["rule"]["id"] == "93b17069-d7ab-4865-84de-f41755461188"
    assert CLUSTER in orjson.dumps(alert).decode()


async def _alerts(settings: Settings, worker: WorkerProcess, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited:\n{worker.log()[-3000:]}")
        records = await _read_topic(settings.bootstrap_servers or "", settings.topic_alerts, 4)
        if records:
            return [orjson.loads(r.value) for r in records]
        if time.monotonic() > deadline:
            pytest.fail(f"no alert after {timeout}s:\n{worker.log()[-3000:]}")
        await asyncio.sleep(0.5)
