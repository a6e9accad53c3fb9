"""Silent-sink monitoring: notice a cluster whose audit events stopped arriving, and its return.

Pure functions over a small JSON state ``{cluster: {"last": t, "quiet_since": t | None}}``.
The pipeline calls :func:`seen` as events arrive (with their event time) and :func:`check`
from a timer with its current time. A cluster is *quiet* when nothing arrived for
``threshold`` seconds: one "went quiet" alert per silence, and one "came back" alert when the
next event arrives. Ids are deterministic: ``uuid5(detector | cluster | quiet_since | kind)``.

>>> st = seen({}, "prod", 1000.0)
>>> st, alerts = check(st, now=1500.0, threshold=600)
>>> alerts
[]
>>> st, alerts = check(st, now=1700.0, threshold=600)
>>> [a["summary"] for a in alerts]
['cluster prod went quiet: no audit events for 11m 40s (threshold 10m)']
>>> check(st, now=1800.0, threshold=600)[1]       # no second alert for the same silence
[]
>>> st, alerts = came_back(st, "prod", 2000.0)
>>> [a["summary"] for a in alerts]
['cluster prod is back: audit events resumed after 16m 40s']
"""

from __future__ import annotations

from typing import Any

from detections.stateful.alerts import Detector, make_alert, stable_id

QUIET = Detector(
    id="1a7c8d2f-3e4b-5c6d-8e9f-b2c3d4e5f607",
    title="Cluster audit log went quiet",
    kind="silence",
    level="high",
    tags=("attack.defense-evasion", "attack.t1562"),
    description=(
        "No audit events arrived from the cluster for longer than the threshold: the audit "
        "webhook or log shipping may be broken or disabled (T1562 Impair Defenses)."
    ),
    source="detections/stateful/silence.py",
)
BACK = Detector(
    id="2b8d9e30-4f5c-5d6e-9fa0-c3d4e5f60718",
    title="Cluster audit log resumed",
    kind="silence",
    level="informational",
    description="Audit events from a cluster that had gone quiet arrived again.",
    source="detections/stateful/silence.py",
)


def _duration(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h}h"] if h else []
    if m:
        parts.append(f"{m}m")
    if sec and not h:
        parts.append(f"{sec}s")
    return " ".join(parts) or "0s"


def seen(state: dict[str, Any], cluster: str, at: float) -> dict[str, Any]:
    """Record that ``cluster`` sent an event at ``at`` (does not clear a silence: see came_back)."""
    entry = state.get(cluster) or {"last": at, "quiet_since": None}
    if at <= entry["last"] and cluster in state:
        return state
    return {**state, cluster: {**entry, "last": at}}


def came_back(
    state: dict[str, Any], cluster: str, at: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Record an event; if the cluster was quiet, end the silence with a "came back" alert."""
    entry = state.get(cluster)
    if entry is None or entry.get("quiet_since") is None:
        return seen(state, cluster, at), []
    quiet_since = float(entry["quiet_since"])
    gap = at - float(entry["last"])
    alert = make_alert(
        BACK,
        stable_id(BACK.id, cluster, repr(quiet_since), "back"),
        f"cluster {cluster} is back: audit events resumed after {_duration(gap)}",
        {"cluster": cluster},
        {"cluster": cluster, "silent_seconds": gap, "last_event_before": entry["last"]},
        at,
    )
    return {**state, cluster: {"last": at, "quiet_since": None}}, [alert]


def check(
    state: dict[str, Any], now: float, threshold: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Mark clusters silent for more than ``threshold`` seconds at ``now``; one alert each."""
    alerts: list[dict[str, Any]] = []
    out = dict(state)
    for cluster, entry in state.items():
        gap = now - float(entry["last"])
        if entry.get("quiet_since") is None and gap > threshold:
            out[cluster] = {**entry, "quiet_since": float(entry["last"])}
            alerts.append(
                make_alert(
                    QUIET,
                    stable_id(QUIET.id, cluster, repr(float(entry["last"])), "quiet"),
                    f"cluster {cluster} went quiet: no audit events for {_duration(gap)} "
                    f"(threshold {_duration(threshold)})",
                    {"cluster": cluster},
                    {"cluster": cluster, "silent_seconds": gap, "threshold": threshold},
                    now,
                )
            )
    return out, alerts
