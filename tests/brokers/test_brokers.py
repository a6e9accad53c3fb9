"""Starting and stopping the brokers Klaxon runs itself: Tansu and Apache Kafka."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pipeline.brokers import KafkaCluster, TansuBroker, free_port, kafka_lib_dir
from pipeline.errors import BrokerError, BrokerNotInstalled


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid_of(broker: TansuBroker) -> int:
    child = broker._child
    assert child is not None and child._proc is not None
    return child._proc.pid


def test_tansu_starts_on_loopback_and_stop_leaves_no_process() -> None:
    """A started Tansu answers on 127.0.0.1; after the with-block its process is gone."""
    with TansuBroker() as broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        pid = _pid_of(broker)
        assert _pid_alive(pid)
    assert not broker.running
    assert not _pid_alive(pid)
    with pytest.raises(BrokerError):
        _ = broker.bootstrap_servers


async def test_tansu_async_context_manager() -> None:
    """`async with` starts and stops Tansu without blocking the loop."""
    async with TansuBroker() as broker:
        assert broker.running
    assert not broker.running


def test_tansu_that_dies_at_startup_raises_with_its_log(tmp_path: Path) -> None:
    """A broker binary that exits immediately gives a BrokerError quoting its output."""
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match=r"(?s)code 3.*boom: cannot bind"):
        TansuBroker(binary=str(fake), log_dir=tmp_path).start()


def test_tansu_on_a_taken_port_fails_clearly(tansu: TansuBroker) -> None:
    """Asking for a port that is already in use fails instead of reaching the wrong broker."""
    port = int(tansu.bootstrap_servers.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match="not free"):
        TansuBroker(port=port, start_timeout=5).start()


async def test_tansu_refuses_idempotent_producers(tansu: TansuBroker) -> None:
    """The documented Tansu limit: an idempotent producer cannot start (so Klaxon keeps it off).

    If this starts failing, Tansu gained idempotence and the restriction can be lifted.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(
        bootstrap_servers=tansu.bootstrap_servers, enable_idempotence=True, request_timeout_ms=5000
    )
    try:
        with pytest.raises(KafkaError):
            await producer.start()  # InitProducerId is sent here
    finally:
        await producer.stop()


def test_kafka_without_jars_says_how_to_get_them(tmp_path: Path) -> None:
    """With no jars in the lib dir, KafkaCluster raises BrokerNotInstalled naming ./dev test."""
    with pytest.raises(BrokerNotInstalled, match=r"\./dev test"):
        KafkaCluster(1, lib_dir=tmp_path).start()


def test_kafka_lib_dir_default_and_override() -> None:
    """The jars live in .cache/kafka/lib unless KLAXON_KAFKA_LIB says otherwise."""
    assert kafka_lib_dir({}).parts[-3:] == (".cache", "kafka", "lib")
    assert kafka_lib_dir({"KLAXON_KAFKA_LIB": "/x"}) == Path("/x")


def test_kafka_cluster_size_is_checked() -> None:
    """Only the 1- and 3-node layouts are supported."""
    with pytest.raises(ValueError):
        KafkaCluster(2)


def test_kafka_node_config_is_kraft_combined_on_loopback(kafka: KafkaCluster) -> None:
    """The running node is a combined broker+controller, loopback only, no auto-created topics."""
    props = kafka.server_properties(0)
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert all("127.0.0.1" in v for v in props["listeners"].split(","))
    assert kafka.bootstrap_servers == kafka.node_bootstrap(0)


def test_free_ports_are_usable() -> None:
    """free_port returns a port that can be bound right away."""
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_kill_reaches_the_whole_process_group(tmp_path: Path) -> None:
    """stop() kills the broker's process group, including children it spawned."""
    script = tmp_path / "tree.sh"
    pidfile = tmp_path / "child.pid"
    # A fake broker that forks a grandchild and ignores SIGTERM, then never answers.
    script.write_text(f"#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    broker = TansuBroker(binary=str(script), port=free_port(), log_dir=tmp_path, start_timeout=1)
    with pytest.raises(BrokerError, match="not ready"):
        broker.start()
    grandchild = int(pidfile.read_text())
    assert not _pid_alive(grandchild) or _is_zombie(grandchild)
    assert signal.SIGKILL  # the fallback that made this pass despite the trap


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False
