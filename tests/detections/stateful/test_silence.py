"""Silent-sink monitoring: one alert per silence, one per return, deterministic ids."""

from __future__ import annotations

from detections.stateful.silence import came_back, check, seen
from schemas.alert import Alert


def test_quiet_then_back_gives_one_alert_each() -> None:
    """A silence longer than the threshold alerts once; the next event ends it with one alert."""
    st = seen({}, "prod", 100.0)
    st, a1 = check(st, 500.0, threshold=300)
    st, a2 = check(st, 900.0, threshold=300)
    st, back = came_back(st, "prod", 1000.0)
    st, again = came_back(st, "prod", 1001.0)
    assert len(a1) == 1 and a2 == [] and len(back) == 1 and again == []
    assert a1[0]["rule"]["title"] == "Cluster audit log went quiet"
    assert back[0]["evidence"]["silent_seconds"] == 900.0
    for a in a1 + back:
        Alert.model_validate(a)


def test_busy_cluster_never_alerts_and_clusters_are_independent() -> None:
    """Only the cluster that stopped sending is reported."""
    st = seen(seen({}, "a", 0.0), "b", 0.0)
    for t in range(60, 1200, 60):
        st = seen(st, "a", float(t))
    st, alerts = check(st, 1200.0, threshold=300)
    assert [a["cluster"] for a in alerts] == ["b"]


def test_ids_are_deterministic_and_out_of_order_times_do_not_rewind() -> None:
    """The same silence gives the same id; an older event does not move last-seen back."""
    st = seen(seen({}, "a", 100.0), "a", 50.0)
    assert st["a"]["last"] == 100.0
    one = check(st, 1000.0, 300)[1][0]["id"]
    two = check(st, 2000.0, 300)[1][0]["id"]
    assert one == two
