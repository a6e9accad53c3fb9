"""``klaxon anomaly train|score``: the offline IsolationForest over replayed audit logs.

Logs are read whole and decoded with :func:`schemas.normalize.decode_payload` (JSON lines,
event lists, cloud envelopes). Models are JSON files (see :mod:`detections.stateful.offline`).

It lives in the command-line layer, not in ``detections.stateful``, because importing anything
from that package loads river (its ``__init__`` imports the online anomaly model); here every
``detections.stateful`` import waits for the command to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from klaxon.cli import needs_subcommand
from klaxon.paths import display_path


def register(subparsers: Any) -> None:
    """Add ``anomaly train`` and ``anomaly score`` to the klaxon command line."""
    top = subparsers.add_parser("anomaly", help="train and score the offline anomaly model")
    sub = top.add_subparsers(dest="anomaly_command", metavar="COMMAND")
    needs_subcommand(top)
    p = sub.add_parser("train", help="fit an IsolationForest on per-principal windows of LOGs")
    p.add_argument("logs", nargs="+", metavar="LOG", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("klaxon-anomaly.json"))
    p.add_argument("--window", type=float, default=300.0, help="window seconds (default 300)")
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--contamination",
        type=float,
        default=0.001,
        help="share of baseline windows allowed above the saved alert threshold (default 0.001)",
    )
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("score", help="print the most anomalous windows of LOGs")
    p.add_argument("logs", nargs="+", metavar="LOG", type=Path)
    p.add_argument("-m", "--model", type=Path, required=True)
    p.add_argument("-n", "--top", type=int, default=10)
    p.set_defaults(func=cmd_score)


def read_events(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Canonical events of every log file, in file order."""
    from detections.stateful.errors import StatefulError
    from schemas.normalize import decode_payload

    for path in paths:
        try:
            payload = path.read_bytes()
        except OSError as exc:
            raise StatefulError(f"cannot read {path}: {exc}") from exc
        yield from decode_payload(payload).events


def cmd_train(args: argparse.Namespace) -> int:
    """Train and save; prints what was learnt."""
    from detections.stateful import offline
    from detections.stateful.errors import StatefulError

    try:
        rows = offline.replay_windows(read_events(args.logs), args.window)
        model = offline.train(
            [r.features for r in rows],
            n_estimators=args.trees,
            seed=args.seed,
            window=args.window,
            contamination=args.contamination,
        )
        offline.save(model, args.out)
    except StatefulError as exc:
        print(f"klaxon anomaly train: {exc}", file=sys.stderr)
        return 1
    principals = len({r.principal for r in rows})
    print(
        f"trained on {len(rows)} windows of {principals} principals -> {display_path(args.out)}"
        f" (alert threshold {model.cut:.3f})"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score windows in one batch and print the oddest (anomaly score, higher is odder;
    ANOMALOUS: above the model's threshold, i.e. the worker would alert)."""
    from detections.stateful import offline
    from detections.stateful.anomaly import FEATURES
    from detections.stateful.errors import StatefulError

    try:
        model = offline.load(args.model)
        rows = offline.replay_windows(read_events(args.logs), model.window)
    except StatefulError as exc:
        print(f"klaxon anomaly score: {exc}", file=sys.stderr)
        return 1
    names = [f[0] for f in FEATURES]
    for score, row in offline.top_windows(model, rows, args.top):
        busy = ", ".join(f"{n}={v:g}" for n, v in zip(names, row.features, strict=True) if v)
        odd = -score  # anomaly score: higher is odder, as in the worker's alerts
        flag = " ANOMALOUS" if odd > model.cut else ""
        print(f"{odd:.3f}{flag}  {row.principal}  window {row.start:.0f}  {busy}")
    return 0
