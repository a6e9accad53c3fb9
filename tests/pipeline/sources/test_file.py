"""`klaxon ingest file`: the follower against a temporary folder, with a fake writer (no
Kafka) and with a real broker (Tansu), counting every line by its unique id.

Lines are audit events whose ``auditID`` is ``<run>-<n>``; a test writes them while the
follower runs, rotates the file the way kube-apiserver (rename + new file) or logrotate
(copytruncate) does, and checks that every id arrives exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.brokers import TansuBroker, free_port
from pipeline.config import Settings, isolated_settings
from pipeline.errors import ConfigError, IntakeUnavailable
from pipeline.sources import SOURCES
from pipeline.sources.base import RawPayload
from pipeline.sources.file import FileConfig, FileSource, read_checkpoint
from pipeline.sources.writer import RawTopicWriter
from pipeline.topics import ensure_topics
from schemas.keys import CLUSTER_HEADER
from tests.pipeline.conftest import _read_topic

pytestmark = pytest.mark.timeout(120)

CLUSTER = "prod-eu"


def line(n: int, pad: int = 0) -> bytes:
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"id-{n}",
        "stage": "ResponseComplete",
        "verb": "get",
        "user": {"username": "alice"},
        "requestURI": "/api/v1/pods" + "x" * pad,
    }
    return orjson.dumps(event) + b"\n"


def ids_of(payloads: Sequence[bytes]) -> list[str]:
    return [orjson.loads(ln)["auditID"] for p in payloads for ln in p.split(b"\n") if ln.strip()]


@dataclass
class FakeWriter:
    """Records what was written; ``fail`` makes writes raise `IntakeUnavailable`."""

    payloads: list[bytes] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False
    calls: int = 0

    async def write(
        self, payloads: Sequence[RawPayload], dead_letters: Sequence[bytes] = ()
    ) -> None:
        self.calls += 1
        if self.fail:
            raise IntakeUnavailable("broker down (fake)")
        for p in payloads:
            assert p.cluster == CLUSTER and p.payload is not None
            self.payloads.append(p.payload)
        self.dead.extend(orjson.loads(d) for d in dead_letters)

    def ids(self) -> list[str]:
        return ids_of(self.payloads)


def config(tmp: Path, **kw: Any) -> FileConfig:
    opts: dict[str, Any] = {
        "path": tmp / "logs" / "audit.log",
        "checkpoint": tmp / "state" / "audit.checkpoint",
        "cluster": CLUSTER,
        "flush_interval": 0.1,
        "poll_interval": 0.02,
        "partial_wait": 0.3,
        "retry_interval": 0.05,
    }
    opts.update(kw)
    (tmp / "logs").mkdir(exist_ok=True)
    return FileConfig(**opts)


@contextlib.asynccontextmanager
async def following(cfg: FileConfig, writer: Any) -> AsyncIterator[FileSource]:
    source = FileSource(cfg)
    task = asyncio.create_task(source.forward(writer))
    try:
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        source.close()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


async def write_lines(path: Path, numbers: range, every: int = 10) -> None:
    """Append one line per number, yielding to the follower every ``every`` lines."""
    for n in numbers:
        append(path, line(n))
        if n % every == 0:
            await asyncio.sleep(0.005)


def exactly_once(ids: list[str], numbers: range) -> None:
    counts = Counter(ids)
    missing = [n for n in numbers if counts[f"id-{n}"] == 0]
    twice = {i: c for i, c in counts.items() if c > 1}
    assert not missing and not twice, f"missing {missing[:20]}, repeated {list(twice)[:20]}"
    assert len(ids) == len(numbers)


# -- without a broker ---------------------------------------------------------------------


def test_registered_as_a_source() -> None:
    assert SOURCES["file"] is FileSource


async def test_lines_written_while_following_are_batched_and_checkpointed(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, max_events=50)
    append(cfg.path, b"".join(line(n) for n in range(120)))
    writer = FakeWriter()
    async with following(cfg, writer) as source:
        await until(lambda: len(writer.ids()) == 120, what="the first 120 lines")
        await write_lines(cfg.path, range(120, 130))
        await until(lambda: len(writer.ids()) == 130, what="lines written later")
        await until(
            lambda: (source.committed and source.committed.offset) == cfg.path.stat().st_size
        )
    exactly_once(writer.ids(), range(130))
    assert max(len(p.split(b"\n")) for p in writer.payloads) == 50
    checkpoint = read_checkpoint(cfg.checkpoint)
    assert checkpoint is not None and checkpoint.offset == cfg.path.stat().st_size
    assert checkpoint.inode == cfg.path.stat().st_ino


async def test_batches_stay_under_the_byte_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_bytes=10_000, max_event_bytes=5_000)
    append(cfg.path, b"".join(line(n, pad=900) for n in range(100)))
    writer = FakeWriter()
    async with following(cfg, writer):
        await until(lambda: len(writer.ids()) == 100)
    assert all(len(p) < 10_000 for p in writer.payloads)
    assert len(writer.payloads) >= 10


async def test_a_quiet_log_is_flushed_after_the_interval(tmp_path: Path) -> None:
    cfg = config(tmp_path, flush_interval=0.3)
    append(cfg.path, b"")
    writer = FakeWriter()
    async with following(cfg, writer):
        await asyncio.sleep(0.2)
        started = time.monotonic()
        append(cfg.path, line(1))
        await until(lambda: writer.ids() == ["id-1"], 5)
        waited = time.monotonic() - started
    assert 0.25 < waited < 1.5


async def test_partial_last_line_is_sent_only_when_completed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    whole = line(2)
    append(cfg.path, line(1) + whole[:20])
    writer = FakeWriter()
    async with following(cfg, writer) as source:
        await until(lambda: writer.ids() == ["id-1"])
        await asyncio.sleep(0.5)  # well past flush interval and partial_wait
        assert writer.ids() == ["id-1"]
        assert source.committed is not None and source.committed.offset == len(line(1))
        append(cfg.path, whole[20:])
        await until(lambda: writer.ids() == ["id-1", "id-2"])


async def test_rename_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await write_lines(cfg.path, range(0, 300))
        # lumberjack: rename, then a new file; lines land in the old one up to the rename
        rotated = cfg.path.with_name("audit-2026-01-01T00-00-00.000.log")
        os.rename(cfg.path, rotated)
        append(rotated, line(300) + line(301)[:10])  # still written through the old handle
        await asyncio.sleep(0.05)
        await write_lines(cfg.path, range(302, 600))
        append(rotated, line(301)[10:])
        await until(lambda: len(writer.ids()) == 600, what="600 lines")
    exactly_once(writer.ids(), range(600))
    ids = writer.ids()
    assert ids.index("id-301") < ids.index("id-302")  # the old file is finished first


async def test_rename_rotation_takes_an_unfinished_last_line_after_the_wait(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        append(cfg.path, line(1) + b'{"auditID":"id-2"}')
        await until(lambda: writer.ids() == ["id-1"])
        os.rename(cfg.path, cfg.path.with_name("audit-1.log"))
        append(cfg.path, line(3))
        await until(lambda: writer.ids() == ["id-1", "id-2", "id-3"])


async def test_two_rotations_while_behind_read_every_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    append(cfg.path, b"".join(line(n) for n in range(0, 10)))
    writer = FakeWriter()
    async with following(cfg, writer):
        await until(lambda: len(writer.ids()) == 10)
        writer.fail = True  # the follower is stuck while the log rotates twice
        await until(lambda: writer.calls > 0)
        append(cfg.path, b"".join(line(n) for n in range(10, 20)))
        await asyncio.sleep(0.2)
        os.rename(cfg.path, cfg.path.with_name("audit-1.log"))
        append(cfg.path, b"".join(line(n) for n in range(20, 30)))
        await asyncio.sleep(0.02)
        os.rename(cfg.path, cfg.path.with_name("audit-2.log"))
        append(cfg.path, b"".join(line(n) for n in range(30, 40)))
        writer.fail = False
        await until(lambda: len(writer.ids()) >= 40, what="40 lines")
    exactly_once(writer.ids(), range(40))


async def test_copytruncate_reads_the_rest_from_the_copy_then_from_zero(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await write_lines(cfg.path, range(0, 200))
        await until(lambda: len(writer.ids()) > 0)
        writer.fail = True  # hold the follower back so the copy has lines it did not read
        append(cfg.path, b"".join(line(n) for n in range(200, 300)))
        shutil.copyfile(cfg.path, cfg.path.with_name("audit.log.1"))
        os.truncate(cfg.path, 0)
        append(cfg.path, b"".join(line(n) for n in range(300, 1000)))  # regrows past the old size
        writer.fail = False
        await until(lambda: len(writer.ids()) >= 1000, what="1000 lines")
    exactly_once(writer.ids(), range(1000))


async def test_restart_resumes_at_the_checkpoint(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await write_lines(cfg.path, range(0, 100))
        await until(lambda: len(writer.ids()) == 100)
    append(cfg.path, b"".join(line(n) for n in range(100, 150)))
    async with following(cfg, writer):
        await write_lines(cfg.path, range(150, 200))
        await until(lambda: len(writer.ids()) >= 200)
    exactly_once(writer.ids(), range(200))


async def test_restart_after_a_rotation_finishes_the_rotated_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await write_lines(cfg.path, range(0, 100))
        await until(lambda: len(writer.ids()) == 100)
    append(cfg.path, b"".join(line(n) for n in range(100, 150)))
    os.rename(cfg.path, cfg.path.with_name("audit-2026-01-01T00-00-00.000.log"))
    append(cfg.path.with_name("audit-0000.log"), line(10_000))  # older rotation: not reread
    os.utime(cfg.path.with_name("audit-0000.log"), (1, 1))
    append(cfg.path, b"".join(line(n) for n in range(150, 200)))
    async with following(cfg, writer):
        await until(lambda: len(writer.ids()) >= 200)
        await asyncio.sleep(0.2)
    exactly_once(writer.ids(), range(200))
    assert writer.ids()[100:150] == [f"id-{n}" for n in range(100, 150)]


async def test_restart_after_copytruncate_reads_the_copy(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await write_lines(cfg.path, range(0, 100))
        await until(lambda: len(writer.ids()) == 100)
    append(cfg.path, b"".join(line(n) for n in range(100, 150)))
    shutil.copyfile(cfg.path, cfg.path.with_name("audit.log.1"))
    os.truncate(cfg.path, 0)
    append(cfg.path, b"".join(line(n) for n in range(150, 200)))
    async with following(cfg, writer):
        await until(lambda: len(writer.ids()) >= 200)
        await asyncio.sleep(0.2)
    exactly_once(writer.ids(), range(200))


async def test_unacknowledged_batches_are_not_checkpointed_and_are_retried(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer) as source:
        append(cfg.path, b"".join(line(n) for n in range(10)))
        await until(lambda: len(writer.ids()) == 10)
        acked = source.committed
        writer.fail = True
        append(cfg.path, b"".join(line(n) for n in range(10, 20)))
        await until(lambda: writer.calls > 3, what="retries")
        assert source.committed == acked and read_checkpoint(cfg.checkpoint) == acked
        writer.fail = False
        await until(lambda: len(writer.ids()) == 20)
    exactly_once(writer.ids(), range(20))


async def test_over_long_lines_are_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_event_bytes=1000, max_bytes=5000)
    huge = b'{"auditID":"huge","pad":"' + b"x" * 600_000 + b'"}\n'
    append(cfg.path, line(1) + line(2, pad=2000) + huge + line(3))
    writer = FakeWriter()
    async with following(cfg, writer) as source:
        await until(lambda: len(writer.ids()) == 2 and len(writer.dead) == 2)
        await until(
            lambda: (source.committed and source.committed.offset) == cfg.path.stat().st_size
        )
    assert writer.ids() == ["id-1", "id-3"]
    reasons = [d["reason"] for d in writer.dead]
    assert "over the 1000-byte per-event limit" in reasons[0]
    assert f"line of {len(huge) - 1} bytes" in reasons[1]
    assert "first 1000 bytes kept" in reasons[1]


async def test_missing_file_is_waited_for(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path)
    writer = FakeWriter()
    async with following(cfg, writer):
        await asyncio.sleep(0.6)
        append(cfg.path, line(1))
        await until(lambda: writer.ids() == ["id-1"])
    assert [r for r in caplog.records if "does not exist yet" in r.getMessage()].__len__() == 1


def test_unreadable_checkpoint_is_an_error_naming_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.checkpoint.parent.mkdir(parents=True)
    cfg.checkpoint.write_bytes(b"not json")
    with pytest.raises(ConfigError, match=str(cfg.checkpoint)):
        read_checkpoint(cfg.checkpoint)


def test_cli_reports_an_unreadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from klaxon.cli import main

    bad = tmp_path / "cp.json"
    bad.write_text("{}")
    code = main(
        ["ingest", "file", str(tmp_path / "audit.log"), "--checkpoint", str(bad),
         "--bootstrap", "127.0.0.1:1"]
    )  # fmt: skip
    assert code == 2
    assert str(bad) in capsys.readouterr().err


# -- with a broker ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def to_kafka(
    settings: Settings, cfg: FileConfig, timeout: float = 5.0
) -> AsyncIterator[tuple[FileSource, RawTopicWriter]]:
    """The follower writing to ``settings``' raw topic through a real `RawTopicWriter`."""
    bootstrap = settings.bootstrap_servers or ""
    writer = RawTopicWriter(
        bootstrap, settings.topic_raw, settings.topic_deadletter, timeout=timeout,
        probe_interval=0.3,
    )  # fmt: skip
    await writer.start()
    try:
        assert await writer.wait_ready(30), writer.last_error
        async with following(cfg, writer) as source:
            yield source, writer
    finally:
        await writer.stop()


async def raw_ids(settings: Settings) -> list[str]:
    records = await _read_topic(settings.bootstrap_servers or "", settings.topic_raw, 4)
    assert all(dict(r.headers)[CLUSTER_HEADER] == CLUSTER.encode() for r in records)
    return ids_of([r.value for r in records])


async def delivered(settings: Settings, count: int, timeout: float = 20.0) -> list[str]:
    """The ids in the raw topic once there are at least ``count`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    ids = await raw_ids(settings)
    while len(ids) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        ids = await raw_ids(settings)
    return ids


@pytest.fixture
async def tansu_settings(tansu: TansuBroker, tmp_path: Path) -> Settings:
    settings = isolated_settings(tansu.bootstrap_servers, tmp_path / "data", prefix="file.")
    await ensure_topics(tansu.bootstrap_servers, settings)
    return settings


async def test_kafka_lines_written_while_following_are_delivered(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    append(cfg.path, b"".join(line(n) for n in range(500)))
    async with to_kafka(tansu_settings, cfg):
        await write_lines(cfg.path, range(500, 1000))
        ids = await delivered(tansu_settings, 1000)
    exactly_once(ids, range(1000))


async def test_kafka_rename_rotation_during_writing(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    async with to_kafka(tansu_settings, cfg):
        for r in range(3):
            await write_lines(cfg.path, range(r * 400, r * 400 + 400), every=50)
            os.rename(cfg.path, cfg.path.with_name(f"audit-2026-01-01T00-00-0{r}.000.log"))
        await write_lines(cfg.path, range(1200, 1300))
        ids = await delivered(tansu_settings, 1300)
    exactly_once(ids, range(1300))


async def test_kafka_copytruncate_during_writing(tansu_settings: Settings, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with to_kafka(tansu_settings, cfg):
        for r in range(3):
            await write_lines(cfg.path, range(r * 400, r * 400 + 400), every=50)
            copy = cfg.path.with_name(f"audit.log.{r + 1}")
            shutil.copyfile(cfg.path, copy)
            os.truncate(cfg.path, 0)
        await write_lines(cfg.path, range(1200, 1300))
        ids = await delivered(tansu_settings, 1300)
    exactly_once(ids, range(1300))


async def test_kafka_restart_mid_stream_resumes_at_the_checkpoint(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    async with to_kafka(tansu_settings, cfg):
        await write_lines(cfg.path, range(0, 600), every=20)  # stopped while lines arrive
    append(cfg.path, b"".join(line(n) for n in range(600, 800)))
    async with to_kafka(tansu_settings, cfg):
        await write_lines(cfg.path, range(800, 1000))
        ids = await delivered(tansu_settings, 1000)
    exactly_once(ids, range(1000))


async def test_kafka_partial_line_is_delivered_only_when_completed(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    whole = line(1)
    append(cfg.path, line(0) + whole[:30])
    async with to_kafka(tansu_settings, cfg):
        assert await delivered(tansu_settings, 1) == ["id-0"]
        await asyncio.sleep(0.5)
        assert await raw_ids(tansu_settings) == ["id-0"]
        append(cfg.path, whole[30:])
        assert await delivered(tansu_settings, 2) == ["id-0", "id-1"]


async def test_kafka_broker_stopped_mid_run(tmp_path: Path) -> None:
    """Broker gone: the checkpoint stays at the last acknowledged batch; broker back (empty:
    memory storage): everything after that checkpoint is delivered."""
    port = free_port()
    broker = await TansuBroker(port=port).astart()
    try:
        settings = isolated_settings(broker.bootstrap_servers, tmp_path / "data", prefix="file.")
        await ensure_topics(broker.bootstrap_servers, settings)
        cfg = config(tmp_path)
        async with to_kafka(settings, cfg, timeout=1.0) as (source, _writer):
            await write_lines(cfg.path, range(0, 300))
            assert len(await delivered(settings, 300)) == 300
            await until(lambda: (source.committed and source.committed.offset) == _size(cfg))
            acked = source.committed
            assert acked is not None
            broker.stop()
            await write_lines(cfg.path, range(300, 600))
            await asyncio.sleep(2.5)  # several failed attempts
            assert source.committed == acked and read_checkpoint(cfg.checkpoint) == acked
            broker = await TansuBroker(port=port).astart()
            await ensure_topics(broker.bootstrap_servers, settings)
            await write_lines(cfg.path, range(600, 700))
            ids = await delivered(settings, 400, timeout=40)
            await until(lambda: (source.committed and source.committed.offset) == _size(cfg), 20)
        exactly_once(ids, range(300, 700))
    finally:
        broker.stop()


def _size(cfg: FileConfig) -> int:
    return cfg.path.stat().st_size
