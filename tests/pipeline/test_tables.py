"""`pipeline.tables.StatefulShell` without Kafka: when the stateful detectors' state is
written to the changelog, relative to the messages, their by-group output and alerts.

The state of a partition is written once per commit (`write_state`), never per message, and
never before what the messages that changed it sent was delivered; a partition that has a
message in flight is written when that message is finished."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from pipeline.app import DeliveryGuard
from pipeline.config import Settings
from pipeline.processing import Outgoing, Source
from pipeline.stateful.processor import Rekeyed
from pipeline.tables import StatefulShell
from pipeline.topics import changelog_topic, rekey_topic

SETTINGS = Settings()
CHANGELOG = changelog_topic(SETTINGS)
REKEY = rekey_topic(SETTINGS)


class Producer:
    """Records sends; each returns a future the test resolves (delivery)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self.futures: list[asyncio.Future[None]] = []

    def _ensure_producer(self) -> Producer:
        return self

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, partition: int
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def deliver(self) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_result(None)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.sent]


class Sink:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def send(self, alerts: list[Outgoing], source: Source) -> int:
        self.log.append("alert")
        return 0

    async def flush(self) -> None:
        self.log.append("flush")


class Processor:
    """The `StatefulProcessor` surface the shell uses: one key per event, changes since the
    last call (coalesced), the meta key last; by-group records and alerts on demand."""

    def __init__(self) -> None:
        self.parts: dict[int, dict[str, int]] = {}
        self.dirty: dict[int, dict[str, int]] = {}
        self.rekeyed: list[Rekeyed] = []
        self.alerts: list[dict[str, Any]] = []
        self.changes_calls = 0

    def load(self, partition: int, items: Any, now: float = 0.0) -> int:
        self.parts[partition] = {}
        return 0

    def applied(self, partition: int, topic: str, offset: int | None) -> bool:
        return False

    def set_rules(self, ruleset: Any) -> None:
        pass

    def process(self, events: list[dict[str, Any]], matches: Any, partition: int, **kw: Any) -> Any:
        for event in events:
            self.parts[partition][event["k"]] = event["v"]
            self.dirty.setdefault(partition, {})[event["k"]] = event["v"]
        alerts, self.alerts = self.alerts, []
        return alerts

    def suppress(self, matches: Any) -> list[Any]:
        return list(matches)

    def take_rekeyed(self, partition: int) -> list[Rekeyed]:
        out, self.rekeyed = self.rekeyed, []
        return out

    def changes(self, partition: int, now: float | None = None) -> list[tuple[bytes, bytes]]:
        self.changes_calls += 1
        dirty = self.dirty.pop(partition, {})
        out = [(f"{partition}|k|{k}".encode(), str(v).encode()) for k, v in sorted(dirty.items())]
        return [*out, (f"{partition}|m|".encode(), b"{}")]


def make_shell() -> tuple[StatefulShell, Producer, Processor, list[str]]:
    producer, processor, log = Producer(), Processor(), []
    table = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG), data={}
    )

    async def crash(exc: BaseException) -> None:
        raise AssertionError(f"crashed: {exc!r}")

    app = SimpleNamespace(
        producer=producer, delivery=DeliveryGuard(), Table=lambda *a, **k: table, crash=crash
    )
    engine = SimpleNamespace(ruleset=None, evaluate_batch=lambda events: [])
    rt = SimpleNamespace(
        settings=SETTINGS,
        holder=SimpleNamespace(engine=engine),
        sinks=[Sink(log)],
        counters=SimpleNamespace(alerts=0, detect_dead_lettered=0, send_errors=0),
        progress=SimpleNamespace(mark=lambda *a: None),
        grouper=None,
    )
    shell = StatefulShell(app, rt, processor)  # type: ignore[arg-type]
    return shell, producer, processor, log


def message(partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=SETTINGS.topic_events, partition=partition, offset=offset)


async def run_message(
    shell: StatefulShell, partition: int, offset: int, events: list[dict[str, Any]]
) -> None:
    msg = message(partition, offset)
    shell.bind(shell.engine, msg).evaluate_batch(events)
    await shell.finish(msg)


async def test_a_message_writes_no_state_a_commit_writes_each_changed_key_once() -> None:
    shell, producer, processor, _ = make_shell()
    for offset in range(5):  # the same key changed by five messages
        await run_message(shell, 0, offset, [{"k": "a", "v": offset}, {"k": f"b{offset}", "v": 1}])
    assert CHANGELOG not in producer.topics()
    await shell.write_state()
    written = [key for topic, key in producer.sent if topic == CHANGELOG]
    assert written == [b"0|k|a", b"0|k|b0", b"0|k|b1", b"0|k|b2", b"0|k|b3", b"0|k|b4", b"0|m|"]
    assert processor.changes_calls == 1
    await shell.write_state()  # nothing changed since: nothing written
    assert producer.topics().count(CHANGELOG) == len(written)


async def test_state_waits_for_the_by_group_messages_and_alerts_it_reflects() -> None:
    shell, producer, processor, log = make_shell()
    processor.rekeyed = [Rekeyed(2, b"group", b"{}")]
    processor.alerts = [{"id": "alert-1"}]
    await run_message(shell, 1, 0, [{"k": "a", "v": 1}])
    assert producer.topics() == [REKEY]  # queued, not awaited by the message
    assert log == ["alert"]  # sent, not flushed yet
    writing = asyncio.ensure_future(shell.write_state())
    for _ in range(5):
        await asyncio.sleep(0)
    assert CHANGELOG not in producer.topics()  # the by-group message is not delivered yet
    producer.deliver()
    await writing
    assert producer.topics() == [REKEY, CHANGELOG, CHANGELOG]
    assert log == ["alert", "flush"]  # the alert was flushed before the state was written


async def test_a_partition_with_a_message_in_flight_is_written_when_it_finishes() -> None:
    shell, producer, _, _ = make_shell()
    await run_message(shell, 0, 0, [{"k": "a", "v": 1}])
    msg = message(0, 1)
    shell.bind(shell.engine, msg).evaluate_batch([{"k": "a", "v": 2}])  # processed, not sent
    writing = asyncio.ensure_future(shell.write_state())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not writing.done() and CHANGELOG not in producer.topics()
    await shell.finish(msg)
    await writing
    assert [key for topic, key in producer.sent if topic == CHANGELOG] == [b"0|k|a", b"0|m|"]


async def test_an_abandoned_message_releases_the_waiting_commit() -> None:
    shell, producer, _, _ = make_shell()
    await run_message(shell, 0, 0, [{"k": "a", "v": 1}])
    msg = message(0, 1)
    shell.bind(shell.engine, msg)
    writing = asyncio.ensure_future(shell.write_state())
    await asyncio.sleep(0)
    shell.abandon(msg)  # its processing raised: it became a dead letter
    await asyncio.wait_for(writing, 5)
    assert CHANGELOG in producer.topics()


async def test_a_commit_gives_up_after_its_timeout_on_a_message_that_never_finishes() -> None:
    shell, _, _, _ = make_shell()
    await run_message(shell, 0, 0, [{"k": "a", "v": 1}])
    shell.bind(shell.engine, message(0, 1))
    with pytest.raises(TimeoutError):
        await shell.write_state(timeout=0.05)


async def test_the_watermark_timer_writes_idle_partitions() -> None:
    shell, producer, processor, _ = make_shell()
    await run_message(shell, 3, 0, [{"k": "a", "v": 1}])
    shell.owned = lambda: [3]  # type: ignore[method-assign]
    processor.tick = lambda partition, now: []  # type: ignore[attr-defined]
    await shell.tick()
    assert producer.topics() == [CHANGELOG, CHANGELOG]


class Store(dict[bytes, bytes]):
    """Faust's memory store: a dict plus each key's partition."""

    def __init__(self, items: dict[bytes, bytes]) -> None:
        super().__init__(items)
        self._key_partition = {k: int(k.split(b"|")[0]) for k in items}


def recovered(shell: StatefulShell, *, in_recovery: bool = False) -> tuple[Store, Any]:
    """Give the shell's table recovered values for partitions 1 and 2, and a recovery that
    stopped reading both changelog partitions at offset 57."""
    store = Store({b"1|a|x": b"{}", b"1|m|": b"{}", b"2|a|y": b"{}", b"10|a|z": b"{}"})
    shell.table.data = store
    offsets = Counter({TP(CHANGELOG, 1): 57, TP(CHANGELOG, 2): 57})
    recovery = SimpleNamespace(active_offsets=offsets, in_recovery=in_recovery)
    shell.app.tables = SimpleNamespace(recovery=recovery)
    return store, recovery


def test_a_loaded_partition_leaves_fausts_store_and_is_recovered_in_full_next_time() -> None:
    """Once a partition is rebuilt from the recovered table, its values leave Faust's memory
    store (one more copy of the state) and Faust's recovery reads that changelog partition
    from its start at the next rebalance (it would resume at 57, and miss unchanged keys);
    the other partitions' values and offsets stay."""
    shell, _, _, _ = make_shell()
    store, recovery = recovered(shell)
    shell.ensure_loaded(1)
    assert sorted(store) == [b"10|a|z", b"2|a|y"]
    assert sorted(store._key_partition) == [b"10|a|z", b"2|a|y"]
    assert recovery.active_offsets == {TP(CHANGELOG, 1): -1, TP(CHANGELOG, 2): 57}


def test_nothing_is_released_while_faust_recovers() -> None:
    """A partition loaded while Faust's recovery is reading keeps the table's copy (setting
    an offset under a running recovery could keep it from ending)."""
    shell, _, _, _ = make_shell()
    store, recovery = recovered(shell, in_recovery=True)
    shell.ensure_loaded(1)
    assert len(store) == 4 and recovery.active_offsets[TP(CHANGELOG, 1)] == 57


class Recovery:
    """Faust's table recovery as `RecoveryNudge` reads it: read offsets and what is left."""

    def __init__(self, offsets: dict[TP, int], highwaters: dict[TP, int]) -> None:
        self.in_recovery = True
        self.active_offsets = Counter(offsets)
        self.active_highwaters = highwaters

    def active_remaining(self) -> Counter[TP]:
        offsets = self.active_offsets
        return Counter({tp: hw - offsets[tp] for tp, hw in self.active_highwaters.items()})


def nudge_for(recovery: Recovery, now: list[float], fail: bool = False) -> tuple[Any, list[Any]]:
    from pipeline.tables import RecoveryNudge

    sought: list[dict[TP, int]] = []

    async def seek(offsets: dict[TP, int]) -> None:
        if fail:
            raise RuntimeError("not assigned")
        sought.append(offsets)

    return RecoveryNudge(recovery, seek, after=10.0, clock=lambda: now[0]), sought


C0, C1, C2 = (TP(CHANGELOG, p) for p in range(3))


def test_a_state_recovery_that_read_nothing_for_a_while_reads_again_where_it_stopped() -> None:
    """Faust drops records it fetched when a rebalance interrupts a batch; a changelog
    partition under recovery would wait for them forever, and no stream runs meanwhile."""
    recovery = Recovery({C0: 4, C1: -1, C2: 9}, {C0: 9, C1: 3, C2: 9})  # C2 is read to its end
    now = [0.0]
    nudge, sought = nudge_for(recovery, now)
    assert asyncio.run(nudge.check()) == {}
    now[0] = 9.9
    assert asyncio.run(nudge.check()) == {}
    now[0] = 10.0
    assert asyncio.run(nudge.check()) == {C0: 5, C1: 0}  # the next offsets; C1 from its start
    assert sought == [{C0: 5, C1: 0}] and nudge.nudges == 1
    now[0] = 15.0
    assert asyncio.run(nudge.check()) == {}  # once per interval


def test_a_state_recovery_that_moves_or_is_over_is_left_alone() -> None:
    recovery = Recovery({C0: 4}, {C0: 9})
    now = [0.0]
    nudge, sought = nudge_for(recovery, now)
    asyncio.run(nudge.check())
    for step in range(1, 5):  # one record every 8 s: slow, not stuck
        now[0] = 8.0 * step
        recovery.active_offsets[C0] += 1
        assert asyncio.run(nudge.check()) == {}
    recovery.in_recovery = False
    now[0] = 100.0
    assert asyncio.run(nudge.check()) == {} and sought == []


def test_the_nudge_knows_when_the_recovery_last_read_and_what_it_has_left() -> None:
    """What the watchdog counts a stall from, and what health and /readyz report."""
    recovery = Recovery({C0: 4, C1: -1}, {C0: 9, C1: 3})
    now = [0.0]
    nudge, _ = nudge_for(recovery, now)
    assert nudge.progressed_at is None and nudge.remaining() == 5 + 4
    asyncio.run(nudge.check())
    now[0] = 7.0
    recovery.active_offsets[C0] += 2
    asyncio.run(nudge.check())
    now[0] = 30.0
    asyncio.run(nudge.check())  # nothing read since 7 s (and a nudge)
    assert nudge.progressed_at == 7.0 and nudge.remaining() == 3 + 4
    recovery.in_recovery = False
    asyncio.run(nudge.check())
    assert nudge.progressed_at is None and nudge.remaining() == 0


def test_a_failed_seek_is_logged_and_tried_again_later(caplog: pytest.LogCaptureFixture) -> None:
    recovery = Recovery({C0: 4}, {C0: 9})
    now = [0.0]
    nudge, _ = nudge_for(recovery, now, fail=True)
    asyncio.run(nudge.check())
    now[0] = 10.0
    with caplog.at_level("WARNING", logger="klaxon.stateful"):
        assert asyncio.run(nudge.check()) == {C0: 5}
    assert "cannot seek the state recovery" in caplog.text
    now[0] = 20.0
    assert asyncio.run(nudge.check()) == {C0: 5}


def test_the_nudge_runs_in_a_task_of_its_own_until_the_worker_stops() -> None:
    """Faust starts its timers only after the first recovery, which the nudge must watch."""
    checks: list[float] = []

    async def scenario() -> None:
        now = [0.0]
        nudge, _ = nudge_for(Recovery({C0: 4}, {C0: 9}), now)
        check = nudge.check

        async def counted() -> dict[TP, int]:
            checks.append(now[0])
            result: dict[TP, int] = await check()
            return result

        nudge.check = counted
        stop = [False]
        nudge.start(lambda: stop[0])
        nudge.start(lambda: stop[0])  # one task, however many rebalances
        await asyncio.sleep(0.05)
        stop[0] = True
        await asyncio.wait_for(nudge._task, 5.0)

    asyncio.run(scenario())
    assert checks == [0.0]
