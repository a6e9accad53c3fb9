"""Fixtures shared by every test package.

`shared` is the read-only folder beside the checkout (`../shared`): third-party corpora that
tests read in place and never copy into the repo.

Brokers (each started once per session, only if a test asks for it; all bind 127.0.0.1):

- ``tansu``: the embedded Tansu broker (`pipeline.brokers.TansuBroker`).
- ``kafka``: Apache Kafka 4.x, 1 KRaft node, from the jars in ``.cache/kafka/lib``.
- ``kafka3``: Apache Kafka, 3 KRaft nodes, for replication and fault tests.
- ``secure_kafka``: Apache Kafka, 1 KRaft node, with SASL_SSL (PLAIN, SCRAM) and SSL (client
  certificate required) listeners beside PLAINTEXT, certificates from a throw-away CA
  (`tests.secure_kafka.SecureKafka`); started only by the secure Kafka tests.
- ``broker``: bootstrap servers, parametrised over ``tansu`` and ``kafka`` so a test proves
  the same behaviour on both. ``klaxon_settings`` is `pipeline.config.Settings` pointing at
  that broker with topic names unique to the test, so tests never see each other's data.

Without the Kafka jars (``./dev test`` fetches them) Kafka tests fail with a message saying
so; locally ``KLAXON_SKIP_KAFKA=1`` turns that into a skip (never under ``CI=true``).
Tests using any broker fixture get the ``kafka`` marker (deselect with ``-m "not kafka"``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.brokers import KafkaCluster, TansuBroker
from pipeline.config import Settings, isolated_settings
from pipeline.errors import BrokerNotInstalled
from tests.faults import FaultyKafka
from tests.secure_kafka import SecureKafka, make_certificates

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"

BROKER_FIXTURES = frozenset({"tansu", "kafka", "kafka3", "broker", "secure_kafka"})


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The third-party corpus folder (`../shared/corpus`); skips if it is absent."""
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present")
    return CORPUS


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture with ``kafka``."""
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def _unique_name(prefix: str = "t") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """``unique_name(prefix="t")`` makes a topic or group name no other test uses."""
    return _unique_name


def _kafka_unavailable(exc: BrokerNotInstalled) -> None:
    """Fail (CI, or by default) or skip (KLAXON_SKIP_KAFKA=1 locally) a test needing Kafka."""
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if os.environ.get("KLAXON_SKIP_KAFKA") == "1" and not ci:
        pytest.skip(f"KLAXON_SKIP_KAFKA=1: {exc}")
    pytest.fail(f"Apache Kafka is needed by this test and unavailable: {exc}", pytrace=False)


def _start_kafka(nodes: int) -> FaultyKafka:
    # Multi-node: notice a dead broker in ~4 s rather than 9 s so fault tests stay short.
    fast_failover = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "500"}
    try:
        return FaultyKafka(nodes, broker_properties=fast_failover if nodes > 1 else None).start()
    except BrokerNotInstalled as exc:
        _kafka_unavailable(exc)
        raise  # unreachable: _kafka_unavailable always raises


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """A running embedded Tansu broker, shared by the session."""
    with TansuBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka() -> Iterator[FaultyKafka]:
    """A running 1-node Apache Kafka (KRaft) cluster, shared by the session."""
    cluster = _start_kafka(1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka3() -> Iterator[FaultyKafka]:
    """A running 3-node Apache Kafka (KRaft) cluster; started only if a test asks for it."""
    cluster = _start_kafka(3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A running 1-node Apache Kafka with SASL_SSL and SSL listeners (and PLAINTEXT)."""
    certs = make_certificates(tmp_path_factory.mktemp("kafka-certs"))
    try:
        cluster = SecureKafka(certs).start()
    except BrokerNotInstalled as exc:
        _kafka_unavailable(exc)
        raise  # unreachable: _kafka_unavailable always raises
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of each broker kind in turn (the test runs once per kind)."""
    started: TansuBroker | KafkaCluster = request.getfixturevalue(request.param)
    return started.bootstrap_servers


@pytest.fixture
def klaxon_settings(broker: str, tmp_path: Path) -> Settings:
    """Settings for ``broker`` with topic names, app id and data dir unique to this test."""
    return isolated_settings(broker, tmp_path / "klaxon-data")
