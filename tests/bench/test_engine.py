"""The benchmark's event mixes are what their docstrings say they are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.engine import MIXES, make_events


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_shares_of_a_mix_add_up_to_one(mix: str) -> None:
    assert sum(share for share, _, _ in MIXES[mix]) == pytest.approx(1.0)


def test_bodies_mix_has_the_independent_verb_shares_and_body_share() -> None:
    events = make_events(20_000, mix="bodies")
    n = len(events)
    verbs = Counter(e["verb"] for e in events)
    expected = {"update": 0.37, "watch": 0.32, "get": 0.15, "list": 0.06, "create": 0.05}
    for verb, share in expected.items():
        assert verbs[verb] / n == pytest.approx(share, abs=0.015), verb
    assert verbs["patch"] / n == pytest.approx(0.04, abs=0.015)
    with_body = sum(1 for e in events if "requestObject" in e or "responseObject" in e)
    assert with_body / n == pytest.approx(0.075, abs=0.01)
    size = sum(len(orjson.dumps(e)) for e in events) / n
    assert 1000 <= size <= 1400


def test_mixes_are_deterministic() -> None:
    assert make_events(50, mix="bodies") == make_events(50, mix="bodies")


def test_lists_fill_in_cluster_networks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--lists`` measures the pack with trust bound to the cluster's networks."""
    from bench.engine import main

    lists = tmp_path / "lists.yml"
    lists.write_text("cluster_networks:\n  replace: [10.0.0.0/8]\n", encoding="utf-8")
    assert (
        main(["--events", "300", "--runs", "1", "--mix", "realistic", "--lists", str(lists)]) == 0
    )
    out = capsys.readouterr().out
    assert f"lists: {lists}" in out
    assert "engine (pre-parsed dicts)" in out
