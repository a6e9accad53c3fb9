"""Sigma value-modifier semantics, checked against a straightforward reference evaluator."""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detections.matchers import MatchSpecError, compile_match

# --- the reference: Sigma's rules written out the slow, obvious way ---------------------------


def ref_regex(value: str, mtype: str | None) -> str:
    """Sigma string -> Python regex source: `*` any run, `?` one char, backslash escapes."""
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    body = "".join(out)
    if mtype in ("contains", "endswith"):
        body = ".*" + body
    if mtype in ("contains", "startswith"):
        body = body + ".*"
    return body


def ref_leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in ref_leaves(item)]
    return [value]


def ref_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def ref_match(event: dict[str, Any], mods: tuple[str, ...], values: list[Any]) -> bool:
    leaves = ref_leaves(event["f"]) if "f" in event else []
    mtype = next((m for m in mods if m in ("contains", "startswith", "endswith")), None)
    flags = re.S if "cased" in mods else re.S | re.I
    texts = [t for t in (ref_text(v) for v in leaves) if t is not None]

    def one(v: Any) -> bool:
        if v is None:
            return all(leaf is None for leaf in leaves)
        pattern = ref_regex(ref_text(v) or "", mtype)
        return any(re.fullmatch(pattern, t, flags) for t in texts)

    results = [one(v) for v in values]
    return all(results) if "all" in mods else any(results)


# --- strategies -------------------------------------------------------------------------------

# ASCII only: Python's re.IGNORECASE and str.lower() agree on it.
ALPHABET = "aAbB*?\\x."
patterns = st.one_of(
    st.text(alphabet=ALPHABET, min_size=0, max_size=6),
    st.text(alphabet="aAbB*?", min_size=1, max_size=4),
)
texts = st.text(alphabet="aAbBx*?\\.", min_size=0, max_size=8)


@st.composite
def near_miss(draw: st.DrawFn) -> str:
    """A text built from a pattern-like string with some case flipped and wildcards filled in."""
    base = draw(st.text(alphabet="aAbB*?x", min_size=0, max_size=6))
    flips = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    filled = "".join(
        (draw(st.sampled_from(["", "b", "xa"])) if c == "*" else "x" if c == "?" else c)
        for c in base
    )
    return "".join(
        c.swapcase() if f else c for c, f in zip(filled, flips + [False] * 99, strict=False)
    )


leaf = st.one_of(texts, near_miss(), st.integers(-3, 3), st.booleans(), st.none())
event_value = st.one_of(leaf, st.lists(st.one_of(leaf, st.lists(leaf, max_size=2)), max_size=3))
modifier_sets = st.tuples(
    st.sampled_from([None, "contains", "startswith", "endswith"]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    modifier_sets,
    st.lists(st.one_of(patterns, st.integers(-3, 3)), min_size=1, max_size=3),
    st.one_of(st.none(), event_value),
    st.booleans(),
)
def test_string_modifiers_match_the_reference(
    mods: tuple[str | None, bool, bool], values: list[Any], value: Any, present: bool
) -> None:
    """contains/startswith/endswith/all/cased and wildcards agree with the reference."""
    mtype, use_all, cased = mods
    modifiers = tuple(
        m for m in (mtype, "all" if use_all else None, "cased" if cased else None) if m
    )
    event = {"f": value} if present else {}
    pred = compile_match("f", modifiers, values)
    assert pred(event, {}) == ref_match(event, modifiers, values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(patterns, st.none()), min_size=1, max_size=3), event_value, st.booleans())
def test_plain_values_and_null_match_the_reference(
    values: list[Any], value: Any, present: bool
) -> None:
    """A plain list (OR), with null meaning absent-or-null, agrees with the reference."""
    event = {"f": value} if present else {}
    assert compile_match("f", (), values)(event, {}) == ref_match(event, (), values)


@settings(max_examples=200, deadline=None)
@given(patterns, st.text(alphabet="aAbBxyz", max_size=8))
def test_case_insensitive_unless_cased(pattern: str, text: str) -> None:
    """Without |cased the result does not change when the event's case changes."""
    pred = compile_match("f", ("contains",), [pattern])
    assert pred({"f": text}, {}) == pred({"f": text.swapcase()}, {})


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-1000, 1000), st.integers(-1000, 1000), st.sampled_from(["gt", "gte", "lt", "lte"])
)
def test_numeric_comparisons(bound: int, actual: int, op: str) -> None:
    """gt/gte/lt/lte compare numbers and numeric strings, never booleans."""
    expected = {
        "gt": actual > bound,
        "gte": actual >= bound,
        "lt": actual < bound,
        "lte": actual <= bound,
    }[op]
    pred = compile_match("f", (op,), [bound])
    assert pred({"f": actual}, {}) is expected
    assert pred({"f": str(actual)}, {}) is expected
    assert pred({"f": True}, {}) is False


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_cidr_matches_ipaddress(net_ip: Any, prefix: int, ip: Any) -> None:
    """|cidr agrees with the standard library's network membership."""
    net = ipaddress.ip_network(f"{net_ip}/{prefix}", strict=False)
    pred = compile_match("sourceIPs", ("cidr",), [str(net)])
    assert pred({"sourceIPs": ["not-an-ip", str(ip)]}, {}) is (ip in net)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abcxyz/=+ ", min_size=1, max_size=12), st.text(alphabet="abc ", max_size=4)
)
def test_base64offset_finds_the_value_at_any_alignment(secret: str, prefix: str) -> None:
    """|base64offset|contains finds a value wherever it sits in a base64-encoded blob."""
    blob = base64.b64encode((prefix + secret + "tail").encode()).decode()
    pred = compile_match("f", ("base64offset", "contains"), [secret])
    assert pred({"f": blob}, {})


def test_base64_is_exact_and_case_sensitive() -> None:
    """|base64 compares the encoded value and keeps its case."""
    pred = compile_match("f", ("base64",), ["hello"])
    assert pred({"f": "aGVsbG8="}, {})
    assert not pred({"f": "AGVSBG8="}, {})


@pytest.mark.parametrize(
    ("mods", "values", "event", "expected"),
    [
        (("re",), ["^/api/v1/.+/exec"], {"f": "/api/v1/namespaces/x/exec"}, True),
        (("re",), ["EXEC"], {"f": "exec"}, False),
        (("re", "i"), ["EXEC"], {"f": "exec"}, True),
        (("re", "m"), ["^b$"], {"f": "a\nb\nc"}, True),
        (("re", "s"), ["a.c"], {"f": "a\nc"}, True),
        (("re",), ["a.c"], {"f": "a\nc"}, False),
        (("exists",), [True], {"f": 0}, True),
        (("exists",), [True], {"f": None}, False),
        (("exists",), [False], {}, True),
        (("exists",), [True], {"f": []}, False),
        (("fieldref",), ["g"], {"f": "Alice", "g": "alice"}, True),
        (("fieldref", "cased"), ["g"], {"f": "Alice", "g": "alice"}, False),
        (("fieldref",), ["g"], {"f": "a", "g": ["b", "a"]}, True),
        (("cased",), ["Alice"], {"f": "alice"}, False),
        ((), [True], {"f": True}, True),
        ((), [True], {"f": "TRUE"}, True),
        ((), [401], {"f": 401}, True),
        ((), ["401"], {"f": 401}, True),
        ((), ["ALLOW"], {"f": 401}, False),
        ((), [r"C:\\Windows\*"], {"f": r"C:\Windows*"}, True),
        ((), [r"C:\\Windows\*"], {"f": r"C:\Windows\x"}, False),
        ((), [r"a\b"], {"f": r"a\b"}, True),
        (("contains", "all"), ["a", "b"], {"f": ["xa", "yb"]}, True),
        (("contains", "all"), ["a", "b"], {"f": ["xa", "ya"]}, False),
        (("expand",), ["%admins%"], {"f": "root"}, True),
        (("expand",), ["team-%admins%"], {"f": "team-bob"}, True),
        (("expand", "contains"), ["%admins%"], {"f": "xx-root-xx"}, True),
        (("expand",), ["%empty%"], {"f": "anything"}, False),
        (("cidr", "expand"), ["%nets%"], {"f": "10.1.2.3"}, True),
        (("cidr", "expand"), ["%nets%"], {"f": "8.8.8.8"}, False),
        # |outside: some value matches none of the values; an empty list matches nothing
        (("cidr", "outside", "expand"), ["%nets%"], {"f": ["10.1.2.3"]}, False),
        (("cidr", "outside", "expand"), ["%nets%"], {"f": ["10.1.2.3", "8.8.8.8"]}, True),
        (("cidr", "outside", "expand"), ["%nets%"], {"f": ["not an address"]}, True),
        (("cidr", "outside", "expand"), ["%nets%"], {"g": "8.8.8.8"}, False),
        (("cidr", "outside", "expand"), ["%empty%"], {"f": ["8.8.8.8"]}, False),
        (("outside", "expand"), ["%admins%"], {"f": ["root", "BOB-2"]}, False),
        (("outside", "expand"), ["%admins%"], {"f": ["root", "mallory"]}, True),
        (("outside", "expand"), ["%empty%"], {"f": "mallory"}, False),
        (("outside", "startswith"), ["registry.k8s.io/"], {"f": ["registry.k8s.io/pause"]}, False),
        (("outside", "startswith"), ["registry.k8s.io/"], {"f": ["evil.io/x"]}, True),
    ],
)
def test_modifier_examples(
    mods: tuple[str, ...], values: list[Any], event: dict[str, Any], expected: bool
) -> None:
    """Each modifier behaves as the Sigma specification describes on a worked example."""
    lists = {"admins": ("root", "bob*"), "empty": (), "nets": ("10.0.0.0/8", "fc00::/7")}
    assert compile_match("f", mods, values, lists)(event, {}) is expected


def test_regex_input_is_capped() -> None:
    """|re never scans more than MAX_REGEX_INPUT characters of a huge value."""
    pred = compile_match("f", ("re",), ["needle$"])
    assert not pred({"f": "x" * 100_000 + "needle"}, {})
    assert pred({"f": "x" * 10 + "needle"}, {})


@pytest.mark.parametrize(
    ("mods", "values", "message"),
    [
        (("re",), ["(?<=x)y"], "is not valid RE2 syntax"),
        (("wide",), ["x"], "Windows-only modifiers are not supported"),
        (("base64offset",), ["x"], "needs '|contains'"),
        (("cidr",), ["300.0.0.0/8"], "invalid CIDR"),
        (("contains",), [None], "null cannot be used with 'contains'"),
        ((), [{"a": 1}], "must be a scalar"),
        (("exists", "outside"), [True], "'outside' cannot be combined with 'exists'"),
        (("cidr", "outside", "all"), ["10.0.0.0/8"], "'outside' cannot be combined with 'all'"),
    ],
)
def test_invalid_specs_are_rejected(mods: tuple[str, ...], values: list[Any], message: str) -> None:
    """Patterns RE2 cannot compile and nonsensical modifier uses fail at load time."""
    with pytest.raises(MatchSpecError, match=re.escape(message)):
        compile_match("f", mods, values)


ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.1", "not an ip", "", "1.2.3", "::ffff:10.0.0.1", "010.0.0.1"]),
)
NETWORKS = st.one_of(
    st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))
    ),
    st.ip_addresses(v=6).flatmap(
        lambda a: st.integers(0, 128).map(lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(NETWORKS, min_size=1, max_size=6), st.lists(ADDRESSES, min_size=1, max_size=4))
def test_cidr_lists_match_like_ipaddress(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], ips: list[str]
) -> None:
    """`|cidr` over many networks (one set lookup per prefix length) agrees with `ip in net`."""

    def reference(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in net for net in nets)

    pred = compile_match("sourceIPs", ("cidr",), [str(n) for n in nets])
    assert pred({"sourceIPs": ips}, {}) is any(reference(ip) for ip in ips)


SOURCES: list[Any] = [
    ["10.1.2.3"],
    ["203.0.113.7", "10.1.2.3"],
    ["10.1.2.3", "not an address"],
    ["2001:db8:1:2::5"],
    [],
    None,
    [7],
    [{"ip": "10.1.2.3"}],
    "10.1.2.3",
    ["1" * 100],
]


@pytest.mark.parametrize("want", [True, False])
@pytest.mark.parametrize("field", ["sourceNetwork", "dataValues", "response.success"])
def test_exists_on_a_derived_field_agrees_with_its_walker(field: str, want: bool) -> None:
    """|exists on a derived field reads it inline (sourceNetwork without the per-event cache):
    the same answer as asking the field's walker, with a fresh cache or a used one."""
    from detections.fields import compile_path

    pred = compile_match(field, ("exists",), [want])
    walker = compile_path(field)
    bodies: list[Any] = [None, {"data": {"a": "x"}}, {"data": {"n": 1}}, [{"op": "add"}]]
    for ips in SOURCES:
        for body in bodies:
            ev = {"sourceIPs": ips, "requestObject": body, "responseStatus": {"code": 201}}
            expected = any(v is not None for v in walker(ev, {})) is want
            cache: dict[Any, Any] = {}
            assert pred(ev, cache) is expected
            assert pred(ev, cache) is expected  # the cache filled by the first call
