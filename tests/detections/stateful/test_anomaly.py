"""Online anomaly model: window features, baselines, explanations, checkpoints, bounds, cost."""

from __future__ import annotations

import gc
import json
import os
import random
import time
from typing import Any

import pytest

from detections.stateful.anomaly import (
    N_FEATURES,
    AnomalyModel,
    AnomalySettings,
    PrincipalState,
    hst_from_json,
    hst_input,
    hst_to_json,
    new_hst,
)
from detections.stateful.errors import StateFormatError
from detections.stateful.timeutil import iso
from schemas.alert import Alert

T0 = 1_795_737_600.0  # 2026-11-27T00:00:00Z
CFG = AnomalySettings(window=60, warmup=5, lateness=0)


def ev(
    t: float,
    user: str = "sa",
    resource_: str = "pods",
    verb: str = "get",
    ua: str = "app/1.0",
    ip: str = "10.0.0.1",
) -> dict[str, Any]:
    """A small canonical event."""
    return {
        "requestReceivedTimestamp": iso(t),
        "user": {"username": user},
        "verb": verb,
        "objectRef": {"resource": resource_, "namespace": "shop"},
        "userAgent": ua,
        "sourceIPs": [ip],
        "auditID": f"{user}-{t}",
        "stage": "ResponseComplete",
        "responseStatus": {"code": 200},
        "cluster": "c1",
    }


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    gc.collect()
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def quiet_history(model: AnomalyModel, windows: int = 20, user: str = "sa") -> None:
    """``windows`` ordinary minutes: 5 pod reads each, during office hours."""
    for w in range(windows):
        for i in range(5):
            model.observe(ev(T0 + 9 * 3600 + w * 60 + i * 7, user))


def test_secret_burst_alerts_with_plain_words() -> None:
    """A principal suddenly reading 40 secrets in a window alerts, naming the feature."""
    m = AnomalyModel(CFG)
    quiet_history(m)
    for i in range(40):
        m.observe(ev(T0 + 9 * 3600 + 20 * 60 + i, resource_="secrets"))
    alerts = m.advance(T0 + 9 * 3600 + 22 * 60)
    assert len(alerts) == 1
    a = alerts[0]
    Alert.model_validate(a)
    assert a["evidence"]["top"][0]["feature"] == "secret_reads"
    assert "reads of secrets 40 in 1m, usually none" in a["summary"]
    assert a["evidence"]["score"] >= CFG.threshold


def test_ordinary_window_and_warmup_do_not_alert() -> None:
    """More of the same does not alert, and nothing alerts before the warm-up is over."""
    m = AnomalyModel(CFG)
    quiet_history(m, 30)
    assert m.advance(T0 + DAY_S) == []
    young = AnomalyModel(CFG)
    quiet_history(young, 3)
    for i in range(40):
        young.observe(ev(T0 + 9 * 3600 + 3 * 60 + i, resource_="secrets"))
    assert young.advance(T0 + DAY_S) == []


DAY_S = 86400.0


def test_novelty_alone_does_not_alert() -> None:
    """A new user agent, new network and odd hour, with ordinary volume, stay below threshold."""
    m = AnomalyModel(CFG)
    quiet_history(m)
    for i in range(5):
        m.observe(ev(T0 + 3 * 3600 + i, ua="curl/8", ip="203.0.113.5"))
    assert m.advance(T0 + DAY_S) == []


def test_late_event_for_closed_window_is_ignored_and_counted() -> None:
    """An event for a window already closed does not reopen it."""
    m = AnomalyModel(CFG)
    m.observe(ev(T0 + 120))
    m.observe(ev(T0 + 10))
    assert m.late == 1


def test_checkpoint_round_trip_gives_identical_alerts() -> None:
    """Saving the whole model as JSON mid-stream and restoring it changes no alert."""
    rng = random.Random(3)
    stream = [
        ev(
            T0 + 9 * 3600 + i * 5,
            user=f"u{rng.randint(0, 3)}",
            resource_=rng.choice(["pods", "pods", "secrets"]),
        )
        for i in range(800)
    ]
    stream += [ev(T0 + 9 * 3600 + 4000 + i, user="u1", resource_="secrets") for i in range(60)]
    stream += [ev(T0 + 9 * 3600 + 4200 + i, user="u1") for i in range(3)]

    def run(model: AnomalyModel, events: list[dict[str, Any]]) -> list[str]:
        return [a["id"] for e in events for a in model.observe(e)]

    whole = run(AnomalyModel(CFG), stream)
    first = AnomalyModel(CFG)
    head = run(first, stream[:500])
    restored = AnomalyModel.from_json(json.loads(json.dumps(first.to_json())), CFG)
    assert head + run(restored, stream[500:]) == whole
    assert whole  # the burst did alert


def test_hst_checkpoint_restores_scores() -> None:
    """The HST rebuilt from seed plus saved masses scores exactly like the original."""
    hst = new_hst(AnomalySettings(hst_window=50))
    rng = random.Random(1)
    rows = [hst_input([rng.expovariate(0.2) for _ in range(N_FEATURES)]) for _ in range(180)]
    for r in rows:
        hst.learn_one(r)  # type: ignore[no-untyped-call]
    again = hst_from_json(json.loads(json.dumps(hst_to_json(hst))), AnomalySettings(hst_window=50))
    before = [hst.score_one(r) for r in rows[:20]]  # type: ignore[no-untyped-call]
    after = [again.score_one(r) for r in rows[:20]]  # type: ignore[no-untyped-call]
    assert before == after and max(before) > 0
    with pytest.raises(StateFormatError):
        hst_from_json(hst_to_json(hst), AnomalySettings(hst_window=50, seed=7))


def test_bad_principal_state_is_rejected() -> None:
    """A principal checkpoint of the wrong shape raises StateFormatError."""
    good = PrincipalState().to_json()
    with pytest.raises(StateFormatError):
        PrincipalState.from_json({**good, "mean": [1.0]})
    with pytest.raises(StateFormatError):
        PrincipalState.from_json({"v": 1})


def test_principals_are_bounded_lru() -> None:
    """Beyond max_principals the least recently active principal is evicted."""
    m = AnomalyModel(AnomalySettings(max_principals=10))
    for i in range(25):
        m.observe(ev(T0 + i, user=f"u{i}"))
    m.observe(ev(T0 + 30, user="u15"))
    assert len(m.principals) == 10 and m.evicted == 15
    assert list(m.principals)[-1] == "c1|u15"


@pytest.mark.slow
def test_amortised_cost_per_event_is_under_20us() -> None:
    """With windows of ~20 events (scored once per window), an event costs under 20 µs."""
    m = AnomalyModel(AnomalySettings(window=300))
    users = [f"system:serviceaccount:ns{i % 50}:sa{i}" for i in range(1000)]
    events = [
        ev(T0 + i * 0.015, user=users[i % 1000], resource_="pods" if i % 7 else "secrets")
        for i in range(200_000)
    ]
    start = time.perf_counter()
    for e in events:
        m.observe(e)
    per_event = (time.perf_counter() - start) / len(events) * 1e6
    print(f"anomaly: {per_event:.1f} µs/event, {m.windows_scored} windows scored")
    assert m.windows_scored >= 9000
    assert per_event < 20


@pytest.mark.slow
def test_memory_is_bounded_with_100k_principals() -> None:
    """100,000 principals, each with a learnt window and an open one, stay under 400 MB."""
    m = AnomalyModel(AnomalySettings(window=300))
    rss0 = _rss_mb()
    for rnd in range(2):
        for i in range(100_000):
            m.observe(
                ev(T0 + rnd * 300 + i * 0.002, user=f"system:serviceaccount:ns{i % 500}:sa{i}")
            )
    grown_mb = _rss_mb() - rss0
    print(f"anomaly: +{grown_mb:.0f} MB RSS for {len(m.principals)} principals")
    assert len(m.principals) == 100_000 and m.windows_scored == 100_000
    assert grown_mb < 400
