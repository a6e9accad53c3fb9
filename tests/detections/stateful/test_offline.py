"""Offline IsolationForest: exact scikit-learn scores, pickle-free files, batch scoring, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.ensemble import IsolationForest

from detections.stateful import offline
from detections.stateful.anomaly import N_FEATURES
from detections.stateful.errors import ModelFormatError, TrainingError
from detections.stateful.timeutil import iso
from klaxon.anomaly_cli import register


def test_scores_equal_scikit_learn() -> None:
    """The exported forest reproduces IsolationForest.score_samples to float precision."""
    rng = np.random.default_rng(3)
    x = rng.gamma(2, 3, size=(1500, N_FEATURES))
    forest = IsolationForest(n_estimators=40, random_state=0, max_features=0.8).fit(np.log1p(x))
    model = offline.IsolationModel.from_json(
        json.loads(json.dumps(offline.from_sklearn(forest, 300).to_json()))
    )
    assert np.allclose(model.score(x), forest.score_samples(np.log1p(x)), atol=1e-12)


def test_save_load_round_trip_and_rejects_foreign_files(tmp_path: Path) -> None:
    """Models are JSON; a file that is not a Klaxon model raises ModelFormatError."""
    rng = np.random.default_rng(0)
    model = offline.train(rng.normal(5, 1, size=(200, N_FEATURES)).clip(0), n_estimators=10)
    path = tmp_path / "m.json"
    offline.save(model, path)
    assert json.loads(path.read_text())["format"] == offline.FORMAT
    rows = rng.normal(5, 1, size=(50, N_FEATURES)).clip(0)
    assert np.array_equal(offline.load(path).score(rows), model.score(rows))
    (tmp_path / "bad.json").write_text('{"format": "pickle"}')
    with pytest.raises(ModelFormatError):
        offline.load(tmp_path / "bad.json")
    with pytest.raises(ModelFormatError):
        offline.load(tmp_path / "missing.json")


def test_too_little_data_is_a_training_error() -> None:
    """Training on a handful of windows refuses instead of producing a meaningless model."""
    with pytest.raises(TrainingError):
        offline.train(np.ones((5, N_FEATURES)))


def _log(path: Path, users: int, burst: bool) -> None:
    t0 = 1_795_770_000.0
    rng = np.random.default_rng(5)
    lines = []
    for w in range(60):
        for u in range(users):
            for i in range(int(rng.integers(2, 9))):
                kind = ["pods", "services", "configmaps"][int(rng.integers(0, 3))]
                lines.append(
                    {
                        "auditID": f"{w}-{u}-{i}",
                        "stage": "ResponseComplete",
                        "verb": "get",
                        "user": {"username": f"u{u}"},
                        "objectRef": {"resource": kind, "namespace": "a"},
                        "requestReceivedTimestamp": iso(t0 + w * 300 + i * 10 + u),
                    }
                )
    if burst:
        for i in range(80):
            lines.append(
                {
                    "auditID": f"b{i}",
                    "stage": "ResponseComplete",
                    "verb": "list",
                    "user": {"username": "u0"},
                    "objectRef": {"resource": f"kind{i % 20}", "namespace": f"n{i % 9}"},
                    "requestReceivedTimestamp": iso(t0 + 61 * 300 + i),
                }
            )
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))


def _run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_train_then_score_finds_the_burst(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`klaxon anomaly train` then `score` flags the injected sweep window among the oddest.

    (IsolationForest isolates values beyond the training range no faster than the most
    extreme training values, so on this tiny baseline first-time hours rank alongside it:
    only a threshold that lets 10% of the baseline through flags it; 5% did with the 11
    features before peer baselines, the 16 of state v2 dilute its random splits.)
    """
    base, test = tmp_path / "base.jsonl", tmp_path / "test.jsonl"
    _log(base, 3, burst=False)
    _log(test, 3, burst=True)
    model = tmp_path / "model.json"
    argv = ["anomaly", "train", str(base), "-o", str(model), "--trees", "50"]
    assert _run([*argv, "--contamination", "0.1"]) == 0
    assert "180 windows of 3 principals" in capsys.readouterr().out
    assert _run(["anomaly", "score", str(test), "-m", str(model), "-n", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sweep = [line for line in lines if "resources=20" in line]
    assert len(sweep) == 1 and "ANOMALOUS" in sweep[0] and "default|u0" in sweep[0]


def test_cli_reports_unreadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad model path exits 1 with a message, not a traceback."""
    log = tmp_path / "l.jsonl"
    log.write_text("")
    assert _run(["anomaly", "score", str(log), "-m", str(tmp_path / "nope.json")]) == 1
    assert "cannot read model" in capsys.readouterr().err
