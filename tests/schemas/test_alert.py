"""The alert and dead-letter models: the shapes we write to Kafka."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import Alert, DeadLetter
from schemas.alert import SEVERITIES, example_alert
from schemas.deadletter import dead_letter, original_bytes


def test_example_alert_round_trips_by_alias() -> None:
    """A complete alert validates and dumps back (JSON mode, by alias) to the same dict."""
    raw = example_alert()
    dumped = Alert.model_validate(raw).model_dump(mode="json", by_alias=True)
    assert dumped["schema"] == "klaxon.alert/v1"
    assert dumped["event_time"] == "2018-10-25T13:58:49.730588Z"
    assert {k: v for k, v in dumped.items() if k != "event_time"} == {
        k: v for k, v in raw.items() if k != "event_time"
    }


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("colour",), "red"),
        (("rule", "colour"), "red"),
        (("object", "kind"), "Pod"),
        (("user", "email"), "x@example.com"),
    ],
)
def test_alert_forbids_unknown_keys(path: tuple[str, ...], value: Any) -> None:
    """Alert is strict at every level: any unknown key is a bug in the writer."""
    raw = copy.deepcopy(example_alert())
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        Alert.model_validate(raw)


@pytest.mark.parametrize(
    ("key", "value"),
    [("severity", "severe"), ("id", "not-a-uuid"), ("schema", "klaxon.alert/v2"), ("stage", "x")],
)
def test_alert_rejects_bad_values(key: str, value: str) -> None:
    """Severity, id, schema version and stage are constrained."""
    with pytest.raises(ValidationError):
        Alert.model_validate({**example_alert(), key: value})


def test_severities_are_ordered_sigma_levels() -> None:
    """Severity values are the Sigma levels, least severe first."""
    assert SEVERITIES == ("informational", "low", "medium", "high", "critical")


def test_optional_alert_parts_may_be_omitted() -> None:
    """Minimal alerts validate: object, user, attack and lists default to empty."""
    raw = {
        k: example_alert()[k]
        for k in ("id", "rule", "summary", "severity", "cluster", "audit_id", "stage", "verb")
    }
    alert = Alert.model_validate(raw)
    assert alert.object.resource is None and alert.attack.techniques == []


def test_dead_letter_keeps_original_bytes_exactly() -> None:
    """A dead letter round-trips arbitrary bytes through base64 and validates."""
    original = bytes(range(256))
    letter = DeadLetter.model_validate(
        dead_letter("bad", original, topic="t", partition=1, offset=2)
    )
    assert original_bytes(letter) == original
    assert letter.source is not None and letter.source.offset == 2


def test_dead_letter_without_source_and_with_extra_key() -> None:
    """The source is optional; unknown keys are rejected."""
    letter = dead_letter("bad", b"x")
    assert DeadLetter.model_validate(letter).source is None
    with pytest.raises(ValidationError):
        DeadLetter.model_validate({**letter, "extra": 1})
