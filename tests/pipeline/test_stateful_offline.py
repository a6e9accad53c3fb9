"""The offline IsolationForest in the worker (``KLAXON_ANOMALY_MODEL``) and the stateful
settings read from the environment: the pure processor, batch scoring, configuration, and
one real worker on Tansu."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detections import load_rules
from detections.rule import RuleSet
from detections.stateful import offline
from detections.stateful.alerts import stable_id
from detections.stateful.anomaly import N_FEATURES, AnomalySettings
from detections.stateful.timeutil import iso
from pipeline.config import Settings, stateful_env
from pipeline.errors import ConfigError
from pipeline.stateful import StatefulOptions, StatefulProcessor, options_from_settings

T0 = 1_795_770_000.0  # 2026-11-27T08:20:00Z, a multiple of 300
WINDOW = 300.0
USERS = 8  # in the batching test
BASE_USERS = 40  # in the baseline and the detection tests


def traffic(seed: int, windows: int, users: int = USERS, start: int = 0) -> list[dict[str, Any]]:
    """Ordinary audit traffic: each user a few reads and writes per window, now and then a
    secret read or a refusal, one to three namespaces, a steady user agent and subnet."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(start, start + windows):
        for u in range(users):
            for i in range(int(rng.integers(2, 6 + 3 * (u % 8)))):
                r = rng.random()
                resource = "secrets" if r < 0.05 else ["pods", "configmaps", "services"][i % 3]
                out.append(
                    event(
                        f"{seed}-{w}-{u}-{i}",
                        f"u{u}",
                        T0 + w * WINDOW + i * 7 + u,
                        verb="create" if rng.random() < 0.2 else "get",
                        resource=resource,
                        namespace=f"team-{int(rng.integers(0, 3))}",
                        code=403 if rng.random() < 0.03 else 200,
                    )
                )
    return sorted(out, key=lambda e: e["requestReceivedTimestamp"])


def event(
    audit_id: str,
    user: str,
    t: float,
    *,
    verb: str = "get",
    resource: str = "pods",
    namespace: str = "team-0",
    code: int = 200,
) -> dict[str, Any]:
    """One canonical audit event."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Event",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": verb,
        "requestURI": f"/api/v1/namespaces/{namespace}/{resource}",
        "user": {"username": user},
        "cluster": "prod",
        "sourceIPs": [f"10.0.1.{sum(map(ord, user)) % 250}"],
        "userAgent": "kubectl/v1.31.2 (linux/amd64)",
        "objectRef": {"resource": resource, "namespace": namespace, "apiVersion": "v1"},
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": iso(t),
        "stageTimestamp": iso(t + 0.01),
    }


def sweep(user: str, window: int, n: int = 150) -> list[dict[str, Any]]:
    """A credential sweep in one window: secrets listed in 20 namespaces, a fifth refused."""
    return [
        event(
            f"sweep-{user}-{i}",
            user,
            T0 + window * WINDOW + i,
            verb="list",
            resource="secrets",
            namespace=f"ns-{i % 20}",
            code=403 if i % 5 == 0 else 200,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def model() -> offline.IsolationModel:
    """An IsolationForest trained on 320 ordinary windows (another seed than the traffic
    the tests send; within one hour, so that no window is a first-time hour: see the
    report on novelty features in ``docs/stateful.md``)."""
    rows = offline.replay_windows(traffic(seed=1, windows=8, users=BASE_USERS))
    return offline.train([r.features for r in rows], n_estimators=100, seed=0)


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_rules([], texts={})


def only_offline(model: offline.IsolationModel) -> StatefulOptions:
    return StatefulOptions(
        correlations=False, new_terms=False, anomaly=False, silence=False, offline_model=model
    )


def run(proc: StatefulProcessor, events: list[dict[str, Any]], size: int = 100) -> list[Any]:
    """Feed ``events`` in messages of ``size``, then let the idle watermark close every
    window; returns all alerts."""
    alerts = []
    for offset, i in enumerate(range(0, len(events), size)):
        batch = events[i : i + size]
        alerts += proc.process(batch, [], 0, topic="ev", offset=offset, now=0.0)
    return alerts + proc.tick(0, now=1e6)


def day() -> list[dict[str, Any]]:
    """A new stretch of ordinary traffic with u3's credential sweep in window 5."""
    evs = traffic(seed=2, windows=8, users=BASE_USERS) + sweep("u3", 5)
    return sorted(evs, key=lambda e: e["requestReceivedTimestamp"])


def test_offline_model_flags_the_sweep_window_and_no_ordinary_one(
    model: offline.IsolationModel, ruleset: RuleSet
) -> None:
    """On a new day of ordinary traffic with one user's credential sweep injected, the
    processor raises exactly one offline alert: that user's sweep window."""
    evs = day()
    proc = StatefulProcessor(ruleset, partitions=1, options=only_offline(model))
    alerts = run(proc, evs)
    assert [a["evidence"]["basis"] for a in alerts] == ["offline"]
    (alert,) = alerts
    window = int((T0 + 5 * WINDOW) // WINDOW)
    assert alert["id"] == stable_id(offline.OFFLINE_DETECTOR.id, "prod|u3", str(window))
    assert alert["evidence"]["features"]["secret_reads"] >= 150
    assert alert["summary"].startswith("u3: unusual against the offline baseline (score ")
    assert "reads of secrets" in alert["summary"] or "namespaces" in alert["summary"]
    assert proc.errors == 0
    # without the sweep the same day is silent: the alert is the sweep, not the day
    quiet = StatefulProcessor(ruleset, partitions=1, options=only_offline(model))
    assert run(quiet, traffic(seed=2, windows=8, users=BASE_USERS)) == []


def test_online_and_offline_alerts_come_together(
    model: offline.IsolationModel, ruleset: RuleSet
) -> None:
    """With both models on, the online model still alerts as before (same alerts as without
    the offline model) and the offline alert comes on top."""
    evs = day()
    online = StatefulOptions(
        correlations=False,
        new_terms=False,
        silence=False,
        anomaly_settings=AnomalySettings(warmup=3),
    )
    alone = run(StatefulProcessor(ruleset, partitions=1, options=online), evs)
    both_opts = dataclasses.replace(online, offline_model=model)
    both = run(StatefulProcessor(ruleset, partitions=1, options=both_opts), evs)
    assert alone and [a for a in both if a["evidence"]["basis"] != "offline"] == alone
    assert len([a for a in both if a["evidence"]["basis"] == "offline"]) == 1


def test_windows_closed_together_are_scored_in_one_call(
    model: offline.IsolationModel, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All windows closed by one message, or by one tick, go to the model in one call; an
    alert adds one more call that explains all alerting rows at once."""
    calls: list[int] = []
    score = offline.IsolationModel.score

    def counting(self: offline.IsolationModel, rows: Any) -> np.ndarray:
        calls.append(len(rows))
        return score(self, rows)

    monkeypatch.setattr(offline.IsolationModel, "score", counting)
    proc = StatefulProcessor(ruleset, partitions=1, options=only_offline(model))

    def send(evs: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
        return proc.process(evs, [], 0, topic="ev", offset=offset, now=0.0)

    assert send(traffic(seed=3, windows=1), 0) == [] and calls == []  # nothing closed yet
    assert send(traffic(seed=3, windows=1, start=1), 1) == []
    assert calls == [USERS]  # the next window of every user closed all eight: one call
    assert send(sweep("u5", 2) + traffic(seed=4, windows=1, start=2), 2) == []
    alerts = send(traffic(seed=3, windows=1, start=3), 3)
    assert [a["evidence"]["basis"] for a in alerts] == ["offline"]
    assert calls == [USERS, USERS, USERS, N_FEATURES]  # ...plus one call explaining the alert
    calls.clear()
    assert proc.tick(0, now=1e6) == []
    assert calls == [USERS]  # the timer closed the last windows: one call


def test_stateful_settings_default_to_the_processor_defaults() -> None:
    """Without any variable the worker's stateful options equal `StatefulOptions()`."""
    settings = Settings.from_env({})
    assert settings.anomaly_model is None
    assert options_from_settings(settings) == StatefulOptions()


def test_stateful_settings_are_read_and_used() -> None:
    """Every stateful variable reaches the processor's options."""
    settings = Settings.from_env(
        {
            "KLAXON_STATEFUL_DETECTORS": "new_terms, Silence",
            "KLAXON_CORRELATION_LATENESS": "45",
            "KLAXON_STATEFUL_ADVANCE_DELAY": "3m",
            "KLAXON_STATEFUL_IDLE_GRACE": "0.5h",
            "KLAXON_ANOMALY_THRESHOLD": "8.5",
            "KLAXON_SILENCE_THRESHOLD": "900s",
        }
    )
    opts = options_from_settings(settings)
    assert (opts.correlations, opts.new_terms, opts.anomaly, opts.silence) == (
        False,
        True,
        False,
        True,
    )
    assert opts.correlation.lateness == 45.0 and opts.advance_delay == 180.0
    assert opts.idle_grace == 1800.0 and opts.silence_threshold == 900.0
    assert opts.anomaly_settings.threshold == 8.5 and opts.offline_model is None
    assert Settings.from_env(stateful_env(settings)) == settings
    none = options_from_settings(Settings.from_env({"KLAXON_STATEFUL_DETECTORS": "none"}))
    assert not (none.correlations or none.new_terms or none.anomaly or none.silence)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KLAXON_STATEFUL_DETECTORS", "anomaly,sigma", "unknown sigma"),
        ("KLAXON_CORRELATION_LATENESS", "-1", "at least 0"),
        ("KLAXON_STATEFUL_ADVANCE_DELAY", "soon", "not a duration"),
        ("KLAXON_STATEFUL_IDLE_GRACE", "inf", "finite"),
        ("KLAXON_ANOMALY_THRESHOLD", "0", "above 0"),
        ("KLAXON_SILENCE_THRESHOLD", "10d", "not a duration"),
    ],
)
def test_bad_stateful_values_are_config_errors(name: str, value: str, message: str) -> None:
    """A bad value stops the start with a message naming the variable."""
    with pytest.raises(ConfigError, match=f"{name}=.*{message}"):
        Settings.from_env({name: value})


def test_anomaly_model_is_checked_at_start(model: offline.IsolationModel, tmp_path: Path) -> None:
    """KLAXON_ANOMALY_MODEL must name a readable Klaxon model with the worker's window
    length; anything else is a ConfigError at start, and a good file is loaded."""
    good = tmp_path / "good.json"
    offline.save(model, good)
    settings = Settings.from_env({"KLAXON_ANOMALY_MODEL": str(good)})
    assert settings.anomaly_model == good
    loaded = options_from_settings(settings).offline_model
    assert loaded is not None and loaded.cut == model.cut
    bad = {
        "missing.json": None,
        "garbage.json": b"\x00 not json",
        "pickle.json": b'{"format": "pickle"}',
        "window.json": orjson.dumps({**model.to_json(), "window": 600.0}),
    }
    for name, content in bad.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ConfigError, match="KLAXON_ANOMALY_MODEL="):
            Settings.from_env({"KLAXON_ANOMALY_MODEL": str(path)})
    with pytest.raises(ConfigError, match="600-second windows"):
        Settings.from_env({"KLAXON_ANOMALY_MODEL": str(tmp_path / "window.json")})


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_on_tansu_publishes_the_offline_alert(
    tansu: Any, model: offline.IsolationModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker given KLAXON_ANOMALY_MODEL turns a sweep window (closed by the user's
    next event, in the same raw message) into the offline alert on the alerts topic."""
    import tests.pipeline.conftest as helpers
    from pipeline.topics import ensure_topics
    from replay.producer import replay_events

    path = tmp_path / "model.json"
    offline.save(model, path)
    settings = helpers.unique_settings(tansu.bootstrap_servers, tmp_path).replace(
        anomaly_model=path,
        stateful_detectors=("anomaly",),
    )
    lines = [orjson.dumps(e) for e in sweep("mallory", 10, n=120)]
    lines.append(orjson.dumps(event("after", "mallory", T0 + 11 * WINDOW + 5)))
    window = int((T0 + 10 * WINDOW) // WINDOW)
    expected = stable_id(offline.OFFLINE_DETECTOR.id, "prod|mallory", str(window))
    asyncio.run(ensure_topics(tansu.bootstrap_servers, settings))
    worker = helpers.WorkerProcess(settings, tmp_path, "offline")

    def alerts() -> dict[str, dict[str, Any]]:
        records = helpers.read_topic(tansu.bootstrap_servers, settings.topic_alerts)
        return {r.key.decode(): orjson.loads(r.value) for r in records}

    def offline_ids(got: dict[str, dict[str, Any]]) -> list[str]:
        return [k for k, a in got.items() if a["evidence"].get("basis") == "offline"]

    try:
        worker.wait_for("assignment", lambda: bool((worker.snapshot() or {}).get("lag")), 60)
        asyncio.run(
            replay_events(
                lines,
                bootstrap=tansu.bootstrap_servers,
                topic=settings.topic_raw,
                cluster=helpers.CLUSTER,
            )
        )
        worker.wait_for("the offline alert", lambda: any(offline_ids(alerts())), 90)
        got = alerts()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert offline_ids(got) == [expected]  # one alert, the sweep window's (the events name
    alert = got[expected]  # their cluster, "prod", so the envelope's cluster is not used)
    assert alert["evidence"]["basis"] == "offline" and alert["user"]["username"] == "mallory"
    assert alert["evidence"]["score"] > alert["evidence"]["threshold"]
    assert "offline anomaly model" in worker.log()
