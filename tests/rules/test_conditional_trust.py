"""Acceptance: trust in the built-in pack is bound to `cluster_networks`, not to names alone.

Every identity allow-list of a rule is a `trusted_*` selection, and the rule's condition
pardons it only `and not from_outside` (`sourceIPs|cidr|outside|expand: '%cluster_networks%'`).
With `cluster_networks` empty (as shipped) the rules behave as before; filled in, a trusted
name acting from elsewhere is judged like anyone.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from detections import Engine, load_rules
from detections.fixtures import fixture_event
from detections.rule import Rule

#: The named lists that grant trust to identities.
IDENTITY_LISTS = re.compile(
    r"%(system_principals|control_plane_principals|known_secret_readers|"
    r"token_minting_principals|controller_service_accounts)%"
)
RULESET = load_rules()
FILLED = Engine(replace(RULESET, lists={**RULESET.lists, "cluster_networks": ("10.0.0.0/8",)}))


def trusting(rule: Rule) -> list[str]:
    """Names of the rule's selections that expand an identity allow-list to exempt it."""
    return [
        name
        for name, sel in rule.detection.items()
        if not name.startswith(("selection", "account_", "by_"))
        and any(
            IDENTITY_LISTS.search(str(v))
            for alt in sel.alternatives
            for fm in alt
            for v in fm.values
        )
    ]


TRUSTING = [r for r in RULESET.rules if trusting(r)]


def test_the_pack_has_trusting_rules() -> None:
    """The check below is not vacuous."""
    assert len(TRUSTING) > 60


@pytest.mark.parametrize("rule", TRUSTING, ids=[r.file.rsplit("/", 1)[-1] for r in TRUSTING])
def test_every_allow_list_is_bound_to_cluster_networks(rule: Rule) -> None:
    """Identity allow-lists are `trusted_*` selections, pardoned only from inside the cluster,
    and the rule proves both sides with fixtures that fill in cluster_networks."""
    assert all(name.startswith("trusted_") for name in trusting(rule)), trusting(rule)
    (fm,) = rule.detection["from_outside"].alternatives[0]
    assert (fm.path, fm.modifiers, fm.values) == (
        "sourceIPs",
        ("cidr", "outside", "expand"),
        ("%cluster_networks%",),
    )
    assert "and not from_outside)" in rule.condition_text
    bound = {c.expect for c in rule.klaxon.tests if dict(c.lists).get("cluster_networks")}
    assert bound == {"hit", "miss"}


def test_a_forged_forwarded_for_address_does_not_buy_trust() -> None:
    """sourceIPs lists X-Forwarded-For entries first and the peer last: an attacker outside
    who claims an inside address in the header still has an outside peer, and alerts."""
    (rule,) = [r for r in RULESET.rules if r.file.endswith("rbac-cluster-admin-binding.yml")]
    event = fixture_event(
        {
            "verb": "create",
            "user": {"username": "system:kube-controller-manager"},
            "objectRef": {"resource": "clusterrolebindings", "name": "backdoor"},
            "responseStatus": {"code": 201},
            "requestObject": {
                "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": "mallory"}],
            },
        }
    )

    def fires(source_ips: list[str], engine: Engine = FILLED) -> bool:
        ev = {**event, "sourceIPs": source_ips}
        return any(m.rule.id == rule.id for m in engine.evaluate(ev))

    assert not fires(["10.0.3.4"])
    assert fires(["10.0.3.4", "203.0.113.7"])  # forged header entry, real peer outside
    assert fires(["203.0.113.7"])
    assert not fires(["203.0.113.7"], Engine(RULESET))  # empty list: trust by name, as before
