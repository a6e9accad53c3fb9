"""`pipeline.kafka_compat`: aiokafka on uvloop survives a write on a connection the broker
closed (aio-libs/aiokafka#1038).

The window the bug needs: uvloop closed the transport (the broker reset the connection) and
aiokafka's reader task has not run yet, so the connection still looks up. `broken_by_peer`
opens that window every time, the way uvloop does on a read error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from pipeline import kafka_compat

uvloop = pytest.importorskip("uvloop")


@pytest.fixture
def on_uvloop() -> Iterator[Callable[[Callable[[], Awaitable[None]]], None]]:
    """``on_uvloop(make)`` runs the coroutine ``make()`` on a fresh uvloop loop."""
    loop = uvloop.new_event_loop()

    def run(make: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            await make()

        loop.run_until_complete(main())

    try:
        yield run
    finally:
        loop.close()


async def broken_by_peer(conn: Any) -> None:
    """Close ``conn``'s transport as uvloop does when a read fails with ECONNRESET (a SIGKILLed
    broker), and return in the window: the handle is closed, aiokafka's reader not yet woken.

    uvloop runs the connection-lost callback on the loop's next step; it wakes the reader
    task, which runs a step after ours (callbacks run in order).
    """
    conn._writer.transport._force_close(ConnectionResetError(104, "Connection reset by peer"))
    await asyncio.sleep(0)
    assert conn._writer.transport.is_closing()
    assert conn.connected()  # aiokafka has not noticed yet: the window


def host_port(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


def test_a_write_on_a_connection_the_broker_closed_is_a_connection_error(
    broker: str, on_uvloop: Any
) -> None:
    """aiokafka retries ``KafkaConnectionError``; the connection is closed, not left half up."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol.metadata import MetadataRequest

    kafka_compat.install()

    async def scenario() -> None:
        conn = await create_conn(*host_port(broker))
        await broken_by_peer(conn)
        with pytest.raises(KafkaConnectionError, match="broken: the transport is closed"):
            conn.send(MetadataRequest([]))
        assert not conn.connected()

    on_uvloop(scenario)


def test_the_clients_metadata_update_outlives_a_closed_connection(
    broker: str, on_uvloop: Any
) -> None:
    """The metadata synchronizer's step reports a failed update (and the next one reconnects)
    instead of raising, which ended the synchronizer and with it every later metadata wait."""
    from aiokafka.client import AIOKafkaClient

    kafka_compat.install()

    async def scenario() -> None:
        client = AIOKafkaClient(bootstrap_servers=broker)
        await client.bootstrap()
        try:
            for node in [b.nodeId for b in client.cluster.brokers()]:
                conn = await client._get_conn(node)
                assert conn is not None
                await broken_by_peer(conn)
            assert await client._metadata_update(client.cluster, set()) is False
            assert await client._metadata_update(client.cluster, set()) is True
            assert client._sync_task is not None and not client._sync_task.done()
        finally:
            await client.close()

    on_uvloop(scenario)


def test_without_the_fix_aiokafka_on_uvloop_raises_runtime_error(
    broker: str, on_uvloop: Any
) -> None:
    """Why the fix exists, on the aiokafka installed: its own ``send`` lets uvloop's
    ``RuntimeError`` out. When this fails, aiokafka fixed #1038 and `kafka_compat` can go."""
    from aiokafka.conn import AIOKafkaConnection, create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    kafka_compat.install()
    unfixed = AIOKafkaConnection.send.__wrapped__

    async def scenario() -> None:
        conn = await create_conn(*host_port(broker))
        await broken_by_peer(conn)
        with pytest.raises(RuntimeError, match="handler is closed"):
            unfixed(conn, MetadataRequest([]))
        conn.close()

    on_uvloop(scenario)


@pytest.mark.parametrize(
    ("closing", "error"),
    [(False, RuntimeError("something else")), (True, "kafka")],
    ids=["transport-open", "aiokafka-own-error"],
)
def test_other_runtime_errors_are_not_ours_to_change(closing: bool, error: Any) -> None:
    """Only uvloop's error on a closed transport becomes a connection error: aiokafka's own
    errors (``KafkaError`` is a ``RuntimeError``) and errors on an open transport pass as is."""
    from aiokafka.errors import KafkaConnectionError

    raised = KafkaConnectionError("No connection to broker") if error == "kafka" else error

    class Transport:
        def is_closing(self) -> bool:
            return closing

    class Writer:
        transport = Transport()

    class Conn:
        _writer = Writer()

        def close(self, **_: Any) -> None:
            raise AssertionError("closed a connection that was not ours to close")

    def send(conn: Any) -> None:
        raise raised

    guarded = kafka_compat._closed_transport_is_broken(send)
    with pytest.raises(RuntimeError) as caught:
        guarded(Conn())
    assert caught.value is raised


def test_install_is_idempotent_and_the_worker_installs_it_with_uvloop() -> None:
    from aiokafka.conn import AIOKafkaConnection

    from pipeline.worker import new_event_loop

    try:
        new_event_loop("uvloop").close()
    finally:
        asyncio.set_event_loop_policy(None)
    assert kafka_compat.installed()
    first = AIOKafkaConnection.send
    kafka_compat.install()
    assert AIOKafkaConnection.send is first
    assert not hasattr(AIOKafkaConnection.send.__wrapped__, "__wrapped__")
