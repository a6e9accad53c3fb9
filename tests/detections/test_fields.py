"""Derived fields: the exec command (request URI or request body) and per-event caching."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detections import Engine, load_rules
from detections.fields import _query_commands, compile_path, exec_commands

EXEC_REF = {"resource": "pods", "subresource": "exec", "name": "p", "namespace": "d"}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # GKE/AKS/EKS exports whose URI carries no command: the PodExecOptions body does
        (
            {
                "requestURI": "/api/v1/namespaces/d/pods/p/exec",
                "objectRef": EXEC_REF,
                "requestObject": {"command": ["sh", "-c", "cat /etc/shadow"], "container": "c"},
            },
            ["sh", "-c", "cat /etc/shadow"],
        ),
        (
            {
                "objectRef": {**EXEC_REF, "subresource": "attach"},
                "requestObject": {"command": "sh"},
            },
            ["sh"],
        ),
        ({"requestObject": {"kind": "PodExecOptions", "command": ["id"]}}, ["id"]),
        # the URI wins when it has command= values
        (
            {
                "requestURI": "/api/v1/namespaces/d/pods/p/exec?command=ls",
                "objectRef": EXEC_REF,
                "requestObject": {"command": ["id"]},
            },
            ["ls"],
        ),
        # a percent-encoded key is still `command` to the API server
        ({"requestURI": "/api/v1/namespaces/d/pods/p/exec?comm%61nd=id"}, ["id"]),
        # only strings are commands; nothing usable is no command
        ({"objectRef": EXEC_REF, "requestObject": {"command": ["id", 7, None]}}, ["id"]),
        ({"objectRef": EXEC_REF, "requestObject": {"command": [7]}}, None),
        ({"objectRef": EXEC_REF, "requestObject": {"command": []}}, None),
        # a `command` in some other object is not an exec
        ({"objectRef": {"resource": "widgets"}, "requestObject": {"command": ["id"]}}, None),
        ({"objectRef": EXEC_REF, "requestObject": ["id"]}, None),
    ],
)
def test_exec_command_falls_back_to_the_request_body(
    event: dict[str, Any], expected: list[str] | None
) -> None:
    """`command` reads requestObject.command of an exec/attach when the URI has no command=."""
    assert exec_commands(event) == expected


def test_command_line_rule_fires_on_a_body_only_exec() -> None:
    """A commandLine rule catches an exec whose command is only in the request body."""
    text = (
        f"title: shadow\nid: {uuid.uuid4()}\ndetection:\n"
        "  s: {commandLine|contains: /etc/shadow}\n  condition: s\n"
    )
    engine = Engine(load_rules([], texts={"r.yml": text}))
    event = {
        "verb": "create",
        "requestURI": "/api/v1/namespaces/d/pods/p/exec",
        "objectRef": EXEC_REF,
        "requestObject": {"command": ["cat", "/etc/shadow"]},
    }
    (match,) = engine.evaluate(event)
    assert match.matched_fields == {"commandLine": "cat /etc/shadow"}


QUERY_PARTS = st.sampled_from(
    ["command", "comm%61nd", "command=", "=", "&", "?", "#", "+", "%2F", "%ZZ", "%C3%A9", "a", " "]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(QUERY_PARTS, max_size=12).map("".join))
def test_query_commands_parse_like_the_standard_library(query: str) -> None:
    """The fast query parser finds the same command values as parse_qsl(urlsplit(uri).query)."""
    for uri in (query, "/api/v1/namespaces/d/pods/p/exec?" + query):
        expected = [
            v for k, v in parse_qsl(urlsplit(uri).query, keep_blank_values=True) if k == "command"
        ]
        assert _query_commands(uri) == expected


def test_absent_derived_fields_are_derived_once_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A derived field the event lacks is worked out once, not once per rule that reads it."""
    import detections.fields as fields

    calls = []
    original = fields._DERIVERS["commandLine"]

    def counting(ev: dict[str, Any]) -> Any:
        calls.append(1)
        return original(ev)

    monkeypatch.setitem(fields._DERIVERS, "commandLine", counting)
    get = compile_path("commandLine")
    cache: dict[str, Any] = {}
    assert get({"requestURI": "/api/v1/pods"}, cache) == ()
    assert get({"requestURI": "/api/v1/pods"}, cache) == ()
    assert len(calls) == 1


def test_source_networks_are_remembered_per_address_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source network of an address is remembered (emptied when full; a long text by its
    first 64 characters, all that is parsed), and remembered or not, it is the same network."""
    from detections import fields

    monkeypatch.setattr(fields, "_NETWORKS", {})
    monkeypatch.setattr(fields, "_NETWORKS_MAX", 2)
    cases = [
        ("10.1.2.3", "10.1.0.0/16"),
        ("2001:db8:1:2::5", "2001:db8:1::/48"),
        ("x", fields._MISSING),
        ("10.1.2.3", "10.1.0.0/16"),
        ("10.1.2.3" + " " * 80, fields._MISSING),
        ("10.1.2.3" + " " * 90, fields._MISSING),
    ]
    for address, network in cases * 2:
        assert fields._source_network({"sourceIPs": [address]}) == network
        assert len(fields._NETWORKS) <= 2
    assert all(len(text) <= 64 for text in fields._NETWORKS)
