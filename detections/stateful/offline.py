"""Offline anomaly model: an IsolationForest trained on a replayed baseline, scored in batches.

Training replays audit logs through the same per-principal windows as the online model
(:mod:`detections.stateful.anomaly`), fits scikit-learn's ``IsolationForest`` on the
``log1p`` window features, and saves the fitted trees as **JSON** (node arrays, no pickle:
loading a model file can never run code). Scoring walks all rows of a batch through each
tree at once with numpy (never one row at a time: a single-row call costs ~6.6 ms, a row in a
batch ~6 µs, see ``/work/shared/research/stack.md`` §4) and reproduces scikit-learn's
``score_samples`` exactly (tested).

**Threshold.** Training also scores the baseline windows themselves and saves, with the
trees, the ``1 - contamination`` quantile of their anomaly scores (``-score_samples``, in
(0, 1], higher is odder; default ``contamination`` 0.001): a window alerts when its score is
**above** that threshold, so on data like the baseline about one window in a thousand alerts.
The quantile is used rather than scikit-learn's fixed 0.5 (``contamination="auto"``) because
on audit windows (many zero features) a large share of ordinary windows scores above 0.5.
The per-feature training medians are saved too: they explain an alert (see
:func:`score_windows`).

**In the worker.** :class:`RecordingAnomalyModel` is the online model that also hands out the
windows it closes, with the feature vector of :meth:`PrincipalState.features` (the one feature
definition, shared by training, :func:`replay_windows` and the online model);
:func:`score_windows` scores all windows closed by one message or timer tick in one call.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> base = np.zeros((400, N_FEATURES))           # 400 ordinary windows:
>>> base[:, 0] = rng.poisson(20, 400)             # ~20 requests,
>>> base[:, 2] = rng.poisson(0.5, 400)            # a secret read now and then,
>>> base[:, 1] = rng.poisson(2, 400)              # a few writes,
>>> base[:, 7] = rng.poisson(0.2, 400)            # the odd refusal,
>>> base[:, 10] = rng.integers(1, 3, 400)         # 1-2 namespaces,
>>> base[:, 11] = rng.integers(1, 4, 400)         # 1-3 resource types
>>> model = train(base, n_estimators=50, seed=1)
>>> sweep = [300, 2, 200, 0, 0, 0, 0, 30, 0, 0, 20, 15, 0, 0, 0, 0, 0]  # secrets everywhere
>>> s = model.anomaly_score([base[0], sweep])
>>> bool(s[0] < s[1]), model.anomalous([base[0], sweep]).tolist(), int(model.anomalous(base).sum())
(True, [False, True], 0)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from detections.stateful.alerts import Detector, make_alert, stable_id
from detections.stateful.anomaly import (
    FEATURES,
    N_FEATURES,
    AnomalyModel,
    AnomalySettings,
    PrincipalState,
    describe,
    principal_context,
)
from detections.stateful.errors import ModelFormatError, TrainingError
from detections.stateful.timeutil import event_time, hour_of_day, iso
from schemas.keys import principal_key

if TYPE_CHECKING:
    import numpy as np
else:

    class _Numpy:
        """numpy, imported on first use: only a trained model needs it, and a worker without
        one (the default) saves its ~15 MB of RSS."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy
            return getattr(numpy, name)

    np = _Numpy()

FORMAT = "klaxon.isolation-forest/v1"
MIN_ROWS = 32
#: Default share of baseline windows above the saved threshold.
CONTAMINATION = 0.001
#: At most this many features are named in an alert's summary.
TOP_FEATURES = 3
_DEFAULTS = AnomalySettings()
OFFLINE_DETECTOR = Detector(
    id="5b0d9a47-6c1e-5f2a-8d3b-7e4f1a2c9b60",
    title="Unusual behaviour against the offline baseline",
    kind="anomaly",
    level="medium",
    tags=("attack.discovery", "attack.credential-access", "attack.t1078", "attack.t1613"),
    description=(
        "An identity's activity in one window is rare for the cluster's baseline: an "
        "IsolationForest trained offline on replayed audit logs (`klaxon anomaly train`) "
        "scores the window above the threshold saved at training time."
    ),
    source="detections/stateful/offline.py",
)


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
        key = principal_key(event)
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
    """A trained forest; :meth:`score` is scikit-learn's ``score_samples`` (lower = odder).

    ``threshold`` is on the :meth:`anomaly_score` scale (higher = odder); ``medians`` are the
    training windows' raw feature medians. Models saved before these existed load with
    scikit-learn's own cut (``-offset``) and zero medians.
    """

    trees: tuple[Tree, ...]
    max_samples: int
    offset: float
    window: float
    threshold: float | None = None
    medians: tuple[float, ...] = (0.0,) * N_FEATURES
    contamination: float | None = None

    @property
    def cut(self) -> float:
        """The anomaly score a window must exceed to alert."""
        return -self.offset if self.threshold is None else self.threshold

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

    def anomaly_score(self, rows: np.ndarray | list[list[float]]) -> np.ndarray:
        """The paper's anomaly score ``2^(-E[h]/c)`` per row, in (0, 1]: higher is odder."""
        return -self.score(rows)

    def anomalous(self, rows: np.ndarray | list[list[float]]) -> np.ndarray:
        """Boolean per row: the anomaly score is above the model's threshold (:attr:`cut`)."""
        return self.anomaly_score(rows) > self.cut

    def to_json(self) -> dict[str, Any]:
        """The pickle-free file format."""
        return {
            "format": FORMAT,
            "features": [f[0] for f in FEATURES],
            "window": self.window,
            "max_samples": self.max_samples,
            "offset": self.offset,
            "threshold": self.threshold,
            "contamination": self.contamination,
            "medians": list(self.medians),
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
            threshold = value.get("threshold")
            contamination = value.get("contamination")
            medians = tuple(float(v) for v in value.get("medians") or (0.0,) * N_FEATURES)
            model = cls(
                trees,
                int(value["max_samples"]),
                float(value["offset"]),
                float(value["window"]),
                None if threshold is None else float(threshold),
                medians,
                None if contamination is None else float(contamination),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed model: {exc}") from exc
        if not trees:
            raise ModelFormatError("the model has no trees")
        if len(medians) != N_FEATURES:
            raise ModelFormatError(f"expected {N_FEATURES} medians, got {len(medians)}")
        numbers = (model.offset, model.window, model.cut, *medians)
        if not all(math.isfinite(v) for v in numbers) or model.window <= 0:
            raise ModelFormatError("the model's window, offset, threshold or medians are invalid")
        if model.max_samples < 1:
            raise ModelFormatError("the model's max_samples is not positive")
        for t in trees:
            n = len(t.left)
            if not (len(t.right) == len(t.feature) == len(t.threshold) == len(t.depth_bonus) == n):
                raise ModelFormatError("tree arrays differ in length")
            if n == 0 or t.left.max() >= n or t.right.max() >= n:
                raise ModelFormatError("tree refers to a node it does not have")
            if t.features.size == 0 or t.features.min() < 0 or t.features.max() >= N_FEATURES:
                raise ModelFormatError("tree uses a feature the rows do not have")
            inner = t.left != -1
            if inner.any() and (
                t.feature[inner].min() < 0 or t.feature[inner].max() >= len(t.features)
            ):
                raise ModelFormatError("tree splits on a feature outside its subset")
            if (t.left[inner] <= np.nonzero(inner)[0]).any() or (
                t.right[inner] <= np.nonzero(inner)[0]
            ).any():
                raise ModelFormatError("tree has a cycle (a child before its parent)")
        return model


def train(
    rows: np.ndarray | list[list[float]],
    *,
    n_estimators: int = 100,
    seed: int = 0,
    window: float = _DEFAULTS.window,
    contamination: float = CONTAMINATION,
) -> IsolationModel:
    """Fit scikit-learn's IsolationForest on window feature rows and export its trees.

    The threshold is the ``1 - contamination`` quantile of the training windows' own
    anomaly scores (``contamination`` 0: the highest of them).
    """
    from sklearn.ensemble import IsolationForest

    raw = np.clip(np.asarray(rows, dtype=float), 0.0, None)
    x = np.log1p(raw)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise TrainingError(f"expected rows of {N_FEATURES} features, got shape {x.shape}")
    if len(x) < MIN_ROWS:
        raise TrainingError(f"need at least {MIN_ROWS} windows to train, got {len(x)}")
    if not 0.0 <= contamination < 0.5:
        raise TrainingError(f"contamination must be in [0, 0.5), got {contamination}")
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x)
    model = from_sklearn(forest, window)
    threshold = float(np.quantile(model.anomaly_score(raw), 1.0 - contamination, method="higher"))
    medians = tuple(float(v) for v in np.median(raw, axis=0))
    out: IsolationModel = replace(
        model, threshold=threshold, medians=medians, contamination=contamination
    )
    return out


def from_sklearn(forest: Any, window: float) -> IsolationModel:
    """Export a fitted ``IsolationForest`` to an :class:`IsolationModel` (scikit-learn's cut,
    no medians: :func:`train` adds the threshold and medians)."""
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


# -- in the worker: closed windows of the online model, scored in batches ------------------------


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A window the online model closed: its features and what explains them."""

    principal: str  # cluster|user.username
    window: int  # index: start // window seconds
    start: float
    features: list[float]
    usual: tuple[float, ...]  # the principal's baseline means before this window
    learnt: int  # windows in that baseline
    last: tuple[str, str, str, str]  # auditID, stage, source IP, user agent of its last event


class RecordingAnomalyModel(AnomalyModel):
    """The online model that also keeps every window it closes in :attr:`closed`.

    The rows are exactly the online model's (same windows, same
    :meth:`PrincipalState.features`); the owner drains them with :meth:`take_closed` after
    each batch of input. ``online=False`` keeps the windows but drops the online alerts.
    """

    def __init__(self, settings: AnomalySettings | None = None, *, online: bool = True) -> None:
        super().__init__(settings or AnomalySettings())
        self.online = online
        self.closed: list[ClosedWindow] = []

    def _close(self, key: str, state: PrincipalState) -> dict[str, Any] | None:
        if state.counts[0]:
            start = state.window * self.settings.window
            x = state.features(hour_of_day(start))
            self.closed.append(
                ClosedWindow(
                    key, state.window, start, x, tuple(state.mean), state.n, state.last_event()
                )
            )
        alert = super()._close(key, state)
        return alert if self.online else None

    def take_closed(self) -> list[ClosedWindow]:
        """The windows closed since the last call (and forget them)."""
        out, self.closed = self.closed, []
        return out


def contributions(
    model: IsolationModel, rows: np.ndarray | list[list[float]], scores: np.ndarray
) -> np.ndarray:
    """Per row and feature, how much the anomaly score drops when that feature alone is set
    to its training median (one batch call for all rows and features).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> model = train(rng.normal(5, 1, size=(300, N_FEATURES)).clip(0), n_estimators=50)
    >>> row = [5.0] * N_FEATURES; row[2] = 400.0
    >>> c = contributions(model, [row], model.anomaly_score([row]))
    >>> FEATURES[int(np.argmax(c[0]))][0]
    'secret_reads'
    """
    x = np.asarray(rows, dtype=float)
    k = len(x)
    typical = np.repeat(x, N_FEATURES, axis=0)
    cols = np.tile(np.arange(N_FEATURES), k)
    typical[np.arange(k * N_FEATURES), cols] = np.asarray(model.medians)[cols]
    drop: np.ndarray = np.asarray(scores)[:, None] - model.anomaly_score(typical).reshape(
        k, N_FEATURES
    )
    return drop


def score_windows(
    model: IsolationModel, windows: list[ClosedWindow], window: float = _DEFAULTS.window
) -> list[dict[str, Any]]:
    """Alerts for the closed windows whose anomaly score is above the model's threshold.

    All rows are scored in **one** call; the alerting rows (few) are explained in a second
    one. Ids are ``uuid5(detector id | principal | window index)``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = np.zeros((400, N_FEATURES))
    >>> base[:, 0], base[:, 2] = rng.poisson(20, 400), rng.poisson(0.5, 400)
    >>> base[:, 7], base[:, 10] = rng.poisson(0.2, 400), rng.integers(1, 3, 400)
    >>> model = train(base, n_estimators=50, seed=1)
    >>> quiet = [20.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    >>> sweep = [300.0, 0, 200, 0, 0, 0, 0, 30, 0, 0, 20, 0, 0, 0, 0, 0, 0]
    >>> usual = (20.0, 0, 0.5, 0, 0, 0, 0, 0.2, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    >>> closed = [ClosedWindow("c|bob", 9, 2700.0, x, usual, 20, ("a", "", "", ""))
    ...           for x in (quiet, sweep)]
    >>> alerts = score_windows(model, closed)
    >>> len(alerts), alerts[0]["evidence"]["basis"]
    (1, 'offline')
    >>> for reason in alerts[0]["summary"].split("): ")[1].split("; "):
    ...     print(reason)
    refused (401/403) requests 150x its usual rate
    reads of secrets 400x its usual rate
    distinct namespaces 20x its usual rate
    """
    if not windows:
        return []
    scores = model.anomaly_score([w.features for w in windows])
    cut = model.cut
    hits = [i for i in range(len(windows)) if scores[i] > cut]
    if not hits:
        return []
    why = contributions(model, [windows[i].features for i in hits], scores[hits])
    return [
        _offline_alert(model, windows[i], float(scores[i]), why[j], window)
        for j, i in enumerate(hits)
    ]


def _offline_alert(
    model: IsolationModel, w: ClosedWindow, score: float, why: np.ndarray, window: float
) -> dict[str, Any]:
    context = principal_context(w.principal, w.last)
    name = context["user"]["username"]
    basis = "principal" if w.learnt else "population"
    ref = PrincipalState()
    ref.mean = array("d", w.usual if w.learnt else model.medians)
    x = w.features
    order = [int(i) for i in np.argsort(-why, kind="stable") if why[i] > 0]
    words = [describe(ref, x, i, window, scaled=False) for i in order[:5]]
    top = [
        {"feature": FEATURES[i][0], "contribution": round(float(why[i]), 3), "why": text}
        for i, text in zip(order, words, strict=False)
    ]
    reasons = words[:TOP_FEATURES] or ["an unusual combination of features"]
    evidence = {
        "basis": "offline",
        "score": round(score, 3),
        "threshold": round(model.cut, 3),
        "window": {"start": iso(w.start), "end": iso(w.start + window), "seconds": window},
        "features": {f[0]: v for f, v in zip(FEATURES, x, strict=True)},
        "usual": {f[0]: round(m, 2) for f, m in zip(FEATURES, ref.mean, strict=True)},
        "usual_basis": basis,
        "top": top,
        "windows_learnt": w.learnt,
        "model": {"trees": len(model.trees), "contamination": model.contamination},
    }
    summary = (
        f"{name}: unusual against the offline baseline (score {score:.2f} > {model.cut:.2f}): "
        + "; ".join(reasons)
    )
    return make_alert(
        OFFLINE_DETECTOR,
        stable_id(OFFLINE_DETECTOR.id, w.principal, str(w.window)),
        summary,
        context,
        evidence,
        w.start + window,
    )
