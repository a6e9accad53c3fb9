"""Settings come from the environment, with defaults that run against the embedded broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError, PipelineError


def test_defaults_use_the_embedded_broker_and_documented_topic_names() -> None:
    """With no variables set there is no bootstrap (embedded Tansu) and the contract's topics."""
    s = Settings.from_env({"HOME": "/home/x"})
    assert s.bootstrap_servers is None
    assert s.topics == (
        "klaxon.audit.raw",
        "klaxon.audit.events",
        "klaxon.alerts",
        "klaxon.deadletter",
    )
    assert (s.partitions, s.replication_factor, s.app_id, s.cluster) == (4, 1, "klaxon", "default")
    assert s.data_dir == Path("/home/x/.local/share/klaxon")


def test_every_variable_is_read() -> None:
    """Each documented variable overrides its setting."""
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": " a:1 , b:2 ,",
            "KLAXON_TOPIC_RAW": "r",
            "KLAXON_TOPIC_EVENTS": "e",
            "KLAXON_TOPIC_ALERTS": "al",
            "KLAXON_TOPIC_DEADLETTER": "d",
            "KLAXON_PARTITIONS": "12",
            "KLAXON_REPLICATION_FACTOR": "3",
            "KLAXON_RAW_RETENTION_MS": "1000",
            "KLAXON_ALERTS_RETENTION_MS": "2000",
            "KLAXON_RULES": "/r1:/r2",
            "KLAXON_LISTS": "/l.yml",
            "KLAXON_CLUSTER": "prod-eu",
            "KLAXON_APP_ID": "klaxon-eu",
            "KLAXON_DATA_DIR": "/var/lib/klaxon",
        }
    )
    assert s.bootstrap_servers == "a:1,b:2"
    assert s.topics == ("r", "e", "al", "d")
    assert (s.partitions, s.replication_factor) == (12, 3)
    assert (s.raw_retention_ms, s.alerts_retention_ms) == (1000, 2000)
    assert s.rules_paths == (Path("/r1"), Path("/r2"))
    assert s.lists_paths == (Path("/l.yml"),)
    assert (s.cluster, s.app_id, s.data_dir) == ("prod-eu", "klaxon-eu", Path("/var/lib/klaxon"))


def test_xdg_data_home_is_honoured() -> None:
    """The data dir follows XDG_DATA_HOME when KLAXON_DATA_DIR is unset."""
    assert Settings.from_env({"XDG_DATA_HOME": "/xdg"}).data_dir == Path("/xdg/klaxon")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KLAXON_PARTITIONS", "four"),
        ("KLAXON_PARTITIONS", "0"),
        ("KLAXON_REPLICATION_FACTOR", "-1"),
        ("KLAXON_RAW_RETENTION_MS", "1.5"),
        ("KLAXON_TOPIC_RAW", "raw topic"),
        ("KLAXON_TOPIC_ALERTS", "a" * 250),
        ("KLAXON_APP_ID", "klaxon/1"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str) -> None:
    """An unusable value raises ConfigError (a PipelineError) that names the variable."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
    assert issubclass(ConfigError, PipelineError)


def test_labels_selectors_and_redaction_patterns_are_read_and_checked() -> None:
    """KLAXON_LABELS, KLAXON_RULES_ENABLE/DISABLE and KLAXON_REDACT_PATTERNS: parsed, and
    a bad value stops the start-up naming the variable."""
    s = Settings.from_env(
        {
            "KLAXON_LABELS": "env=prod, team=sec,region=eu-west-1",
            "KLAXON_RULES_DISABLE": "level:low, tag:attack.t1046",
            "KLAXON_RULES_ENABLE": "id:exec-into-container",
            "KLAXON_REDACT_PATTERNS": "\\bACME-[0-9a-f]{16}\\b\n(?i)pin:\\s*(\\d+)\n",
        }
    )
    assert s.label_map == {"env": "prod", "team": "sec", "region": "eu-west-1"}
    assert s.rules_disable == ("level:low", "tag:attack.t1046")
    assert [str(x) for x in s.rule_selection().enable] == ["id:exec-into-container"]
    assert s.redaction().apply("pin: 1234").startswith("pin: [REDACTED sha256:")
    for env, message in [
        ({"KLAXON_LABELS": "env"}, "KLAXON_LABELS: 'env' is not key=value"),
        ({"KLAXON_LABELS": "a=1,a=2"}, "label 'a' given twice"),
        ({"KLAXON_RULES_DISABLE": "level:severe"}, "KLAXON_RULES_DISABLE: level:severe"),
        ({"KLAXON_REDACT_PATTERNS": "(a"}, "KLAXON_REDACT_PATTERNS: pattern '(a'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env(env)


def test_worker_environment_carries_the_new_settings() -> None:
    """A worker started by demo or a test gets the same labels, selection and patterns."""
    from pipeline.worker import settings_env

    s = Settings.from_env(
        {
            "KLAXON_LABELS": "env=prod",
            "KLAXON_RULES_DISABLE": "level:low",
            "KLAXON_REDACT_PATTERNS": "a+b\nc+d",
        }
    )
    assert Settings.from_env(settings_env(s)) == s
