"""Named lists: packaged definitions, user append/replace, and their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detections import Engine, RuleLoadError, load_rules
from detections.lists import load_lists, parse_lists

BASE = "admins:\n  description: d\n  values: [root, 'ops-*']\nports:\n  values: [22, 2375]\n"


def test_append_and_replace_apply_in_order() -> None:
    """A user file appends to one list and replaces another."""
    base = parse_lists(BASE, "base.yml", {})
    mine = parse_lists("admins:\n  append: [alice]\nports:\n  replace: [6443]\n", "mine.yml", base)
    assert mine == {"admins": ("root", "ops-*", "alice"), "ports": (6443,)}


def test_unknown_list_in_user_file_gets_a_suggestion() -> None:
    """Appending to a misspelt list name is an error that names the closest list."""
    base = parse_lists(BASE, "base.yml", {})
    with pytest.raises(RuleLoadError) as info:
        parse_lists("admin:\n  append: [alice]\n", "mine.yml", base)
    assert str(info.value.problems[0]) == (
        "mine.yml:1:1: admin: cannot append to unknown list 'admin' (did you mean 'admins'?)"
    )


def test_redefining_a_list_is_an_error() -> None:
    """A user file must say append: or replace: to change an existing list."""
    base = parse_lists(BASE, "base.yml", {})
    with pytest.raises(RuleLoadError, match="already defined; use append: or replace:"):
        parse_lists("admins:\n  values: [x]\n", "mine.yml", base)


def test_user_list_file_changes_what_a_rule_matches(tmp_path: Path) -> None:
    """`--lists` files reach `|expand` placeholders of packaged lists."""
    packaged = load_lists()
    name = next(iter(packaged))
    (tmp_path / "mine.yml").write_text(f"{name}:\n  append: ['zz-unique-principal']\n")
    rule = (
        "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000009\ndetection:\n"
        f"  s:\n    user.username|expand: '%{name}%'\n  condition: s\n"
    )
    plain = Engine(load_rules([], texts={"r.yml": rule}))
    mine = Engine(load_rules([], [tmp_path / "mine.yml"], texts={"r.yml": rule}))
    event = {"user": {"username": "zz-unique-principal"}}
    assert not plain.evaluate(event)
    assert mine.evaluate(event)


def test_numbers_in_lists_match_numeric_fields() -> None:
    """A list of ports expands into values that match integer event fields."""
    from detections.matchers import compile_match

    lists = parse_lists(BASE, "base.yml", {})
    pred = compile_match("requestObject.spec.ports.port", ("expand",), ["%ports%"], lists)
    assert pred({"requestObject": {"spec": {"ports": [{"port": 80}, {"port": 2375}]}}}, {})
    assert not pred({"requestObject": {"spec": {"ports": [{"port": 80}]}}}, {})


EMPTY_LIST_RULE = (
    "title: empty\nid: 5b6c7d8e-0000-4000-8000-00000000000a\ndetection:\n"
    "  s:\n    verb: get\n    {key}: '%nobody%'\n  condition: {condition}\n"
)


@pytest.mark.parametrize(
    "key",
    [
        "user.username|expand",
        "user.username|contains|expand",
        "user.username|startswith|all|expand",
        "user.username|re|expand",
        "user.username|cased|expand",
        "user.username|base64offset|contains|expand",
        "user.username|fieldref|all|expand",
        "sourceIPs|cidr|all|expand",
        "responseStatus.code|gte|all|expand",
        "responseStatus.code|lt|expand",
    ],
)
def test_an_empty_list_matches_nothing(tmp_path: Path, key: str) -> None:
    """A named list with `values: []` loads, and a comparison with it holds for no event,
    `|all` included (all of nothing must not become "everything")."""
    (tmp_path / "mine.yml").write_text("nobody:\n  description: none yet\n  values: []\n")
    text = EMPTY_LIST_RULE.format(key=key, condition="s")
    rules = load_rules([], [tmp_path / "mine.yml"], texts={"r.yml": text})
    events: list[dict[str, Any]] = [
        {"verb": "get"},
        {"verb": "get", "user": {"username": "alice"}, "sourceIPs": ["10.0.0.1"]},
        {"verb": "get", "responseStatus": {"code": 403}, "user": {"username": "403"}},
    ]
    for engine in (Engine(rules), Engine(rules, use_index=False)):
        assert [engine.evaluate(ev) for ev in events] == [[], [], []]


def test_not_an_empty_list_matches_everything(tmp_path: Path) -> None:
    """`selection and not filter` with an empty allow-list filters nothing out."""
    (tmp_path / "mine.yml").write_text("nobody:\n  values: []\n")
    text = (
        "title: empty\nid: 5b6c7d8e-0000-4000-8000-00000000000b\ndetection:\n"
        "  s: {verb: get}\n  f: {user.username|expand: '%nobody%'}\n  condition: s and not f\n"
    )
    engine = Engine(load_rules([], [tmp_path / "mine.yml"], texts={"r.yml": text}))
    assert len(engine.evaluate({"verb": "get", "user": {"username": "alice"}})) == 1


def test_exists_with_a_list_is_a_load_error(tmp_path: Path) -> None:
    """`|exists` takes true or false, never a list, and says so at load time."""
    (tmp_path / "mine.yml").write_text("nobody:\n  values: []\n")
    text = EMPTY_LIST_RULE.format(key="user.username|exists|expand", condition="s")
    with pytest.raises(RuleLoadError, match="'exists' takes a single true or false"):
        load_rules([], [tmp_path / "mine.yml"], texts={"r.yml": text})
