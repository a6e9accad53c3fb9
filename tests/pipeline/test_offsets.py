"""`pipeline.offsets.OffsetLedger` and `pipeline.watchdog.Watchdog`: what is committed, when a
partition is read again, and how health is judged, against an in-memory consumer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline.logs import RateLimit, install
from pipeline.offsets import FakePort, OffsetLedger
from pipeline.watchdog import Watchdog

RAW = ("raw", 0)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def processed(ledger: OffsetLedger, *offsets: int) -> list[bool]:
    """Admit each offset of RAW and mark the admitted ones done, as an agent does."""
    out = []
    for offset in offsets:
        ok = bool(run(ledger.admit(*RAW, offset)))
        if ok:
            ledger.done(*RAW, offset)
        out.append(ok)
    return out


def test_a_partition_starts_at_its_committed_offset_or_at_the_log_start() -> None:
    assert run(OffsetLedger(FakePort(committed={RAW: 7})).start(RAW)) == 7
    assert run(OffsetLedger(FakePort(starts={RAW: 3})).start(RAW)) == 3


def test_only_the_next_offset_is_processed_older_ones_are_skipped() -> None:
    ledger = OffsetLedger(FakePort(committed={RAW: 0}))
    assert processed(ledger, 0, 1, 1, 0, 2) == [True, True, False, False, True]
    assert ledger.stats.redelivered == 2


def test_skipped_offsets_are_read_again_never_committed_past() -> None:
    """Offset 5 arriving while 3 is next (Faust dropped 3 and 4): seek back to 3; later
    fetches still buffered are dropped until 3 arrives; the commit never passes 3."""
    port = FakePort(committed={RAW: 3})
    ledger = OffsetLedger(port)
    assert processed(ledger, 5, 6) == [False, False]
    assert port.seeks == [(RAW, 3)] and ledger.stats.gaps == 1
    assert run(ledger.commit()) is True and port.commits == []  # nothing new processed
    assert processed(ledger, 3, 4, 5) == [True, True, True]
    run(ledger.commit())
    assert port.commits == [{RAW: 6}]


def test_offsets_deleted_by_retention_are_counted_and_skipped() -> None:
    port = FakePort(committed={RAW: 3}, starts={RAW: 10})
    ledger = OffsetLedger(port)
    assert processed(ledger, 10) == [True]
    assert ledger.stats.lost_to_retention == 7 and port.seeks == []


def test_commit_waits_for_the_producer_and_retries_after_a_refusal() -> None:
    port = FakePort(committed={RAW: 0})
    ledger = OffsetLedger(port)
    processed(ledger, 0, 1)
    port.refuse = True
    assert run(ledger.commit()) is False and ledger.stats.commit_failures == 1
    port.refuse = False
    assert run(ledger.commit()) is True
    assert port.flushes == 2 and port.commits == [{RAW: 2}] and ledger.committed[RAW] == 2


def test_nothing_is_committed_when_an_output_was_not_delivered() -> None:
    class Lost(FakePort):
        async def flush(self) -> None:
            raise RuntimeError("a send failed")

    port = Lost(committed={RAW: 0})
    ledger = OffsetLedger(port)
    processed(ledger, 0)
    with pytest.raises(RuntimeError):
        run(ledger.commit())
    assert port.commits == []


def test_a_revoked_partition_is_committed_then_forgotten_and_late_work_moves_nothing() -> None:
    port = FakePort(committed={RAW: 0})
    ledger = OffsetLedger(port)
    processed(ledger, 0, 1)
    assert run(ledger.admit(*RAW, 2))  # in flight while the partition is revoked
    run(ledger.revoke([RAW]))
    assert port.commits == [{RAW: 2}] and RAW not in ledger.next
    ledger.done(*RAW, 2)  # the in-flight message finishes after the revocation
    assert RAW not in ledger.next
    port.committed_[RAW] = 2
    assert processed(ledger, 2) == [True]  # assigned again: from the committed offset


def test_watchdog_lag_is_from_committed_offsets_and_an_outage_is_not_a_stall() -> None:
    now = [0.0]
    ledger = OffsetLedger(FakePort(committed={RAW: 4}), clock=lambda: now[0])
    run(ledger.start(RAW))
    processed(ledger, 4, 5)  # processed, not committed yet: still lag
    dog = Watchdog(ledger, stall_after=10, exit_after=30, clock=lambda: now[0])
    dog.record_probe({RAW: 9})
    assert dog.assess().lag == {"raw:0": 5} and dog.assess().broker == "ok"
    now[0] = 11.0
    dog.record_failure("KafkaConnectionError")
    assert dog.assess().broker == "unreachable" and dog.assess().stalled == []
    now[0] = 12.0
    dog.record_probe({RAW: 9})  # back: the stall clock starts again
    assert dog.assess().stalled == []
    now[0] = 23.0
    seen = dog.assess()
    assert seen.stalled == ["raw:0"] and not dog.exit_reason(seen)
    assert dog.to_rewind() == {RAW: 6} and dog.to_rewind() == {}  # once per stall_after
    now[0] = 43.0  # stalled for 31 s: since the broker came back at t=12
    reason = dog.exit_reason(dog.assess())
    assert reason == "partitions raw:0 made no progress for 31s with messages waiting"


def test_a_partition_without_a_commit_for_rewind_after_is_read_again_before_it_is_stalled() -> None:
    """Faust can drop fetched messages around a rebalance without reading them again, and
    the ledger sees no gap when nothing newer comes: a seek back is cheap, a stall is not."""
    now = [0.0]
    ledger = OffsetLedger(FakePort(committed={RAW: 4}), clock=lambda: now[0])
    run(ledger.start(RAW))
    dog = Watchdog(ledger, stall_after=60, rewind_after=10, exit_after=300, clock=lambda: now[0])
    dog.record_probe({RAW: 9})
    now[0] = 9.9
    assert dog.to_rewind() == {}
    now[0] = 10.0
    assert dog.to_rewind() == {RAW: 4} and dog.to_rewind() == {}  # once per rewind_after
    assert dog.assess().stalled == []
    now[0] = 20.0
    assert dog.to_rewind() == {RAW: 4}  # still nothing: again
    processed(ledger, 4, 5)
    assert run(ledger.commit())  # moving again
    now[0] = 29.0
    assert dog.to_rewind() == {}
    now[0] = 39.0
    assert dog.to_rewind() == {RAW: 6}  # from the next unprocessed offset


def test_a_recovery_that_reads_is_no_stall_one_that_stops_reading_counts_from_then() -> None:
    """Every stream waits while Faust reads the state back: no seek, no stall, no exit for
    that, and no burst of seeks when it ends; a recovery stuck for good still ends in the
    exit that gets the worker restarted."""
    now = [0.0]
    ledger = OffsetLedger(FakePort(committed={RAW: 4}), clock=lambda: now[0])
    run(ledger.start(RAW))
    dog = Watchdog(ledger, stall_after=60, rewind_after=10, exit_after=300, clock=lambda: now[0])
    dog.record_probe({RAW: 9})
    for now[0] in (30.0, 100.0, 400.0):  # the recovery read something just now each time
        dog.hold(now[0])
        assert dog.assess().stalled == [] and not dog.exit_reason(dog.assess())
    now[0] = 405.0  # over: the clocks run from its last read
    assert dog.to_rewind() == {}
    now[0] = 410.0
    assert dog.to_rewind() == {RAW: 4}
    dog.hold(400.0)  # a recovery whose last read was at 400 s, then nothing
    now[0] = 700.0
    seen = dog.assess()
    assert seen.stalled == ["raw:0"] and dog.exit_reason(seen) is not None


def test_the_rewind_interval_defaults_to_the_stall_interval() -> None:
    dog = Watchdog(OffsetLedger(FakePort(committed={RAW: 0})), stall_after=25)
    assert dog.rewind_after == 25


def test_watchdog_probe_runs_in_the_background_and_never_twice_at_once() -> None:
    ledger = OffsetLedger(FakePort(committed={RAW: 0}))
    dog = Watchdog(ledger)
    calls: list[list[tuple[str, int]]] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        async def read(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
            calls.append(tps)
            await gate.wait()
            return {RAW: 3}

        dog.kick([RAW], read)
        dog.kick([RAW], read)
        await asyncio.sleep(0)
        assert dog.assess().broker == "unknown"  # answered from cache while the read waits
        gate.set()
        await asyncio.sleep(0.01)

    run(scenario())
    assert len(calls) == 1 and dog.assess().lag == {"raw:0": 3}


def wedge_scenario(broker_answers_new_client: bool) -> tuple[Watchdog, list[float], list[str]]:
    """A worker whose client got no answer since t=5; exit_after 30, stall_after 10."""
    now = [0.0]
    asked: list[str] = []
    ledger = OffsetLedger(FakePort(committed={RAW: 0}), clock=lambda: now[0])

    async def fresh_probe() -> None:
        asked.append(f"t={now[0]:.0f}")
        if not broker_answers_new_client:
            raise ConnectionRefusedError(111, "Connection refused")

    dog = Watchdog(
        ledger, stall_after=10, exit_after=30, clock=lambda: now[0], fresh_probe=fresh_probe
    )
    dog.record_probe({RAW: 0})
    now[0] = 5.0
    dog.record_failure("TimeoutError()")
    return dog, now, asked


def test_a_broker_outage_never_makes_the_worker_exit() -> None:
    """A new client cannot reach the broker either: an outage, asked again once per
    stall_after; a restart would not bring the broker back."""
    dog, now, asked = wedge_scenario(broker_answers_new_client=False)

    async def scenario() -> None:
        for t in (20.0, 35.0, 36.0, 40.0, 46.0, 300.0):
            now[0] = t
            dog.check_client()
            await asyncio.sleep(0)
            assert dog.exit_reason(dog.assess()) is None

    run(scenario())
    assert asked == ["t=35", "t=46", "t=300"]  # from exit_after on, once per stall_after


def test_a_wedged_kafka_client_makes_the_worker_exit() -> None:
    """The broker answers a new client while the worker's own has had no answer for
    exit_after seconds: the client is wedged (aio-libs/aiokafka#1038 did that), and only a
    new process gets new clients."""
    dog, now, asked = wedge_scenario(broker_answers_new_client=True)

    async def scenario() -> None:
        now[0] = 34.0
        dog.check_client()  # silent for 29 s: too early to ask
        await asyncio.sleep(0)
        assert asked == [] and dog.exit_reason(dog.assess()) is None
        now[0] = 36.0
        dog.check_client()
        await asyncio.sleep(0)

    run(scenario())
    assert asked == ["t=36"]
    assert dog.exit_reason(dog.assess()) == (
        "the broker answers a new Kafka client, but this worker's has had no answer for 31s"
        " (last error: TimeoutError())"
    )
    dog.record_probe({RAW: 0})  # the old client recovered after all: no exit
    assert dog.exit_reason(dog.assess()) is None


def test_repeated_broker_errors_are_logged_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    logger = logging.getLogger("test.ratelimit")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    install(RateLimit(window=30, clock=lambda: now[0]), logger)
    for _ in range(3000):
        logger.error("Heartbeat failed: %s", "member_id was not recognized")
    now[0] = 31.0
    logger.error("Heartbeat failed: %s", "member_id was not recognized")
    logger.removeHandler(handler)
    assert len(seen) == 2 and "2999 similar suppressed" in seen[1]
