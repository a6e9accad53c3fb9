"""The layout Klaxon wants for its topics, independent of any broker."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.topics import topic_specs


def test_four_topics_in_contract_order_with_settings_partitions_and_rf() -> None:
    """Raw, events, alerts, dead-letter; each with the configured partitions and RF."""
    s = Settings().replace(partitions=6, replication_factor=3)
    specs = topic_specs(s)
    assert [x.name for x in specs] == list(s.topics)
    assert {(x.partitions, x.replication_factor) for x in specs} == {(6, 3)}


def test_retention_is_short_for_inputs_and_long_for_outputs() -> None:
    """Raw and events keep the reprocessing window; alerts and dead letters keep longer."""
    s = Settings().replace(raw_retention_ms=10, alerts_retention_ms=20)
    got = {x.name: (x.configs["retention.ms"], x.configs["cleanup.policy"]) for x in topic_specs(s)}
    assert got == {
        s.topic_raw: ("10", "delete"),
        s.topic_events: ("10", "delete"),
        s.topic_alerts: ("20", "delete"),
        s.topic_deadletter: ("20", "delete"),
    }


def test_three_replicas_require_two_in_sync() -> None:
    """RF >= 3 sets min.insync.replicas=2 (acks=all survives one broker); RF 1 leaves it unset."""
    rf3 = topic_specs(Settings().replace(replication_factor=3))
    rf1 = topic_specs(Settings())
    assert {x.configs["min.insync.replicas"] for x in rf3} == {"2"}
    assert all("min.insync.replicas" not in x.configs for x in rf1)
