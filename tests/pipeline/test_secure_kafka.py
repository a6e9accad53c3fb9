"""Klaxon over secured Apache Kafka, end to end: ``klaxon topics create``, a ``klaxon worker``
subprocess and ``klaxon replay`` over SASL_SSL (SCRAM-SHA-512 and PLAIN) and over SSL with a
client certificate, configured only through the ``KAFKA_*`` variables; the alerts must be
those of the same rules run offline. Wrong credentials fail fast and say why; secrets never
show in output, logs or the status file.

The broker (`tests.secure_kafka.SecureKafka`, fixture ``secure_kafka``) keeps a PLAINTEXT
listener, through which the tests read the topics back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.worker import settings_env
from tests.pipeline.conftest import (
    CLUSTER,
    WorkerProcess,
    base_env,
    expected_for,
    read_topic,
    unique_settings,
)
from tests.secure_kafka import PLAIN_USER, SCRAM_USER, SecureKafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def security_env(kafka: SecureKafka, kind: str, tmp: Path) -> tuple[str, dict[str, str], str]:
    """(bootstrap, KAFKA_* variables, the secret that must never be printed) for ``kind``."""
    certs = kafka.certs
    if kind == "scram-sha-512":  # password from a file, as a Kubernetes secret is mounted
        user, password = SCRAM_USER
        secret = tmp / "sasl-password"
        secret.write_text(password + "\n")
        return (
            kafka.sasl_ssl_bootstrap,
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SSL_CAFILE": str(certs.ca),
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD_FILE": str(secret),
            },
            password,
        )
    if kind == "plain":
        user, password = PLAIN_USER
        return (
            kafka.sasl_ssl_bootstrap,
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SSL_CAFILE": str(certs.ca),
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD": password,
            },
            password,
        )
    assert kind == "ssl-client-cert"
    return (
        kafka.ssl_bootstrap,
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": str(certs.ca),
            "KAFKA_SSL_CERTFILE": str(certs.client_cert),
            "KAFKA_SSL_KEYFILE": str(certs.client_key_encrypted),
            "KAFKA_SSL_KEY_PASSWORD": certs.client_key_password,
        },
        certs.client_key_password,
    )


def klaxon(
    argv: list[str], env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klaxon", *argv],
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def caught_up(worker: WorkerProcess, sent: int) -> bool:
    snap = worker.snapshot() or {}
    c = snap.get("counters", {})
    return (
        c.get("raw_messages", 0) >= sent
        and c.get("events_messages_in", 0) >= c.get("events_messages_out", 1)
        and snap.get("lag_total") == 0
    )


@pytest.mark.parametrize("kind", ["scram-sha-512", "plain", "ssl-client-cert"])
def test_topics_worker_and_replay_over_a_secured_listener(
    secure_kafka: SecureKafka, kind: str, tmp_path: Path, replay_input: list[bytes]
) -> None:
    bootstrap, variables, secret = security_env(secure_kafka, kind, tmp_path)
    settings = unique_settings(bootstrap, tmp_path).replace(
        kafka_security=Settings.from_env(variables).kafka_security,
    )
    env = settings_env(settings)
    if kind == "scram-sha-512":  # a password from a file reaches children as the file
        assert env["KAFKA_SASL_PASSWORD"] == "" and env["KAFKA_SASL_PASSWORD_FILE"]

    created = klaxon(["topics", "create"], env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created ") == 6, created.stdout

    worker = WorkerProcess(settings, tmp_path, kind)
    try:
        events = tmp_path / "events.jsonl"
        events.write_bytes(b"\n".join(replay_input) + b"\n")
        replayed = klaxon(["replay", str(events), "--cluster", CLUSTER], env)
        assert replayed.returncode == 0, replayed.stderr
        sent = int(replayed.stdout.split(" messages")[0].rsplit(" ", 1)[1])
        worker.wait_for("the replay to be processed", lambda: caught_up(worker, sent), 120)
        status = klaxon(["status", str(worker.status)], {})
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    plaintext = secure_kafka.bootstrap_servers  # the tests' own listener
    alerts = {r.key.decode() for r in read_topic(plaintext, settings.topic_alerts)}
    assert alerts == expected_for(replay_input, with_garbage=False).alert_ids
    log = worker.log()
    assert f"security={settings.kafka_security.describe()}" in log
    shown = [log, worker.status.read_text(), status.stdout, status.stderr]
    shown += [created.stdout, created.stderr, replayed.stdout, replayed.stderr]
    assert not [text for text in shown if secret in text]


@pytest.mark.parametrize("command", ["topics", "worker", "replay"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_wrong_password_fails_fast_and_says_why(
    secure_kafka: SecureKafka, command: str, mechanism: str, tmp_path: Path
) -> None:
    wrong = "not-the-Password-42"
    user = SCRAM_USER[0] if mechanism == "SCRAM-SHA-512" else PLAIN_USER[0]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secure_kafka.sasl_ssl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(secure_kafka.certs.ca),
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD": wrong,
        "KLAXON_DATA_DIR": str(tmp_path / "data"),
        "KLAXON_APP_ID": f"wrong-{mechanism.lower()}-{command}",
    }
    events = tmp_path / "one.jsonl"
    events.write_text('{"kind":"Event"}\n')
    argv = {"topics": ["topics", "create"], "worker": ["worker"], "replay": ["replay", str(events)]}
    started = time.monotonic()
    done = klaxon(argv[command], env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 45
    assert "SaslAuthenticationFailed" in done.stderr, done.stderr
    assert f"SASL_SSL {mechanism} user={user}" in done.stderr
    assert wrong not in done.stdout + done.stderr


def test_ssl_without_the_required_client_certificate_is_refused(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secure_kafka.ssl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(secure_kafka.certs.ca),
    }
    started = time.monotonic()
    done = klaxon(["topics", "create"], env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 45
    assert f"cannot connect to {secure_kafka.ssl_bootstrap} (SSL)" in done.stderr


def test_a_ca_that_did_not_sign_the_broker_is_refused(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    """TLS verifies the broker: a CA file of another authority fails the handshake."""
    from tests.secure_kafka import make_certificates

    other = make_certificates(tmp_path / "other")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secure_kafka.sasl_ssl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(other.ca),
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": PLAIN_USER[0],
        "KAFKA_SASL_PASSWORD": PLAIN_USER[1],
    }
    done = klaxon(["topics", "create"], env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr, done.stderr


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "klaxon", *argv],
        env={**base_env(), **env},
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )


def _raw_ids(bootstrap: str, topic: str) -> set[str]:
    from schemas.normalize import decode_payload

    ids: set[str] = set()
    for record in read_topic(bootstrap, topic):
        ids |= {e["auditID"] for e in decode_payload(record.value, cluster=CLUSTER).events}
    return ids


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.parametrize("kind", ["scram-sha-512", "ssl-client-cert"])
def test_both_intakes_write_over_a_secured_listener(
    secure_kafka: SecureKafka, kind: str, tmp_path: Path
) -> None:
    """`klaxon ingest webhook` and `klaxon ingest file` produce to the raw topic through the
    secured listener (the Kafka side is under test here; the webhook's own TLS and tokens
    are tested in tests/pipeline/sources); their logs never show the secret."""
    import json
    import urllib.request

    from pipeline.brokers import free_port

    bootstrap, variables, secret = security_env(secure_kafka, kind, tmp_path)
    settings = unique_settings(bootstrap, tmp_path).replace(
        kafka_security=Settings.from_env(variables).kafka_security,
    )
    env = settings_env(settings)
    assert klaxon(["topics", "create"], env).returncode == 0
    port = free_port()
    hook_log, file_log = tmp_path / "webhook.log", tmp_path / "file.log"
    audit = tmp_path / "audit.log"

    def event(i: int, src: str) -> dict[str, object]:
        return {"apiVersion": "audit.k8s.io/v1", "kind": "Event", "auditID": f"{src}-{i}",
                "stage": "ResponseComplete", "verb": "get", "requestURI": "/api/v1/pods",
                "user": {"username": "alice"}, "responseStatus": {"code": 200},
                "requestReceivedTimestamp": "2026-11-27T09:00:00Z"}  # fmt: skip

    audit.write_text("".join(json.dumps(event(i, "file")) + "\n" for i in range(20)))
    hook = _start(["ingest", "webhook", "--port", str(port), "--insecure-no-tls",
                   "--insecure-no-auth", "--cluster", CLUSTER], env, hook_log)  # fmt: skip
    follow = _start(["ingest", "file", str(audit), "--cluster", CLUSTER], env, file_log)
    try:
        body = json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList",
                           "items": [event(i, "hook") for i in range(20)]}).encode()  # fmt: skip
        deadline, answered = time.monotonic() + 60, 0
        while time.monotonic() < deadline and answered != 200:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/audit", data=body)
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answered = answer.status
            except OSError:  # not listening yet, or 503 until the producer is connected
                time.sleep(0.5)
        assert answered == 200, hook_log.read_text()
        want = {f"hook-{i}" for i in range(20)} | {f"file-{i}" for i in range(20)}
        plaintext = secure_kafka.bootstrap_servers
        while time.monotonic() < deadline and not want <= _raw_ids(plaintext, settings.topic_raw):
            time.sleep(1)
        assert want <= _raw_ids(plaintext, settings.topic_raw), file_log.read_text()[-2000:]
    finally:
        _stop(hook)
        _stop(follow)
    assert not [p for p in (hook_log, file_log) if secret in p.read_text()]
