"""Settings come from the environment, with defaults that run against the embedded broker."""

from __future__ import annotations

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
