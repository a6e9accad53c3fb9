"""`klaxon topics create` creates the topics on a given cluster and reports each one."""

from __future__ import annotations

import argparse

import pytest

from pipeline import topics_cli
from pipeline.brokers import TansuBroker


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="klaxon")
    topics_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_create_then_rerun_reports_created_then_exists(
    tansu: TansuBroker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run creates the four topics and the two stateful ones, the second finds them."""
    for var, name in [
        ("KLAXON_TOPIC_RAW", "cli.raw.topic"),
        ("KLAXON_TOPIC_EVENTS", "cli.events.topic"),
        ("KLAXON_TOPIC_ALERTS", "cli.alerts.topic"),
        ("KLAXON_TOPIC_DEADLETTER", "cli.deadletter.topic"),
        ("KLAXON_APP_ID", "cli-app"),
    ]:
        monkeypatch.setenv(var, name)
    argv = ["topics", "create", "--bootstrap", tansu.bootstrap_servers, "--partitions", "2"]
    assert _run(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 6 and all(line.startswith("created") for line in first)
    assert "cli.raw.topic  partitions=2 replication=1" in first[0]
    assert _run(argv) == 0
    assert all(line.startswith("exists") for line in capsys.readouterr().out.splitlines())


def test_partition_mismatch_exits_1_with_the_reason(
    tansu: TansuBroker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-running with another partition count fails with exit code 1 and names the topic."""
    monkeypatch.setenv("KLAXON_TOPIC_RAW", "cli.mismatch.raw")
    base = ["topics", "create", "--bootstrap", tansu.bootstrap_servers]
    assert _run([*base, "--partitions", "2"]) == 0
    capsys.readouterr()
    assert _run([*base, "--partitions", "3"]) == 1
    assert "cli.mismatch.raw exists with 2 partitions" in capsys.readouterr().err


def test_without_a_cluster_it_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --bootstrap and no KAFKA_BOOTSTRAP_SERVERS: exit 2 and say what is missing."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert _run(["topics", "create"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err
