"""No planted credential survives anywhere downstream of the normaliser: the events topic,
the alerts (native format), the dead-letter topic, the worker's log, and the command line
(`klaxon demo --json`, `klaxon replay --offline --json`, `klaxon alerts tail --json`), and
every registered alert format (OCSF, ECS, Splunk HEC) encoding those alerts.

The planted events (`tests/planted.py`) fire pack rules, so alerts are produced and checked,
and carry the configured labels; the operator's own secret is covered by
``KLAXON_REDACT_PATTERNS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from klaxon.cli import main
from pipeline.config import Settings, isolated_settings
from pipeline.sinks.formats import FORMATS
from pipeline.topics import ensure_topics
from replay.producer import replay_events
from tests import planted
from tests.pipeline.conftest import WorkerProcess, base_env, read_topic

pytestmark = [pytest.mark.timeout(240)]

LABELS = (("env", "prod"), ("team", "sec"))
# Rules of the pack the planted events must fire (so the alerts are really checked).
EXPECTED_TITLES = {
    "Privileged container in a pod or workload",
    "Command executed in a container (pods/exec)",  # its summary quotes the command line
    "Credentials read in a container through exec",
}


def planted_lines() -> list[bytes]:
    return [orjson.dumps(e) for e in planted.planted_events()]


def fired(alerts: list[dict[str, Any]]) -> set[str]:
    """Titles of the rules that fired: the alerts' own, and those grouping folded into them
    (``group.related``: a less severe rule on the same event)."""
    return {a["rule"]["title"] for a in alerts} | {
        r["title"] for a in alerts for r in ((a.get("group") or {}).get("related") or [])
    }


def settings_for(bootstrap: str, tmp_path: Path) -> Settings:
    """The packaged pack, labels and the operator pattern, on fresh topics."""
    return isolated_settings(bootstrap, tmp_path / "data", prefix="redact.").replace(
        labels=LABELS,
        redact_patterns=(planted.OPERATOR_PATTERN,),
        stateful_detectors=(),
    )


def test_the_pipeline_writes_no_planted_secret(
    tansu: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worker on Tansu: events topic, alerts, dead letters, the worker's log and `klaxon
    alerts tail` are clean, and the alerts (with labels and tags) were produced."""
    bootstrap = tansu.bootstrap_servers  # type: ignore[attr-defined]
    settings = settings_for(bootstrap, tmp_path)
    asyncio.run(ensure_topics(bootstrap, settings))
    worker = WorkerProcess(settings, tmp_path, "redact", ("--loglevel", "info"))
    try:
        worker.wait_for("the worker to be assigned", lambda: bool(worker.snapshot()), 90)
        stats = asyncio.run(
            replay_events(planted_lines(), bootstrap=bootstrap, topic=settings.topic_raw)
        )

        def done() -> bool:
            c = worker.counters()
            return c.get("raw_messages", 0) >= stats.messages and c.get(
                "events_messages_in", 0
            ) >= c.get("events_messages_out", 1)

        worker.wait_for("the planted events to be processed", done, 90)
    finally:
        worker.stop()
    events = read_topic(bootstrap, settings.topic_events)
    alerts = read_topic(bootstrap, settings.topic_alerts)
    dead = read_topic(bootstrap, settings.topic_deadletter)
    assert len(events) >= 1 and dead == []
    assert sum(len(orjson.loads(r.value)["events"]) for r in events) == len(planted_lines())
    docs = [orjson.loads(r.value) for r in alerts]
    assert fired(docs) >= EXPECTED_TITLES
    assert all(d["labels"] == dict(LABELS) and d["tags"] for d in docs)
    for name, blobs in {
        "events topic": [r.value for r in events],
        "alerts topic": [r.value for r in alerts] + [r.key or b"" for r in alerts],
        "alert headers": [v for r in alerts for _, v in r.headers],
        "worker log": [worker.log().encode()],
        **{
            f"{name} format": [fmt.encode(d) for d in docs]
            for name, fmt in FORMATS.items()  # every format a SIEM may be sent
        },
    }.items():
        for blob in blobs:
            assert planted.leaks(blob) == [], name
    assert '"status"' in worker.log()  # health lines were written: the log was really read
    tail = ["alerts", "tail", "--bootstrap", bootstrap, "--topic", settings.topic_alerts]
    assert main([*tail, "--from-beginning", "--idle", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == len(docs) and planted.leaks(out) == []


def test_the_command_line_prints_no_planted_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klaxon replay --offline --json` (in process) prints alerts and a summary, clean."""
    path = tmp_path / "planted.jsonl"
    path.write_bytes(b"\n".join(planted_lines()))
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "KLAXON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLAXON_REDACT_PATTERNS", planted.OPERATOR_PATTERN)
    monkeypatch.setenv("KLAXON_LABELS", "env=prod")
    assert main(["replay", str(path), "--offline", "--json"]) == 0
    out, err = capsys.readouterr()
    assert fired([json.loads(line) for line in out.splitlines() if line]) >= EXPECTED_TITLES
    assert planted.leaks(out) == [] and planted.leaks(err) == []


@pytest.mark.slow
def test_demo_json_prints_no_planted_secret(tmp_path: Path) -> None:
    """`klaxon demo FILE --json`: embedded broker, worker and replay; stdout and stderr clean."""
    path = tmp_path / "planted.jsonl"
    path.write_bytes(b"\n".join(planted_lines()))
    env = {**base_env(), "KLAXON_REDACT_PATTERNS": planted.OPERATOR_PATTERN}
    env.update(KLAXON_STATEFUL_DETECTORS="none", KLAXON_DATA_DIR=str(tmp_path / "data"))
    argv = [sys.executable, "-m", "klaxon", "demo", str(path), "--json", "--idle", "1"]
    argv += ["--min-severity", "informational"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    docs = [json.loads(line) for line in done.stdout.splitlines() if line]
    assert fired(docs) >= EXPECTED_TITLES
    assert planted.leaks(done.stdout) == [] and planted.leaks(done.stderr) == []
