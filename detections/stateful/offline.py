"""Offline anomaly model: an IsolationForest trained on a replayed baseline, scored in batches.

Training replays audit logs through the same per-principal windows as the online model
(:mod:`detections.stateful.anomaly`), fits scikit-learn's ``IsolationForest`` on the
``log1p`` window features, and saves the fitted trees as **JSON** (node arrays, no pickle:
loading a model file can never run code). Scoring walks all rows of a batch through each
tree at once with numpy (never one row at a time: a single-row call costs ~6.6 ms, a row in a
batch ~6 µs, see ``/work/shared/research/stack.md`` §4) and reproduces scikit-learn's
``score_samples`` exactly (tested).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> normal = rng.normal(5, 1, size=(300, N_FEATURES)).clip(0)
>>> model = train(normal, n_estimators=50, seed=1)
>>> odd = normal[:2].copy()
>>> odd[1, [0, 1, 7]] = [600.0, 500.0, 40.0]   # row 1: a sweep reading secrets
>>> s = model.score(odd)
>>> bool(s[1] < s[0]), model.anomalous(odd).tolist()
(True, [False, True])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detections.stateful.anomaly import FEATURES, N_FEATURES, AnomalySettings, PrincipalState
from detections.stateful.errors import ModelFormatError, TrainingError
from detections.stateful.timeutil import event_time, hour_of_day

FORMAT = "klaxon.isolation-forest/v1"
MIN_ROWS = 32
_DEFAULTS = AnomalySettings()


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One closed window of one principal."""

    principal: str
    start: float
    features: list[float]


def replay_windows(
    events: Iterable[dict[str, Any]], window: float = _DEFAULTS.window
) -> list[WindowRow]:
    """Cut events into per-principal tumbling windows (as the online model does)."""
    states: dict[str, PrincipalState] = {}
    rows: list[WindowRow] = []

    def close(key: str, st: PrincipalState) -> None:
        if st.counts[0]:
            start = st.window * window
            hour = hour_of_day(start)
            x = st.features(hour)
            rows.append(WindowRow(key, start, x))
            st.learn(x, hour, _DEFAULTS.alpha)

    for event in events:
        t = event_time(event)
        user = event.get("user")
        name = user.get("username") if isinstance(user, dict) else None
        if t is None or not isinstance(name, str):
            continue
        key = f"{event.get('cluster') or 'default'}|{name}"
        w = int(t // window)
        st = states.get(key)
        if st is None:
            st = states[key] = PrincipalState()
            st.window = w
        elif w > st.window:
            close(key, st)
            st.window = w
        elif w < st.window:
            continue
        st.add(event)
    for key, st in states.items():
        close(key, st)
    return rows


def _avg_path(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful BST search over ``n`` points (c(n))."""
    n = n.astype(float)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class Tree:
    """One isolation tree as flat node arrays (leaves have ``left == -1``)."""

    features: np.ndarray  # the tree's feature subset (indices into the row)
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    depth_bonus: np.ndarray  # c(n_node_samples) per node, added at the leaf


@dataclass(frozen=True)
class IsolationModel:
    """A trained forest; :meth:`score` is scikit-learn's ``score_samples`` (lower = odder)."""

    trees: tuple[Tree, ...]
    max_samples: int
    offset: float
    window: float

    def score(self, rows: np.ndarray | list[list[float]]) -> np.ndarray:
        """Scores for a batch of raw feature rows (``log1p`` is applied here)."""
        x = np.log1p(np.clip(np.asarray(rows, dtype=float), 0.0, None))
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ModelFormatError(f"expected rows of {N_FEATURES} features, got {x.shape}")
        depth = np.zeros(len(x))
        for tree in self.trees:
            xt = x[:, tree.features]
            node = np.zeros(len(x), dtype=np.int64)
            d = np.zeros(len(x))
            active = tree.left[node] != -1
            while active.any():
                idx = np.nonzero(active)[0]
                n = node[idx]
                go_left = xt[idx, tree.feature[n]] <= tree.threshold[n]
                node[idx] = np.where(go_left, tree.left[n], tree.right[n])
                d[idx] += 1.0
                active = tree.left[node] != -1
            depth += d + tree.depth_bonus[node]
        norm = _avg_path(np.array([self.max_samples]))[0]
        return np.asarray(-(2.0 ** (-depth / (len(self.trees) * norm))))

    def anomalous(self, rows: np.ndarray | list[list[float]]) -> np.ndarray:
        """Boolean per row: the score is below the forest's offset (sklearn ``predict == -1``)."""
        return self.score(rows) < self.offset

    def to_json(self) -> dict[str, Any]:
        """The pickle-free file format."""
        return {
            "format": FORMAT,
            "features": [f[0] for f in FEATURES],
            "window": self.window,
            "max_samples": self.max_samples,
            "offset": self.offset,
            "trees": [
                {
                    "features": t.features.tolist(),
                    "left": t.left.tolist(),
                    "right": t.right.tolist(),
                    "feature": t.feature.tolist(),
                    "threshold": t.threshold.tolist(),
                    "depth_bonus": t.depth_bonus.tolist(),
                }
                for t in self.trees
            ],
        }

    @classmethod
    def from_json(cls, value: Any) -> IsolationModel:
        """Load :meth:`to_json` output; raises :class:`ModelFormatError`."""
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            raise ModelFormatError(f"not a {FORMAT} model")
        if value.get("features") != [f[0] for f in FEATURES]:
            raise ModelFormatError("the model was trained on other features")
        try:
            trees = tuple(
                Tree(
                    np.asarray(t["features"], dtype=np.int64),
                    np.asarray(t["left"], dtype=np.int64),
                    np.asarray(t["right"], dtype=np.int64),
                    np.asarray(t["feature"], dtype=np.int64),
                    np.asarray(t["threshold"], dtype=float),
                    np.asarray(t["depth_bonus"], dtype=float),
                )
                for t in value["trees"]
            )
            model = cls(
                trees, int(value["max_samples"]), float(value["offset"]), float(value["window"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed model: {exc}") from exc
        for t in trees:
            n = len(t.left)
            if not (len(t.right) == len(t.feature) == len(t.threshold) == len(t.depth_bonus) == n):
                raise ModelFormatError("tree arrays differ in length")
            if n == 0 or t.left.max() >= n or t.right.max() >= n:
                raise ModelFormatError("tree refers to a node it does not have")
        return model


def train(
    rows: np.ndarray | list[list[float]],
    *,
    n_estimators: int = 100,
    seed: int = 0,
    window: float = _DEFAULTS.window,
) -> IsolationModel:
    """Fit scikit-learn's IsolationForest on window feature rows and export its trees."""
    from sklearn.ensemble import IsolationForest

    x = np.log1p(np.clip(np.asarray(rows, dtype=float), 0.0, None))
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise TrainingError(f"expected rows of {N_FEATURES} features, got shape {x.shape}")
    if len(x) < MIN_ROWS:
        raise TrainingError(f"need at least {MIN_ROWS} windows to train, got {len(x)}")
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x)
    return from_sklearn(forest, window)


def from_sklearn(forest: Any, window: float) -> IsolationModel:
    """Export a fitted ``IsolationForest`` to an :class:`IsolationModel`."""
    trees = []
    for est, feats in zip(forest.estimators_, forest.estimators_features_, strict=True):
        t = est.tree_
        left = np.asarray(t.children_left, dtype=np.int64)
        trees.append(
            Tree(
                np.asarray(feats, dtype=np.int64),
                left,
                np.asarray(t.children_right, dtype=np.int64),
                np.where(left == -1, 0, np.asarray(t.feature, dtype=np.int64)),
                np.asarray(t.threshold, dtype=float),
                _avg_path(np.asarray(t.n_node_samples)),
            )
        )
    return IsolationModel(tuple(trees), int(forest.max_samples_), float(forest.offset_), window)


def save(model: IsolationModel, path: str | Path) -> None:
    """Write the model as JSON."""
    Path(path).write_bytes(orjson.dumps(model.to_json()))


def load(path: str | Path) -> IsolationModel:
    """Read a model written by :func:`save`; raises :class:`ModelFormatError`."""
    try:
        value = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ModelFormatError(f"cannot read model {path}: {exc}") from exc
    return IsolationModel.from_json(value)


def top_windows(
    model: IsolationModel, rows: list[WindowRow], n: int = 10
) -> list[tuple[float, WindowRow]]:
    """The ``n`` most anomalous windows (scored in one batch), oddest first."""
    if not rows:
        return []
    scores = model.score([r.features for r in rows])
    order = np.argsort(scores)[:n]
    return [(float(scores[i]), rows[i]) for i in order if math.isfinite(scores[i])]
