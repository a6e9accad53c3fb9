"""The engine: condition evaluation, the candidate index, derived fields, filters and reload."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detections import Engine, RuleLoadError, load_rules
from detections import condition as cond
from detections.compiler import CompiledSelection, compile_condition
from detections.rule import Selection

NAMES = ["sel_a", "sel_b", "filter_c", "filter_d", "other"]

# --- conditions -------------------------------------------------------------------------------


def trees(depth: int = 3) -> st.SearchStrategy[Any]:
    """Random condition trees as nested tuples."""
    leaf = st.one_of(
        st.sampled_from(NAMES).map(lambda n: ("ref", n)),
        st.tuples(
            st.sampled_from(["1", "all", "2"]), st.sampled_from(["sel_*", "filter_*", "them"])
        ),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            inner.map(lambda t: ("not", t)),
            st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
        ),
        max_leaves=8,
    )


def render(tree: Any) -> str:
    """A tree as Sigma condition text, fully parenthesised."""
    if tree[0] == "ref":
        return tree[1]
    if tree[0] == "not":
        return f"not ({render(tree[1])})"
    if tree[0] in ("and", "or"):
        return "(" + f" {tree[0]} ".join(render(t) for t in tree[1]) + ")"
    return f"{tree[0]} of {tree[1]}"


def reference(tree: Any, truth: dict[str, bool]) -> bool:
    """The meaning of a tree, computed directly."""
    kind = tree[0]
    if kind == "ref":
        return truth[tree[1]]
    if kind == "not":
        return not reference(tree[1], truth)
    if kind == "and":
        return all(reference(t, truth) for t in tree[1])
    if kind == "or":
        return any(reference(t, truth) for t in tree[1])
    quant, pattern = tree
    names = [n for n in NAMES if pattern == "them" or n.startswith(pattern[:-1])]
    hits = sum(truth[n] for n in names)
    return hits == len(names) if quant == "all" else hits >= int(quant)


@settings(max_examples=300, deadline=None)
@given(trees(), st.lists(st.booleans(), min_size=len(NAMES), max_size=len(NAMES)))
def test_compiled_condition_matches_reference(tree: Any, bits: list[bool]) -> None:
    """Parsed and compiled conditions evaluate exactly like the reference semantics."""
    truth = dict(zip(NAMES, bits, strict=True))
    node = cond.parse_condition(render(tree), NAMES)
    sels = {
        n: CompiledSelection(Selection(n, ()), (), (lambda v: lambda e, c: v)(truth[n]))
        for n in NAMES
    }
    assert compile_condition(node, sels)({}, {}) is reference(tree, truth)
    assert cond.evaluate(node, truth) is reference(tree, truth)


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    """`a or b and not c` reads as `a or (b and (not c))`."""
    node = cond.parse_condition("sel_a or sel_b and not filter_c", NAMES)
    assert node == cond.Or(
        (cond.Ref("sel_a"), cond.And((cond.Ref("sel_b"), cond.Not(cond.Ref("filter_c")))))
    )


def test_keywords_are_case_insensitive_and_them_skips_underscore_names() -> None:
    """`AND`/`Not` work, and `them` ignores selections whose names start with '_'."""
    node = cond.parse_condition("all of them AND Not _x", ["a", "b", "_x"])
    assert node == cond.And((cond.And((cond.Ref("a"), cond.Ref("b"))), cond.Not(cond.Ref("_x"))))


# --- a rule set that exercises every index path -------------------------------------------------


def rule(title: str, detection: str, extra: str = "") -> str:
    """YAML for one rule with a fresh id."""
    return f"title: {title}\nid: {uuid.uuid4()}\n{extra}detection:\n{detection}"


INDEX_RULES = {
    "exec.yml": rule(
        "exec", "  s: {verb: create, objectRef.subresource: [exec, attach]}\n  condition: s\n"
    ),
    "no_sub.yml": rule(
        "pods no sub",
        "  s: {objectRef.resource: pods, objectRef.subresource: null}\n  condition: s\n",
    ),
    "not.yml": rule("not get", "  s: {verb: get}\n  condition: not s\n"),
    "or.yml": rule(
        "or",
        "  a: {verb: delete}\n  b: {objectRef.resource: secrets}\n  condition: a or b\n",
    ),
    "wild.yml": rule(
        "wild", "  s: {verb: 'cr*', objectRef.resource|startswith: po}\n  condition: s\n"
    ),
    "cased.yml": rule("cased", "  s: {verb|cased: Create}\n  condition: s\n"),
    "all.yml": rule("all", "  s: {verb|all: [create, update]}\n  condition: s\n"),
    "alts.yml": rule(
        "alternatives",
        "  s:\n    - {verb: list, objectRef.resource: secrets}\n    - {verb: watch}\n"
        "  condition: s\n",
    ),
    "quant.yml": rule(
        "quantifier",
        "  sel_a: {verb: patch}\n  sel_b: {verb: update}\n  condition: 1 of sel_*\n",
    ),
    "any.yml": rule("any code", "  s: {responseStatus.code: [401, 403]}\n  condition: s\n"),
}

VERBS = [
    "get",
    "list",
    "watch",
    "create",
    "CREATE",
    "Create",
    "update",
    "patch",
    "delete",
    "",
    None,
]
RESOURCES = ["pods", "Pods", "secrets", "leases", "configmaps", "", None]
SUBS = ["exec", "attach", "log", "status", "", None]
USERS = ["system:anonymous", "System:Anonymous", "alice", "system:node:n1", ""]


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, sometimes absent (the key is then left out entirely) or of a wrong type."""
    return st.one_of(strategy, st.just("<absent>"), st.sampled_from([["create"], 7, {"x": 1}]))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Audit-ish events whose indexed and guarded fields are drawn from a small vocabulary."""
    code = draw(st.sampled_from([200, 201, 401, 403, "403", None, "<absent>"]))
    ev: dict[str, Any] = {} if code == "<absent>" else {"responseStatus": {"code": code}}
    user = draw(_maybe(st.sampled_from(USERS)))
    if user != "<absent>":
        ev["user"] = {
            "username": user,
            "groups": draw(st.lists(st.sampled_from(USERS), max_size=2)),
        }
    if draw(st.booleans()):
        ev["user.username"] = draw(st.sampled_from(USERS))  # a flattened dotted key
    verb = draw(_maybe(st.sampled_from(VERBS)))
    if verb != "<absent>":
        ev["verb"] = verb
    shape = draw(st.sampled_from(["dict", "absent", "null", "list", "dotted"]))
    res = draw(_maybe(st.sampled_from(RESOURCES)))
    sub = draw(_maybe(st.sampled_from(SUBS)))
    ref = {k: v for k, v in (("resource", res), ("subresource", sub)) if v != "<absent>"}
    if shape == "dict":
        ev["objectRef"] = ref
    elif shape == "null":
        ev["objectRef"] = None
    elif shape == "list":
        ev["objectRef"] = [ref]
    elif shape == "dotted":
        ev.update({f"objectRef.{k}": v for k, v in ref.items()})
    return ev


@pytest.fixture(scope="module")
def engines(corpus: Path) -> tuple[Engine, Engine]:
    """The index rules plus SigmaHQ's, with and without the candidate index."""
    ruleset = load_rules([corpus / "sigmahq-kubernetes-audit-rules"], texts=INDEX_RULES)
    return Engine(ruleset), Engine(ruleset, use_index=False)


@settings(max_examples=500, deadline=None)
@given(events())
def test_index_returns_exactly_what_brute_force_returns(
    engines: tuple[Engine, Engine], event: dict[str, Any]
) -> None:
    """Skipping rules by (verb, resource, subresource) never changes the result."""
    indexed, brute = engines
    assert [m.rule.id for m in indexed.evaluate(event)] == [
        m.rule.id for m in brute.evaluate(event)
    ]


@st.composite
def random_rule(draw: st.DrawFn) -> str:
    """A random rule over indexed and guardable fields with a random condition."""
    fields = [
        "verb",
        "objectRef.resource",
        "objectRef.subresource",
        "user.username",
        "user.groups",
        "responseStatus.code",
    ]
    vocab: dict[str, list[Any]] = {
        "verb": VERBS[:-1],
        "objectRef.resource": RESOURCES[:-1],
        "objectRef.subresource": SUBS,
        "user.username": [*USERS, None],
        "user.groups": USERS,
        "responseStatus.code": [200, 403, "401", None],
    }
    lines = []
    for name in NAMES:
        field = draw(st.sampled_from(fields))
        mod = draw(st.sampled_from(["", "|cased", "|contains", "|all", "|startswith"]))
        values = draw(st.lists(st.sampled_from(vocab[field]), min_size=1, max_size=3))
        if mod in ("|contains", "|all", "|startswith"):
            values = [v for v in values if v is not None] or ["x"]
        rendered = ", ".join("null" if v is None else repr(v) for v in values)
        lines.append(f"  {name}:\n    {field}{mod}: [{rendered}]\n")
    return rule("random", "".join(lines) + f"  condition: {render(draw(trees()))}\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(random_rule(), min_size=1, max_size=4), st.lists(events(), min_size=1, max_size=8))
def test_index_is_conservative_for_random_rules(
    texts: list[str], evs: list[dict[str, Any]]
) -> None:
    """For random rules and events, the indexed engine equals brute force."""
    ruleset = load_rules([], texts={f"r{i}.yml": t for i, t in enumerate(texts)})
    indexed, brute = Engine(ruleset), Engine(ruleset, use_index=False)
    for ev in evs:
        assert [m.rule.id for m in indexed.evaluate(ev)] == [m.rule.id for m in brute.evaluate(ev)]


def test_lease_update_is_checked_against_almost_no_rules(engines: tuple[Engine, Engine]) -> None:
    """A kubelet lease renewal only meets rules that could match an update of a lease."""
    indexed, _ = engines
    lease = {
        "verb": "update",
        "user": {"username": "system:node:n1", "groups": ["system:nodes"]},
        "objectRef": {"resource": "leases", "apiGroup": "coordination.k8s.io"},
        "responseStatus": {"code": 200},
    }
    names = sorted(c.rule.title for c in indexed.candidates(lease))
    # Rules on responseStatus.code (401/403, 'ALLOW') are skipped by their guard lookups.
    assert names == [
        "not get",  # a negation gives no constraint
        "quantifier",  # 1 of (patch, update)
    ]  # 'wild' (verb 'cr*') is not indexed, but folding its verb comparison for 'update' drops it


# --- derived fields, aliases, evidence ------------------------------------------------------------


def one_rule_engine(detection: str) -> Engine:
    """An engine holding a single rule."""
    return Engine(load_rules([], texts={"r.yml": rule("r", detection)}))


def test_exec_command_is_url_decoded_from_the_request_uri() -> None:
    """`command` lists the decoded command= values and `commandLine` joins them."""
    engine = one_rule_engine(
        "  s:\n    command: /bin/sh\n    commandLine|contains: 'cat /etc/shadow'\n  condition: s\n"
    )
    uri = (
        "/api/v1/namespaces/d/pods/p/exec"
        "?command=%2Fbin%2Fsh&command=-c&command=cat+%2Fetc%2Fshadow"
    )
    (match,) = engine.evaluate({"requestURI": uri})
    assert match.matched_fields == {
        "command": ["/bin/sh", "-c", "cat /etc/shadow"],
        "commandLine": "/bin/sh -c cat /etc/shadow",
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"kind": "Pod", "spec": {"hostPID": True}}, True),
        ({"kind": "Deployment", "spec": {"template": {"spec": {"hostPID": True}}}}, True),
        (
            {
                "kind": "CronJob",
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {"hostPID": True}}}}},
            },
            True,
        ),
        ({"spec": {"template": {"spec": {"hostPID": True}}}}, True),
        ({"kind": "Service", "spec": {"hostPID": True}}, False),
        ([{"op": "add", "path": "/spec/hostPID", "value": True}], False),
    ],
)
def test_pod_spec_is_found_whatever_the_kind(obj: Any, expected: bool) -> None:
    """`podSpec` reaches the pod spec of pods, workloads, cronjobs and strategic-merge patches."""
    engine = one_rule_engine("  s: {podSpec.hostPID: true}\n  condition: s\n")
    assert bool(engine.evaluate({"requestObject": obj})) is expected


def test_all_containers_crosses_every_container_kind() -> None:
    """`podSpec.allContainers` sees an init or ephemeral container that is privileged."""
    engine = one_rule_engine(
        "  s: {podSpec.allContainers.securityContext.privileged: true}\n  condition: s\n"
    )
    spec = {
        "containers": [{"name": "app"}],
        "ephemeralContainers": [{"securityContext": {"privileged": True}}],
    }
    assert engine.evaluate({"requestObject": {"kind": "Pod", "spec": spec}})
    assert not engine.evaluate(
        {"requestObject": {"kind": "Pod", "spec": {"containers": [{"name": "app"}]}}}
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"responseStatus": {"code": 201}}, True),
        ({"responseStatus": {"code": 403}}, False),
        ({"stage": "ResponseStarted", "responseStatus": {"code": 101}}, True),
        ({}, False),
    ],
)
def test_response_success(event: dict[str, Any], expected: bool) -> None:
    """`response.success` is code < 400, or 101 at ResponseStarted (exec streams)."""
    engine = one_rule_engine("  s: {response.success: true}\n  condition: s\n")
    assert bool(engine.evaluate(event)) is expected


def test_decision_source_ip_and_annotations_with_dots() -> None:
    """`decision`, `sourceIP` and dotted annotation keys resolve from the raw event."""
    engine = one_rule_engine(
        "  s:\n    decision: forbid\n    sourceIP|cidr: 203.0.113.0/24\n"
        "    annotations.authorization.k8s.io/reason|contains: RBAC\n  condition: s\n"
    )
    ev = {
        "sourceIPs": ["203.0.113.9", "10.0.0.1"],
        "annotations": {
            "authorization.k8s.io/decision": "forbid",
            "authorization.k8s.io/reason": "RBAC: no",
        },
    }
    assert engine.evaluate(ev)
    assert not engine.evaluate({**ev, "sourceIPs": ["10.0.0.1", "203.0.113.9"]})


def test_derived_fields_are_computed_once_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many rules reading podSpec cause one pod-spec extraction per evaluated event."""
    import detections.fields as fields

    calls = []
    original = fields._DERIVERS["podSpec"]

    def counting(ev: dict[str, Any]) -> Any:
        calls.append(1)
        return original(ev)

    monkeypatch.setitem(fields._DERIVERS, "podSpec", counting)
    texts = {
        f"r{i}.yml": rule(f"r{i}", f"  s: {{podSpec.volumes.name: v{i}}}\n  condition: s\n")
        for i in range(5)
    }
    engine = Engine(load_rules([], texts=texts))
    engine.evaluate({"requestObject": {"kind": "Pod", "spec": {"volumes": [{"name": "v1"}]}}})
    assert len(calls) == 1


# --- filters, correlations, reload ----------------------------------------------------------------


def test_meta_filter_suppresses_named_rule_only() -> None:
    """A Sigma filter document applies its allow-list to the rules it names, and no others."""
    texts = {
        "a.yml": rule(
            "exec", "  s: {objectRef.subresource: exec}\n  condition: s\n", "name: exec_rule\n"
        ),
        "b.yml": rule("exec too", "  s: {objectRef.subresource: exec}\n  condition: s\n"),
        "f.yml": (
            "title: CI may exec\nfilter:\n  rules: [exec_rule]\n"
            "  ci: {user.username: ci-bot}\n  condition: not ci\n"
        ),
    }
    engine = Engine(load_rules([], texts=texts))
    by_ci = {"objectRef": {"subresource": "exec"}, "user": {"username": "ci-bot"}}
    by_eve = {"objectRef": {"subresource": "exec"}, "user": {"username": "eve"}}
    assert [m.rule.title for m in engine.evaluate(by_ci)] == ["exec too"]
    assert [m.rule.title for m in engine.evaluate(by_eve)] == ["exec", "exec too"]


def test_correlations_are_parsed_and_kept_but_not_evaluated() -> None:
    """Correlation documents load into the rule set for a stateful engine."""
    texts = {
        "r.yml": rule("denied", "  s: {decision: forbid}\n  condition: s\n", "name: denied\n"),
        "c.yml": (
            "title: burst\ncorrelation:\n  type: event_count\n  rules: denied\n"
            "  group-by: [user.username]\n  timespan: 10m\n  condition: {gte: 20}\n"
        ),
    }
    ruleset = load_rules([], texts=texts)
    (corr,) = ruleset.correlations
    assert (corr.type, corr.rules, corr.group_by, corr.timespan_seconds, corr.condition) == (
        "event_count",
        ("denied",),
        ("user.username",),
        600,
        {"gte": 20},
    )
    assert len(Engine(ruleset).rules) == 1


def test_broken_reload_raises_and_leaves_the_old_engine_working(tmp_path: Path) -> None:
    """Engine.from_paths on a broken file raises; the engine already built keeps matching."""
    path = tmp_path / "r.yml"
    path.write_text(rule("exec", "  s: {objectRef.subresource: exec}\n  condition: s\n"))
    old = Engine.from_paths([tmp_path])
    path.write_text(rule("exec", "  s: {objectRef.subresource: exec}\n  condition: s and nope\n"))
    with pytest.raises(RuleLoadError):
        Engine.from_paths([tmp_path])
    assert old.evaluate({"objectRef": {"subresource": "exec"}})


def test_evaluate_batch_keeps_event_then_rule_order() -> None:
    """Batch results are in input order."""
    engine = Engine(load_rules([], texts=INDEX_RULES))
    evs = [{"verb": "delete"}, {"verb": "watch"}]
    assert [m.event["verb"] for m in engine.evaluate_batch(evs)] == [
        m.event["verb"] for ev in evs for m in engine.evaluate(ev)
    ]


# --- field walkers --------------------------------------------------------------------------------


def ref_walk(node: Any, segments: list[str]) -> list[Any]:
    """Reference walker: cross lists, prefer the plain key, else the longest dotted key."""
    if isinstance(node, list):
        return [leaf for item in node for leaf in ref_walk(item, segments)]
    if not segments:
        return [node]
    if not isinstance(node, dict):
        return []
    if segments[0] in node:
        return ref_walk(node[segments[0]], segments[1:])
    for end in range(len(segments), 1, -1):
        key = ".".join(segments[:end])
        if key in node:
            return ref_walk(node[key], segments[end:])
    return []


json_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(0, 3), st.sampled_from(["x", "y"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "a.b", "b.c", "a.b.c"]), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(json_trees, st.sampled_from(["a", "a.b", "a.b.c", "b.c", "c.a.b", "a.c.b"]))
def test_compiled_walker_matches_reference(tree: Any, field: str) -> None:
    """Compiled field access crosses lists and finds dotted keys exactly like the reference."""
    from detections.fields import compile_path

    event = {"root": tree}
    assert list(compile_path("root." + field)(event, {})) == ref_walk(
        event, ["root", *field.split(".")]
    )


GUARDED = {
    "anon.yml": rule("anonymous", "  s: {user.username: System:Anonymous}\n  condition: s\n"),
    "group.yml": rule("group", "  s: {user.groups|cased: admins}\n  condition: s\n"),
    "code.yml": rule("code", "  s: {responseStatus.code: ['401', 403]}\n  condition: s\n"),
    "prefix.yml": rule("prefix", "  s: {userAgent|startswith: curl}\n  condition: s\n"),
    "pod.yml": rule("pod", "  s: {podSpec.hostPID: true}\n  condition: s\n"),
    "either.yml": rule(
        "either",
        "  a: {user.username: mallory}\n  b: {impersonatedUser.username|contains: admin}\n"
        "  condition: a or b\n",
    ),
}


@pytest.mark.parametrize(
    "event",
    [
        {"user": {"username": "system:anonymous"}},
        {"user": {"username": ["x", "SYSTEM:ANONYMOUS"]}},
        {"user.username": "system:anonymous"},
        {"user": {"groups": ["admins", "devs"]}},
        {"responseStatus": {"code": 401}},
        {"responseStatus": {"code": "403"}},
        {"userAgent": "curl/8.5"},
        {"requestObject": {"kind": "Pod", "spec": {"hostPID": True}}},
        {
            "requestObject": {
                "kind": "Deployment",
                "spec": {"template": {"spec": {"hostPID": True}}},
            }
        },
        {"requestObject": {"kind": "Pod", "spec": {"hostPID": "TRUE"}}},
        {"impersonatedUser": {"username": "cluster-ADMIN"}},
        {"impersonatedUser.username": "admin"},
        {"user": {"username": "Mallory"}, "verb": "get", "objectRef": {"resource": "pods"}},
    ],
)
def test_guards_never_hide_a_match(event: dict[str, Any]) -> None:
    """Guard lookups (exact values and field presence) agree with brute force."""
    ruleset = load_rules([], texts=GUARDED)
    indexed, brute = Engine(ruleset), Engine(ruleset, use_index=False)
    expected = [m.rule.title for m in brute.evaluate(event)]
    assert expected, "each example event matches at least one rule"
    assert [m.rule.title for m in indexed.evaluate(event)] == expected


def test_guards_skip_rules_for_ordinary_events() -> None:
    """An ordinary event meets none of the guarded rules, a userAgent prefix rule included."""
    engine = Engine(load_rules([], texts=GUARDED))
    ev = {"user": {"username": "alice", "groups": ["devs"]}, "userAgent": "kubectl", "verb": "get"}
    assert [c.rule.title for c in engine.candidates(ev)] == []
    ev["userAgent"] = "CURL/8.5"
    assert [c.rule.title for c in engine.candidates(ev)] == ["prefix"]


# --- the whole pack: folding, guards and blockers agree with brute force --------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "replay" / "sample" / "cluster-sample.jsonl.gz"
PRINCIPALS = [
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:node:node-1",
    "system:anonymous",
    "system:serviceaccount:shop:web",
    "kubernetes-admin",
    "mallory",
]


@pytest.fixture(scope="module")
def pack_engines(corpus: Path) -> tuple[Engine, Engine]:
    """The packaged rules (correlation base rules included) plus SigmaHQ's, both ways."""
    from detections.loader import PACKAGED_RULES

    ruleset = load_rules([PACKAGED_RULES, corpus / "sigmahq-kubernetes-audit-rules"])
    return Engine(ruleset), Engine(ruleset, use_index=False)


def pack_events() -> list[dict[str, Any]]:
    """The bundled replay sample, every fixture of the pack, and each fixture as other users."""
    import gzip
    import json

    from detections.fixtures import fixture_event
    from detections.loader import PACKAGED_RULES

    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        out = [json.loads(line) for line in f if line.strip()]
    for r in load_rules([PACKAGED_RULES]).rules:
        for case in r.klaxon.tests:
            ev = fixture_event(case.event)
            out.append(ev)
            for who in PRINCIPALS:
                out.append({**ev, "user": {**ev.get("user", {}), "username": who}})
    return out


def test_pack_agrees_with_brute_force_on_real_traffic(pack_engines: tuple[Engine, Engine]) -> None:
    """Over the replay sample and the pack's fixtures (as many identities), the planned engine
    returns exactly what checking every rule returns."""
    indexed, brute = pack_engines
    events = pack_events()
    assert len(events) > 4000
    differences = [
        (ev.get("auditID"), [m.rule.title for m in indexed.evaluate(ev)])
        for ev in events
        if [m.rule.id for m in indexed.evaluate(ev)] != [m.rule.id for m in brute.evaluate(ev)]
    ]
    assert differences == []


def test_control_plane_identities_are_ruled_out_by_their_allow_list(
    pack_engines: tuple[Engine, Engine],
) -> None:
    """A rule that trusts system principals is not even a candidate for their requests."""
    indexed, _ = pack_engines
    read = {
        "verb": "get",
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "configmaps", "namespace": "shop"},
        "responseStatus": {"code": 200},
        "userAgent": "kubectl/v1.31.2",
    }
    titles = {c.rule.title for c in indexed.candidates(read)}
    assert "Resource read (get or list)" in titles
    controller = {**read, "user": {"username": "system:kube-controller-manager"}}
    assert "Resource read (get or list)" not in {
        c.rule.title for c in indexed.candidates(controller)
    }


def test_keys_beyond_the_plan_cap_check_every_rule(
    monkeypatch: pytest.MonkeyPatch, pack_engines: tuple[Engine, Engine]
) -> None:
    """Once MAX_CANDIDATE_KEYS keys are planned, a flood of new verbs costs no plan builds and
    still gets the right answer."""
    import detections.engine as engine_module

    _, brute = pack_engines
    engine = Engine(brute.ruleset)
    monkeypatch.setattr(engine_module, "MAX_CANDIDATE_KEYS", 3)
    events = [
        {"verb": f"v{i}", "user": {"username": "system:anonymous"}, "objectRef": {}}
        for i in range(10)
    ]
    for ev in events:
        assert [m.rule.id for m in engine.evaluate(ev)] == [m.rule.id for m in brute.evaluate(ev)]
    assert len(engine._plans) == 3


def test_trust_bound_to_an_empty_network_list_keeps_its_blocker_and_waiting_rules_drop_out(
    pack_engines: tuple[Engine, Engine],
) -> None:
    """While cluster_networks is empty, `not (trusted_system and not from_outside)` still rules
    a system principal out in one lookup, and rules that need the list are never candidates;
    once it is filled, the rule is evaluated for them (and fires from outside)."""
    from dataclasses import replace

    indexed, _ = pack_engines
    controller = {
        "verb": "get",
        "user": {"username": "system:kube-controller-manager"},
        "objectRef": {"resource": "configmaps", "namespace": "shop"},
        "responseStatus": {"code": 200},
        "sourceIPs": ["203.0.113.7"],
    }
    node = {**controller, "user": {"username": "system:node:n1"}}
    assert "Resource read (get or list)" not in {
        c.rule.title for c in indexed.candidates(controller)
    }
    node_rule = "Node identity used from outside the cluster"
    assert node_rule not in {c.rule.title for c in indexed.candidates(node)}
    filled = Engine(
        replace(
            indexed.ruleset,
            lists={**indexed.ruleset.lists, "cluster_networks": ("10.0.0.0/8",)},
        )
    )
    assert "Resource read (get or list)" in {c.rule.title for c in filled.candidates(controller)}
    assert node_rule in {m.rule.title for m in filled.evaluate(node)}
    assert "Resource read (get or list)" in {m.rule.title for m in filled.evaluate(controller)}
    inside = {**controller, "sourceIPs": ["10.1.2.3"]}
    assert "Resource read (get or list)" not in {m.rule.title for m in filled.evaluate(inside)}


def test_trust_from_inside_rules_out_in_one_lookup_and_one_address_check(
    pack_engines: tuple[Engine, Engine],
) -> None:
    """With cluster_networks filled, `not (trusted_system and not from_outside)` rules a system
    principal's in-cluster requests out (the user-name lookup, then one check of the source
    addresses), and the planned engine returns exactly what brute force returns from inside,
    outside, both, and without usable addresses."""
    from dataclasses import replace

    indexed, _ = pack_engines
    outside_ips = {"sourceIPs": ["203.0.113.7"]}
    lists = {**indexed.ruleset.lists, "cluster_networks": ("10.0.0.0/8",)}
    ruleset = replace(indexed.ruleset, lists=lists)
    filled, brute = Engine(ruleset), Engine(ruleset, use_index=False)
    controller = {
        "verb": "get",
        "user": {"username": "system:kube-controller-manager"},
        "objectRef": {"resource": "configmaps", "namespace": "shop"},
        "responseStatus": {"code": 200},
        "sourceIPs": ["10.1.2.3"],
    }
    assert "Resource read (get or list)" not in {
        c.rule.title for c in filled.candidates(controller)
    }
    outside = {**controller, "sourceIPs": ["203.0.113.7"]}
    assert "Resource read (get or list)" in {c.rule.title for c in filled.candidates(outside)}
    # `|outside` guards too: a node's in-cluster request is no candidate for the node rule
    node = {**controller, "user": {"username": "system:node:n1"}}
    node_rule = "Node identity used from outside the cluster"
    assert node_rule not in {c.rule.title for c in filled.candidates(node)}
    assert node_rule in {c.rule.title for c in filled.candidates({**node, **outside_ips})}
    sources: list[Any] = [
        ["10.1.2.3"],
        ["203.0.113.7", "10.1.2.3"],
        [],
        None,
        ["x"],
        [7],
        "10.9.9.9",
    ]
    differences = [
        (ev.get("auditID"), ev.get("sourceIPs"), [m.rule.title for m in filled.evaluate(ev)])
        for base in pack_events()[::2]
        for ev in [{**base, "sourceIPs": ips} for ips in sources]
        if [m.rule.id for m in filled.evaluate(ev)] != [m.rule.id for m in brute.evaluate(ev)]
    ]
    assert differences == []


def test_remembered_selections_are_bounded_and_forgetting_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, pack_engines: tuple[Engine, Engine]
) -> None:
    """Selections are remembered per distinct lookup results, up to MAX_SELECTIONS for all
    plans together; past that they are forgotten, and the answers stay the same."""
    import detections.engine as engine_module

    _, brute = pack_engines
    engine = Engine(brute.ruleset)
    monkeypatch.setattr(engine_module, "MAX_SELECTIONS", 5)
    for ev in pack_events()[:600]:
        assert [m.rule.id for m in engine.evaluate(ev)] == [m.rule.id for m in brute.evaluate(ev)]
        assert sum(len(plan.chosen) for plan in engine._plans.values()) <= 5


def test_events_off_the_inline_path_agree_with_brute_force(
    pack_engines: tuple[Engine, Engine],
) -> None:
    """evaluate() settles the common case (a planned key, a remembered selection) inline;
    unhashable index values, a missing or odd objectRef, flattened dotted keys, a first and a
    second sight of a key get exactly what checking every rule gets."""
    indexed, brute = pack_engines
    base = {
        "verb": "list",
        "user": {"username": "mallory", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "secrets", "namespace": "kube-system"},
        "responseStatus": {"code": 200},
        "sourceIPs": ["203.0.113.7"],
    }
    odd: list[dict[str, Any]] = [
        base,
        {**base, "verb": ["list"]},
        {**base, "objectRef": {"resource": {"x": 1}}},
        {**base, "objectRef": ["secrets"]},
        {**base, "objectRef": None, "objectRef.resource": "secrets"},
        {k: v for k, v in base.items() if k != "objectRef"},
        {**base, "verb": "a-verb-never-seen"},
    ]
    for ev in odd * 2:
        assert [m.rule.id for m in indexed.evaluate(ev)] == [m.rule.id for m in brute.evaluate(ev)]
