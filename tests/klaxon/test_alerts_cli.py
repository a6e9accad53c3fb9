"""`klaxon alerts tail|stats`: the alert topic read by a person, filtered and counted."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from klaxon.alerts_cli import AlertFilter, AlertStats, parse_time
from klaxon.cli import main
from pipeline.brokers import TansuBroker
from pipeline.config import isolated_settings
from schemas.alert import example_alert

HOUR = 3600.0


def alert(n: int, **changes: Any) -> dict[str, Any]:
    """The example alert with its own id and the given top-level changes."""
    a = copy.deepcopy(example_alert())
    a["id"] = f"00000000-0000-5000-8000-{n:012d}"
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(a.get(key), dict):
            a[key].update(value)
        else:
            a[key] = value
    return a


EXEC = {"id": "exec-rule", "title": "Command executed in a container", "level": "medium"}
ALERTS = [
    alert(1),  # high, privileged, T1611, default, minikube-user
    alert(2, severity="medium", rule=EXEC, object={"namespace": "shop"},
          attack={"tactics": [], "techniques": [{"id": "T1609", "name": "x"}]},
          user={"username": "system:serviceaccount:ci:deployer"}),
    alert(3, severity="critical", attack={"tactics": [], "techniques": [
        {"id": "T1552.007", "name": "Container API"}]}),
]  # fmt: skip


def test_filters_combine_and_alternatives_widen() -> None:
    """Values of one filter are alternatives; different filters must all hold."""
    ids = lambda f: [a["id"][-1] for a in ALERTS if f.matches(a)]  # noqa: E731
    assert ids(AlertFilter()) == ["1", "2", "3"]
    assert ids(AlertFilter(min_severity="high")) == ["1", "3"]
    assert ids(AlertFilter(severities=("medium", "critical"))) == ["2", "3"]
    assert ids(AlertFilter(techniques=("T1552",))) == ["3"]  # sub-techniques of T1552
    assert ids(AlertFilter(rules=("exec-rule",))) == ["2"]
    assert ids(AlertFilter(rules=("PRIVILEGED",))) == ["1", "3"]
    assert ids(AlertFilter(namespaces=("shop",))) == ["2"]
    assert ids(AlertFilter(principals=("system:serviceaccount:ci:*",))) == ["2"]
    assert ids(AlertFilter(principals=("minikube-user",), min_severity="critical")) == ["3"]


def test_stats_count_by_rule_severity_and_technique() -> None:
    """Every alert counts once per rule and severity and once per technique."""
    stats = AlertStats()
    for i, a in enumerate(ALERTS):
        stats.add(a, at=1000.0 + i)
    doc = stats.document(0, 2000)
    assert doc["alerts"] == 3
    assert doc["by_severity"] == {"critical": 1, "high": 1, "medium": 1}
    assert list(doc["by_severity"]) == ["critical", "high", "medium"]  # worst first
    assert doc["by_rule"][0] == {
        "id": ALERTS[0]["rule"]["id"],
        "title": "Privileged container created",
        "count": 2,
    }
    assert doc["by_technique"] == {"T1611": 1, "T1609": 1, "T1552.007": 1}


def test_times_are_durations_or_iso() -> None:
    """`--since 2h` is two hours back; ISO times without a zone are UTC."""
    assert parse_time("90m", 10_000.0) == 10_000.0 - 5400
    assert parse_time("2026-12-05T10:00:00", 0) == parse_time("2026-12-05T10:00:00+00:00", 0)


# --- on a broker ---------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, records: list[tuple[dict[str, Any], float]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, (doc, at) in enumerate(records):
            await producer.send_and_wait(
                topic, json.dumps(doc).encode(), key=doc["id"].encode(), partition=i % 4,
                timestamp_ms=int(at * 1000),
            )  # fmt: skip
        await producer.send_and_wait(topic, b"not an alert", partition=0)
    finally:
        await producer.stop()


@pytest.fixture
def alert_topic(tansu: TansuBroker, tmp_path: Path) -> tuple[str, str]:
    """A fresh alert topic on Tansu holding ALERTS: two written two hours ago, one now,
    and one record that is not an alert."""
    from pipeline.topics import ensure_topics

    settings = isolated_settings(tansu.bootstrap_servers, tmp_path, prefix="alerts-cli.")
    asyncio.run(ensure_topics(tansu.bootstrap_servers, settings))
    now = time.time()
    records = [(ALERTS[0], now - 2 * HOUR), (ALERTS[1], now - 2 * HOUR), (ALERTS[2], now)]
    asyncio.run(_produce(tansu.bootstrap_servers, settings.topic_alerts, records))
    return tansu.bootstrap_servers, settings.topic_alerts


def test_tail_from_the_beginning_filters_and_prints_json(
    alert_topic: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` prints native alerts, only those the filters pass; the topic's other
    records are skipped; `--idle` ends the command."""
    bootstrap, topic = alert_topic
    argv = ["alerts", "tail", "--bootstrap", bootstrap, "--topic", topic, "--from-beginning"]
    assert main([*argv, "--json", "--min-severity", "high", "--idle", "2"]) == 0
    got = sorted(json.loads(line)["id"] for line in capsys.readouterr().out.splitlines())
    assert got == sorted([ALERTS[0]["id"], ALERTS[2]["id"]])
    assert main([*argv, "--principal", "system:serviceaccount:ci:*", "--limit", "1"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["TIME", "SEVERITY", "COUNT", "RULE"] and "Command executed" in row


def test_tail_previews_a_registered_format_and_refuses_unknown_ones(
    alert_topic: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format NAME` encodes with `pipeline.sinks.formats.FORMATS`; a name not there is a
    usage error that lists the known ones."""
    bootstrap, topic = alert_topic
    argv = ["alerts", "tail", "--bootstrap", bootstrap, "--topic", topic, "--from-beginning"]
    assert main([*argv, "--format", "native", "--rule", "exec-rule", "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == ALERTS[1]
    assert main([*argv, "--format", "ocsf", "--rule", "exec-rule", "--limit", "1"]) == 0
    finding = json.loads(capsys.readouterr().out)
    assert finding["class_uid"] == 2004 and finding["finding_info"]["uid"]
    assert main([*argv, "--format", "nope"]) == 2
    assert "unknown format 'nope' (known: ecs, native, ocsf, splunk_hec)" in capsys.readouterr().err


def test_tail_since_starts_at_a_time(
    alert_topic: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--since 1h` skips what was written two hours ago."""
    bootstrap, topic = alert_topic
    argv = ["alerts", "tail", "--bootstrap", bootstrap, "--topic", topic, "--since", "1h"]
    assert main([*argv, "--json", "--idle", "2"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [ALERTS[2]["id"]]


def test_stats_count_a_time_range(
    alert_topic: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The default range (24h) holds all three alerts and the unreadable record; `--until
    1h` only the two older ones; the table has the three sections."""
    bootstrap, topic = alert_topic
    argv = ["alerts", "stats", "--bootstrap", bootstrap, "--topic", topic]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["alerts"], doc["unreadable"]) == (3, 1)
    assert main([*argv, "--json", "--since", "3h", "--until", "1h"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["alerts"] == 2 and doc["by_severity"] == {"high": 1, "medium": 1}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 alerts from ") and "TECHNIQUE" in out and "T1552.007" in out


def test_missing_topic_and_bad_arguments_are_reported(
    tansu: TansuBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """A topic that does not exist is a failure (1); a bad time or severity a usage error (2)."""
    argv = ["alerts", "stats", "--bootstrap", tansu.bootstrap_servers]
    assert main([*argv, "--topic", "no.such.topic"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([*argv, "--since", "yesterday"]) == 2
    assert main(["alerts", "tail", "--bootstrap", "x:1", "--severity", "huge"]) == 2
    assert "is not one of" in capsys.readouterr().err
