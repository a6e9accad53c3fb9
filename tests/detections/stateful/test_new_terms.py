"""New terms detectors: learning, novelty, TTL, caps, checkpoints, loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detections import RuleLoadError, load_rules
from detections.engine import Match
from detections.fixtures import fixture_event
from detections.stateful.new_terms import (
    NewTermsEngine,
    NewTermsSpec,
    load_new_terms,
    observe,
    prune,
    step,
)
from detections.stateful.timeutil import iso
from schemas.alert import Alert

T0 = 1_795_770_000.0
DAY = 86400.0
DOC: dict[str, Any] = {
    "title": "New UA",
    "id": "5b0f2c1e-8f4a-4a5e-9c3b-1d2e3f4a5b6c",
    "new_terms": {
        "rules": ["r"],
        "fields": ["userAgent"],
        "group-by": ["user.username"],
        "learning": "1d",
        "ttl": "10d",
        "max-terms": 3,
        "transforms": {"userAgent": "product"},
    },
}


def spec(**block: Any) -> NewTermsSpec:
    """The test detector with some ``new_terms`` keys replaced."""
    s = NewTermsSpec.from_document({**DOC, "new_terms": {**DOC["new_terms"], **block}}, "t.yml")
    assert s is not None
    return s


def ev(t: float, ua: str, user: str = "sa", i: int = 0) -> dict[str, Any]:
    """An event of ``user`` with user agent ``ua`` at ``t``."""
    return fixture_event(
        {
            "requestReceivedTimestamp": iso(t),
            "userAgent": ua,
            "user": {"username": user},
            "auditID": f"e{i}",
        }
    )


def feed(
    sp: NewTermsSpec,
    events: list[dict[str, Any]],
    start: float = T0,
    state: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Run events of one group through ``step``; return state and alert summaries."""
    out = []
    for e in events:
        obs = observe(sp, e)
        assert obs is not None
        state, alerts = step(sp, state, obs, start)
        out += [a["summary"] for a in alerts]
    return state, out


def test_no_alert_during_learning_then_alert_on_new_term() -> None:
    """Terms first seen while learning are learnt silently; after it, a new one alerts once."""
    sp = spec()
    state, during = feed(sp, [ev(T0, "app/1.0"), ev(T0 + 3600, "curl/8")])
    assert during == []
    state, after = feed(
        sp, [ev(T0 + 2 * DAY, "app/2.0"), ev(T0 + 2 * DAY, "python/3")], state=state
    )
    assert after == ["user.username=sa: first userAgent=python"]  # app/2.0 is the same product


def test_group_learning_silences_a_new_group() -> None:
    """With group-learning, a group's own first hour is learnt silently."""
    sp = spec(**{"group-learning": "1h"})
    _, alerts = feed(
        sp, [ev(T0 + 2 * DAY, "a/1"), ev(T0 + 2 * DAY + 60, "b/1"), ev(T0 + 2 * DAY + 7200, "c/1")]
    )
    assert alerts == ["user.username=sa: first userAgent=c"]


def test_ttl_forgets_and_realerts() -> None:
    """A term unseen for longer than ttl is new again (and says so)."""
    sp = spec()
    state, _ = feed(sp, [ev(T0, "a/1")])
    _, alerts = feed(sp, [ev(T0 + 12 * DAY, "a/1")], state=state)
    assert alerts == ["user.username=sa: first userAgent=a (again after more than the ttl)"]
    assert prune(sp, state, T0 + 11 * DAY) is None  # type: ignore[arg-type]


def test_terms_per_group_are_capped_lru() -> None:
    """At most max-terms per group; the least recently seen term is evicted and counted."""
    sp = spec()
    state, _ = feed(
        sp, [ev(T0 + i, f"u{i}/1") for i in range(3)] + [ev(T0 + 5, "u0/1"), ev(T0 + 6, "u9/1")]
    )
    assert state is not None
    assert [json.loads(k)[0] for k in state["terms"]] == ["u2", "u0", "u9"]
    assert state["evicted"] == 1


def test_checkpoint_round_trip_keeps_decisions() -> None:
    """A state written as JSON and read back decides exactly like the live one."""
    sp = spec()
    events = [ev(T0 + i * 3600, f"u{i % 4}/1", i=i) for i in range(60)]
    _, whole = feed(sp, events)
    mid, first = feed(sp, events[:25])
    _, rest = feed(sp, events[25:], state=json.loads(json.dumps(mid)))
    assert first + rest == whole and whole


def test_cidr_transform_groups_addresses_by_network() -> None:
    """cidr:24 makes 10.0.0.5 and 10.0.0.9 the same term and 10.0.1.5 a new one."""
    sp = spec(fields=["sourceIP"], transforms={"sourceIP": "cidr:24"})
    events = [
        fixture_event({"requestReceivedTimestamp": iso(T0 + 2 * DAY + i), "sourceIPs": [ip]})
        for i, ip in enumerate(["10.0.0.5", "10.0.0.9", "10.0.1.5"])
    ]
    _, alerts = feed(sp, events)
    assert alerts == [
        "user.username=alice: first sourceIP=10.0.0.0/24",
        "user.username=alice: first sourceIP=10.0.1.0/24",
    ]


def test_bad_documents_report_every_problem() -> None:
    """Unknown keys, bad durations and transforms are all reported in one RuleLoadError."""
    bad = {
        **DOC,
        "levle": "high",
        "new_terms": {**DOC["new_terms"], "learning": "soon", "transforms": {"userAgent": "upper"}},
    }
    with pytest.raises(RuleLoadError) as info:
        NewTermsSpec.from_document(bad, "bad.yml")
    text = str(info.value)
    assert "levle" in text and "learning" in text and "upper" in text


def test_unknown_base_rule_is_an_error(tmp_path: Path) -> None:
    """A detector naming a rule that is not loaded fails to load, with a suggestion."""
    f = tmp_path / "nt.yml"
    f.write_text(json.dumps({**DOC, "new_terms": {**DOC["new_terms"], "rules": ["secret-reed"]}}))
    with pytest.raises(RuleLoadError, match="secret-read"):
        load_new_terms([f], ruleset=load_rules())


def test_packaged_detectors_fire_on_the_pack() -> None:
    """The shipped detectors alert through the engine on matches of their base rules."""
    rs = load_rules()
    from detections import Engine

    engine = Engine(rs)
    nt = NewTermsEngine(load_new_terms(ruleset=rs), rs)
    sa = "system:serviceaccount:shop:web"
    stream = [
        fixture_event(
            {
                "requestReceivedTimestamp": iso(T0 + h * 3600),
                "auditID": f"h{h}",
                "user": {"username": sa},
                "userAgent": "web/1.0",
            }
        )
        for h in range(0, 24 * 8, 6)
    ]
    stream.append(
        fixture_event(
            {
                "requestReceivedTimestamp": iso(T0 + 9 * DAY),
                "auditID": "x",
                "user": {"username": sa},
                "userAgent": "curl/8.5.0",
            }
        )
    )
    alerts = [a for e in stream for m in engine.evaluate(e) for a in nt.process(m)]
    assert [a["rule"]["title"] for a in alerts] == ["New user agent for a service account"]
    Alert.model_validate(alerts[0])
    assert alerts[0]["evidence"]["term"] == {"userAgent": "curl"}


def test_engine_caps_groups_globally() -> None:
    """Beyond max-groups, the least recently active group of that detector is evicted."""
    rs = load_rules(
        [],
        texts={
            "r.yml": """
title: Any
id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
name: r
detection: {selection: {verb: get}, condition: selection}
"""
        },
    )
    nt = NewTermsEngine([spec(**{"max-groups": 5})], rs)
    for i in range(8):
        nt.process(Match(rs.rules[0], ev(T0 + i, "a/1", user=f"u{i}"), {}))
    groups = [k for k in nt.store if not k.endswith("#start")]
    assert len(groups) == 5 and nt.evicted_groups == 3
    assert all(f'["u{i}"]' in groups[i - 3] for i in range(3, 8))


def test_a_refilled_store_is_recounted_and_prune_rewrites_only_what_it_changed() -> None:
    """`NewTermsEngine.recount` counts groups from a checkpointed store (so the cap holds
    after a restart); `prune` stores again only groups that lost a term."""
    rs = load_rules(
        [],
        texts={
            "r.yml": """
title: Any
id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
name: r
detection: {selection: {verb: get}, condition: selection}
"""
        },
    )
    sp = spec(**{"max-groups": 3})
    first = NewTermsEngine([sp], rs)
    for i in range(3):
        first.process(Match(rs.rules[0], ev(T0 + i * DAY, "a/1", user=f"u{i}"), {}))

    class Writes(dict[str, Any]):
        written: list[str]

        def __setitem__(self, key: str, value: Any) -> None:
            self.written.append(key)
            super().__setitem__(key, value)

    store = Writes(first.store)
    store.written = []
    again = NewTermsEngine([sp], rs, store)
    again.recount()
    again.process(Match(rs.rules[0], ev(T0 + 3 * DAY, "a/1", user="u3"), {}))
    assert again.evicted_groups == 1  # three groups were already held
    store.written.clear()
    again.prune(T0 + 11.5 * DAY)  # ttl 10d: u0 (day 0) and u1 (day 1) expire
    assert store.written == []  # the others kept every term: not rewritten
    assert sorted(k.split("|")[2] for k in store if not k.endswith("#start")) == [
        '["u2"]',
        '["u3"]',
    ]


NT_FILE = """\
title: New UA
id: 5b0f2c1e-8f4a-4a5e-9c3b-1d2e3f4a5b6c
tags: [attack.t1078]
new_terms:
  rules: [secret-read]
  fields: [userAgent]
  learning: soon
  ttl: 1y
"""


def test_new_terms_problems_have_real_positions(tmp_path: Path) -> None:
    """A new terms mistake is reported at its line and column, like the loader's others."""
    f = tmp_path / "nt.yml"
    f.write_text(NT_FILE)
    with pytest.raises(RuleLoadError) as info:
        load_new_terms([f], ruleset=load_rules())
    assert [str(p) for p in info.value.problems] == [
        f"{f}:7:13: new_terms.learning: learning 'soon' must look like 30m, 12h or 7d"
    ]


def test_unknown_base_rule_is_reported_where_it_is_named(tmp_path: Path) -> None:
    """The unknown rule's own list item is the position, with the closest rule name."""
    f = tmp_path / "nt.yml"
    f.write_text(NT_FILE.replace("secret-read", "secret-reed").replace("soon", "7d"))
    with pytest.raises(RuleLoadError) as info:
        load_new_terms([f], ruleset=load_rules())
    assert [str(p) for p in info.value.problems] == [
        f"{f}:5:11: new_terms.rules[0]: new terms detector names unknown rule 'secret-reed' "
        "(did you mean 'secret-read'?)"
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1M", 2592000),  # units the new terms grammar used to lack
        ("1y", 31536000),
    ],
)
def test_new_terms_accept_every_duration_unit_the_loader_accepts(
    written: str, seconds: int
) -> None:
    """Durations share the loader's grammar: correlation timespans and new terms periods."""
    s = NewTermsSpec.from_document(
        {**DOC, "new_terms": {**DOC["new_terms"], "learning": written, "ttl": written}}, "t.yml"
    )
    assert s is not None and (s.learning, s.ttl) == (seconds, seconds)
    corr = (
        "title: c\ncorrelation:\n  type: event_count\n  rules: [r]\n"
        f"  group-by: [user.username]\n  timespan: {written}\n  condition: {{gte: 2}}\n"
    )
    rule = "title: r\nid: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f\nname: r\n"
    rule += "detection: {s: {verb: get}, condition: s}\n"
    rs = load_rules([], texts={"r.yml": rule, "c.yml": corr})
    assert rs.correlations[0].timespan_seconds == seconds


def test_new_terms_documents_get_the_shared_lints(tmp_path: Path) -> None:
    """The fields a detector reads are linted like a rule's, at their position."""
    f = tmp_path / "nt.yml"
    f.write_text(NT_FILE.replace("userAgent", "userAgnet").replace("soon", "7d"))
    lints: list[Any] = []
    load_new_terms([f], ruleset=load_rules(), lints=lints)
    assert [str(lint) for lint in lints] == [
        f"{f}:6:12: new_terms.fields[0]: field 'userAgnet' is not in the audit event schema "
        "(did you mean 'userAgent'?) [unknown-field]"
    ]


def test_a_service_account_token_from_a_new_network_alerts() -> None:
    """A kube-system controller's token, used from the pod network for a week, then from an
    outside network (behind a forged X-Forwarded-For entry) raises the new-network detector;
    more pods of the same /16 do not."""
    rs = load_rules()
    from detections import Engine

    engine = Engine(rs)
    nt = NewTermsEngine(load_new_terms(ruleset=rs), rs)
    sa = "system:serviceaccount:kube-system:clusterrole-aggregation-controller"

    def request(t: float, i: str, ips: list[str]) -> dict[str, Any]:
        return fixture_event(
            {
                "requestReceivedTimestamp": iso(t),
                "auditID": i,
                "user": {"username": sa},
                "userAgent": "kube-controller-manager/v1.31.2",
                "sourceIPs": ips,
            }
        )

    stream = [request(T0 + h * 3600, f"h{h}", [f"10.244.{h % 7}.5"]) for h in range(0, 24 * 8, 6)]
    stream.append(request(T0 + 8 * DAY, "pod", ["10.244.200.9"]))
    stream.append(request(T0 + 9 * DAY, "x", ["10.244.0.5", "203.0.113.7"]))
    alerts = [a for e in stream for m in engine.evaluate(e) for a in nt.process(m)]
    assert [a["rule"]["title"] for a in alerts] == ["New source network for a service account"]
    assert alerts[0]["evidence"]["term"] == {"sourceNetwork": "203.0.0.0/16"}
