"""Sigma correlations over event time: windows, lateness, episodes, ids, restarts."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detections import Engine, load_rules
from detections.fixtures import fixture_event
from detections.stateful import load_new_terms, suppressed_rule_ids
from detections.stateful.correlation import (
    CorrelationEngine,
    CorrelationSpec,
    Settings,
    advance,
    check_state,
    generated_rule_ids,
    observe,
    step,
)
from detections.stateful.errors import StateFormatError, UnsupportedCorrelation
from detections.stateful.timeutil import iso
from schemas.alert import Alert

T0 = 1_795_770_000.0
DEFAULT = Settings()  # 2026-11-27T09:00:00Z

BASE = """
title: Base A
id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
name: base-a
detection: {selection: {verb: get}, condition: selection}
---
title: Base B
id: 7f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
name: base-b
detection: {selection: {verb: create}, condition: selection}
"""


@functools.cache
def spec_for(corr: str) -> CorrelationSpec:
    """Compile one correlation document written against base-a / base-b."""
    rs = load_rules([], texts={"r.yml": BASE + "---\n" + corr})
    return CorrelationSpec.from_correlation(rs.correlations[0], rs)


COUNT3 = """
title: Three in a minute
id: 2d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
correlation: {type: event_count, rules: [base-a], group-by: [user.username], timespan: 1m,
              condition: {gte: 3}}
"""


def ev(t: float, i: int | str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    """A canonical event at epoch time ``t`` with auditID ``e<i>``."""
    return fixture_event(
        {
            "requestReceivedTimestamp": iso(t),
            "auditID": f"e{i}",
            "user": {"username": user},
            **extra,
        }
    )


def run(
    spec: CorrelationSpec,
    events: list[tuple[int, dict[str, Any]]],
    cfg: Settings = DEFAULT,
    state: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Feed (rule index, event) pairs of one group through ``step``."""
    alerts: list[dict[str, Any]] = []
    for idx, event in events:
        obs = observe(spec, idx, event)
        assert obs is not None
        state, out = step(spec, state, obs, cfg)
        alerts += out
    return state, alerts


def test_fires_when_threshold_reached_inside_window() -> None:
    """Three matches within 60 s fire once, at the third, with the window in the evidence."""
    spec = spec_for(COUNT3)
    _, alerts = run(spec, [(0, ev(T0 + i * 20, i)) for i in range(3)])
    assert len(alerts) == 1
    a = alerts[0]
    assert a["evidence"]["count"] == 3
    assert a["evidence"]["window"]["start"] == iso(T0)
    assert a["evidence"]["window"]["end"] == iso(T0 + 40)
    assert a["evidence"]["event_ids"] == ["e0", "e1", "e2"]
    Alert.model_validate(a)


def test_window_start_is_exclusive() -> None:
    """Events exactly one timespan apart never share a window; a microsecond less does."""
    spec = spec_for(COUNT3)
    _, apart = run(spec, [(0, ev(T0, 0)), (0, ev(T0 + 30, 1)), (0, ev(T0 + 60, 2))])
    assert apart == []
    _, inside = run(spec, [(0, ev(T0, 0)), (0, ev(T0 + 30, 1)), (0, ev(T0 + 59.999999, 2))])
    assert len(inside) == 1


def test_sustained_burst_alerts_once_per_timespan() -> None:
    """One event per second for 3 minutes: 3 alerts, each counting only events after the last."""
    spec = spec_for(COUNT3)
    _, alerts = run(spec, [(0, ev(T0 + i, i)) for i in range(180)])
    ends = [a["evidence"]["window"]["end"] for a in alerts]
    assert ends == [iso(T0 + 2), iso(T0 + 62), iso(T0 + 122)]
    starts = [a["evidence"]["window"]["start"] for a in alerts]
    assert starts == [iso(T0), iso(T0 + 3), iso(T0 + 63)]
    assert [a["evidence"]["count"] for a in alerts] == [3, 60, 60]


def test_late_event_is_counted_and_ignored() -> None:
    """An event older than watermark - lateness neither counts nor fires; it is tallied."""
    spec = spec_for(COUNT3)
    cfg = Settings(lateness=5)
    events = [(0, ev(T0 + 100, 1)), (0, ev(T0 + 101, 2)), (0, ev(T0 + 90, 3))]
    state, alerts = run(spec, events, cfg)
    assert alerts == []
    assert state is not None and state["late"] == 1
    _, more = run(spec, [(0, ev(T0 + 96, 4))], cfg, state)
    assert len(more) == 1 and more[0]["evidence"]["event_ids"] == ["e4", "e1", "e2"]


def test_out_of_order_event_within_lateness_completes_window() -> None:
    """A slightly late event is inserted in time order and the window it completes fires."""
    spec = spec_for(COUNT3)
    _, alerts = run(spec, [(0, ev(T0 + 10, 1)), (0, ev(T0 + 30, 2)), (0, ev(T0 + 5, 0))])
    assert len(alerts) == 1
    assert alerts[0]["evidence"]["event_ids"] == ["e0", "e1", "e2"]
    assert alerts[0]["evidence"]["window"]["end"] == iso(T0 + 30)


def test_alert_id_is_deterministic_and_depends_on_group_and_first_event() -> None:
    """Same events, same id; another user or another first event, another id."""
    spec = spec_for(COUNT3)
    one = run(spec, [(0, ev(T0 + i, i)) for i in range(3)])[1][0]["id"]
    again = run(spec, [(0, ev(T0 + i, i)) for i in range(3)])[1][0]["id"]
    bob = run(spec, [(0, ev(T0 + i, i, user="bob")) for i in range(3)])[1][0]["id"]
    shifted = run(spec, [(0, ev(T0 + i, i + 1)) for i in range(3)])[1][0]["id"]
    assert one == again
    assert len({one, bob, shifted}) == 3


def test_groups_are_separate_per_user_and_cluster() -> None:
    """Matches of different users or clusters never add up."""
    spec = spec_for(COUNT3)
    eng_events = [ev(T0, 0), ev(T0 + 1, 1, user="bob"), ev(T0 + 2, 2, cluster="other")]
    keys = {observe(spec, 0, e).key for e in eng_events}  # type: ignore[union-attr]
    assert len(keys) == 3


def test_event_without_group_field_or_time_is_unusable() -> None:
    """No time or no group-by value: the match cannot be attributed, so it is skipped."""
    spec = spec_for(COUNT3)
    no_time = ev(T0, 0)
    del no_time["requestReceivedTimestamp"], no_time["stageTimestamp"]
    assert observe(spec, 0, no_time) is None
    no_user = ev(T0, 1)
    no_user["user"] = {}
    assert observe(spec, 0, no_user) is None


def test_value_count_counts_distinct_values() -> None:
    """value_count compares the number of distinct field values, not events."""
    spec = spec_for("""
title: Many resources
id: 3d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
correlation: {type: value_count, rules: [base-a], group-by: [user.username], timespan: 1m,
              condition: {gte: 3, field: objectRef.resource}}
""")
    same = [(0, ev(T0 + i, i, objectRef={"resource": "pods"})) for i in range(10)]
    assert run(spec, same)[1] == []
    kinds = ["pods", "pods", "secrets", "nodes"]
    varied = [(0, ev(T0 + i, i, objectRef={"resource": r})) for i, r in enumerate(kinds)]
    alerts = run(spec, varied)[1]
    assert len(alerts) == 1
    assert alerts[0]["evidence"]["values"] == ["nodes", "pods", "secrets"]
    assert alerts[0]["evidence"]["count"] == 3


TEMPORAL_ORDERED = """
title: A then B
id: 4d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
correlation: {type: temporal_ordered, rules: [base-a, base-b], group-by: [user.username],
              timespan: 5m}
"""


def test_temporal_ordered_needs_order_and_proximity() -> None:
    """A then B within 5 minutes fires; B then A, or A then B 5 minutes later, does not."""
    spec = spec_for(TEMPORAL_ORDERED)
    assert len(run(spec, [(0, ev(T0, 0)), (1, ev(T0 + 120, 1))])[1]) == 1
    assert run(spec, [(1, ev(T0, 0)), (0, ev(T0 + 120, 1))])[1] == []
    assert run(spec, [(0, ev(T0, 0)), (1, ev(T0 + 300, 1))])[1] == []


def test_temporal_unordered_accepts_any_order() -> None:
    """temporal fires when every rule matched in the window, whatever the order."""
    spec = spec_for(TEMPORAL_ORDERED.replace("temporal_ordered", "temporal"))
    assert len(run(spec, [(1, ev(T0, 0)), (0, ev(T0 + 120, 1))])[1]) == 1


LESS_THAN = """
title: Too few
id: 5d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
correlation: {type: event_count, rules: [base-a], group-by: [user.username], timespan: 1m,
              condition: {lt: 3}}
"""


def test_less_than_is_judged_when_the_window_closes() -> None:
    """lt waits for the window [first, first+span) to close (span + lateness), then judges it."""
    spec = spec_for(LESS_THAN)
    cfg = Settings(lateness=10)
    state, alerts = run(spec, [(0, ev(T0, 0)), (0, ev(T0 + 30, 1))], cfg)
    assert alerts == [] and state is not None
    state, alerts = advance(spec, state, T0 + 69, cfg)
    assert alerts == []
    state, alerts = advance(spec, state, T0 + 70, cfg)  # type: ignore[arg-type]
    assert [a["evidence"]["count"] for a in alerts] == [2]
    assert state is None  # nothing left: the key can be deleted


def test_less_than_does_not_fire_for_a_full_window() -> None:
    """A closed window with enough events does not satisfy lt; the next window starts fresh."""
    spec = spec_for(LESS_THAN)
    events = [(0, ev(T0 + i, i)) for i in range(5)] + [(0, ev(T0 + 200, 9))]
    state, alerts = run(spec, events, Settings(lateness=0))
    assert alerts == []
    assert state is not None and state["anchor"] == T0 + 200


def test_advance_forgets_idle_sliding_groups() -> None:
    """After timespan + lateness without events (and past re-arm), the group state is dropped."""
    spec = spec_for(COUNT3)
    state, _ = run(spec, [(0, ev(T0 + i, i)) for i in range(3)])
    assert state is not None
    kept, _ = advance(spec, state, T0 + 60, Settings())
    assert kept is not None
    gone, _ = advance(spec, state, T0 + 200, Settings())
    assert gone is None


def test_event_cap_bounds_the_state() -> None:
    """No group keeps more than max_events_per_group events; drops are counted."""
    spec = spec_for(COUNT3.replace("gte: 3", "gte: 1000"))
    state, _ = run(
        spec, [(0, ev(T0 + i / 100, i)) for i in range(300)], Settings(max_events_per_group=50)
    )
    assert state is not None and len(state["ev"]) == 50 and state["dropped"] == 250


def test_bad_state_is_rejected() -> None:
    """A checkpoint that is not ours raises StateFormatError instead of misbehaving."""
    with pytest.raises(StateFormatError):
        check_state({"v": 99})
    with pytest.raises(StateFormatError):
        check_state([1, 2])


def test_step_does_not_mutate_its_input_state() -> None:
    """step returns a new state, so a failed write can keep the old one."""
    spec = spec_for(COUNT3)
    state, _ = run(spec, [(0, ev(T0, 0))])
    assert state is not None
    frozen = json.dumps(state)
    run(spec, [(0, ev(T0 + 1, 1))], state=state)
    assert json.dumps(state) == frozen


def test_chained_correlations_are_refused_explicitly() -> None:
    """A correlation over another correlation raises UnsupportedCorrelation (not silently wrong)."""
    rs = load_rules(
        [],
        texts={
            "r.yml": BASE
            + "---\n"
            + COUNT3.replace("title: Three", "name: three\ntitle: Three")
            + """---
title: Chained
id: 9d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
correlation: {type: event_count, rules: [three], group-by: [user.username], timespan: 1h,
              condition: {gte: 2}}
"""
        },
    )
    with pytest.raises(UnsupportedCorrelation):
        CorrelationSpec.from_correlation(rs.correlations[1], rs)


# -- properties ---------------------------------------------------------------------------------

offsets = st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), min_size=1, max_size=40)


def _stream(spec: CorrelationSpec, times: list[float]) -> list[tuple[int, dict[str, Any]]]:
    return [(i % len(spec.rules), ev(T0 + round(t, 3), i)) for i, t in enumerate(times)]


@settings(max_examples=60, deadline=None)
@given(
    times=offsets,
    cut=st.integers(min_value=0, max_value=40),
    kind=st.sampled_from([COUNT3, TEMPORAL_ORDERED, LESS_THAN]),
)
def test_restart_mid_stream_gives_identical_results(
    times: list[float], cut: int, kind: str
) -> None:
    """Serialising the state to JSON at any point and resuming changes no alert and no state."""
    spec = spec_for(kind)
    stream = _stream(spec, times)
    cfg = Settings(lateness=20)
    whole_state, whole = run(spec, stream, cfg)
    mid_state, first = run(spec, stream[:cut], cfg)
    restored = json.loads(json.dumps(mid_state)) if mid_state is not None else None
    end_state, second = run(spec, stream[cut:], cfg, restored)
    assert first + second == whole
    assert end_state == whole_state


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(
        st.floats(min_value=0, max_value=50, allow_nan=False), min_size=3, max_size=8, unique=True
    ),
    seed=st.integers(0, 1000),
)
def test_window_alert_is_independent_of_arrival_order(times: list[float], seed: int) -> None:
    """Within lateness, the alert that needs every event of a window is the same in any order.

    (With more events than the threshold, which subset completes first, hence the alert's
    first event and id, depends on arrival order; a replay in the same order is identical.)
    """
    spec = spec_for(COUNT3.replace("gte: 3", f"gte: {len(times)}"))
    stream = _stream(spec, times)
    if len({p[1]["requestReceivedTimestamp"] for p in stream}) < len(stream):
        return  # rounding to microseconds made two times equal
    shuffled = stream[:]
    random.Random(seed).shuffle(shuffled)
    cfg = Settings(lateness=60)
    ordered = sorted(stream, key=lambda p: p[1]["requestReceivedTimestamp"])
    ids_sorted = [a["id"] for a in run(spec, ordered, cfg)[1]]
    ids_shuffled = [a["id"] for a in run(spec, shuffled, cfg)[1]]
    assert len(ids_sorted) == 1
    assert ids_shuffled == ids_sorted


# -- the shipped rule pack --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack() -> tuple[Engine, CorrelationEngine]:
    """The packaged rules (stateless engine) and their correlations."""
    rs = load_rules()
    return Engine(rs), CorrelationEngine(rs)


def feed(pack: tuple[Engine, CorrelationEngine], events: list[dict[str, Any]]) -> list[str]:
    """Titles of correlation alerts raised by a stream of events."""
    engine, corr = pack
    corr.store.clear()
    out = []
    for e in events:
        for m in engine.evaluate(e):
            out += [a["rule"]["title"] for a in corr.process(m)]
    return out


def test_pack_forbidden_burst_per_ip() -> None:
    """Twenty 403s from one IP in a minute raise the per-IP and per-user bursts once each."""
    rs = load_rules()
    pk = (Engine(rs), CorrelationEngine(rs))
    events = [
        ev(T0 + i * 2, i, responseStatus={"code": 403}, sourceIPs=["203.0.113.7"])
        for i in range(25)
    ]
    titles = feed(pk, events)
    assert sorted(titles) == [
        "Burst of refused requests by one user",
        "Burst of refused requests from one source IP",
    ]
    many_users = [
        ev(T0 + i, i, user=f"u{i}", responseStatus={"code": 401}, sourceIPs=["203.0.113.8"])
        for i in range(20)
    ]
    assert feed(pk, many_users) == ["Burst of refused requests from one source IP"]
    assert feed(pk, events[:19]) == []


def test_pack_discovery_secret_exec_and_rbac_sequence(
    pack: tuple[Engine, CorrelationEngine],
) -> None:
    """Each shipped correlation fires on its attack shape and stays quiet below threshold."""
    kinds = [
        "pods",
        "services",
        "secrets",
        "configmaps",
        "nodes",
        "namespaces",
        "deployments",
        "roles",
        "rolebindings",
        "serviceaccounts",
        "ingresses",
    ]
    sweep = [
        ev(T0 + i, i, verb="list", objectRef={"resource": r, "name": None})
        for i, r in enumerate(kinds)
    ]
    assert "Discovery sweep across many resource types" in feed(pack, sweep)
    assert feed(pack, sweep[:9]) == []
    secrets = [
        ev(T0 + i * 10, i, objectRef={"resource": "secrets", "name": f"s{i}"}) for i in range(15)
    ]
    assert feed(pack, secrets) == ["Burst of secret reads by one identity"]
    execs = [
        ev(
            T0 + i * 30,
            i,
            verb="create",
            stage="ResponseStarted",
            objectRef={"subresource": "exec", "name": f"web-{i}"},
            responseStatus={"code": 101},
        )
        for i in range(5)
    ]
    assert feed(pack, execs) == ["Exec into many pods by one identity"]
    rbac = ev(
        T0,
        "r",
        verb="create",
        responseStatus={"code": 201},
        objectRef={
            "resource": "clusterrolebindings",
            "name": "x",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    )
    deploy = ev(
        T0 + 200,
        "d",
        verb="create",
        responseStatus={"code": 201},
        objectRef={"resource": "deployments", "apiGroup": "apps", "name": "x"},
    )
    assert feed(pack, [rbac, deploy]) == [
        "RBAC change followed by a workload write by the same identity"
    ]
    assert feed(pack, [deploy, rbac]) == []


def test_pack_base_rules_are_suppressed_unless_generated(
    pack: tuple[Engine, CorrelationEngine],
) -> None:
    """Every shipped base rule is consumed with generate: false, so it never alerts alone."""
    _, corr = pack
    rs = load_rules()
    base = {r.id for r in rs.rules if r.source.startswith("detections/rules/correlations/")}
    by_corr = {r.id for r in rs.rules for c in rs.correlations if {r.id, r.name} & set(c.rules)}
    assert corr.suppressed_rules() == by_corr
    assert suppressed_rule_ids(rs, load_new_terms(ruleset=rs)) == base


def test_an_engine_over_given_specs_routes_only_their_rules() -> None:
    """`CorrelationEngine(specs=...)` runs just those correlations; `rule_targets` lists the
    (correlation, position) pairs of a base rule; `generated_rule_ids` the ``generate: true``
    base rules."""
    rs = load_rules()
    full = CorrelationEngine(rs)
    first = full.specs[0]
    some = CorrelationEngine(rs, specs=[first])
    assert some.specs == (first,)
    rule = rs.find(first.rules[0])
    assert rule is not None
    assert (first, 0) in some.rule_targets(rule.id)
    assert {s.id for s, _ in some.rule_targets(rule.id)} == {first.id}
    assert some.rule_targets("no such rule") == []
    generated = generated_rule_ids(rs)
    assert generated.isdisjoint(suppressed_rule_ids(rs))


def test_pack_csr_created_and_approved_by_the_same_identity(
    pack: tuple[Engine, CorrelationEngine],
) -> None:
    """Creating a CSR and approving it oneself alerts; a kubelet's CSR approved by the
    controller manager, or approving before creating, does not."""
    title = "Certificate signing request created and approved by the same identity"

    def create(t: float, user: str, name: str) -> dict[str, Any]:
        return ev(
            t,
            f"c-{user}-{name}",
            user=user,
            verb="create",
            objectRef={"resource": "certificatesigningrequests", "name": name, "namespace": None},
            responseStatus={"code": 201},
        )

    def approve(t: float, user: str, name: str) -> dict[str, Any]:
        return ev(
            t,
            f"a-{user}-{name}",
            user=user,
            verb="update",
            objectRef={
                "resource": "certificatesigningrequests",
                "subresource": "approval",
                "name": name,
                "namespace": None,
            },
            responseStatus={"code": 200},
            requestObject={"status": {"conditions": [{"type": "Approved", "status": "True"}]}},
        )

    assert feed(pack, [create(T0, "mallory", "b"), approve(T0 + 30, "mallory", "b")]) == [title]
    kubelet = [create(T0, "system:node:n1", "node-csr-1")]
    kubelet.append(approve(T0 + 1, "system:kube-controller-manager", "node-csr-1"))
    assert feed(pack, kubelet) == []
    assert feed(pack, [create(T0, "mallory", "b"), approve(T0 + 30, "mallory", "other")]) == []
    assert feed(pack, [approve(T0, "mallory", "b"), create(T0 + 30, "mallory", "b")]) == []


def test_pack_helm_install_lowers_rbac_then_workload_but_never_for_dangerous_rbac(
    pack: tuple[Engine, CorrelationEngine],
) -> None:
    """A chart install (Helm user agent, Helm's label and release annotation on a harmless
    binding) raises the low installer sequence instead of the high one; the same markers on
    a cluster-admin binding, or the user agent alone, keep the high sequence."""
    helm_meta = {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": "web"},
    }

    def binding(role: str, meta: dict[str, Any] | None, ua: str = "Helm/3.14.2") -> dict[str, Any]:
        return ev(
            T0,
            f"rb-{role}-{bool(meta)}-{ua}",
            user="ci",
            verb="create",
            userAgent=ua,
            responseStatus={"code": 201},
            objectRef={"resource": "clusterrolebindings", "name": "x", "namespace": None},
            requestObject={
                "metadata": meta or {},
                "roleRef": {"kind": "ClusterRole", "name": role},
            },
        )

    deploy = ev(
        T0 + 30,
        "deploy",
        user="ci",
        verb="create",
        userAgent="Helm/3.14.2",
        responseStatus={"code": 201},
        objectRef={"resource": "deployments", "apiGroup": "apps", "name": "web"},
    )
    high = "RBAC change followed by a workload write by the same identity"
    low = "Helm install with RBAC followed by a workload write by the same identity"
    assert feed(pack, [binding("web-reader", helm_meta), deploy]) == [low]
    assert feed(pack, [binding("cluster-admin", helm_meta), deploy]) == [high]
    assert feed(pack, [binding("web-reader", None), deploy]) == [high]
    assert feed(pack, [binding("web-reader", helm_meta, ua="kubectl/v1.31.2"), deploy]) == [high]
