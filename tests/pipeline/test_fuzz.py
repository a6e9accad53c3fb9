"""Hostile input through normalise -> detect -> alert building never raises and is always
accounted for (`bench.fuzz` runs 100,000 of them outside CI: ``./dev bench fuzz``)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import Outcome, check_one, run
from detections import Engine, load_rules
from detections.alert import to_alert
from tests.pipeline.conftest import sample_events

ENGINE = Engine(load_rules())
EVENTS = sample_events()[:500]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def poke(doc: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """``doc`` with ``value`` at the first existing keys of ``path`` (a new key otherwise)."""
    node: Any = doc
    for key in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(key), dict):
            node = node[key]
    node[path[-1]] = value
    return doc


def accounted(payload: bytes) -> Outcome:
    out = Outcome()
    check_one(payload, 1, ENGINE, to_alert, out)
    assert not out.failures, out.failures
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(EVENTS) - 1),
    path=st.lists(
        st.sampled_from(["user", "objectRef", "requestObject", "responseStatus", "verb",
                         "sourceIPs", "annotations", "username", "resource", "code", "spec"]),
        min_size=1, max_size=4,
    ),
    value=json_values,
)  # fmt: skip
def test_any_json_value_anywhere_in_an_event_is_handled(
    index: int, path: list[str], value: Any
) -> None:
    """An event with any JSON value at any of its well-known paths: an event, a filter or a
    dead letter with a reason, never an exception."""
    event = poke(orjson.loads(orjson.dumps(EVENTS[index])), path, value)
    out = accounted(json.dumps(event).encode())  # json: orjson refuses integers over 64 bits
    assert out.events_in == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_handled(payload: bytes) -> None:
    accounted(payload)


@pytest.mark.slow
def test_five_thousand_generated_hostile_inputs_are_all_accounted_for() -> None:
    """The `bench.fuzz` generator (deep nesting, huge values, truncation, gzip, envelopes)."""
    out = run(5000, seed=11, hang=2.0)
    assert out.failures == []
    assert out.inputs == 5000 and out.dead_letters > 0 and out.normalised > 0
