"""`klaxon demo`: embedded broker, worker, replay and alert table in one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from klaxon.demo import sample_files
from tests.pipeline.conftest import RULES, expected_for, sample_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_demo_replays_a_file_prints_every_alert_and_exits_cleanly(tmp_path: Path) -> None:
    """With no Kafka configured, the demo starts its own broker and worker, prints exactly the
    alerts the offline engine finds in the file, and exits 0 once they stop."""
    lines = [orjson.dumps(e) for e in sample_events()[:1500]]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}
    # stateless only, one alert per match: the comparison is with the offline engine
    # (stateful alerts and grouping have their own tests; stateful ones depend on timing)
    env.update(
        KLAXON_RULES=str(RULES),
        KLAXON_CLUSTER="test-cluster",
        KLAXON_STATEFUL_DETECTORS="none",
        KLAXON_GROUPING="off",
    )
    argv = [sys.executable, "-m", "klaxon", "demo", str(path), "--json", "--idle", "1"]
    argv += ["--min-severity", "informational"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    alerts = [json.loads(line) for line in done.stdout.decode().splitlines() if line]
    assert {a["id"] for a in alerts} == expected_for(lines, with_garbage=False).alert_ids
    assert "embedded Tansu" in done.stderr.decode()


def test_the_bundled_sample_is_what_the_demo_replays() -> None:
    """`klaxon demo` without files replays replay/sample/*.jsonl.gz, which exists."""
    assert [p.name for p in sample_files()] == ["cluster-sample.jsonl.gz"]


def test_demo_prints_its_alerts_in_the_format_asked_for(tmp_path: Path) -> None:
    """``--format ocsf --json``: every line is a valid OCSF Detection Finding of one of the
    alerts the offline engine finds, the same alerts as the native output."""
    from tests.pipeline.sinks.test_formats import check_ocsf

    lines = [orjson.dumps(e) for e in sample_events()[:1500]]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}
    env.update(
        KLAXON_RULES=str(RULES),
        KLAXON_CLUSTER="test-cluster",
        KLAXON_STATEFUL_DETECTORS="none",
        KLAXON_GROUPING="off",  # one alert per match, as the offline engine finds them
    )
    argv = [sys.executable, "-m", "klaxon", "demo", str(path), "--format", "ocsf", "--json"]
    argv += ["--idle", "1", "--min-severity", "informational"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    findings = [json.loads(line) for line in done.stdout.decode().splitlines() if line]
    for finding in findings:
        check_ocsf(finding)
    expected = expected_for(lines, with_garbage=False).alert_ids
    assert {f["metadata"]["uid"] for f in findings} == expected and expected
