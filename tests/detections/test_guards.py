"""Guard lookups: one walk per field (or per group of fields) says which rules an event concerns."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detections import matchers
from detections.fields import compile_path
from detections.guards import (
    NOTHING,
    classifier,
    exact_test,
    field_lookup,
    nested_lookup,
    sibling_lookup,
)
from detections.matchers import memoize, text_test, texts_of

VALUES = ["a", "B", "x.y", "", 0, 7, 403, 1.5, True, False, None]
KEYS = ["user", "username", "groups", "spec", "containers", "image", "x", "x.y", "y"]
USER_KEYS = ["username", "groups", "x", "x.y"]


def values(depth: int = 3) -> st.SearchStrategy[Any]:
    """Scalars, lists and mappings over a small vocabulary of keys (dotted keys included)."""
    scalar = st.sampled_from(VALUES)
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
        ),
        max_leaves=12,
    )


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Events shaped like audit events in places, and like nothing in others."""
    ev: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS), values(), max_size=4))
    if draw(st.booleans()):
        ev["user"] = draw(st.dictionaries(st.sampled_from(USER_KEYS), values(2), max_size=3))
    if draw(st.booleans()):
        spec = draw(st.dictionaries(st.sampled_from(KEYS), values(), max_size=3))
        container = st.dictionaries(st.sampled_from(["image", "x", "x.y", "y"]), values(2))
        spec["containers"] = draw(st.one_of(st.lists(container, max_size=3), values(1)))
        ev["requestObject"] = {"kind": "Pod", "spec": spec}
    return ev


# Every rule number tests one thing; 0..3 are value atoms, 9 only asks for presence.
ATOMS = [
    (0, exact_test(frozenset({"a", "b"}))),
    (1, text_test(("contains",), [".y"], {}) or exact_test(frozenset())),
    (2, exact_test(frozenset({"7", "true"}))),
    (3, exact_test(frozenset({"1.5", "0", "false"}))),
]
PRESENT = frozenset({9})
PATHS = [
    "user.username",
    "user.groups",
    "user.x",
    "x",
    "x.y",
    "spec.containers.image",
    "podSpec.containers.image",
    "podSpec.allContainers.image",
    "podSpec.x.y",
    "podSpec.allContainers.x.y",
    "podSpec",
]


def reference(path: str, event: dict[str, Any]) -> frozenset[int] | None:
    """What a lookup must return, from the general field walker."""
    leaves = compile_path(path)(event, {})
    if all(leaf is None for leaf in leaves):
        return None
    found = PRESENT
    for text in texts_of(leaves):
        found |= frozenset(n for n, test in ATOMS if test(text))
    return found


@settings(max_examples=400, deadline=None)
@given(events(), st.sampled_from(PATHS))
def test_field_lookup_equals_the_general_walker(event: dict[str, Any], path: str) -> None:
    """A single field's lookup gives exactly the rules its texts and presence let through."""
    look = field_lookup(path, classifier(ATOMS), PRESENT)
    assert look(event, {}) == reference(path, event)


@settings(max_examples=300, deadline=None)
@given(events())
def test_sibling_lookup_equals_the_union_of_its_fields(event: dict[str, Any]) -> None:
    """Fields under one top key looked up together give the union of their own lookups."""
    paths = ["user.username", "user.groups", "user.x"]
    look = sibling_lookup([(p, classifier(ATOMS), PRESENT) for p in paths])
    parts = [r for r in (reference(p, event) for p in paths) if r is not None]
    expected = frozenset().union(*parts) if parts else None
    assert look(event, {}) == expected


@settings(max_examples=300, deadline=None)
@given(events(), st.lists(st.sampled_from(PATHS), min_size=1, max_size=5, unique=True))
def test_nested_lookup_equals_the_union_of_its_fields(
    event: dict[str, Any], paths: list[str]
) -> None:
    """One walk over shared prefixes gives the union of every field's own lookup."""
    look = nested_lookup([(p, classifier(ATOMS), PRESENT) for p in paths])
    expected: frozenset[int] = NOTHING
    for p in paths:
        expected |= reference(p, event) or NOTHING
    assert (look(event, {}) or NOTHING) == expected


def test_nested_lookup_defers_to_the_walkers_for_dotted_keys() -> None:
    """A key that itself contains dots is found the way the per-field walker finds it."""
    look = nested_lookup(
        [
            (
                "podSpec.nodeSelector.node-role.kubernetes.io/master",
                classifier([(5, exact_test(frozenset({"true"})))]),
                NOTHING,
            )
        ]
    )
    pod = {"kind": "Pod", "spec": {"nodeSelector": {"node-role.kubernetes.io/master": "true"}}}
    assert look({"requestObject": pod}, {}) == frozenset({5})


def test_sibling_lookup_refuses_fields_of_other_shapes() -> None:
    """Only two-key plain fields under one top key can share a lookup."""
    with pytest.raises(ValueError, match="two-key"):
        sibling_lookup(
            [("user.username", classifier([]), NOTHING), ("verb", classifier([]), NOTHING)]
        )


def test_classifier_results_are_shared_objects() -> None:
    """Equal classifications are one object, so later dict lookups compare by identity."""
    classify = classifier([(0, lambda t: t.startswith("system:"))])
    assert classify("system:a") is classify("system:b")


def test_memo_is_bounded_and_skips_long_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo starts afresh when full and never keeps texts longer than MEMO_MAX_TEXT."""
    monkeypatch.setattr(matchers, "MEMO_ENTRIES", 4)
    calls: list[str] = []

    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    check = memoize(length)
    for text in ["a", "b", "c", "d", "a", "e", "a"]:
        check(text)
    # the second "a" is remembered; "e" found the memo full and cleared it, so "a" is tested again
    assert calls == ["a", "b", "c", "d", "e", "a"]
    long = "x" * (matchers.MEMO_MAX_TEXT + 1)
    check(long)
    check(long)
    assert calls.count(long) == 2


@settings(max_examples=300, deadline=None)
@given(events())
def test_three_key_siblings_equal_the_union_of_their_fields(event: dict[str, Any]) -> None:
    """Fields under one deeper parent (a body's data keys) looked up together, whether the
    lookup asks for each field or visits the parent's keys, give the union of their lookups."""
    for paths in (["spec.x.y", "spec.x.image"], ["spec.x.y", "spec.x.image", *PLENTY]):
        look = sibling_lookup([(p, classifier(ATOMS), PRESENT) for p in paths])
        parts = [r for r in (reference(p, event) for p in paths) if r is not None]
        expected = frozenset().union(*parts) if parts else None
        assert look(event, {}) == expected


#: More siblings than a generated object has keys: the lookup visits the object's keys.
PLENTY = [f"spec.x.{key}" for key in ("user", "username", "groups", "containers", "x")]


@pytest.mark.parametrize(
    "event",
    [
        {"user.username": "admin"},
        {"user": None, "user.groups": ["system:masters"]},
        {"user": "admin"},
        {"user": None},
        {"verb": "get"},
    ],
)
def test_sibling_lookup_reads_a_top_level_parent_inline_like_the_walkers(
    event: dict[str, Any],
) -> None:
    """A missing or null parent, a flattened dotted key, a scalar parent: the same answer as
    the per-field walkers."""
    paths = ["user.username", "user.groups"]
    atoms = classifier([*ATOMS, (5, exact_test(frozenset({"admin", "system:masters"})))])
    look = sibling_lookup([(p, atoms, PRESENT) for p in paths])
    parts = [
        found
        for found in (field_lookup(p, atoms, PRESENT)(event, {}) for p in paths)
        if found is not None
    ]
    assert look(event, {}) == (frozenset().union(*parts) if parts else None)


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), min_size=2, max_size=12))
def test_sibling_lookup_remembers_whole_lists_without_changing_answers(
    stream: list[dict[str, Any]],
) -> None:
    """One lookup over a stream of events (remembered lists of texts hit, unhashable lists and
    long lists pass by the memo) answers each event as the union of its fields."""
    paths = ["user.username", "user.groups", "user.x"]
    look = sibling_lookup([(p, classifier(ATOMS), PRESENT) for p in paths])
    for event in [*stream, *stream]:
        parts = [r for r in (reference(p, event) for p in paths) if r is not None]
        assert look(event, {}) == (frozenset().union(*parts) if parts else None)


def test_lists_past_the_list_memo_are_answered_the_same_every_time() -> None:
    """Lists the memo does not keep whole (long, with a long text, with a mapping in it) and
    lists it does get the same answer when seen again."""
    look = sibling_lookup([("user.groups", classifier(ATOMS), PRESENT)])
    long_text = "a" * (matchers.MEMO_MAX_TEXT + 1)
    cases = [
        (["a", "x.y"], frozenset({0, 1, 9})),
        (["B"] * 9, frozenset({0, 9})),
        (["7", long_text], frozenset({2, 9})),
        (["a", {"x": "B"}], frozenset({0, 9})),
    ]
    for groups, expected in cases * 2:
        assert look({"user": {"groups": groups}}, {}) == expected
