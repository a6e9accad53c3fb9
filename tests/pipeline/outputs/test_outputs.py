"""Each output against a local server of its protocol that fails, then recovers.

The runner's core (`OutputRunner.handle`) gets alert-topic records and must return only when
every one is delivered, filtered out or dead-lettered: retried with exponential backoff while
the server is down or busy, nothing lost, nothing delivered twice by the retries, the alerts the
server refuses for good (and only those) dead-lettered with the server's reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.outputs import OUTPUTS, Output
from pipeline.outputs.config import OutputConfig
from pipeline.outputs.runner import OutputRunner, Record
from tests.pipeline.outputs.servers import POISON, TOKEN, FlakyServer, free_port, wait_for
from tests.pipeline.sinks.pack_alerts import rule_alerts

ALERTS = list(rule_alerts().values())[:40]
FAST_RETRY = {"initial": 0.02, "factor": 2.0, "max_delay": 0.2}


def records(alerts: list[dict[str, Any]], start: int = 0) -> list[Record]:
    """Alert-topic records (partition 0, consecutive offsets)."""
    return [
        Record("klaxon.alerts", 0, start + i, a["id"].encode(), orjson.dumps(a))
        for i, a in enumerate(alerts)
    ]


def poisoned(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert the server refuses for good (its rule id is the server's poison)."""
    return {
        **alert,
        "id": "0b0f6a3e-0000-5000-8000-00000000dead",
        "rule": {**alert["rule"], "id": POISON},
    }


def output_for(server: FlakyServer, monkeypatch: pytest.MonkeyPatch, **config: Any) -> Output:
    monkeypatch.setenv("TEST_OUTPUT_TOKEN", TOKEN)
    extra = {"index": "klaxon-alerts"} if server.kind == "elasticsearch" else {}
    token = {} if server.kind == "slack" else {"token_env": "TEST_OUTPUT_TOKEN"}
    cfg = OutputConfig.model_validate(
        {
            "name": f"t-{server.kind}",
            "type": server.kind,
            "url": server.url,
            "retry": FAST_RETRY,
            **token,
            **extra,
            **config,
        }
    )
    return OUTPUTS[server.kind](cfg)


class Letters:
    """The dead-letter path: records what the runner hands it."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []

    async def __call__(self, letters: list[tuple[Record, bytes]], output: str) -> None:
        self.letters += [orjson.loads(v) for _, v in letters]


def accepted_ids(server: FlakyServer) -> list[str]:
    """Alert ids the server accepted, in order, read from each protocol's documents."""
    if server.kind == "splunk_hec":
        return [e["event"]["id"] for e in server.accepted]
    if server.kind == "elasticsearch":
        return [d["event"]["id"] for d in server.accepted]
    if server.kind == "webhook":
        return [d.get("id") or d["output_fields"]["klaxon.alert.id"] for d in server.accepted]
    raise AssertionError(server.kind)


@pytest.mark.parametrize("kind", ["splunk_hec", "elasticsearch", "webhook"])
async def test_an_output_that_fails_then_recovers_gets_every_alert_once(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy for three requests: retried with growing delays, then every alert delivered once,
    and the one alert the server refuses for good is a dead letter with its reason."""
    server = await FlakyServer(kind, fail_first=3).start()
    letters = Letters()
    alerts = [*ALERTS[:20], poisoned(ALERTS[20]), *ALERTS[21:]]
    runner = OutputRunner(output_for(server, monkeypatch, batch={"max_alerts": 16}), letters)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.wait_for(runner.handle(http, records(alerts)), 30)
    finally:
        await server.stop()
    delivered = accepted_ids(server)
    assert sorted(delivered) == sorted(a["id"] for a in alerts if a["rule"]["id"] != POISON)
    assert len(delivered) == len(set(delivered))  # retries never delivered twice
    (letter,) = letters.letters
    assert letter["source"] == {"topic": "klaxon.alerts", "partition": 0, "offset": 20}
    assert f"output t-{kind}: refused: HTTP 4" in letter["reason"]
    assert (
        orjson.loads(base64.b64decode(letter["original_b64"])) == alerts[20]
    )  # the alert itself, to resend later
    stats = runner.stats
    assert stats.retries >= 3 and stats.delays[:3] == [0.02, 0.04, 0.08]  # exponential
    assert (stats.delivered, stats.dead_lettered) == (len(alerts) - 1, 1)
    assert server.unauthorised == 0


async def test_elasticsearch_counts_a_redelivered_alert_as_stored() -> None:
    """A second delivery of the same alert is a 409 on its id: stored once, not refused."""
    mp = pytest.MonkeyPatch()
    server = await FlakyServer("elasticsearch").start()
    letters = Letters()
    runner = OutputRunner(output_for(server, mp), letters)
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, records(ALERTS[:5]))
            await runner.handle(http, records(ALERTS[:5]))  # as after a crash before commit
    finally:
        await server.stop()
        mp.undo()
    assert len(server.accepted) == 5 and letters.letters == []


async def test_an_output_that_is_down_is_retried_until_it_comes_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connection refused (nothing listening yet) is retried; once it listens, all arrive."""
    port = free_port()
    server = FlakyServer("webhook", port=port)
    runner = OutputRunner(output_for(server, monkeypatch), Letters())
    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(runner.handle(http, records(ALERTS[:10])))
        await wait_for(lambda: runner.stats.retries >= 3)
        assert not task.done() and "ClientConnectorError" in runner.stats.last_error
        await server.start()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            await server.stop()
    assert accepted_ids(server) == [a["id"] for a in ALERTS[:10]]


async def test_slack_rate_limit_is_honoured_and_each_batch_is_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """429 with Retry-After is retried after at least that long; one message per batch."""
    server = await FlakyServer("slack", fail_first=2).start()
    runner = OutputRunner(output_for(server, monkeypatch, batch={"max_alerts": 5}), Letters())
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, records(ALERTS[:10]))
    finally:
        await server.stop()
    assert [len(m["text"].splitlines()) for m in server.accepted] == [5, 5]
    assert all(d >= 0.05 for d in runner.stats.delays)
    assert ALERTS[0]["rule"]["title"] in server.accepted[0]["text"]


async def test_the_falco_shape_reaches_a_falcosidekick_style_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """shape: falco posts Falco's fields (output, priority, rule, time, output_fields, ...)."""
    server = await FlakyServer("webhook").start()
    runner = OutputRunner(output_for(server, monkeypatch, shape="falco"), Letters())
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, records(ALERTS[:3]))
    finally:
        await server.stop()
    doc = server.accepted[0]
    assert set(doc) == {
        "output",
        "priority",
        "rule",
        "time",
        "output_fields",
        "source",
        "tags",
        "hostname",
    }
    assert doc["priority"] in {"Critical", "Error", "Warning", "Notice", "Informational"}
    assert doc["rule"] == ALERTS[0]["rule"]["title"] and doc["source"] == "k8s_audit"


async def test_filters_choose_what_an_output_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """min_severity, rules and namespaces filter; filtered alerts are counted, not sent."""
    server = await FlakyServer("webhook").start()
    wanted_rule = ALERTS[0]["rule"]["id"]
    runner = OutputRunner(
        output_for(server, monkeypatch, min_severity="high", exclude_rules=[wanted_rule]),
        Letters(),
    )
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, records(ALERTS))
    finally:
        await server.stop()
    expected = [
        a["id"]
        for a in ALERTS
        if a["severity"] in ("high", "critical") and a["rule"]["id"] != wanted_rule
    ]
    assert accepted_ids(server) == expected and expected
    assert runner.stats.filtered == len(ALERTS) - len(expected)


async def test_a_record_that_is_not_an_alert_is_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Garbage on the alert topic is dead-lettered, never sent, never blocking the rest."""
    server = await FlakyServer("webhook").start()
    letters = Letters()
    runner = OutputRunner(output_for(server, monkeypatch), letters)
    garbage = Record("klaxon.alerts", 0, 7, None, b"\x00not json")
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, [garbage, *records(ALERTS[:2], start=8)])
    finally:
        await server.stop()
    assert len(server.accepted) == 2
    assert "not an alert" in letters.letters[0]["reason"]


async def test_max_attempts_dead_letters_what_was_never_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With retry.max_attempts, alerts a server never took become dead letters (opt-in)."""
    server = await FlakyServer("webhook", fail_first=1000).start()
    letters = Letters()
    retry = {**FAST_RETRY, "max_attempts": 3}
    runner = OutputRunner(output_for(server, monkeypatch, retry=retry), letters)
    try:
        async with aiohttp.ClientSession() as http:
            await runner.handle(http, records(ALERTS[:2]))
    finally:
        await server.stop()
    assert len(letters.letters) == 2
    assert "not taken after 3 attempts: HTTP 500" in letters.letters[0]["reason"]


async def test_tokens_are_sent_but_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The token reaches the server in its protocol's header and appears in no log line,
    nor does a chat webhook URL (itself a credential)."""
    caplog.set_level(logging.DEBUG)
    server = await FlakyServer("slack", fail_first=1).start()
    monkeypatch.setenv("TEST_SLACK_URL", server.url)
    cfg = OutputConfig(name="chat", type="slack", url_env="TEST_SLACK_URL", retry=FAST_RETRY)  # type: ignore[arg-type]
    hec = await FlakyServer("splunk_hec", fail_first=1).start()
    runners = [
        OutputRunner(OUTPUTS["slack"](cfg), Letters()),
        OutputRunner(output_for(hec, monkeypatch), Letters()),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for r in runners:
                await r.handle(http, records(ALERTS[:2]))
    finally:
        await server.stop()
        await hec.stop()
    assert server.accepted and hec.accepted and hec.unauthorised == 0
    ours = "\n".join(  # the client side: the stand-in servers' access logs are not ours
        r.getMessage() for r in caplog.records if r.name != "aiohttp.access"
    )
    assert "retry 1" in ours
    assert TOKEN not in ours
    assert "/services/T000" not in ours
    assert TOKEN not in repr(runners[1].output.token) and TOKEN not in repr(runners[1].config)


async def test_a_google_secops_style_feed_gets_batches_with_its_credential_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``body: ndjson`` posts a batch as newline-separated JSON, and ``secret_headers`` adds
    credential headers read from the environment (SecOps' API key and feed secret)."""
    from aiohttp import web

    got: list[tuple[dict[str, str], bytes]] = []

    async def feed(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/feed", feed)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("SECOPS_API_KEY", "api-key-1")
    monkeypatch.setenv("SECOPS_FEED_SECRET", "feed-secret-2")
    cfg = OutputConfig.model_validate(
        {
            "name": "secops",
            "type": "webhook",
            "url": f"http://127.0.0.1:{port}/v1/feed",
            "format": "ocsf",
            "body": "ndjson",
            "batch": {"max_alerts": 4},
            "secret_headers": {
                "X-goog-api-key": "SECOPS_API_KEY",
                "X-Webhook-Access-Key": "SECOPS_FEED_SECRET",
            },
        }
    )
    try:
        async with aiohttp.ClientSession() as http:
            await OutputRunner(OUTPUTS["webhook"](cfg), Letters()).handle(http, records(ALERTS[:8]))
    finally:
        await runner.cleanup()
    assert len(got) == 2
    headers, body = got[0]
    assert headers["X-goog-api-key"] == "api-key-1"
    assert headers["X-Webhook-Access-Key"] == "feed-secret-2"
    findings = [orjson.loads(line) for line in body.splitlines()]
    assert [f["class_uid"] for f in findings] == [2004] * 4
    assert "feed-secret-2" not in repr(cfg)


def test_hec_wraps_another_format_in_an_envelope_with_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """format: ocsf on HEC: the finding is the event, sourcetype klaxon:ocsf, _time kept."""
    monkeypatch.setenv("TEST_OUTPUT_TOKEN", TOKEN)
    cfg = OutputConfig.model_validate(
        {
            "name": "s",
            "type": "splunk_hec",
            "url": "http://127.0.0.1:1",
            "format": "ocsf",
            "token_env": "TEST_OUTPUT_TOKEN",
            "index": "k8s",
        }
    )
    (env,) = OUTPUTS["splunk_hec"](cfg).envelopes([ALERTS[0]])  # type: ignore[attr-defined]
    assert env["sourcetype"] == "klaxon:ocsf" and env["index"] == "k8s"
    assert env["event"]["class_uid"] == 2004 and env["time"] * 1000 == env["event"]["time"]
