"""`klaxon replay --offline` (`klaxon.offline`): the worker's processing in one process gives
the pipeline's alert ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from klaxon.cli import main
from klaxon.offline import OfflineRun, build_offline
from pipeline.config import Settings
from replay.reader import iter_batches, iter_events
from replay.sample import SAMPLE_PATH
from tests.pipeline.conftest import CLUSTER, RULES, expected_for


def offline_alerts(
    settings: Settings, lines: list[bytes]
) -> tuple[OfflineRun, list[dict[str, Any]]]:
    run = build_offline(settings)
    alerts = list(run.run(b.payload for b in iter_batches(lines)))
    return run, alerts


def test_the_sample_offline_gives_the_offline_engines_stateless_alert_ids() -> None:
    """Same rules, same cluster, no stateful families: exactly `expected_for`'s ids, and the
    summary adds up."""
    lines = list(iter_events(SAMPLE_PATH))
    settings = Settings(rules_paths=(RULES,), cluster=CLUSTER, stateful_detectors=())
    run, alerts = offline_alerts(settings, lines)
    expected = expected_for(lines, with_garbage=False)
    assert {a["id"] for a in alerts} == expected.alert_ids
    assert len(alerts) == len(expected.alert_ids)
    s = run.summary
    assert (s.read, s.normalised) == (len(lines), expected.normalised)
    assert s.alerts == len(alerts) and sum(s.by_rule.values()) == len(alerts)


def test_the_cli_prints_json_alerts_and_a_summary_with_dead_letters_and_filtered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No broker configured: offline. Garbage is dead-lettered, RequestReceived filtered."""
    lines = list(iter_events(SAMPLE_PATH))
    rr = {**orjson.loads(lines[0]), "stage": "RequestReceived"}
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join([*lines, b"not json", orjson.dumps(rr)]))
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "KLAXON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLAXON_RULES", str(RULES))
    monkeypatch.setenv("KLAXON_CLUSTER", CLUSTER)
    assert main(["replay", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    got = {json.loads(line)["id"] for line in out.splitlines() if line}
    assert got >= expected_for(lines, with_garbage=False).alert_ids
    assert got
    assert f"read {len(lines) + 2} events" in err
    assert f"{len(lines)} normalised, 1 filtered, 1 dead-lettered" in err
    assert f"{len(got)} alerts" in err and "by severity:" in err and "by rule:" in err


def test_rewrite_time_moves_alert_times_and_keeps_the_ids_of_shifted_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rewrite-time 2031-01-01T00:00:00Z: every alert's event time is in 2031 (the first
    event at midnight), and the table is printed."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KLAXON_RULES", str(RULES))
    argv = ["replay", str(SAMPLE_PATH), "--offline", "--rewrite-time", "2031-01-01T00:00:00Z"]
    assert main([*argv, "--json"]) == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert alerts and all(a["event_time"].startswith("2031-01-01T") for a in alerts)
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("TIME ")


def test_bad_rewrite_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(SAMPLE_PATH), "--offline", "--rewrite-time", "soon"]) == 2
    assert "not an RFC 3339 timestamp" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_offline_replay_of_the_sample_gives_the_demos_alert_ids(tmp_path: Path) -> None:
    """`klaxon demo` (embedded Tansu, a worker, the bundled sample) and `klaxon replay
    --offline` of the same sample, with the shipped rules and every stateful family.

    Compared exactly: stateless alerts, correlations and new terms (their ids depend only on
    the events and their order per partition, which both keep). Not compared: alerts of the
    anomaly and silence detectors (rule source ``detections/stateful/*.py``), whose windows
    are judged by wall-clock ticks: the demo exits a few seconds after the last alert, while
    offline replay ends with a tick that closes every open window."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}
    env["KLAXON_CLUSTER"] = CLUSTER
    argv = [sys.executable, "-m", "klaxon", "demo", "--json", "--idle", "3"]
    argv += ["--min-severity", "informational"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    demo = [json.loads(line) for line in done.stdout.decode().splitlines() if line]

    settings = Settings.from_env({}).replace(cluster=CLUSTER)
    _, offline = offline_alerts(settings, list(iter_events(SAMPLE_PATH)))

    def timed(alert: dict[str, Any]) -> bool:
        source = str(alert["rule"].get("source", ""))
        return source.startswith("detections/stateful/") and source.endswith(".py")

    assert demo and offline
    assert {a["id"] for a in demo if not timed(a)} == {a["id"] for a in offline if not timed(a)}
    assert {a["id"] for a in demo if timed(a)} <= {a["id"] for a in offline if timed(a)}
