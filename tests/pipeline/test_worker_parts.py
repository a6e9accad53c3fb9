"""Worker parts that need no broker: hot reload, delivery guard, health, status command, app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from klaxon.cli import build_parser, main
from pipeline.app import DeliveryGuard, create_app
from pipeline.config import Settings
from pipeline.errors import DeliveryError
from pipeline.metrics import Counters, health_snapshot, snapshot_problems
from pipeline.reload import EngineHolder, RuleWatcher, build_engine, fingerprint
from tests.pipeline.conftest import RULES

BROKEN = "title: broken\nid: not-a-uuid\ndetection: {}\n"


def touch_later(path: Path, text: str) -> None:
    """Write ``text`` with an mtime surely different from the previous write."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


async def test_a_changed_rule_file_swaps_in_a_new_engine(rules_dir: Path) -> None:
    """Editing a rule file builds and installs a new engine on the next check."""
    engine, count = build_engine([rules_dir], [])
    holder = EngineHolder(engine, count)
    watcher = RuleWatcher(holder, [rules_dir], [])
    await watcher.prime()
    assert await watcher.check() is False  # nothing changed
    (rules_dir / "pod-exec.yml").unlink()
    assert await watcher.check() is True
    assert holder.engine is not engine and holder.rules == count - 1
    assert holder.generation == 1


async def test_a_broken_rule_file_logs_every_problem_and_keeps_the_engine(
    rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule edit that does not load is logged problem by problem; the old engine stays."""
    engine, count = build_engine([rules_dir], [])
    holder = EngineHolder(engine, count)
    results: list[bool] = []
    watcher = RuleWatcher(holder, [rules_dir], [], on_result=results.append)
    await watcher.prime()
    touch_later(rules_dir / "bad.yml", BROKEN)
    with caplog.at_level(logging.ERROR, logger="klaxon.reload"):
        assert await watcher.check() is False
    assert holder.engine is engine and holder.generation == 0
    assert results == [False]
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rule problem")]
    assert problems and all("bad.yml" in p for p in problems)
    # not retried until the files change again; fixing the file reloads
    assert await watcher.check() is False and results == [False]
    (rules_dir / "bad.yml").unlink()
    assert await watcher.check() is True and results == [False, True]


async def test_hot_reload_keeps_the_rule_selection(rules_dir: Path) -> None:
    """Disabled rules stay disabled in every engine the watcher builds, and a reloaded
    engine counts only enabled rules."""
    from detections.selection import RuleSelection
    from pipeline.reload import engine_builder

    everything, total = build_engine([rules_dir], [])
    builder = engine_builder(RuleSelection.parse(disable=["level:high"]))
    engine, count = builder([rules_dir], [])
    high = {r.id for r in everything.ruleset.rules if r.level == "high"}
    assert high and count == total - len(high)
    holder = EngineHolder(engine, count)
    watcher = RuleWatcher(holder, [rules_dir], [], builder=builder)
    await watcher.prime()
    for path in rules_dir.glob("*.yml"):  # every file edited (rewritten, newer mtime)
        touch_later(path, path.read_text())
    assert await watcher.check() is True and holder.generation == 1
    assert not high & {r.id for r in holder.engine.ruleset.rules}
    assert holder.rules == count


def test_fingerprint_sees_additions_edits_and_deletions(tmp_path: Path) -> None:
    """Adding, editing or deleting a YAML file changes the fingerprint; other files do not."""
    (tmp_path / "a.yml").write_text("a")
    first = fingerprint([tmp_path])
    (tmp_path / "notes.txt").write_text("ignored")
    assert fingerprint([tmp_path]) == first
    touch_later(tmp_path / "a.yml", "b")
    second = fingerprint([tmp_path])
    assert second != first
    (tmp_path / "a.yml").unlink()
    assert fingerprint([tmp_path]) not in (first, second)


def configmap_volume(folder: Path, files: dict[str, str], version: str) -> None:
    """Lay ``files`` out as the kubelet does for a ConfigMap volume: the data in
    ``..<version>/``, ``..data`` linking to it and each name linking through ``..data``; an
    update writes a new version folder and swaps ``..data`` atomically."""
    data = folder / f"..{version}"
    data.mkdir(parents=True)
    for name, text in files.items():
        (data / name).write_text(text)
    link = folder / "..data_tmp"
    link.symlink_to(data.name)
    link.replace(folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(Path("..data") / name)


async def test_a_configmap_volume_is_read_once_and_its_update_reloads(tmp_path: Path) -> None:
    """Rules mounted from a ConfigMap (the Helm chart) load once, not once per copy in the
    kubelet's hidden folders, and an update of the ConfigMap swaps in a new engine."""
    rule = (RULES / "pod-exec.yml").read_text()
    folder = tmp_path / "rules"
    configmap_volume(folder, {"pod-exec.yml": rule}, "2026_12_05_10_00_00.1")
    engine, count = build_engine([folder], [])
    assert count == 1  # without the hidden folders left out: a duplicate id, no engine
    holder = EngineHolder(engine, count)
    watcher = RuleWatcher(holder, [folder], [])
    await watcher.prime()
    assert await watcher.check() is False
    edited = rule.replace("level: high", "level: critical")
    configmap_volume(folder, {"pod-exec.yml": edited}, "2026_12_05_10_05_00.2")
    assert await watcher.check() is True
    assert holder.engine is not engine and holder.generation == 1


async def test_delivery_guard_refuses_to_pass_after_a_failed_send() -> None:
    """A failed send makes check() raise, which Faust hits before committing offsets."""
    guard = DeliveryGuard()
    loop = asyncio.get_running_loop()
    ok, bad = loop.create_future(), loop.create_future()
    guard.track(ok)
    guard.track(bad)
    ok.set_result(None)
    bad.set_exception(RuntimeError("broker said no"))
    with pytest.raises(DeliveryError, match="broker said no"):
        await guard.check()


async def test_delivery_guard_waits_for_sends_in_flight() -> None:
    """check() returns only after tracked sends complete."""
    guard = DeliveryGuard()
    fut = asyncio.get_running_loop().create_future()
    guard.track(fut)
    asyncio.get_running_loop().call_later(0.05, fut.set_result, None)
    await guard.check()
    assert fut.done() and not guard.pending


def test_app_flush_checks_the_delivery_guard() -> None:
    """The app's producer flush (awaited by Faust before each commit) fails after a bad send."""
    app = create_app(Settings(bootstrap_servers="127.0.0.1:1"))
    app.delivery.poison(RuntimeError("lost"))

    async def flush() -> None:
        producer = app._new_producer()
        producer._producer = None  # never started: the original flush has nothing to send
        await producer.flush()

    with pytest.raises(DeliveryError):
        asyncio.run(flush())


def test_health_is_recovering_while_the_state_is_read_back() -> None:
    """Streams wait for the recovery: recovering, which a probe takes as healthy, and which a
    stall or a broker outage outranks."""

    def status(**kw: object) -> str:
        snap = health_snapshot(
            Counters(), lag={}, since_last=None, now=1.0, started=0.0, rules=1, interval=5.0,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        return str(snap["status"])

    assert status(recovering=True) == "recovering"
    assert status(recovering=True, broker="unknown") == "recovering"  # it reads: Kafka answers
    assert status(broker="unknown") == "starting"
    assert status(recovering=True, stalled=["raw:0"]) == "stalled"
    assert status(recovering=True, broker="unreachable") == "degraded"
    assert snapshot_problems({"status": "recovering", "interval_s": 5}, age=1) == []


def test_app_never_declares_topics_nor_serves_web() -> None:
    """The Faust app is configured not to create topics and not to open a web port."""
    conf = create_app(Settings(bootstrap_servers="127.0.0.1:1")).conf
    assert conf.topic_allow_declare is False and conf.topic_disable_leader is True
    assert conf.web_enabled is False and conf.value_serializer == "raw"
    assert conf.broker_session_timeout <= 10 and conf.producer_acks == -1


def test_health_is_stalled_when_a_partition_commit_does_not_move() -> None:
    """A partition the watchdog reports stalled makes the worker stalled, not ok; a broker
    that does not answer makes it degraded (an outage is not a stall)."""

    def status(**kw: object) -> str:
        snap = health_snapshot(
            Counters(),
            lag={"t:0": 5},
            since_last=1.0,
            now=10.0,
            started=0.0,
            rules=1,
            interval=30.0,
            **kw,  # type: ignore[arg-type]
        )
        return str(snap["status"])

    assert status(stalled=["t:0"], stalled_for=61.0) == "stalled"
    assert status(broker="unreachable") == "degraded"
    assert status() == "ok"


def test_status_command_fails_on_stalled_but_not_on_degraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klaxon status` exits 1 for a stalled worker (restart it) and 0 for a degraded one
    (restarting it does not bring the broker back)."""
    path = tmp_path / "status.json"
    for kw, code in (({"stalled": ["raw:0"]}, 1), ({"broker": "unreachable"}, 0)):
        snap = health_snapshot(
            Counters(),
            lag={"raw:0": 3},
            since_last=1.0,
            now=5.0,
            started=0.0,
            rules=2,
            interval=1.0,
            **kw,  # type: ignore[arg-type]
        )
        path.write_text(json.dumps(snap))
        assert main(["status", str(path)]) == code
    assert "stalled" in capsys.readouterr().err


def test_status_command_reports_a_fresh_snapshot_and_fails_on_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klaxon status FILE` exits 0 on a fresh ok snapshot and 1 on a stale one."""
    snap = health_snapshot(
        Counters(events_in=3, normalised=3),
        lag={},
        since_last=1.0,
        now=5.0,
        started=0.0,
        rules=2,
        interval=1.0,
    )
    path = tmp_path / "status.json"
    path.write_text(json.dumps(snap))
    assert main(["status", str(path)]) == 0
    assert "in 3" in capsys.readouterr().out
    old = time.time() - 60
    os.utime(path, (old, old))
    assert main(["status", str(path)]) == 1
    assert "old" in capsys.readouterr().err


def test_cli_has_the_pipeline_commands() -> None:
    """worker, status, demo, up, topics and replay are klaxon subcommands."""
    parser = build_parser()
    for argv in (
        ["worker"],
        ["status", "f"],
        ["demo"],
        ["up"],
        ["topics", "create"],
        ["replay", "f"],
    ):
        assert callable(parser.parse_args(argv).func)


def test_worker_without_cluster_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klaxon worker` with no bootstrap exits 2 and points to `klaxon up`."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["worker"]) == 2
    assert "klaxon up" in capsys.readouterr().err


def test_demo_table_row_shows_time_severity_rule_user_object_attack() -> None:
    """A demo row carries the alert's time, severity, rule, user, object and techniques."""
    from klaxon.demo import format_row
    from schemas.alert import example_alert

    row = format_row(example_alert())
    for part in (
        "13:58:49",
        "high",
        "Privileged container created",
        "minikube-user",
        "default/nginx",
        "T1611",
    ):
        assert part in row


def test_demo_table_row_shows_how_many_matches_a_grouped_alert_covers() -> None:
    """An update of a group shows its count; an alert without a group (stateful) a dash."""
    from klaxon.demo import format_row
    from schemas.alert import example_alert

    alert = example_alert()
    alert["group"] = {**alert["group"], "count": 42, "update": 2}
    assert "  high      42     Privileged" in format_row(alert)
    del alert["group"]
    assert "  high      -      Privileged" in format_row(alert)


def test_worker_consumer_fetch_wait_is_lowered_from_fausts_fixed_1500_ms() -> None:
    """The Kafka consumer Faust builds waits at most 50 ms per fetch (Tansu waits it out)."""
    app = create_app(Settings(bootstrap_servers="127.0.0.1:1"))

    async def build() -> int:
        consumer = app._new_consumer()
        aio = consumer._thread._create_worker_consumer(app.transport)
        wait: int = aio._fetch_max_wait_ms
        return wait

    assert asyncio.run(build()) == 50


def _grouping_runtime(holder: EngineHolder) -> tuple[Any, list[dict[str, Any]]]:
    """A worker `Runtime` with the grouper and one in-memory sink; the sink's alerts."""
    from collections.abc import Sequence
    from typing import ClassVar

    from detections.alert import to_alert
    from detections.grouping import Grouper
    from pipeline.agents import Runtime
    from pipeline.app import WorkerOptions
    from pipeline.processing import Outgoing, Source
    from pipeline.sinks import FORMATS, AlertSink

    got: list[dict[str, Any]] = []

    class Memory(AlertSink):
        name: ClassVar[str] = "memory"

        async def send(self, alerts: Sequence[Outgoing], source: Source) -> int:
            got.extend(a.doc or {} for a in alerts)
            return 0

    settings = Settings(idle_grace=60.0)
    rt = Runtime(settings, WorkerOptions(), holder, 1, to_alert, sinks=[Memory(FORMATS["native"])])
    rt.grouper = Grouper(settings.group_options())
    return rt, got


async def test_the_worker_groups_a_messages_alerts_and_closes_groups_when_idle() -> None:
    """`group_alerts`: 12 matches of one rule on one key in a message are 2 alerts (first,
    update at 10) under the group's ids; `GroupIdle`: after the idle grace without input the
    watermark follows the clock and the closing update (count 12) goes to the sinks."""
    import orjson

    from detections.fixtures import fixture_event
    from detections.grouping import update_id
    from pipeline.agents import GroupIdle, group_alerts
    from pipeline.processing import Outgoing

    engine, _ = build_engine([RULES], [])
    holder = EngineHolder(engine, len(engine.ruleset.rules))
    rt, sent = _grouping_runtime(holder)
    events = [
        fixture_event(
            {
                "auditID": f"00000000-0000-0000-0000-{i:012d}",
                "verb": "create",
                "objectRef": {"resource": "pods", "subresource": "exec", "name": "web-0"},
                "requestURI": "/api/v1/namespaces/shop/pods/web-0/exec?command=%2Fbin%2Fsh",
                "stage": "ResponseStarted",
                "responseStatus": {"code": 101},
                "stageTimestamp": f"2026-11-27T09:15:{i:02d}.000000Z",
            }
        )
        for i in range(12)
    ]
    matches = [m for m in engine.evaluate_batch(events)]
    rule_ids = {m.rule.id for m in matches}
    assert len(matches) == 12 * len(rule_ids) and rule_ids
    docs = [rt.to_alert(m) for m in matches]
    outgoing = [Outgoing(d["id"].encode(), orjson.dumps(d), doc=d) for d in docs]
    out = group_alerts(rt, outgoing, "2026-11-27T09:15:11.000000Z", 0)
    assert len(out) == 2 * len(rule_ids)
    for o in out:
        assert o.doc is not None and o.key == o.doc["id"].encode()
        assert o.doc["id"] == update_id(o.doc["group"]["id"], o.doc["group"]["update"])
    now = [0.0]
    idle = GroupIdle(rt, clock=lambda: now[0])
    await idle.tick()  # input came since the last look: nothing
    now[0] = 30.0
    await idle.tick()
    assert sent == []
    now[0] = 800.0  # idle past the grace: the window (and lateness) has passed
    await idle.tick()
    assert {a["group"]["count"] for a in sent} == {12}
    assert len(sent) == len(rule_ids)


def test_a_failing_grouper_lets_the_alerts_through_ungrouped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Grouping is an optimisation of the output: a bug in it must not lose an alert."""
    import orjson

    from detections.grouping import Grouper
    from pipeline.agents import group_alerts
    from pipeline.processing import Outgoing

    engine, _ = build_engine([RULES], [])
    rt, _ = _grouping_runtime(EngineHolder(engine, len(engine.ruleset.rules)))

    class Broken(Grouper):
        def add(self, alerts: list[dict[str, Any]], latest: Any = None) -> list[dict[str, Any]]:
            raise RuntimeError("bug")

    rt.grouper = Broken()
    alert = {"id": "a1", "severity": "high"}
    out = [Outgoing(b"a1", orjson.dumps(alert), doc=alert)]
    assert group_alerts(rt, out, "2026-11-27T09:15:00Z") == out
    assert "alert grouping failed" in caplog.text


@pytest.fixture
def restore_loop_policy() -> Any:
    yield
    asyncio.set_event_loop_policy(None)


def test_worker_loop_is_uvloop_in_every_thread_by_default(restore_loop_policy: Any) -> None:
    """``--event-loop uvloop`` (the default) makes the worker's loop and, through the policy,
    the one Faust's Kafka consumer thread creates, uvloop's."""
    import threading

    uvloop = pytest.importorskip("uvloop")
    from pipeline.worker import new_event_loop

    loop = new_event_loop()
    kinds: list[type[Any]] = []

    def in_thread() -> None:
        other = asyncio.new_event_loop()
        kinds.append(type(other))
        other.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    try:
        assert isinstance(loop, uvloop.Loop) and kinds == [uvloop.Loop]
    finally:
        loop.close()


def test_worker_loop_is_asyncios_when_asked_or_without_uvloop(
    restore_loop_policy: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``--event-loop asyncio`` gives asyncio's loop; so does a missing uvloop, said in the log."""
    import sys

    from pipeline.worker import new_event_loop

    loop = new_event_loop("asyncio")
    assert type(loop).__module__.startswith("asyncio.")
    loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="klaxon.worker"):
        loop = new_event_loop("uvloop")
    assert type(loop).__module__.startswith("asyncio.")
    assert "uvloop is not installed" in caplog.text
    loop.close()
    assert asyncio.get_event_loop_policy().__class__.__module__.startswith("asyncio")


def test_event_loop_flag_reaches_the_worker_options() -> None:
    """``klaxon worker --event-loop asyncio`` is in `WorkerOptions`; uvloop by default."""
    from pipeline.cli import options_from_args

    parser = build_parser()
    args = parser.parse_args(["worker", "--event-loop", "asyncio"])
    assert options_from_args(args).event_loop == "asyncio"
    assert options_from_args(parser.parse_args(["worker"])).event_loop == "uvloop"


def test_the_wedge_check_reaches_a_live_broker_with_a_new_client(broker: str) -> None:
    """`broker_answers` (the watchdog's ``fresh_probe``) bootstraps a new client against the
    worker's own brokers and closes it; a port nobody listens on raises."""
    from pipeline.agents import broker_answers
    from pipeline.brokers import free_port

    live = Settings(bootstrap_servers=broker)
    asyncio.run(broker_answers(create_app(live), live, timeout=10))
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(Exception, match="Unable to bootstrap"):
        asyncio.run(broker_answers(create_app(dead), dead, timeout=5))
