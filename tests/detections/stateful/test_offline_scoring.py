"""The offline model as the worker uses it: saved threshold, the online model's own windows,
batch scoring, and files that must not be trusted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detections.stateful import offline
from detections.stateful.alerts import stable_id
from detections.stateful.anomaly import N_FEATURES, AnomalySettings
from detections.stateful.errors import ModelFormatError, TrainingError
from detections.stateful.timeutil import iso

T0 = 1_795_770_000.0  # 2026-11-27T08:20:00Z, a multiple of 300


def sparse_rows(n: int, seed: int) -> np.ndarray:
    """Window rows shaped like audit traffic: mostly small counts, many zeros."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, N_FEATURES))
    x[:, 0] = rng.poisson(20, n)
    x[:, 2] = rng.poisson(0.5, n)  # secret reads
    x[:, 1] = rng.poisson(2, n)  # writes
    x[:, 7] = rng.poisson(0.2, n)  # refused
    x[:, 10] = rng.integers(1, 3, n)  # namespaces
    x[:, 11] = rng.integers(1, 4, n)  # resource types
    return x


def events(seed: int, users: int = 4, windows: int = 30) -> list[dict[str, Any]]:
    """Time-ordered audit events of a few users with varied resources, agents and IPs."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(windows):
        for u in range(users):
            for i in range(int(rng.integers(1, 12))):
                resource = ["pods", "secrets", "configmaps", "roles"][int(rng.integers(0, 4))]
                out.append(
                    {
                        "auditID": f"{w}-{u}-{i}",
                        "stage": "ResponseComplete",
                        "verb": ["get", "list", "create"][int(rng.integers(0, 3))],
                        "user": {"username": f"u{u}"},
                        "cluster": "prod",
                        "sourceIPs": [f"10.0.{int(rng.integers(0, 3))}.{u}"],
                        "userAgent": ["kubectl/1.31", "helm/3.14"][int(rng.integers(0, 2))],
                        "objectRef": {"resource": resource, "namespace": f"ns{i % 3}"},
                        "responseStatus": {"code": 403 if rng.random() < 0.05 else 200},
                        "requestReceivedTimestamp": iso(T0 + w * 300 + i * 20 + u),
                    }
                )
    return out


def test_threshold_lets_at_most_the_contamination_share_of_the_baseline_through() -> None:
    """The saved threshold is a quantile of the training windows' own scores: with
    contamination c at most c of them score above it, with 0 none does."""
    rows = sparse_rows(2000, seed=1)
    for contamination in (0.0, 0.001, 0.01, 0.05):
        model = offline.train(rows, n_estimators=30, contamination=contamination)
        above = int(model.anomalous(rows).sum())
        assert above <= contamination * len(rows)
        assert contamination == 0 or above >= contamination * len(rows) - 2
    with pytest.raises(TrainingError):
        offline.train(rows, contamination=0.5)


def test_threshold_and_medians_survive_the_file_and_old_files_use_sklearn_cut(
    tmp_path: Path,
) -> None:
    """A saved model keeps its threshold and medians; a model file from before they existed
    loads with scikit-learn's own cut (anomaly score 0.5) and zero medians."""
    rows = sparse_rows(300, seed=2)
    model = offline.train(rows, n_estimators=20)
    path = tmp_path / "m.json"
    offline.save(model, path)
    again = offline.load(path)
    assert again.cut == model.cut and again.medians == model.medians
    assert again.medians == tuple(float(v) for v in np.median(rows, axis=0))
    doc = orjson.loads(path.read_bytes())
    for key in ("threshold", "medians", "contamination"):
        del doc[key]
    old = offline.IsolationModel.from_json(doc)
    assert math.isclose(old.cut, 0.5) and old.medians == (0.0,) * N_FEATURES


def test_the_worker_rows_are_the_training_rows() -> None:
    """The windows the online model closes (RecordingAnomalyModel) have exactly the feature
    rows `replay_windows` trains on: one feature definition for both models."""
    evs = events(seed=3)
    model = offline.RecordingAnomalyModel(AnomalySettings(lateness=0))
    model.observe_all(evs)
    model.advance(math.inf)
    closed = model.take_closed()
    replayed = offline.replay_windows(evs)
    assert len(closed) == len(replayed) > 100
    got = sorted((c.principal, c.start, c.features) for c in closed)
    want = sorted((r.principal, r.start, r.features) for r in replayed)
    assert got == want
    assert any(r[2][14] or r[2][15] for r in want)  # novelty features are exercised too
    assert model.take_closed() == []


def test_online_false_keeps_windows_but_drops_online_alerts() -> None:
    """With the online model switched off its windows still close, and it alerts nothing."""
    quiet = offline.RecordingAnomalyModel(AnomalySettings(lateness=0, warmup=1, threshold=0.1))
    loud = offline.RecordingAnomalyModel(AnomalySettings(lateness=0, warmup=1, threshold=0.1))
    quiet.online = False
    evs = events(seed=4)
    assert loud.observe_all(evs)  # the same input does alert when online
    assert quiet.observe_all(evs) == []
    assert len(quiet.take_closed()) == len(loud.take_closed())


def test_alerts_have_stable_ids_score_and_plain_words() -> None:
    """An alerting window gets id uuid5(detector|principal|window), its score, the
    threshold, and the features that raise its score the most, in words."""
    model = offline.train(sparse_rows(500, seed=5), n_estimators=40, seed=1)
    sweep = [300.0, 2, 200, 0, 0, 0, 0, 30, 0, 0, 20, 15, 0, 0, 0, 0, 0]
    usual = (20.0, 2, 0.5, 0, 0, 0, 0, 0.2, 0, 0, 1.5, 2, 0, 0, 0, 0, 0)
    window = offline.ClosedWindow("prod|mallory", 7, 2100.0, sweep, usual, 30, ("a1", "", "", ""))
    (alert,) = offline.score_windows(model, [window])
    assert alert["id"] == stable_id(offline.OFFLINE_DETECTOR.id, "prod|mallory", "7")
    ev = alert["evidence"]
    assert ev["detector"] == "anomaly" and ev["basis"] == "offline"
    assert ev["score"] > ev["threshold"] == round(model.cut, 3)
    assert ev["top"] and all(t["contribution"] > 0 for t in ev["top"])
    assert "secret" in alert["summary"] and alert["summary"].startswith("mallory: unusual")
    assert alert["event_time"] == iso(2400.0) and alert["cluster"] == "prod"
    assert offline.score_windows(model, [window]) == [alert]  # deterministic
    none = (0.0,) * N_FEATURES
    new = offline.ClosedWindow("prod|mallory", 7, 2100.0, sweep, none, 0, ("a", "", "", ""))
    (fresh,) = offline.score_windows(model, [new])
    assert fresh["evidence"]["usual_basis"] == "population"
    assert fresh["evidence"]["usual"]["requests"] == model.medians[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("left", "cycle", "cycle"),
        ("feature", 99, "outside its subset"),
        ("features", [99], "feature the rows do not have"),
    ],
)
def test_a_tampered_model_file_is_refused_not_run(field: str, value: Any, message: str) -> None:
    """Model files are data: a tree that loops, or reads a feature that does not exist, is a
    ModelFormatError at load time (scoring it could hang or index out of range)."""
    doc = offline.train(sparse_rows(100, seed=6), n_estimators=2).to_json()
    tree = doc["trees"][0]
    inner = [i for i, left in enumerate(tree["left"]) if left != -1]
    if value == "cycle":
        tree["left"][inner[-1]] = 0
    elif field == "feature":
        tree["feature"][inner[0]] = value
    else:
        tree["features"] = value
    with pytest.raises(ModelFormatError, match=message):
        offline.IsolationModel.from_json(doc)
